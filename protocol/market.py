"""The market view: the latest valid capacity ad of each peer, until it expires.

I/O: none. Time: ``now_ms`` argument. Bounded by ``limits.MARKET_PEERS_MAX``: when full, an ad
from a new peer is refused until others expire, so a flood of identities cannot evict honest
hosts that are already known.
"""

from __future__ import annotations

import dataclasses

from hearth.protocol import limits
from hearth.protocol.envelope import Envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.identity import PeerId
from hearth.protocol.messages import CapacityAd


@dataclasses.dataclass(frozen=True, slots=True)
class MarketEntry:
    peer_id: PeerId
    ad: CapacityAd
    created_ms: int
    expires_ms: int


class Market:
    def __init__(self, peers_max: int = limits.MARKET_PEERS_MAX) -> None:
        self._peers_max = peers_max
        self._entries: dict[PeerId, MarketEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def on_ad(self, envelope: Envelope, now_ms: int) -> bool:
        """Take a verified envelope holding a ``CapacityAd``; True if it is now that peer's ad."""
        ad = envelope.body
        assert isinstance(ad, CapacityAd), "the engine routes only capacity ads here"
        ad.check()
        peer = envelope.peer_id
        known = self._entries.get(peer)
        if known is not None and known.created_ms >= envelope.created_ms:
            return False  # out of order: an older ad never replaces a newer one
        if known is None and len(self._entries) >= self._peers_max:
            self.expire(now_ms)
            if len(self._entries) >= self._peers_max:
                raise RemoteProtocolError("market full", reason="busy")
        self._entries[peer] = MarketEntry(peer, ad, envelope.created_ms, envelope.expires_ms)
        return True

    def expire(self, now_ms: int) -> None:
        stale = [peer for peer, entry in self._entries.items() if entry.expires_ms <= now_ms]
        for peer in stale:
            del self._entries[peer]

    def get(self, peer: PeerId, now_ms: int) -> MarketEntry | None:
        entry = self._entries.get(peer)
        if entry is None or entry.expires_ms <= now_ms:
            return None
        return entry

    def snapshot(self, now_ms: int) -> list[MarketEntry]:
        """Unexpired entries, sorted by peer ID so that every reader sees one order."""
        return [entry for _, entry in sorted(self._entries.items()) if entry.expires_ms > now_ms]
