"""`testnet demo`, `testnet run` and `testnet up` stopped by SIGTERM or SIGINT at any moment
leave no process behind: no node, no sandbox worker, no zygote (found by a scan of /proc for
anything whose command line, HEARTH_HOME or open files lie in the testnet's folder)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hearth.testnet import launch, report
from tests.e2e.network import TESTNET_CONFIG

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START_S = 300.0  # five nodes on a loaded 2-core machine
STOP_S = 90.0

RUN = """\
[run]
name = "orphans"
seed = 5
nodes = 3
jobs = 30
duration_s = 120

[hosts]
gaming_pc = 100

[testnet]
job_rate_per_min = 30
publishers = 1
"""


def open_files(entry: Path) -> bytes:
    """What a process's descriptors point at: a node forked by the launcher's zygote has the
    zygote's command line and first environment, but its log and database lie in its home."""
    seen = []
    with contextlib.suppress(OSError):
        for fd in (entry / "fd").iterdir():
            with contextlib.suppress(OSError):
                seen.append(os.readlink(fd).encode())
    return b"\0".join(seen)


def processes_in(folder: Path) -> list[int]:
    """Every live process whose command line, environment or open files name ``folder``."""
    needle = str(folder).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            seen = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (needle in seen or needle in open_files(entry)) and state != "Z":
            found.append(int(entry.name))
    return found


def nodes_started(root: Path, count: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            state = json.loads((root / launch.STATE_FILE).read_text())
        except (OSError, ValueError):
            return False
        return len(state["nodes"]) >= count

    return check


def text_in(path: Path, needle: str) -> Callable[[], bool]:
    return lambda: path.exists() and needle in path.read_text(errors="replace")


def kill_what_is_left(command: subprocess.Popen[Any], folder: Path) -> list[int]:
    """Kill ``command`` and every process of ``folder`` still alive; return those processes (so
    a failure leaves nothing running on the machine either)."""
    if command.poll() is None:
        command.kill()
    left = processes_in(folder)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    return left


def stop_and_check(
    argv: list[str], folder: Path, moment: Callable[[], bool], signals: list[signal.Signals]
) -> None:
    out = folder / "command.out"
    env = {**os.environ, "HEARTH_HOME": str(folder / "home")}
    with out.open("wb") as sink:
        command = subprocess.Popen(
            [sys.executable, "-m", "hearth", *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            # as from a terminal, even when pytest itself runs in the background (SIGINT ignored)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    try:

        def reached() -> bool:
            assert command.poll() is None, out.read_text()
            return moment()

        launch.wait_for(reached, START_S, f"the moment to stop {argv[:2]}")
        for signum in signals:  # a second signal lands in the shutdown the first began
            command.send_signal(signum)
        command.wait(timeout=STOP_S)
        launch.wait_for(lambda: not processes_in(folder), STOP_S, "every process to go")
    finally:
        left = kill_what_is_left(command, folder)
    assert command.returncode != 0
    assert left == [], out.read_text()


@pytest.mark.parametrize(
    ("moment", "signals"),
    [
        ("start", [signal.SIGTERM]),
        ("jobs", [signal.SIGTERM]),
        ("jobs", [signal.SIGINT, signal.SIGTERM]),
    ],
)
def test_demo_leaves_no_process(tmp_path: Path, moment: str, signals: list[signal.Signals]) -> None:
    root = tmp_path / "tn"
    when = (
        nodes_started(root, 2)
        if moment == "start"
        else text_in(tmp_path / "command.out", "publishing")
    )
    stop_and_check(["testnet", "demo", "--dir", str(root)], tmp_path, when, signals)


@pytest.mark.parametrize(
    ("moment", "signals"),
    [("start", [signal.SIGINT]), ("jobs", [signal.SIGTERM]), ("jobs", [signal.SIGTERM] * 2)],
)
def test_run_leaves_no_process(tmp_path: Path, moment: str, signals: list[signal.Signals]) -> None:
    scenario = tmp_path / "orphans.toml"
    scenario.write_text(RUN)
    out = tmp_path / "out"
    when = (
        nodes_started(out / "testnet", 2)
        if moment == "start"
        else text_in(out / report.EVENTS_FILE, '"job_published"')
    )
    stop_and_check(["testnet", "run", str(scenario), "--out", str(out)], tmp_path, when, signals)


@pytest.mark.parametrize("signals", [[signal.SIGTERM], [signal.SIGINT, signal.SIGINT]])
def test_up_interrupted_while_starting_leaves_no_process(
    tmp_path: Path, signals: list[signal.Signals]
) -> None:
    root = tmp_path / "tn"
    argv = ["testnet", "up", "-n", "4", "--dir", str(root), "--base", "127.0.7.1"]
    stop_and_check(argv, tmp_path, nodes_started(root, 2), signals)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_run_started_with_ctrl_c_ignored_still_stops_while_nodes_start(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """A launcher started in the background of a script inherits SIGINT ignored; `testnet run`
    still takes Ctrl-C (and SIGTERM) while its nodes start: exit 130, report, nothing left."""
    scenario = tmp_path / "orphans.toml"
    scenario.write_text(RUN)
    out = tmp_path / "out"
    env = {**os.environ, "HEARTH_HOME": str(tmp_path / "home")}
    argv = ["testnet", "run", str(scenario), "--out", str(out)]
    with (tmp_path / "command.out").open("wb") as sink:
        command = subprocess.Popen(
            [sys.executable, "-m", "hearth", *argv],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
    try:
        started = nodes_started(out / "testnet", 1)

        def reached() -> bool:
            assert command.poll() is None, (tmp_path / "command.out").read_text()
            return started()

        launch.wait_for(reached, START_S, "the first node to start")
        command.send_signal(signum)
        assert command.wait(timeout=STOP_S) == 130, (tmp_path / "command.out").read_text()
        launch.wait_for(lambda: not processes_in(tmp_path), STOP_S, "every process to go")
    finally:
        if command.poll() is None:
            command.kill()
        for pid in processes_in(tmp_path):
            os.kill(pid, signal.SIGKILL)
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert summary["interrupted"]
    kinds = [json.loads(line)["kind"] for line in (out / report.EVENTS_FILE).open()]
    assert "job_published" not in kinds  # it stopped before the timeline, not after it


LAUNCHER = """\
import sys
from pathlib import Path
from hearth.testnet import launch

config = Path(sys.argv[2]).read_text()
launch.up(Path(sys.argv[1]), 1, configs=[config], base="127.0.7.21")
print("up", flush=True)
sys.stdin.read()
"""


def test_nodes_die_with_a_launcher_killed_by_sigkill(tmp_path: Path) -> None:
    """`launch.up` ties its nodes by default (what every test and bench starts through), so a
    test run killed outright leaves no node behind: nothing could have stopped them."""
    root = tmp_path / "tn"
    config = tmp_path / "config.toml"
    config.write_text(TESTNET_CONFIG)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(root), str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert launcher.stdout is not None
        assert launcher.stdout.readline() == "up\n"
        assert processes_in(root), "the node should run while its launcher does"
        launcher.kill()
        launcher.wait(timeout=STOP_S)
        launch.wait_for(lambda: not processes_in(root), STOP_S, "the node to die with its launcher")
    finally:
        left = kill_what_is_left(launcher, root)
    assert left == []
