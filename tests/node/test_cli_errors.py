"""The CLI unwraps a CommandError that trio's nurseries wrapped, and nothing else."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from hearth.node.cli import command_error_in
from hearth.node.commands.common import CommandError
from hearth.node.runtime import open_ledger
from tests.ledger.conftest import identity
from tests.ledger.test_corrupt import DAMAGE, spoiled, sql


async def test_a_command_error_raised_under_nested_nurseries_is_found() -> None:
    async def fail_to_start(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise CommandError("ledger x is damaged: the meta table has 0 rows", exit_code=3)

    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as outer:
            outer.start_soon(trio.sleep_forever)
            async with trio.open_nursery() as inner:
                await inner.start(fail_to_start)
    error = command_error_in(caught.value)
    assert error is not None and error.exit_code == 3
    assert str(error) == "ledger x is damaged: the meta table has 0 rows"


def test_a_group_with_a_real_bug_keeps_its_traceback() -> None:
    group = BaseExceptionGroup("", [CommandError("one line"), ValueError("a bug")])
    assert command_error_in(group) is None
    assert command_error_in(BaseExceptionGroup("", [ValueError("a bug")])) is None


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        (sql("UPDATE entries SET hash = zeroblob(32) WHERE seq = 3"), "seq 3: tampered-entry"),
        (sql("DELETE FROM credits"), "seq 1: credits-mismatch"),
        *[(edit, says) for edit, _, says in DAMAGE.values()],
    ],
)
def test_the_daemon_refuses_each_corrupt_ledger_in_one_line(
    edit: Callable[[Path], None], says: str, tmp_path: Path
) -> None:
    path = spoiled(tmp_path, edit, receipts=30)
    with pytest.raises(CommandError) as refused:
        open_ledger(path, identity(1), now_ms=0)
    assert says in str(refused.value) and "\n" not in str(refused.value)
