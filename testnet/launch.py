"""Start and stop N real node processes on this machine, each on its own loopback address.

Each node gets its own data directory under the testnet's folder, its own 127.0.0.x address
(distinct IPs keep gossipsub's colocation scoring honest), and the testnet's private-network key,
so two testnets never mix. The first node is the bootstrap node. ``testnet.json`` in the folder
records exactly which processes were started, so ``down`` stops those and nothing else.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from hearth.node import lifeline, paths
from hearth.node.config import TEMPLATE
from hearth.node.home import init_home
from hearth.testnet.zygote import Zygote, ZygoteError

STATE_FILE = "testnet.json"
CALIBRATION_FILE = "calibration.json"  # node/calibrate.py's, without importing wasmtime
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
DEFAULT_BASE = "127.0.0.2"
NODES_MAX = 250
STARTING_MAX = 4
ZYGOTE_ENV = "HEARTH_ZYGOTE"  # "0": tied nodes start as plain processes, not from the zygote


class TestnetError(Exception):
    """A testnet could not be started or stopped; the message says why."""


class NodeProcess(Protocol):
    """A started node: a ``subprocess.Popen`` or a child of the zygote (testnet/zygote.py)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def send_signal(self, sig: int) -> None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...


@dataclasses.dataclass
class LaunchedNode:
    index: int
    home: Path
    host: str
    pid: int
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return f"node{self.index}"


def node_home(root: Path, index: int) -> Path:
    return root / f"node{index}"


def host_for(index: int, base: str = DEFAULT_BASE) -> str:
    """The loopback address of node ``index``: ``base``, then the addresses after it."""
    return str(ipaddress.IPv4Address(base) + index)


def check_base(base: str, count: int) -> None:
    """Every node's address must be a loopback address this machine answers on (127/8)."""
    try:
        first = ipaddress.IPv4Address(base)
    except ValueError:
        raise TestnetError(f"--base {base!r} is not an IPv4 address such as 127.0.5.1") from None
    last = int(first) + count - 1
    if not first.is_loopback or last > int(ipaddress.IPv4Address("127.255.255.254")):
        raise TestnetError(
            f"--base {base}: {count} nodes need addresses {base} and up within 127/8"
        )


def default_config() -> str:
    """Each testnet node is its own network group (loopback nodes share one /24), so that
    the replicas of one job may go to different nodes of the testnet."""
    return TEMPLATE.replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")


def loopback_config() -> str:
    """`default_config` for nodes that all listen on loopback: each is reachable by every other,
    so none asks peers for dial-backs (ADR 0035). At a 50-node start those cost the bootstrap
    node a fresh handshake per newcomer when it was shortest of CPU (issue 14). The netns lab,
    whose homes sit behind NAT, keeps the check."""
    return default_config().replace('reachability = "auto"', 'reachability = "public"')


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``condition`` until it holds; raise TestnetError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TestnetError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


def prepare_home(
    home: Path, psk: bytes, config_text: str | None, calibration: str | None = None
) -> None:
    """A node's home; ``calibration`` (calibration.json's text) spares the node measuring its
    fuel rate at first start, when another node of the machine has measured it."""
    init_home(home)
    (home / "swarm.key").write_text(psk.hex() + "\n")
    paths.config_path(home).write_text(loopback_config() if config_text is None else config_text)
    calibrated = home / CALIBRATION_FILE
    if calibration is not None and not calibrated.exists():
        calibrated.write_text(calibration)


def calibration_of(home: Path) -> str | None:
    """The fuel rate node ``home`` measured at its start (calibration.json's text), if any.

    Node 0 measures it before it listens; the nodes after it run on the same machine and take
    its figure. (The launcher does not measure it itself: wasmtime's threads would take the
    signals that ``lifeline.held`` holds off while a node is started and recorded.)"""
    try:
        return (home / CALIBRATION_FILE).read_text()
    except FileNotFoundError:
        return None


def start_process(
    home: Path, host: str, bootstrap: str | None, log_path: Path, *, tied: bool = True
) -> NodeProcess:
    """Start one node; ``tied`` nodes get SIGTERM when this process dies (node/lifeline.py), so
    a launcher killed even by SIGKILL (a test run, a bench) leaves none behind. Only a command
    whose nodes must outlive it (``hearth testnet up``) starts them untied.

    A tied node is forked by this process's zygote, which has already imported what a node
    imports (ADR 0040); an untied one, or any with ``HEARTH_ZYGOTE=0``, is a plain process.
    Callers hold Ctrl-C and SIGTERM (``lifeline.held``) until they have recorded the pid."""
    args = ["node", "start", "--host", host, "--port", "0"]
    if bootstrap:
        args += ["--bootstrap", bootstrap]
    env = {**os.environ, "HEARTH_HOME": str(home)}
    if tied:
        env[lifeline.PARENT_ENV] = str(os.getpid())
    with log_path.open("ab") as log_file:
        zygote = shared_zygote(env) if tied else None
        if zygote is not None:
            try:
                return zygote.spawn("hearth.node", args, env, log_file.fileno())
            except ZygoteError as exc:
                raise TestnetError(str(exc)) from None
        return subprocess.Popen(
            [sys.executable, "-m", "hearth.node", *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C in the launcher's terminal goes to the launcher only
        )


_zygote: Zygote | None = None
_zygote_owner = 0  # the pid that started it: a forked launcher starts its own
_zygote_lock = threading.Lock()


def zygote_enabled() -> bool:
    return os.environ.get(ZYGOTE_ENV, "1") != "0" and sys.platform.startswith("linux")


def shared_zygote(env: Mapping[str, str]) -> Zygote | None:
    """This launcher's zygote, started at its first use; None where a node must be a plain
    process: the zygote is off, or ``env`` changes what an interpreter reads at its start.

    Only the main thread starts one: Linux sends the death signal when the THREAD that forked
    the zygote ends, and a worker thread's end must not take every node with it."""
    global _zygote, _zygote_owner
    if not zygote_enabled():
        return None
    with _zygote_lock:
        if _zygote is not None and (_zygote_owner != os.getpid() or not _zygote.alive()):
            _zygote = None  # a dead zygote's nodes report its end through their poll()
        if _zygote is None:
            if threading.current_thread() is not threading.main_thread():
                return None
            _zygote, _zygote_owner = Zygote(), os.getpid()
            atexit.register(_zygote.close)
        return _zygote if _zygote.serves(env) else None


def read_info(home: Path, pid: int) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = json.loads(paths.node_info_path(home).read_text())
    except (FileNotFoundError, ValueError):
        return None
    return info if info.get("pid") == pid else None


def listening_info(home: Path, process: NodeProcess) -> dict[str, Any] | None:
    """The node's ``node.json`` once it listens; None before; TestnetError if it has exited."""
    try:
        exited = process.poll() is not None
    except ZygoteError as exc:
        raise TestnetError(str(exc)) from None
    if exited:
        raise TestnetError(
            f"node in {home} exited with code {process.returncode}; see {home / 'node.out'}"
        )
    return read_info(home, process.pid)


def wait_until_listening(home: Path, process: NodeProcess, timeout_s: float) -> dict[str, Any]:
    found: dict[str, Any] = {}

    def listening() -> bool:
        info = listening_info(home, process)
        if info:
            found.update(info)
        return bool(info)

    wait_for(listening, timeout_s, f"the node in {home} to listen")
    return found


def up(
    root: Path,
    count: int,
    *,
    configs: Sequence[str | None] | None = None,
    psk: bytes | None = None,
    timeout_s: float = START_TIMEOUT_S,
    tied: bool = True,
    base: str = DEFAULT_BASE,
) -> list[LaunchedNode]:
    """Start ``count`` nodes under ``root`` and wait until every one listens.

    Interrupted at any point (Ctrl-C, SIGTERM), it stops every node it started, then re-raises.
    ``tied`` nodes also die with this process; ``tied=False`` leaves them running after it."""
    if not 1 <= count <= NODES_MAX:
        raise TestnetError(f"a testnet has 1 to {NODES_MAX} nodes, not {count}")
    check_base(base, count)
    if (root / STATE_FILE).exists() and running(root):
        raise TestnetError(f"a testnet is already running in {root}; run `hearth testnet down`")
    root.mkdir(parents=True, exist_ok=True)
    psk = psk or secrets.token_bytes(32)
    configs = configs or [None] * count
    nodes: list[LaunchedNode] = []
    # Node 0 is everyone's bootstrap, so it starts alone; the rest start STARTING_MAX at a time
    # (a node spends its first half second on the CPU, opening its store, host and sandbox
    # worker; a plain process a second more importing: more at once only queue for it).
    starting: dict[int, tuple[NodeProcess, float]] = {}
    try:
        while len(nodes) < count or starting:
            limit = STARTING_MAX if nodes and nodes[0].info else 1
            while len(nodes) < count and len(starting) < limit:
                index = len(nodes)
                home = node_home(root, index)
                calibration = calibration_of(nodes[0].home) if nodes else None
                prepare_home(home, psk, configs[index], calibration)
                bootstrap = nodes[0].info["multiaddrs"][0] if nodes else None
                with lifeline.held():
                    host = host_for(index, base)
                    process = start_process(home, host, bootstrap, home / "node.out", tied=tied)
                    nodes.append(LaunchedNode(index, home, host, process.pid, {}))
                    save_state(root, nodes)
                starting[index] = (process, time.monotonic() + timeout_s)
            for index, (process, deadline) in list(starting.items()):
                info = listening_info(nodes[index].home, process)
                if info:
                    nodes[index].info = info
                    del starting[index]
                elif time.monotonic() > deadline:
                    raise TestnetError(
                        f"timed out after {timeout_s:.0f} s waiting for "
                        f"the node in {nodes[index].home} to listen"
                    )
            if starting:
                time.sleep(POLL_INTERVAL_S)
        save_state(root, nodes)
    except BaseException:
        with lifeline.held():  # a second Ctrl-C must not leave the rest running
            stop(nodes)
        raise
    return nodes


def save_state(root: Path, nodes: list[LaunchedNode]) -> None:
    state = [{"index": n.index, "home": str(n.home), "host": n.host, "pid": n.pid} for n in nodes]
    (root / STATE_FILE).write_text(json.dumps({"nodes": state}, indent=2) + "\n")


def load(root: Path) -> list[LaunchedNode]:
    try:
        state = json.loads((root / STATE_FILE).read_text())
    except FileNotFoundError:
        raise TestnetError(f"no testnet in {root}; start one with `hearth testnet up`") from None
    nodes = []
    for entry in state["nodes"]:
        home = Path(entry["home"])
        info = read_info(home, entry["pid"]) or {}
        nodes.append(LaunchedNode(entry["index"], home, entry["host"], entry["pid"], info))
    return nodes


def is_alive(pid: int, home: Path) -> bool:
    """True if ``pid`` is still the node we started (its node.json names it)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return read_info(home, pid) is not None or _is_our_child_starting(pid)


def _is_our_child_starting(pid: int) -> bool:
    """A node of ours that has not written its node.json yet: by its command line, or (forked
    by the zygote, whose command line it shares) by the zygote's word."""
    zygote = _zygote
    if zygote is not None and _zygote_owner == os.getpid():
        with contextlib.suppress(ZygoteError):
            if zygote.is_running_child(pid):
                return True
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"node\x00start" in cmdline


def running(root: Path) -> list[LaunchedNode]:
    return [n for n in load(root) if is_alive(n.pid, n.home)]


def stop(nodes: list[LaunchedNode], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every node we started, then SIGKILL any that outlive the timeout."""
    alive = [n for n in nodes if is_alive(n.pid, n.home)]
    for node in alive:
        _signal(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for node in alive:
        while is_running(node.pid) and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL_S)
        if is_running(node.pid):
            _signal(node.pid, signal.SIGKILL)
            _reap(node.pid)


def down(root: Path) -> int:
    nodes = load(root)
    stop(nodes)
    return len(nodes)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie child of ours is reaped here)."""
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return status != "Z"
