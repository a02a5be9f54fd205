"""Local, evidence-based reputation of peers, kept by us and retained across reconnects.

I/O: none. gossipsub's own score is deleted when a peer disconnects, so a misbehaving peer could
reset it by reconnecting; this record is keyed by peer ID and outlives connections. It is bounded:
past ``REPUTATION_PEERS_MAX`` the peer with the least evidence either way is forgotten first, so
flooding identities cannot push out what we know of a proven cheater.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hearth.protocol import limits
from hearth.protocol.effects import BanPeer, Penalise
from hearth.protocol.identity import PeerId

RTT_SMOOTHING_DIVISOR = 4  # an integer EWMA: rtt += (sample - rtt) / 4


@dataclasses.dataclass(slots=True)
class PeerRecord:
    score: int = 0
    results_valid: int = 0
    results_invalid: int = 0
    valid_streak: int = 0
    penalties: int = 0
    rtt_ms: int = -1  # -1 until measured

    @property
    def evidence(self) -> int:
        return self.results_valid + self.results_invalid + self.penalties


def bans_for(effects: Sequence[object], reputation: Reputation) -> list[BanPeer]:
    """A ``BanPeer`` for each peer penalised in ``effects`` whose score is now at the ban line."""
    penalised = sorted({e.peer for e in effects if isinstance(e, Penalise)})
    return [
        BanPeer(peer)
        for peer in penalised
        if reputation.get(peer).score <= limits.REPUTATION_BAN_SCORE
    ]


class Reputation:
    def __init__(self, peers_max: int = limits.REPUTATION_PEERS_MAX) -> None:
        self._peers_max = peers_max
        self._records: dict[PeerId, PeerRecord] = {}

    def __len__(self) -> int:
        return len(self._records)

    def get(self, peer: PeerId) -> PeerRecord:
        """The record of ``peer`` (a fresh neutral one, not stored, if we know nothing)."""
        return self._records.get(peer) or PeerRecord()

    def _record(self, peer: PeerId) -> PeerRecord:
        record = self._records.get(peer)
        if record is None:
            if len(self._records) >= self._peers_max:
                self._forget_least_known()
            record = self._records[peer] = PeerRecord()
        return record

    def _forget_least_known(self) -> None:
        victim = min(self._records, key=lambda p: (self._records[p].evidence, p))
        del self._records[victim]

    def penalise(self, peer: PeerId, points: int) -> None:
        assert points >= 0
        record = self._record(peer)
        record.penalties += 1
        record.score = max(limits.REPUTATION_SCORE_MIN, record.score - points)

    def on_result(self, peer: PeerId, *, valid: bool) -> None:
        record = self._record(peer)
        if valid:
            record.results_valid += 1
            record.valid_streak += 1
            record.score = min(limits.REPUTATION_SCORE_MAX, record.score + 1)
        else:
            record.results_invalid += 1
            record.valid_streak = 0
            record.score = max(limits.REPUTATION_SCORE_MIN, record.score - 100)

    def on_rtt(self, peer: PeerId, rtt_ms: int) -> None:
        record = self._record(peer)
        if record.rtt_ms < 0:
            record.rtt_ms = rtt_ms
        else:
            record.rtt_ms += (rtt_ms - record.rtt_ms) // RTT_SMOOTHING_DIVISOR

    def items(self) -> list[tuple[PeerId, PeerRecord]]:
        return sorted(self._records.items())

    def restore(self, peer: PeerId, record: PeerRecord) -> None:
        """Load a persisted record (node/ keeps reputation across restarts)."""
        self._records[peer] = record
