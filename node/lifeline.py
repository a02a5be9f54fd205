"""Processes that die with the one that started them, and SIGTERM taken like Ctrl-C.

A testnet launcher (`hearth testnet demo`, `testnet run`) sets ``PARENT_ENV`` in each node's
environment; the node then asks Linux to send it SIGTERM when that parent dies
(``prctl(PR_SET_PDEATHSIG)``), so a launcher killed by any signal, even SIGKILL, leaves no node
behind. Elsewhere it is a no-op. A node forked by the launcher's zygote (testnet/zygote.py) is
given the zygote's pid instead, and the zygote itself dies with the launcher the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Iterator
from types import FrameType

PARENT_ENV = "HEARTH_DIE_WITH_PARENT"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def die_with_parent() -> None:
    """If the launcher asked for it, get SIGTERM when it dies; exit now if it already has."""
    wanted = os.environ.pop(PARENT_ENV, "")
    if not wanted or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # not fatal: the launcher still stops its nodes itself
    if os.getppid() != int(wanted):  # it died before we asked: nobody would stop us
        sys.exit(1)


def sigterm_like_ctrl_c() -> None:
    """SIGTERM (from `timeout`, systemd, kill) does what Ctrl-C does at that moment."""

    def forward(signum: int, frame: FrameType | None) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signum, frame)
        elif not defer_if_held(signum):
            # SIGINT is ignored when this process was started in the background by a shell
            # (`hearth testnet up &`, nohup): SIGTERM must still stop it, as Ctrl-C would have.
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
    # A launcher holds these while it starts a child (see `held`); the child takes them again.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


_held_depth = 0
_deferred: list[int] = []


def defer_if_held(signum: int) -> bool:
    """For a stop handler: while a ``held`` block runs, note ``signum`` (it is raised again when
    the block ends) and return True. The mask alone does not defer a Python handler: another
    thread (one not holding) takes the signal and the handler still runs in the main thread."""
    if _held_depth:
        _deferred.append(signum)
        return True
    return False


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, so that a started process is always
    recorded before an interrupt can unwind (or so that a cleanup runs to its end)."""
    global _held_depth
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    _held_depth += 1
    try:
        yield
    finally:
        _held_depth -= 1
        if not _held_depth:  # a nested block does not end the outer one's hold
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            if _deferred:
                signum = _deferred[0]
                _deferred.clear()
                signal.raise_signal(signum)
