"""The CLI unwraps a CommandError that trio's nurseries wrapped, and nothing else."""

from __future__ import annotations

import pytest
import trio

from node.cli import command_error_in
from node.commands.common import CommandError


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
