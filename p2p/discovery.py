"""Finding peers: bootstrap dialling with backoff, and a small peer exchange (`/hearth/peers/1`).

Why our own exchange: py-libp2p 0.8.1's Kademlia refreshes its routing table every 600 s, its
random walk rides on that refresh, and its k-buckets cap peers per subnet; gossipsub's peer
exchange only happens on PRUNE, which a mesh smaller than D_hi never sends. None of them turns
"two nodes bootstrap off a third" into a full mesh within seconds. Each round we ask a few
connected peers for the peers they are connected to and dial the ones we lack, up to a target.
Wire: the request is an empty frame; the reply one frame of newline-separated multiaddrs, each
ending in /p2p/<peer id>.

What we pass on and what we dial follows `p2p.dialing` (ADR 0014): only addresses we have seen
work are passed on; what others tell us is dialled within budgets and backoff. Before 0014 a
node dialled whatever a peer named: 132 connections to attacker-chosen addresses in 10 s.
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr
from libp2p.security.pnet.protector import new_protected_conn

from hearth.p2p import addresses
from hearth.p2p.dialing import AddressBook, Hearsay
from hearth.p2p.peers import PeerReputation
from hearth.p2p.streams import encode_frame, read_frame
from hearth.p2p.transport import TransportStatistics
from hearth.protocol import limits

logger = logging.getLogger(__name__)

PEER_EXCHANGE_PROTOCOL: Final = "/hearth/peers/1"
PEER_EXCHANGE_BYTES_MAX: Final = 64 * 1024
# As long as a dial: a busy bootstrap hub on a starved machine answered after more than 2 s, so
# most of its leaves' asks failed and they stayed alone (issue 14: 2179 failed asks in 180 s).
PEER_EXCHANGE_TIMEOUT_MS: Final = limits.DIAL_TIMEOUT_MS
PROBE_ADDRS_PER_PEER_MAX: Final = 2  # listen addresses of one inbound peer we check per round
BOOTSTRAP_BACKOFF_S_MIN: Final = 0.25
# A settled node asks its peers at most this seldom (ADR 0036); a change of peers resets it.
EXCHANGE_INTERVAL_S_MAX: Final = 64.0
# Below this many peers (a gossip mesh's worth, D = 6) a node asks at least this often: the
# peers it knows (a bootstrap hub) go on meeting and verifying others after a quiet round
# (issue 14: at 50 nodes, nodes whose one peer was the hub backed off to 64 s and stayed alone).
EXCHANGE_PEERS_FEW: Final = 6
EXCHANGE_INTERVAL_S_MAX_FEW_PEERS: Final = 8.0
# Peers asked in one round, a random choice among the connected: three replies name up to 96
# peers, more than the round's 8 dials can use. Asking every peer each round cost a node of a
# 50-node start a stream per peer per second while its peers changed (issue 14), and a node
# with three peers or fewer still asks them all, so the one a newcomer depends on is asked.
EXCHANGE_ASKS_PER_ROUND: Final = 3
# Handshakes (probes of inbound peers' addresses, dials of named peers) a round runs at once.
# One at a time, a round lasted as long as the sum of its handshakes: on a starved machine a
# bootstrap hub had checked 24 of its 49 peers after 25 s, and could name only those, and a
# node's 8 dials of a round could take 40 s (issue 14). The budgets are charged before.
EXCHANGE_HANDSHAKES_AT_ONCE: Final = 8
_DIALABLE_PROTOCOLS: Final = frozenset({"ip4", "ip6", "tcp", "p2p"})
_CIRCUIT_PROTOCOLS: Final = ("ip4|ip6", "tcp", "p2p", "p2p-circuit")

# (peer, address) -> connected: a dial through the relay a /p2p-circuit address names.
CircuitDialFn = Callable[[ID, str], Awaitable[bool]]

# (peer id, wire bytes) -> reply bytes; raises on any failure.
RequestFn = Callable[[str, str, bytes, int], Awaitable[bytes]]


def parse_peer_addr(text: str) -> PeerInfo:
    """A multiaddr ending in /p2p/<id> as libp2p's PeerInfo; ValueError if it is not one."""
    try:
        return info_from_p2p_addr(multiaddr.Multiaddr(text))
    except Exception as error:
        raise ValueError(f"not a dialable /p2p/ multiaddr: {text!r}") from error


def peer_id_of(text: str) -> str:
    """The peer id a /p2p/ multiaddr names; ValueError if it is not one."""
    return str(parse_peer_addr(text).peer_id.to_base58())


def _is_dialable(addr: multiaddr.Multiaddr) -> bool:
    names = [p.name for p in addr.protocols()]
    if "p2p-circuit" in names:  # <relay ip>/tcp/<port>/p2p/<relay>/p2p-circuit, nothing else
        return len(names) == 4 and all(
            n in allowed.split("|") for n, allowed in zip(names, _CIRCUIT_PROTOCOLS, strict=True)
        )
    return "tcp" in names and set(names) <= _DIALABLE_PROTOCOLS


def transport_addr(addr: multiaddr.Multiaddr) -> str:
    """The address without its /p2p/ part (py-libp2p's peerstore keeps some with it)."""
    return str(addr).split("/p2p/", 1)[0]


def known_addrs(host: IHost, peer: ID) -> list[multiaddr.Multiaddr]:
    try:
        return list(host.get_peerstore().addrs(peer))
    except Exception:  # PeerStoreError: unknown or expired peer
        return []


def ip_of(addr: multiaddr.Multiaddr | str) -> str:
    """The IP of a /ip4/ or /ip6/ multiaddr ("" if it has none)."""
    parts = str(addr).split("/")
    return parts[2] if len(parts) > 2 and parts[1] in ("ip4", "ip6") else ""


def exchange_reply(
    host: IHost,
    book: AddressBook,
    requester: ID,
    requester_ip: str = "",
    relayed_by_us: Callable[[ID], bool] = lambda peer: False,
) -> bytes:
    """Connected peers at addresses we have seen work and the requester could reach (ADR 0035).

    A peer that holds a relay reservation with us is also given as a circuit address through
    us, at our own address the requester can reach: we vouch for that path ourselves.
    """
    lines: list[str] = []
    own = [transport_addr(a) for a in host.get_addrs() if not addresses.is_circuit(str(a))]
    via_us = addresses.shareable(own, requester_ip)[:1]
    relay = f"/p2p/{host.get_id().to_base58()}{addresses.CIRCUIT}"
    # A random choice among the peers we can vouch for, different for each request: a hub with
    # more peers than one reply holds named the same first ones (by id) to everyone, so the
    # others were never met (issue 14).
    offered: list[tuple[str, list[str]]] = []
    for peer in host.get_connected_peers():
        if peer == requester:
            continue
        text = peer.to_base58()
        direct = addresses.shareable(book.verified(text), requester_ip)
        circuits = [f"{a}{relay}" for a in via_us] if relayed_by_us(peer) else []
        if direct or circuits:
            offered.append((text, [*direct, *circuits][: limits.PEER_EXCHANGE_ADDRS_MAX]))
    for text, addrs in random.sample(offered, min(len(offered), limits.PEER_EXCHANGE_PEERS_MAX)):
        lines.extend(f"{addr}/p2p/{text}" for addr in addrs)
    return "\n".join(lines).encode()


def parse_exchange_reply(data: bytes) -> list[PeerInfo]:
    """Peers from a reply; lines that are not dialable /p2p/ multiaddrs are skipped."""
    found: dict[ID, PeerInfo] = {}
    lines = data.decode("utf-8", errors="replace").splitlines()
    for line in lines[: limits.PEER_EXCHANGE_PEERS_MAX * limits.PEER_EXCHANGE_ADDRS_MAX]:
        try:
            info = parse_peer_addr(line.strip())
        except ValueError:
            continue
        if not all(_is_dialable(a) for a in info.addrs):
            continue
        known = found.get(info.peer_id)
        addrs = [*known.addrs, *info.addrs] if known else list(info.addrs)
        found[info.peer_id] = PeerInfo(info.peer_id, addrs)
    return list(found.values())


async def serve_exchange(
    host: IHost,
    book: AddressBook,
    stream: INetStream,
    read_timeout_s: float,
    requester_ip: str = "",
    relayed_by_us: Callable[[ID], bool] = lambda peer: False,
) -> None:
    """Answer one peer-exchange request; never raises but for cancellation."""
    try:
        with trio.fail_after(read_timeout_s):
            await read_frame(stream, frame_bytes_max=0)
            reply = exchange_reply(
                host, book, stream.muxed_conn.peer_id, requester_ip, relayed_by_us
            )
            await stream.write(encode_frame(reply))
        await stream.close()
    except Exception as error:
        logger.debug("peer exchange with %s failed: %r", stream.muxed_conn.peer_id, error)
        with trio.move_on_after(1):
            try:
                await stream.reset()
            except Exception as reset_error:
                logger.debug("reset failed: %r", reset_error)


async def dial(host: IHost, info: PeerInfo, *, fresh: bool = False) -> bool:
    """Connect to ``info``'s first address only, within the dial timeout.

    One address: `host.connect` would also try every address the peerstore holds for the peer,
    which includes what the peer claimed for itself in identify. ``fresh`` skips py-libp2p's
    negative dial cache (60 s after a peer's addresses all failed); bootstrap and explicit
    connects run their own backoff and must not be silenced for a minute by it.
    """
    network: Any = host.get_network()
    if fresh:
        network.unblock_peer(info.peer_id)
    try:
        with trio.fail_after(limits.DIAL_TIMEOUT_MS / 1000):
            await network.dial_addr(info.addrs[0], info.peer_id)
        return True
    except Exception as error:
        logger.debug("dial %s failed: %r", info.peer_id, error)
        return False


async def probe(host: IHost, peer: ID, addr: multiaddr.Multiaddr) -> bool:
    """Whether ``peer`` answers at ``addr``: a TCP connection and a Noise handshake, then hang up.

    We are usually connected to the peer already (it dialled us), so `host.connect` would prove
    nothing: it reuses the connection.
    """
    network: Any = host.get_network()
    try:
        with trio.fail_after(limits.DIAL_TIMEOUT_MS / 1000):
            raw = await network.transport_manager.transport_for_dialing(addr).dial(addr)
            if network.psk is not None:
                raw = new_protected_conn(raw, network.psk)
            try:
                secured = await network.upgrader.upgrade_security(raw, True, peer)
            finally:
                await raw.close()
        await secured.close()
        return True
    except Exception as error:
        logger.debug("probe of %s at %s failed: %r", peer, addr, error)
        return False


async def keep_bootstrap_connected(
    host: IHost,
    book: AddressBook,
    addr: str,
    check_interval_s: float,
    on_fail: Callable[[], None],
    on_dial: Callable[[], None] = lambda: None,
) -> None:
    """Dial ``addr`` until connected, with capped exponential backoff; re-dial if it drops
    while we have fewer than `EXCHANGE_PEERS_FEW` other peers.

    A node with enough peers leaves a lost bootstrap node alone: a hub sheds the peers that
    dialled it once they have others (p2p/connmgr.py), and redialling at once undid that
    (issue 14). The peer exchange fills a node's peers from the others."""
    info = parse_peer_addr(addr)
    backoff_s = BOOTSTRAP_BACKOFF_S_MIN
    rng = random.Random()
    while True:
        connected = host.get_connected_peers()
        if info.peer_id in connected or len(connected) >= EXCHANGE_PEERS_FEW:
            await trio.sleep(check_interval_s)
            continue
        on_dial()
        if await dial(host, info, fresh=True):
            book.record_working(info.peer_id.to_base58(), transport_addr(info.addrs[0]))
            backoff_s = BOOTSTRAP_BACKOFF_S_MIN
            continue
        on_fail()
        # Jitter spreads the retries of many nodes that lost the same bootstrap node.
        await trio.sleep(backoff_s * rng.uniform(0.5, 1.0))
        backoff_s = min(backoff_s * 2, limits.BOOTSTRAP_BACKOFF_MS_MAX / 1000)


def _ms() -> int:
    return int(trio.current_time() * 1000)


class ExchangeBackoff:
    """How long to wait before the next exchange round. Pure; ADR 0036.

    Theory of operation. A round that dialled no new peer while the node has peers means the
    network around it is known: the wait doubles, from the base interval up to
    `EXCHANGE_INTERVAL_S_MAX`. Any change of the connected set (a peer lost, or a new one, who
    may know others and whose address needs checking) resets it to the base, and so does a
    round that found someone. Before ADR 0036 every node asked every peer each second, a third
    of an idle node's CPU. A node with fewer than `EXCHANGE_PEERS_FEW` peers waits at most
    `EXCHANGE_INTERVAL_S_MAX_FEW_PEERS`: what its few peers can name grows as they verify others.
    """

    def __init__(self, base_s: float, max_s: float = EXCHANGE_INTERVAL_S_MAX) -> None:
        assert 0 < base_s <= max_s
        self.base_s = base_s
        self.max_s = max_s
        self.interval_s = base_s
        self._peers: frozenset[str] = frozenset()

    def after_round(self, peers: frozenset[str], dialled: int) -> float:
        """The wait after a round that dialled ``dialled`` new peers, ``peers`` now connected."""
        if dialled or not peers or peers != self._peers:
            self.interval_s = self.base_s
        else:
            few = len(peers) < EXCHANGE_PEERS_FEW
            cap_s = min(self.max_s, EXCHANGE_INTERVAL_S_MAX_FEW_PEERS) if few else self.max_s
            self.interval_s = max(self.base_s, min(self.interval_s * 2, cap_s))
        self._peers = peers
        return self.interval_s

    def changed(self, peers: frozenset[str]) -> bool:
        """Whether the connected set moved since the last round (then: reset and ask now)."""
        return peers != self._peers


class PeerExchange:
    """Rounds of peer exchange: verify inbound peers' addresses, ask peers, dial within budget."""

    def __init__(
        self,
        host: IHost,
        request: RequestFn,
        reputation: PeerReputation,
        stats: TransportStatistics,
        book: AddressBook,
        remote_ip: Callable[[ID], str],
        own_ip: str = "",
        dial_circuit: CircuitDialFn | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._rng = rng or random.Random()
        self._own_ip = own_ip
        self._claims_penalised: OrderedDict[str, None] = OrderedDict()  # once per peer
        self._dial_circuit = dial_circuit
        self._host = host
        self._request = request
        self._reputation = reputation
        self._stats = stats
        self._book = book
        self._remote_ip = remote_ip
        self.backoff: ExchangeBackoff | None = None  # set by `run`

    async def run(self, interval_s: float) -> None:
        """Rounds, ``interval_s`` apart while peers change, further apart once they do not."""
        self.backoff = ExchangeBackoff(interval_s, max(interval_s, EXCHANGE_INTERVAL_S_MAX))
        while True:
            dialled = await self.round()
            wait_s = self.backoff.after_round(self._peer_ids(), dialled)
            waited_s = 0.0
            # Checking the connected set costs nothing on the wire; asking every peer does.
            while waited_s < wait_s and not self.backoff.changed(self._peer_ids()):
                await trio.sleep(min(interval_s, wait_s - waited_s))
                waited_s += interval_s

    def _peer_ids(self) -> frozenset[str]:
        return frozenset(p.to_base58() for p in self._host.get_connected_peers())

    async def round(self) -> int:
        """Verify, ask, dial; returns how many new peers were dialled successfully."""
        self._stats.exchange_rounds += 1
        connected = set(self._host.get_connected_peers())
        await self._verify_inbound(connected)
        if len(connected) >= limits.PEERS_CONNECTED_TARGET:
            return 0
        candidates = await self._ask(connected)
        return await self._dial(candidates, connected)

    async def _verify_inbound(self, connected: set[ID]) -> None:
        """Probe connected peers' own listen addresses, on the IP their connection comes from."""
        # The unverified first: a hub with more peers than one round checks gets to them all.
        unverified = [
            p for p in sorted(connected, key=str) if not self._book.verified(p.to_base58())
        ]
        checks: list[tuple[str, str, list[str]]] = []  # (peer, its IP, addresses to try)
        for peer in unverified[: limits.PEER_EXCHANGE_PEERS_MAX]:
            text = peer.to_base58()
            ip = self._remote_ip(peer)
            if not ip:
                continue
            claimed = [a for a in known_addrs(self._host, peer) if _is_dialable(a)]
            foreign = [a for a in claimed if addresses.claims_foreign_public(str(a), ip)]
            if foreign and text not in self._claims_penalised:  # someone else's public IP
                self._claims_penalised[text] = None
                while len(self._claims_penalised) > limits.REPUTATION_PEERS_MAX:
                    self._claims_penalised.popitem(last=False)
                self._penalise(text, 1)
            own = sorted({transport_addr(a) for a in claimed if ip_of(a) == ip})
            checks.append((text, ip, own[:PROBE_ADDRS_PER_PEER_MAX]))
        await _at_most(EXCHANGE_HANDSHAKES_AT_ONCE, [partial(self._check, *c) for c in checks])

    async def _check(self, peer_id: str, ip: str, addrs: list[str]) -> None:
        for addr in addrs:
            if not self._book.may_probe(ip, addr, _ms()):
                continue
            if await probe(self._host, ID.from_base58(peer_id), multiaddr.Multiaddr(addr)):
                self._book.record_working(peer_id, addr)
                return
            self._book.record_failed(addr, _ms())

    async def _ask(self, connected: set[ID]) -> list[Hearsay]:
        peers = sorted(connected, key=str)
        asked = self._rng.sample(peers, min(len(peers), EXCHANGE_ASKS_PER_ROUND))
        found: dict[tuple[str, str], Hearsay] = {}
        await _at_most(len(asked), [partial(self._ask_one, p, connected, found) for p in asked])
        return list(found.values())

    async def _ask_one(
        self, peer: ID, connected: set[ID], found: dict[tuple[str, str], Hearsay]
    ) -> None:
        own = self._host.get_id()
        source = peer.to_base58()
        try:
            reply = await self._request(
                source, PEER_EXCHANGE_PROTOCOL, b"", PEER_EXCHANGE_TIMEOUT_MS
            )
        except Exception as error:
            self._stats.exchange_asks_failed += 1
            logger.debug("peer exchange with %s failed: %r", peer, error)
            return
        foreign = 0
        for info in parse_exchange_reply(reply):
            if info.peer_id == own or info.peer_id in connected:
                continue
            for addr in info.addrs:
                text = str(addr) if addresses.is_circuit(str(addr)) else transport_addr(addr)
                if not self._may_reach(text):
                    foreign += 1  # a private/loopback address outside its network
                    continue
                key = (info.peer_id.to_base58(), text)
                hearsay = Hearsay(key[0], text, ip_of(text), source, self._remote_ip(peer))
                found.setdefault(key, hearsay)
        if foreign:  # once per reply: a stale or misconfigured peer is not banned at once
            self._stats.foreign_addrs += foreign - 1
            self._penalise(source, 1)

    def _may_reach(self, addr: str) -> bool:
        if addresses.scope_of(self._own_ip) is addresses.Scope.UNUSABLE:
            return True  # we listen on every interface: we cannot judge by our own IP
        return addresses.reachable_from(addr, self._own_ip)

    async def _dial(self, candidates: list[Hearsay], connected: set[ID]) -> int:
        """Dial, within the budgets, up to `limits.PEER_EXCHANGE_DIALS_MAX` of the candidates;
        returns how many connected. The budgets are charged before any dial starts."""
        chosen: list[Hearsay] = []
        tried: set[str] = set()
        for hearsay in candidates:
            if len(chosen) >= limits.PEER_EXCHANGE_DIALS_MAX:
                break
            peer = ID.from_base58(hearsay.peer_id)
            if hearsay.peer_id in tried or peer in self._host.get_connected_peers():
                continue
            if self._reputation.is_banned(hearsay.peer_id) or not _is_routable(hearsay):
                continue
            if not self._book.may_dial(hearsay, _ms()):
                self._stats.exchange_dials_refused += 1
                continue
            tried.add(hearsay.peer_id)
            chosen.append(hearsay)
        outcomes: list[bool] = []
        await _at_most(
            EXCHANGE_HANDSHAKES_AT_ONCE, [partial(self._dial_one, h, outcomes) for h in chosen]
        )
        return sum(outcomes)

    async def _dial_one(self, hearsay: Hearsay, outcomes: list[bool]) -> None:
        self._stats.exchange_dials += 1
        peer = ID.from_base58(hearsay.peer_id)
        if addresses.is_circuit(hearsay.addr):
            ok = self._dial_circuit is not None and await self._dial_circuit(peer, hearsay.addr)
        else:
            ok = await dial(self._host, PeerInfo(peer, [multiaddr.Multiaddr(hearsay.addr)]))
        if ok and not addresses.is_circuit(hearsay.addr):
            self._book.record_working(hearsay.peer_id, hearsay.addr)
        if not ok:
            self._book.record_failed(hearsay.addr, _ms())
        outcomes.append(ok)

    def _penalise(self, peer_id: str, count: int) -> None:
        self._stats.foreign_addrs += count
        self._reputation.adjust(peer_id, addresses.PENALTY_FOREIGN_ADDR * count)


async def _at_most(at_once: int, calls: list[Callable[[], Awaitable[None]]]) -> None:
    """Run ``calls`` concurrently, ``at_once`` at a time; returns when all have ended."""
    limiter = trio.CapacityLimiter(max(1, at_once))

    async def limited(call: Callable[[], Awaitable[None]]) -> None:
        async with limiter:
            await call()

    async with trio.open_nursery() as nursery:
        for call in calls:
            nursery.start_soon(limited, call)


def _is_routable(hearsay: Hearsay) -> bool:
    """Not an unspecified or multicast address: nobody listens there."""
    try:
        ip = ipaddress.ip_address(hearsay.target_ip)
    except ValueError:
        return False
    return not (ip.is_unspecified or ip.is_multicast)
