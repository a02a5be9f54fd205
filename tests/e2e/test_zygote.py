"""Tied nodes forked by the launcher's zygote (testnet/zygote.py, ADR 0040): they run, exit and
die as the plain processes they replace, each in its own environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.node import testhooks
from hearth.testnet import launch, zygote
from hearth.testnet.observe import ask
from tests.e2e.network import TESTNET_CONFIG

pytestmark = pytest.mark.integration

STOP_S = 30.0


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def the_zygote() -> zygote.Zygote:
    found = launch.shared_zygote(os.environ)
    assert found is not None, "the zygote is on by default"
    return found


def test_forked_nodes_listen_answer_and_keep_their_own_homes(tmp_path: Path) -> None:
    nodes = launch.up(tmp_path / "net", 2, configs=[TESTNET_CONFIG] * 2, base="127.0.9.2")
    try:
        for node in nodes:
            assert parent_of(node.pid) == the_zygote().pid
            assert node.info["pid"] == node.pid
            assert node.info["home"] == str(node.home)  # HEARTH_HOME came with the request
            assert ask(node, "/v1/market")["self"]["peer_id"] == node.info["peer_id"]
        assert nodes[0].info["peer_id"] != nodes[1].info["peer_id"]
    finally:
        launch.stop(nodes)


def plain_and_forked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str]]:
    """(exit code, last log line) of one failing start, as a plain process then as a fork."""
    seen = []
    for knob in ("0", "1"):
        monkeypatch.setenv(launch.ZYGOTE_ENV, knob)
        home = tmp_path / f"knob{knob}"
        home.mkdir()  # no `hearth init`: the node refuses to start, with one line
        process = launch.start_process(home, "127.0.9.9", None, home / "node.out")
        assert isinstance(process, subprocess.Popen) == (knob == "0")
        code = process.wait(timeout=STOP_S)
        seen.append((code, (home / "node.out").read_text().strip().splitlines()[-1]))
    return seen


def test_exit_codes_and_output_are_those_of_a_plain_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, forked = plain_and_forked(tmp_path, monkeypatch)
    assert plain[0] == 1 and "run `hearth init`" in plain[1]
    assert forked == (plain[0], plain[1].replace("knob0", "knob1"))

    log = tmp_path / "missing.out"
    with log.open("ab") as sink:
        missing = the_zygote().spawn("hearth.no_such_module", [], dict(os.environ), sink.fileno())
    assert missing.wait(timeout=STOP_S) == 1  # an uncaught exception, as `python -m` exits
    assert "No module named hearth.no_such_module" in log.read_text()


def test_a_signal_reaches_the_node_and_its_status_reaches_poll(tmp_path: Path) -> None:
    [node] = launch.up(tmp_path / "net", 1, configs=[TESTNET_CONFIG], base="127.0.9.12")
    process = zygote.ZygoteProcess(the_zygote(), node.pid, [])
    assert process.poll() is None
    process.kill()
    assert process.wait(timeout=STOP_S) == -signal.SIGKILL
    assert not launch.is_running(node.pid)
    assert not the_zygote().is_running_child(node.pid)  # asked again, the code is still there
    assert zygote.ZygoteProcess(the_zygote(), node.pid, []).poll() == -signal.SIGKILL
    process.kill()  # a pid that has exited is never signalled again (it may be reused)


def test_the_knob_and_a_changed_interpreter_setting_give_plain_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert launch.shared_zygote({**os.environ, "PYTHONHASHSEED": "12345"}) is None
    monkeypatch.setenv(launch.ZYGOTE_ENV, "0")
    assert launch.shared_zygote(os.environ) is None


def test_nothing_is_read_from_the_environment_before_the_fork(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The crash hook's variable arrives with the forked node's environment, after imports."""
    monkeypatch.delenv(testhooks.CRASH_AT_ENV, raising=False)
    assert testhooks.crash_before_pay(print) is print
    monkeypatch.setenv(testhooks.CRASH_AT_ENV, testhooks.BEFORE_PAY_COMMIT)
    assert testhooks.crash_before_pay(print) is not print


def test_the_zygote_imports_without_starting_a_thread() -> None:
    """A fork copies only the thread that forks: a thread started by an import would be missing
    from every node, with any lock it held."""
    code = (
        "import os; from hearth.testnet import zygote; zygote.preload(); "
        "print(len(os.listdir('/proc/self/task')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


LAUNCHER = """\
import os
import sys
from pathlib import Path
from hearth.testnet import launch

config = Path(sys.argv[2]).read_text()
[node] = launch.up(Path(sys.argv[1]), 1, configs=[config], base="127.0.9.22")
print(node.pid, launch.shared_zygote(os.environ).pid, flush=True)
sys.stdin.read()
"""


def test_launcher_killed_takes_the_zygote_and_its_nodes(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(TESTNET_CONFIG)
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(tmp_path / "tn"), str(config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    pids: list[int] = []
    try:
        assert launcher.stdout is not None
        pids = [int(word) for word in launcher.stdout.readline().split()]
        node, forker = pids
        assert parent_of(node) == forker
        launcher.kill()
        launcher.wait(timeout=STOP_S)
        launch.wait_for(
            lambda: not any(map(launch.is_running, pids)), STOP_S, "the zygote and node to die"
        )
    finally:
        for pid in filter(launch.is_running, pids):
            os.kill(pid, signal.SIGKILL)


def test_a_dead_zygote_is_one_line_and_the_next_start_gets_a_new_one(tmp_path: Path) -> None:
    [node] = launch.up(tmp_path / "a", 1, configs=[TESTNET_CONFIG], base="127.0.9.32")
    dead = the_zygote()
    process = zygote.ZygoteProcess(dead, node.pid, [])
    os.kill(dead.pid, signal.SIGKILL)
    launch.wait_for(lambda: not launch.is_running(node.pid), STOP_S, "the node to die with it")
    with pytest.raises(launch.TestnetError, match=r"zygote .* exited with code -9") as error:
        launch.listening_info(node.home, process)
    assert "\n" not in str(error.value)
    [again] = launch.up(tmp_path / "b", 1, configs=[TESTNET_CONFIG], base="127.0.9.33")
    try:
        assert parent_of(again.pid) == the_zygote().pid != dead.pid
    finally:
        launch.stop([again])
