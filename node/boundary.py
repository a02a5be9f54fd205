"""The failure boundary: an exception in one request, effect or engine step fails that one thing.

Theory of operation
-------------------
The driver runs every request handler, every effect (and the task that awaits it) and every
``engine.step`` inside ``Boundary.guard``. An ``Exception`` raised there ends only the work it
came from: it is logged with its traceback (at most ``LINES_PER_WINDOW_MAX`` lines per kind of
failure per window, then a count), counted, and charged to the peer whose input led to it, when
there is one. Cancellation and ``KeyboardInterrupt`` are ``BaseException``s and pass through, as
does a ``BaseExceptionGroup`` that holds one, so a node still stops when it is told to.

What must never happen: a peer's bytes end the daemon; a handler's failure goes unlogged; a
``trio.Cancelled`` is swallowed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from hearth.node.logs import LogLimiter, log
from hearth.p2p.peers import PeerReputation

PENALTY_HANDLER_FAILED = 25  # as much as a malformed message (PENALTY_POINTS_DEFAULT)


class Boundary:
    def __init__(
        self,
        reputation: PeerReputation,
        now_s: Callable[[], float],
        limiter: LogLimiter | None = None,
    ) -> None:
        self.reputation = reputation
        self.now_s = now_s
        self.limiter = limiter or LogLimiter()
        self.failures = 0

    @contextlib.contextmanager
    def guard(self, what: str, peer: str | None = None) -> Iterator[None]:
        """Run the body; an ``Exception`` from it is logged and penalised, not raised."""
        try:
            yield
        except Exception as exc:
            self.failed(what, peer, exc)

    def failed(self, what: str, peer: str | None, exc: Exception) -> None:
        self.failures += 1
        if peer:
            self.reputation.adjust(peer, -PENALTY_HANDLER_FAILED)
        key = f"{what}:{type(exc).__name__}"
        if self.limiter.allow(key, self.now_s()):
            log(
                "error",
                "handler-failed",
                what=what,
                peer=peer or "",
                error=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
