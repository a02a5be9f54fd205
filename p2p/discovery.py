"""Finding peers: bootstrap dialling with backoff, and a small peer exchange (`/hearth/peers/1`).

Why our own exchange: py-libp2p 0.8.1's Kademlia refreshes its routing table every 600 s, its
random walk rides on that refresh, and its k-buckets cap peers per subnet; gossipsub's peer
exchange only happens on PRUNE, which a mesh smaller than D_hi never sends. None of them turns
"two nodes bootstrap off a third" into a full mesh within seconds. Each round we ask every
connected peer for the peers it is connected to and dial the ones we lack, up to a target.
Wire: the request is an empty frame; the reply one frame of newline-separated multiaddrs, each
ending in /p2p/<peer id>.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final

import multiaddr
import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo, info_from_p2p_addr

from p2p.peers import PeerReputation
from p2p.streams import encode_frame, read_frame
from protocol import limits

logger = logging.getLogger(__name__)

PEER_EXCHANGE_PROTOCOL: Final = "/hearth/peers/1"
PEER_EXCHANGE_BYTES_MAX: Final = 64 * 1024
BOOTSTRAP_BACKOFF_S_MIN: Final = 0.25
_DIALABLE_PROTOCOLS: Final = frozenset({"ip4", "ip6", "tcp", "p2p"})

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
    names = {p.name for p in addr.protocols()}
    return "tcp" in names and names <= _DIALABLE_PROTOCOLS


def transport_addr(addr: multiaddr.Multiaddr) -> str:
    """The address without its /p2p/ part (py-libp2p's peerstore keeps some with it)."""
    return str(addr).split("/p2p/", 1)[0]


def known_addrs(host: IHost, peer: ID) -> list[multiaddr.Multiaddr]:
    try:
        return list(host.get_peerstore().addrs(peer))
    except Exception:  # PeerStoreError: unknown or expired peer
        return []


def exchange_reply(host: IHost, requester: ID) -> bytes:
    """The peers we are connected to, with their listen addresses, for one requester."""
    lines: list[str] = []
    peers = sorted(host.get_connected_peers(), key=str)[: limits.PEER_EXCHANGE_PEERS_MAX]
    for peer in peers:
        if peer == requester:
            continue
        addrs = sorted({transport_addr(a) for a in known_addrs(host, peer) if _is_dialable(a)})
        for addr in addrs[: limits.PEER_EXCHANGE_ADDRS_MAX]:
            lines.append(f"{addr}/p2p/{peer.to_base58()}")
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


async def serve_exchange(host: IHost, stream: INetStream, read_timeout_s: float) -> None:
    """Answer one peer-exchange request; never raises but for cancellation."""
    try:
        with trio.fail_after(read_timeout_s):
            await read_frame(stream, frame_bytes_max=0)
            await stream.write(encode_frame(exchange_reply(host, stream.muxed_conn.peer_id)))
        await stream.close()
    except Exception as error:
        logger.debug("peer exchange with %s failed: %r", stream.muxed_conn.peer_id, error)
        with trio.move_on_after(1):
            try:
                await stream.reset()
            except Exception as reset_error:
                logger.debug("reset failed: %r", reset_error)


async def dial(host: IHost, info: PeerInfo, *, fresh: bool = False) -> bool:
    """Connect within the dial timeout. ``fresh`` skips py-libp2p's negative dial cache.

    The swarm refuses to redial a peer for 60 s after all its addresses failed; bootstrap and
    explicit connects run their own backoff and must not be silenced for a minute by it.
    """
    if fresh:
        unblock = getattr(host.get_network(), "unblock_peer", None)
        if unblock is not None:
            unblock(info.peer_id)
    try:
        with trio.fail_after(limits.DIAL_TIMEOUT_MS / 1000):
            await host.connect(info)
        return True
    except Exception as error:
        logger.debug("dial %s failed: %r", info.peer_id, error)
        return False


async def keep_bootstrap_connected(
    host: IHost, addr: str, check_interval_s: float, on_fail: Callable[[], None]
) -> None:
    """Dial ``addr`` until connected, with capped exponential backoff; re-dial if it drops."""
    info = parse_peer_addr(addr)
    backoff_s = BOOTSTRAP_BACKOFF_S_MIN
    rng = random.Random()
    while True:
        if info.peer_id in host.get_connected_peers() or await dial(host, info, fresh=True):
            backoff_s = BOOTSTRAP_BACKOFF_S_MIN
            await trio.sleep(check_interval_s)
            continue
        on_fail()
        # Jitter spreads the retries of many nodes that lost the same bootstrap node.
        await trio.sleep(backoff_s * rng.uniform(0.5, 1.0))
        backoff_s = min(backoff_s * 2, limits.BOOTSTRAP_BACKOFF_MS_MAX / 1000)


async def run_peer_exchange(
    host: IHost,
    request: RequestFn,
    reputation: PeerReputation,
    interval_s: float,
) -> None:
    """Every ``interval_s``, learn peers from connected peers and dial the ones we lack."""
    while True:
        await exchange_round(host, request, reputation)
        await trio.sleep(interval_s)


async def exchange_round(host: IHost, request: RequestFn, reputation: PeerReputation) -> int:
    """One round; returns how many new peers were dialled successfully."""
    connected = set(host.get_connected_peers())
    if len(connected) >= limits.PEERS_CONNECTED_TARGET:
        return 0
    candidates: dict[ID, PeerInfo] = {}
    for peer in sorted(connected, key=str)[: limits.PEER_EXCHANGE_PEERS_MAX]:
        try:
            reply = await request(peer.to_base58(), PEER_EXCHANGE_PROTOCOL, b"", 2000)
        except Exception as error:
            logger.debug("peer exchange with %s failed: %r", peer, error)
            continue
        for info in parse_exchange_reply(reply):
            if info.peer_id != host.get_id() and info.peer_id not in connected:
                candidates.setdefault(info.peer_id, info)
    dialled = 0
    for info in list(candidates.values())[: limits.PEER_EXCHANGE_DIALS_MAX]:
        if not reputation.is_banned(info.peer_id.to_base58()) and await dial(host, info):
            dialled += 1
    return dialled
