"""Which learnt addresses we may dial, and which we may pass on: the peer exchange's rules.

Pure: `p2p.discovery` asks and reports; time arrives as ``now_ms``.

Theory of operation. An address is *verified* when a connection to that peer at that address
succeeded (our own dial, or a handshake probe of an inbound peer's listen address on the IP its
connection comes from). Only verified addresses are passed on in exchange replies. Any address
a peer tells us of is hearsay: we dial it only within budgets, token buckets that refill slowly,
per telling peer, per telling peer's IP and per target IP, and never an address in backoff
after it failed (30 s, doubling to an hour). So a hostile peer that names hundreds of
addresses, or many identities on one IP that do, costs a bounded number of dials, and a
victim's IP receives a bounded number of them, whoever names it. Every table is bounded, least
recently used first out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

VERIFIED_PEERS_MAX: Final = 4096
VERIFIED_ADDRS_PER_PEER_MAX: Final = 4
BACKOFF_ADDRS_MAX: Final = 16_384
BUCKETS_MAX: Final = 16_384

ADDR_BACKOFF_MS_MIN: Final = 30_000
ADDR_BACKOFF_MS_MAX: Final = 3_600_000

# (burst, ms per token): dials of hearsay addresses.
DIALS_PER_SOURCE_PEER: Final = (4, 30_000)
DIALS_PER_SOURCE_IP: Final = (8, 15_000)
DIALS_PER_TARGET_IP: Final = (4, 30_000)


@dataclass
class _Bucket:
    tokens_milli: int  # thousandths of a token, so refill stays integral
    updated_ms: int


class TokenBuckets:
    """A token bucket per key, bounded in number (a forgotten key starts full again)."""

    def __init__(self, burst: int, refill_ms: int, keys_max: int = BUCKETS_MAX) -> None:
        self._burst_milli = burst * 1000
        self._refill_ms = refill_ms
        self._keys_max = keys_max
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def available(self, key: str, now_ms: int) -> bool:
        return self._refilled(key, now_ms).tokens_milli >= 1000

    def take(self, key: str, now_ms: int) -> None:
        bucket = self._refilled(key, now_ms)
        assert bucket.tokens_milli >= 1000, "take without available"
        bucket.tokens_milli -= 1000

    def _refilled(self, key: str, now_ms: int) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self._burst_milli, now_ms)
            self._buckets[key] = bucket
            if len(self._buckets) > self._keys_max:
                self._buckets.popitem(last=False)
        self._buckets.move_to_end(key)
        elapsed_ms = max(0, now_ms - bucket.updated_ms)
        gained = elapsed_ms * 1000 // self._refill_ms
        bucket.tokens_milli = min(self._burst_milli, bucket.tokens_milli + gained)
        bucket.updated_ms = now_ms
        return bucket


@dataclass(frozen=True)
class Hearsay:
    """An address a peer told us of, and who told us."""

    peer_id: str
    addr: str  # transport address, host:port form of a multiaddr without /p2p/
    target_ip: str
    source_peer: str
    source_ip: str


class AddressBook:
    """Verified addresses to pass on; budgets and backoff for dialling the rest."""

    def __init__(self) -> None:
        self._verified: OrderedDict[str, OrderedDict[str, None]] = OrderedDict()
        self._backoff: OrderedDict[str, tuple[int, int]] = OrderedDict()  # addr -> (fails, until)
        self._per_source = TokenBuckets(*DIALS_PER_SOURCE_PEER)
        self._per_source_ip = TokenBuckets(*DIALS_PER_SOURCE_IP)
        self._per_target_ip = TokenBuckets(*DIALS_PER_TARGET_IP)
        # Told of every address seen working: the peer store keeps them on disk (ADR 0036).
        self.on_working: Callable[[str, str], None] | None = None

    def record_working(self, peer_id: str, addr: str) -> None:
        addrs = self._verified.setdefault(peer_id, OrderedDict())
        addrs[addr] = None
        addrs.move_to_end(addr)
        while len(addrs) > VERIFIED_ADDRS_PER_PEER_MAX:
            addrs.popitem(last=False)
        self._verified.move_to_end(peer_id)
        while len(self._verified) > VERIFIED_PEERS_MAX:
            self._verified.popitem(last=False)
        self._backoff.pop(addr, None)
        if self.on_working is not None:
            self.on_working(peer_id, addr)

    def record_failed(self, addr: str, now_ms: int) -> None:
        fails = self._backoff.get(addr, (0, 0))[0] + 1
        wait_ms = min(ADDR_BACKOFF_MS_MIN << min(fails - 1, 16), ADDR_BACKOFF_MS_MAX)
        self._backoff[addr] = (fails, now_ms + wait_ms)
        self._backoff.move_to_end(addr)
        while len(self._backoff) > BACKOFF_ADDRS_MAX:
            self._backoff.popitem(last=False)

    def verified(self, peer_id: str) -> list[str]:
        return list(self._verified.get(peer_id, ()))

    def in_backoff(self, addr: str, now_ms: int) -> bool:
        return self._backoff.get(addr, (0, 0))[1] > now_ms

    def may_probe(self, target_ip: str, addr: str, now_ms: int) -> bool:
        """A handshake probe of an inbound peer's own address: target budget and backoff only."""
        if self.in_backoff(addr, now_ms) or not self._per_target_ip.available(target_ip, now_ms):
            return False
        self._per_target_ip.take(target_ip, now_ms)
        return True

    def may_dial(self, hearsay: Hearsay, now_ms: int) -> bool:
        """Whether to dial ``hearsay`` now; if so, its budgets are charged."""
        if self.in_backoff(hearsay.addr, now_ms):
            return False
        checks = (
            (self._per_source, hearsay.source_peer),
            (self._per_source_ip, hearsay.source_ip),
            (self._per_target_ip, hearsay.target_ip),
        )
        if not all(buckets.available(key, now_ms) for buckets, key in checks):
            return False
        for buckets, key in checks:
            buckets.take(key, now_ms)
        return True
