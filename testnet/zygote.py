"""A fork server for local node launches: one process imports what a node needs, then forks nodes.

A node's start spends 1.6-1.8 CPU-seconds importing (libp2p alone about one); fifty nodes on a
2-core machine spend some 90 CPU-seconds on it while the nodes already up need theirs (issue 14,
ADR 0040). The launcher (testnet/launch.py) instead starts ONE zygote, ``python -m
hearth.testnet.zygote FD``, which imports the node's modules once and then answers requests on
the Unix socket FD. For each ``spawn`` it forks a child that becomes exactly what ``python -m
hearth.node ARGS`` would be: its own session, stdin /dev/null, stdout and stderr to the log file
the launcher opened (passed over the socket), the launcher's working directory, the request's
environment and argv; the child then runs the module as ``-m`` does and exits through the
interpreter's normal exit (atexit, exit status, traceback), never back into this loop.

Theory of operation (zygote side): one thread, never trio, never a thread before a fork. A
``select`` waits on the socket and on a SIGCHLD wake-up pipe; every turn reaps the exited
children and keeps their exit codes (as ``Popen.returncode`` has them: negative for a signal)
for the launcher's ``poll``. The zygote dies with the launcher (node/lifeline.py:
PR_SET_PDEATHSIG, checked against the launcher's pid), and each tied child gets the zygote's pid
as its parent to die with, so a launcher killed even by SIGKILL takes the zygote and then every
node with it. End of the socket (the launcher closed it or died): exit.

Launcher side: ``Zygote`` starts the process and sends requests under a lock (the launcher may
poll from several threads); ``ZygoteProcess`` is the subset of ``subprocess.Popen`` that the
launcher's callers use. Signals go straight to the pid.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import gc
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hearth.node import lifeline

MODULE = "hearth.testnet.zygote"
REQUEST_BYTES_MAX = 128 * 1024  # an environment of a few kB; the socket's buffer holds this
REPLY_BYTES_MAX = 4096
ANSWER_TIMEOUT_S = 120.0  # the first answer waits for the imports, on a machine busy starting nodes
EXIT_CODES_MAX = 4096  # the oldest exit codes are forgotten (the launcher's handles keep theirs)
POLL_INTERVAL_S = 0.05
PR_SET_NAME = 15  # <linux/prctl.h>: the name `ps -o comm`, top and psutil show
NODE_PROCESS_NAME = b"hearth-node"
# Read by the interpreter at its start or by modules the zygote imports, at import: a child
# cannot take a new value of these from its request, so a request that changes them gets a
# plain process (see `Zygote.serves`).
IMPORT_TIME_ENV = (
    "PYTHON", "LD_", "LC_", "LANG", "TZ", "LIBP2P_", "MSGPACK_", "PROTOCOL_BUFFERS_", "TYPER_",
    "PSUTIL_", "COINCURVE_",
)  # fmt: skip


_started_in = ""  # the zygote's working directory, which `-m` put first on sys.path


class ZygoteError(Exception):
    """The zygote died or did not answer; the message is one line and says what to do."""


# ---------------------------------------------------------------------------------------------
# The zygote process


@dataclass(frozen=True)
class Request:
    """What a child becomes: ``python -m module *args`` in ``cwd`` with ``env``."""

    module: str
    args: list[str]
    env: dict[str, str]
    cwd: str


def preload() -> None:
    """Import what `hearth node start` imports, and freeze it out of the garbage collector's
    reach: a collection in a child would otherwise write to (and so copy) every page of it."""
    from hearth.node import cli

    cli.mount(["node", "start"])
    import trio  # noqa: F401  (the daemon's own imports, as node/commands/node.py makes them)

    import hearth.node.runtime  # noqa: F401

    gc.collect()
    gc.freeze()


def serve(sock: socket.socket) -> Request | None:
    """Answer requests until the launcher goes (None); in a forked child, return its request."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # only to wake the select
    signal.set_wakeup_fd(wake_w)
    exit_codes: collections.OrderedDict[int, int] = collections.OrderedDict()
    running: set[int] = set()
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 4096)
        reap(running, exit_codes)
        if sock.fileno() not in ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, REQUEST_BYTES_MAX, 1)
        if not message:
            return None
        request = json.loads(message)
        if request["op"] == "spawn":
            [log_fd] = fds
            pid, child = spawn(request, log_fd)
            if child is not None:
                sock.detach()  # closed with the rest in the child: its fd number may be reused
                return child
            running.add(pid)
            exit_codes.pop(pid, None)  # a reused pid: the code kept is an earlier child's
            answer(sock, {"pid": pid})
        elif request["op"] == "poll":
            pid = int(request["pid"])
            known = pid in running or pid in exit_codes
            answer(sock, {"returncode": exit_codes.get(pid), "known": known})
        else:
            answer(sock, {"error": f"unknown request {request['op']!r}"})


def spawn(request: dict[str, Any], log_fd: int) -> tuple[int, Request | None]:
    """Fork one child: (its pid, None) in the zygote, (0, its request) in the child."""
    child = Request(request["module"], request["args"], request["env"], request["cwd"])
    parent = os.getpid()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        become_child(child, log_fd, parent)
        return 0, child
    os.close(log_fd)
    return pid, None


def become_child(request: Request, log_fd: int, zygote: int) -> None:
    """Turn the fresh child into what ``subprocess.Popen`` would have started."""
    os.setsid()  # as start_new_session: Ctrl-C in the launcher's terminal is not for the node
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # as close_fds: the socket, the pipe, the log
    os.chdir(request.cwd)
    env = dict(request.env)
    if lifeline.PARENT_ENV in env:
        env[lifeline.PARENT_ENV] = str(zygote)  # the node dies with us, and we with the launcher
    os.environ.clear()
    os.environ.update(env)
    if sys.path and sys.path[0] == _started_in:
        sys.path[0] = request.cwd  # `-m` puts the working directory first
    reseed()
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None).prctl(PR_SET_NAME, NODE_PROCESS_NAME, 0, 0, 0)


def reseed() -> None:
    """State made at import that a fork would otherwise share between nodes: trio's scheduling
    generator and logging's start time (``relativeCreated``). The ``random`` module reseeds its
    own generator after a fork, ``tempfile`` notices the new pid, ``secrets`` reads the kernel."""
    import logging

    from trio._core import _run

    _run._r.seed()
    logging._startTime = time.time()  # type: ignore[attr-defined]


def reap(running: set[int], exit_codes: collections.OrderedDict[int, int]) -> None:
    while running:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            running.clear()
            return
        if pid == 0:
            return
        running.discard(pid)
        exit_codes[pid] = os.waitstatus_to_exitcode(status)
        while len(exit_codes) > EXIT_CODES_MAX:
            exit_codes.popitem(last=False)


def answer(sock: socket.socket, reply: dict[str, Any]) -> None:
    sock.send(json.dumps(reply).encode())


def run_child(request: Request) -> None:
    """Run the child's module as ``python -m`` does; its exit is the interpreter's own."""
    import runpy

    sys.argv = [request.module, *request.args]
    runpy.run_module(request.module, run_name="__main__", alter_sys=True)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: python -m {MODULE} SOCKET_FD (the launcher starts it)")
    # Started while the launcher held Ctrl-C and SIGTERM (lifeline.held): take them again first,
    # or the launcher's death signal would wait here forever.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, lifeline.STOP_SIGNALS)
    lifeline.die_with_parent()
    global _started_in
    _started_in = os.getcwd()
    sock = socket.socket(fileno=int(sys.argv[1]))
    preload()
    request = serve(sock)
    if request is not None:
        run_child(request)


# ---------------------------------------------------------------------------------------------
# The launcher's side


def inherited_at_start(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(IMPORT_TIME_ENV)}


class Zygote:
    """The launcher's handle on its zygote process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = {**os.environ, lifeline.PARENT_ENV: str(os.getpid())}
        self._start_env = inherited_at_start(os.environ)
        with theirs:
            self.process = subprocess.Popen(
                [sys.executable, "-m", MODULE, str(theirs.fileno())],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # its stderr is the launcher's: a failed import shows
                start_new_session=True,
            )
        self._sock = ours
        self._sock.settimeout(ANSWER_TIMEOUT_S)
        self._live: set[int] = set()

    @property
    def pid(self) -> int:
        return self.process.pid

    def serves(self, env: Mapping[str, str]) -> bool:
        """True if a child of this zygote can run with ``env`` as a fresh interpreter would."""
        return self.alive() and inherited_at_start(env) == self._start_env

    def alive(self) -> bool:
        return self.process.poll() is None and self._sock.fileno() != -1

    def spawn(
        self, module: str, args: Sequence[str], env: Mapping[str, str], log_fd: int
    ) -> ZygoteProcess:
        """Start ``python -m module *args`` with ``env``, stdout and stderr to ``log_fd``."""
        request = {"op": "spawn", "module": module, "args": list(args), "env": dict(env)}
        request["cwd"] = os.getcwd()
        message = json.dumps(request).encode()
        if len(message) > REQUEST_BYTES_MAX:
            raise ZygoteError(f"a start request of {len(message)} bytes is over the zygote's limit")
        with self._lock:
            self._send(message, [log_fd])
            pid = int(self._receive()["pid"])
            self._live.add(pid)
        return ZygoteProcess(self, pid, [module, *args])

    def returncode_of(self, pid: int) -> int | None:
        """``pid``'s exit code once it has exited; None while it runs."""
        with self._lock:
            self._send(json.dumps({"op": "poll", "pid": pid}).encode(), [])
            reply = self._receive()
        code = reply["returncode"]
        if code is None and not reply["known"]:
            raise ZygoteError(f"the node zygote (pid {self.pid}) has no child {pid}")
        if code is not None:
            self._live.discard(pid)
        return None if code is None else int(code)

    def is_running_child(self, pid: int) -> bool:
        """True while ``pid`` is a child of this zygote that has not exited (it may be starting)."""
        if pid not in self._live or not self.alive():
            return False
        return self.returncode_of(pid) is None

    def close(self) -> None:
        """Stop the zygote (it exits at the end of its socket; tied children die with it)."""
        self._sock.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)

    def _send(self, message: bytes, fds: list[int]) -> None:
        try:
            socket.send_fds(self._sock, [message], fds)
        except OSError as exc:
            raise self._died(exc) from None

    def _receive(self) -> dict[str, Any]:
        try:
            reply = self._sock.recv(REPLY_BYTES_MAX)
        except OSError as exc:  # a timeout too: the zygote is stuck, not merely slow
            raise self._died(exc) from None
        if not reply:
            raise self._died(None)
        decoded: dict[str, Any] = json.loads(reply)
        if "error" in decoded:
            raise ZygoteError(f"the node zygote refused a request: {decoded['error']}")
        return decoded

    def _died(self, cause: OSError | None) -> ZygoteError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=1)
        how = (
            f"exited with code {self.process.returncode}"
            if self.process.returncode is not None
            else f"did not answer ({cause or 'socket closed'})"
        )
        self._sock.close()
        return ZygoteError(
            f"the node zygote (pid {self.pid}) {how}: its nodes are gone "
            f"(HEARTH_ZYGOTE=0 starts nodes without it)"
        )


class ZygoteProcess:
    """A child of the zygote, seen through the part of ``subprocess.Popen`` the launcher uses."""

    def __init__(self, zygote: Zygote, pid: int, args: list[str]) -> None:
        self._zygote = zygote
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.returncode_of(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0.0)
            time.sleep(POLL_INTERVAL_S)
        return code

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never a signal to a pid that may have been reused
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    main()
