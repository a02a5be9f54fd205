"""Market anti-entropy (`/hearth/market/1`, ADR 0039): ask one peer for the capacity ads it holds.

Gossip alone left markets to luck at 50 nodes on one machine (issue 14): a node outside every
busy peer's mesh, or one that missed an ad while it was starved, waited for the author's next
ad, and lost it again the same way. Here each node keeps the newest signed ad of each author as
it passed the gossip validator (`AdCache`), and now and then asks one connected peer for all of
its unexpired ones. Each ad that comes back is checked by the same edge check as a gossiped one
(signature, expiry, replay, refused authors) before the node sees it, and a refusal the peer is
to blame for is charged to it as for gossip it forwarded.

Wire: the request is one empty frame; the reply one frame holding the ads, each as a varint
length and the envelope's bytes exactly as they were gossiped. At most
`MARKET_SYNC_ADS_MAX` ads and `MARKET_SYNC_REPLY_BYTES_MAX` bytes; a server that holds more
sends a random choice, so that two askers get different ones.

Timing (`SyncBackoff`): the first ask `MARKET_SYNC_FIRST_S` after the node has a peer in the
topic, then every `MARKET_SYNC_INTERVAL_S_MIN` while asks bring ads the node lacked or new
peers join the topic, doubling to `MARKET_SYNC_INTERVAL_S_MAX` while neither happens; after a
failed ask another peer is asked within `MARKET_SYNC_RETRY_S`, a few times in a row; a server
answers a peer at most `MARKET_SYNC_SERVE_BURST` times, then once per
`MARKET_SYNC_SERVE_REFILL_MS`.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

import trio
from libp2p.abc import INetStream

from hearth.p2p.dialing import TokenBuckets
from hearth.p2p.peers import PeerReputation
from hearth.p2p.streams import _close_quietly, encode_frame, encode_varint, read_frame
from hearth.p2p.transport import EdgeCheck, Inbound, TransportStatistics
from hearth.protocol import limits
from hearth.protocol.codec import decode_as
from hearth.protocol.envelope import EnvelopeWire, SignedWire
from hearth.protocol.errors import DecodeError, RemoteProtocolError
from hearth.protocol.identity import PUBLIC_KEY_BYTES, peer_id_from_public_key
from hearth.protocol.inbound import Verdict

logger = logging.getLogger(__name__)

MARKET_SYNC_PROTOCOL: Final = "/hearth/market/1"
# One reply: a 50-node market is ~25 KiB of ads (~0.5 KiB each); 512 ads cover a network ten
# times that, and a server with more sends a random choice.
MARKET_SYNC_ADS_MAX: Final = 512
MARKET_SYNC_REPLY_BYTES_MAX: Final = 512 * 1024
# Authors whose newest ad we keep for others; the least recently refreshed is forgotten beyond.
AD_CACHE_AUTHORS_MAX: Final = 4096
# A busy peer's reply may take a while, and a late one is still worth having.
MARKET_SYNC_TIMEOUT_MS: Final = limits.STREAM_READ_TIMEOUT_MS
# A newcomer asks soon after it meets its first peer (its market is empty until then); a node
# whose asks bring ads it lacked asks again within one ad interval, a settled one once a minute.
MARKET_SYNC_FIRST_S: Final = 2.0
MARKET_SYNC_INTERVAL_S_MIN: Final = 15.0
MARKET_SYNC_INTERVAL_S_MAX: Final = 60.0
# A failed ask (the peer busy, or its stream refused) is retried soon with another peer, a few
# times in a row, before the normal wait: a node linked only to a saturated bootstrap once waited
# 15 s after each failure and listed 9 of 49 hosts 40 s after a 50-node start (issue 14).
MARKET_SYNC_RETRY_S: Final = 2.0
MARKET_SYNC_RETRIES_MAX: Final = 3
# What a server answers one peer: a few asks at once, then one per 10 s (an honest peer asks
# at most every 15 s); beyond it the stream is reset.
MARKET_SYNC_SERVE_BURST: Final = 3
MARKET_SYNC_SERVE_REFILL_MS: Final = 10_000

# (peer id, protocol id, request bytes, timeout ms) -> reply bytes; raises on any failure.
RequestFn = Callable[[str, str, bytes, int], Awaitable[bytes]]


@dataclass(frozen=True, slots=True)
class _Held:
    data: bytes
    created_ms: int
    expires_ms: int


@dataclass(frozen=True, slots=True)
class AdFacts:
    """What an ad's envelope says of itself, read without checking its signature."""

    author: str  # the author's peer id, base58
    created_ms: int
    expires_ms: int


def read_ad(data: bytes) -> AdFacts:
    """The author and times of an envelope; `DecodeError` if it is not one. No signature check:
    it only decides whether an ad is worth checking (the edge check verifies it)."""
    try:
        wire = decode_as(data, EnvelopeWire, bytes_max=limits.GOSSIP_MESSAGE_BYTES_MAX)
        signed = decode_as(wire.signed, SignedWire, bytes_max=limits.GOSSIP_MESSAGE_BYTES_MAX)
    except RemoteProtocolError as error:
        raise DecodeError(f"not an envelope: {error}") from error
    if not isinstance(signed.author, bytes) or len(signed.author) != PUBLIC_KEY_BYTES:
        raise DecodeError("envelope author is not an Ed25519 key")
    if not isinstance(signed.created_ms, int) or not isinstance(signed.expires_ms, int):
        raise DecodeError("envelope times are not integers")
    author = str(peer_id_from_public_key(signed.author))
    return AdFacts(author, signed.created_ms, signed.expires_ms)


class AdCache:
    """The newest ad of each author, as gossip or a sync brought it. Pure; time is ``now_ms``.

    Bounded by ``authors_max``: beyond it the author refreshed longest ago is forgotten. An
    older ad never replaces a newer one (gossip may deliver them out of order).
    """

    def __init__(self, authors_max: int = AD_CACHE_AUTHORS_MAX) -> None:
        self._authors_max = authors_max
        self._held: OrderedDict[str, _Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def put(self, data: bytes, now_ms: int) -> bool:
        """Keep ``data`` if it is an unexpired envelope newer than its author's held one."""
        try:
            facts = read_ad(data)
        except DecodeError:
            return False
        if not self.is_news(facts, now_ms):
            return False
        self._held[facts.author] = _Held(data, facts.created_ms, facts.expires_ms)
        self._held.move_to_end(facts.author)
        while len(self._held) > self._authors_max:
            self._held.popitem(last=False)
        return True

    def is_news(self, facts: AdFacts, now_ms: int) -> bool:
        """Unexpired, and newer than what we hold of its author."""
        if facts.expires_ms <= now_ms:
            return False
        held = self._held.get(facts.author)
        return held is None or held.created_ms < facts.created_ms

    def reply(self, now_ms: int, rng: random.Random) -> bytes:
        """The unexpired ads, within the reply's bounds; a random choice if they do not fit."""
        for author in [a for a, h in self._held.items() if h.expires_ms <= now_ms]:
            del self._held[author]
        held = list(self._held.values())
        if len(held) > MARKET_SYNC_ADS_MAX:
            held = rng.sample(held, MARKET_SYNC_ADS_MAX)
        out = bytearray()
        for item in held:
            piece = encode_varint(len(item.data)) + item.data
            if len(out) + len(piece) > MARKET_SYNC_REPLY_BYTES_MAX:
                continue
            out += piece
        return bytes(out)


def parse_reply(data: bytes) -> list[bytes]:
    """The ads of a reply; `DecodeError` if it breaks the format or its bounds."""
    if len(data) > MARKET_SYNC_REPLY_BYTES_MAX:
        raise DecodeError(f"market reply of {len(data)} bytes")
    ads: list[bytes] = []
    at = 0
    while at < len(data):
        length = shift = 0
        while True:
            if at >= len(data) or shift > 28:
                raise DecodeError("market reply: truncated or overlong length")
            byte = data[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if not 0 < length <= limits.GOSSIP_MESSAGE_BYTES_MAX or at + length > len(data):
            raise DecodeError(f"market reply: an ad of {length} bytes")
        ads.append(data[at : at + length])
        at += length
        if len(ads) > MARKET_SYNC_ADS_MAX:
            raise DecodeError(f"market reply: more than {MARKET_SYNC_ADS_MAX} ads")
    return ads


class SyncBackoff:
    """How long to wait before the next ask. Pure."""

    def __init__(self) -> None:
        self.interval_s = MARKET_SYNC_INTERVAL_S_MIN
        self.failures_in_row = 0

    def after_ask(self, news: int, answered: bool, peers_grew: bool = False) -> float:
        """The wait after an ask that brought ``news`` ads we lacked (``answered`` False: it
        failed; another peer is asked after ``MARKET_SYNC_RETRY_S``, up to
        ``MARKET_SYNC_RETRIES_MAX`` times in a row, then after the short interval).
        ``peers_grew``: peers joined the topic since the ask before, and they may bring hosts we
        have not heard of. A node that started before most of the network asked while there was
        little to get, backed off to a minute, and then filled its market from gossip alone while
        49 nodes joined: the last market of a 50-node start to converge (issue 14)."""
        self.failures_in_row = 0 if answered else self.failures_in_row + 1
        if not answered and self.failures_in_row <= MARKET_SYNC_RETRIES_MAX:
            self.interval_s = MARKET_SYNC_INTERVAL_S_MIN
            return MARKET_SYNC_RETRY_S
        if news or not answered or peers_grew:
            self.interval_s = MARKET_SYNC_INTERVAL_S_MIN
        else:
            self.interval_s = min(self.interval_s * 2, MARKET_SYNC_INTERVAL_S_MAX)
        return self.interval_s


@dataclass
class SyncOutcome:
    offered: int = 0  # ads in the reply
    news: int = 0  # ones we lacked, accepted by the edge check and handed to the node
    refused: bool = False  # the edge check rejected one: the rest of the reply was dropped


class MarketSync:
    """Both sides of `/hearth/market/1` for one topic."""

    def __init__(
        self,
        topic: str,
        request: RequestFn,
        deliver: Callable[[Inbound], bool],
        check: EdgeCheck | None,
        reputation: PeerReputation,
        stats: TransportStatistics,
        rng: random.Random | None = None,
    ) -> None:
        self.topic = topic
        self._reputation = reputation
        self.cache = AdCache()
        self._request = request
        self._deliver = deliver
        self._check = check
        self._stats = stats
        self._rng = rng or random.Random()
        self._serve_budget = TokenBuckets(MARKET_SYNC_SERVE_BURST, MARKET_SYNC_SERVE_REFILL_MS)
        self.backoff = SyncBackoff()

    def seen(self, data: bytes) -> None:
        """An ad of the topic that passed the gossip validator (or our own publication)."""
        self.cache.put(data, _now_ms())

    def take(self, sender: str, ads: list[bytes], now_ms: int) -> SyncOutcome:
        """Hand the node the ads of a reply it lacked, each checked as gossip would be."""
        outcome = SyncOutcome(offered=len(ads))
        if self._reputation.is_banned(sender):
            return outcome
        for data in ads:
            try:
                facts = read_ad(data)
            except DecodeError:
                outcome.refused = True
                break
            if not self.cache.is_news(facts, now_ms) or self._reputation.is_banned(facts.author):
                continue
            verdict = Verdict.ACCEPT
            if self._check is not None:
                verdict = self._check(sender, self.topic, data, gossip=True)
            if verdict is Verdict.REJECT:
                outcome.refused = True
                break
            if verdict is not Verdict.ACCEPT:
                continue
            self.cache.put(data, now_ms)
            verified = self._check is not None
            if self._deliver(Inbound(facts.author, self.topic, data, verified=verified)):
                outcome.news += 1
            else:
                self._stats.inbound_dropped += 1
        return outcome

    async def ask(self, peer: str) -> SyncOutcome | None:
        """One ask; None if the peer did not answer in time or broke the format."""
        self._stats.market_sync_asks += 1
        try:
            reply = await self._request(peer, MARKET_SYNC_PROTOCOL, b"", MARKET_SYNC_TIMEOUT_MS)
            ads = parse_reply(reply)
        except Exception as error:
            self._stats.market_sync_asks_failed += 1
            logger.debug("market sync with %s failed: %r", peer, error)
            return None
        outcome = self.take(peer, ads, _now_ms())
        self._stats.market_sync_ads += outcome.news
        return outcome

    async def run(self, topic_peers: Callable[[], list[str]]) -> None:
        """Ask one random peer of the topic now and then (the module docstring's timing)."""
        wait_s = MARKET_SYNC_FIRST_S
        known: set[str] = set()  # topic peers at the ask before
        failed = ""  # the peer whose ask failed last: a retry goes to another one if there is one
        while True:
            # Jitter keeps nodes started together from asking in step.
            await trio.sleep(wait_s * self._rng.uniform(0.75, 1.25))
            peers = topic_peers()
            if not peers:  # not yet (or no longer) linked to the market: look again soon
                wait_s = MARKET_SYNC_FIRST_S
                continue
            peer = self._rng.choice([p for p in peers if p != failed] or peers)
            outcome = await self.ask(peer)
            failed = peer if outcome is None else ""
            news = 0 if outcome is None else outcome.news
            grew = bool(known) and not known.issuperset(peers)
            wait_s = self.backoff.after_ask(news, outcome is not None, grew)
            known = set(peers)

    async def serve(self, stream: INetStream, peer: str, read_timeout_s: float) -> None:
        """Answer one ask; never raises but for cancellation."""
        try:
            now_ms = _now_ms()
            if not self._serve_budget.available(peer, now_ms):
                self._stats.requests_refused += 1
                await _close_quietly(stream, reset=True)
                return
            self._serve_budget.take(peer, now_ms)
            with trio.fail_after(read_timeout_s):
                await read_frame(stream, frame_bytes_max=0)
                reply = self.cache.reply(now_ms, self._rng)
                await stream.write(encode_frame(reply))
            await stream.close()
        except Exception as error:
            logger.debug("market sync for %s failed: %r", peer, error)
            await _close_quietly(stream, reset=True)


def _now_ms() -> int:
    """Wall-clock ms: ads carry wall-clock expiry times."""
    return int(time.time() * 1000)
