"""The transport's gate book: scores for what only the transport sees, and the bans it enforces.

The engine's reputation book (protocol/reputation.py) decides about everything a message or a
request says; it bans through ``BanPeer`` (ADR 0021), which lands here as ``ban``. This book is
charged directly only for faults before any message exists, which the engine never sees: bad or
stalled frames, yamux window overruns and stream floods, and a handler that crashed on a peer's
input (node/boundary.py). Gossipsub's own score is deleted when a peer disconnects
(`remove_peer`), so a peer could wash its record by reconnecting; this book is keyed by peer id
alone and outlives connections. I/O: none.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from hearth.protocol import limits

# A peer at or below this score is refused: no streams served, no gossip delivered.
BAN_SCORE: Final = limits.REPUTATION_BAN_SCORE

# Penalties the transport applies for framing faults it can see itself.
PENALTY_BAD_FRAME: Final = -100  # oversize or malformed frame
PENALTY_STALL: Final = -20  # started a frame and stalled past the read timeout


class PeerReputation:
    """Integer scores per peer, clamped to the limits, least recently changed evicted first.

    Eviction keeps memory bounded under churn; an evicted peer restarts at zero. A banned peer is
    kept in preference to a neutral one (it is skipped when choosing whom to evict) so that
    flooding the book with fresh identities does not lift a ban, unless the book holds nothing
    but banned peers.
    """

    def __init__(self, peers_max: int = limits.REPUTATION_PEERS_MAX) -> None:
        if peers_max < 1:
            raise ValueError("peers_max must be at least 1")
        self._peers_max = peers_max
        self._scores: OrderedDict[str, int] = OrderedDict()

    def score(self, peer_id: str) -> int:
        return self._scores.get(peer_id, 0)

    def is_banned(self, peer_id: str) -> bool:
        return self.score(peer_id) <= BAN_SCORE

    def ban(self, peer_id: str) -> None:
        """Refuse ``peer_id`` from now on: the engine's book says so (``BanPeer``)."""
        self.adjust(peer_id, min(0, BAN_SCORE - self.score(peer_id)))
        assert self.is_banned(peer_id)

    def adjust(self, peer_id: str, delta: int) -> int:
        """Add ``delta`` (negative to penalise) and return the new, clamped score."""
        score = self.score(peer_id) + delta
        score = max(limits.REPUTATION_SCORE_MIN, min(limits.REPUTATION_SCORE_MAX, score))
        self._scores[peer_id] = score
        self._scores.move_to_end(peer_id)
        if len(self._scores) > self._peers_max:
            self._evict_one()
        assert len(self._scores) <= self._peers_max
        return score

    def __len__(self) -> int:
        return len(self._scores)

    def snapshot(self) -> dict[str, int]:
        return dict(self._scores)

    def _evict_one(self) -> None:
        for peer_id, score in self._scores.items():
            if score > BAN_SCORE:
                del self._scores[peer_id]
                return
        self._scores.popitem(last=False)
