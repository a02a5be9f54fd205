"""The swarm's inbound path and connection limits, fixed and put under our connection manager.

Upstream defects fixed here (py-libp2p 0.8.1, `libp2p/network/swarm.py`):

- `Swarm._handle_inbound_connection` takes a slot of `_inbound_limiter` (max_connections -
  min_connections = 250 by default) and, after a successful upgrade, holds it in
  `await self.manager.wait_finished()` until the swarm stops, long after the connection closed.
  After 250 inbound connections in its life a node refuses every new one (issue 12 item 6).
  `handle_inbound` below holds its slot until the connection closes.
- The auto-connector dials any peer in the peerstore (identify fills it with addresses a peer
  claims for itself) whenever the node has fewer than 100 connections, which is always on a
  small network: an unbounded dial source a peer can aim. `disable_auto_connector` turns it off;
  `p2p.discovery` is the one place that dials peers it learnt of.
- Outbound TCP connections leave from the kernel's choice of source address (127.0.0.1 for every
  loopback node) rather than the address the node listens on, so per-IP accounting and
  network-group diversity saw one IP. `SourceBoundTCP` dials from the listen address.

`handle_inbound` leaves out two branches of upstream's handler that we do not use: the
allow/deny-list connection gate (we configure no lists) and pre-multiplexed transports (QUIC,
WebTransport; we listen on TCP only).

Docs: docs/adr/0014-resource-bounds-below-libp2p.md.
"""

from __future__ import annotations

import ipaddress
import logging
import weakref
from collections.abc import Callable
from typing import Any

import trio
from libp2p.abc import IMuxedConn, IRawConnection
from libp2p.io.abc import ReadWriteCloser
from libp2p.network.config import ConnectionConfig
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.rcmgr import Direction
from libp2p.transport.tcp.tcp import TCP
from multiaddr import Multiaddr

from hearth.p2p.connmgr import ConnectionView, InboundGate, choose_trim
from hearth.p2p.notify import carried_by_stream
from hearth.p2p.transport import ConnectionLimits, TransportStatistics

logger = logging.getLogger(__name__)

TRIM_INTERVAL_S = 1.0
PEER_ADDRS_TO_DIAL_MAX = 4
CLOSE_TIMEOUT_S = 2.0


def connection_config(limits: ConnectionLimits) -> ConnectionConfig:
    """Upstream's own limits set so they agree with ours and its pruner never runs first."""
    return ConnectionConfig(
        max_connections=limits.connections_max,
        min_connections=0,
        low_watermark=limits.connections_max,
        high_watermark=limits.connections_max,
        max_connections_per_peer=limits.connections_per_peer_max,
        # A request to a peer we are not connected to dials the addresses it claimed in
        # identify; upstream tries 25 of them.
        max_peer_addrs_to_dial=PEER_ADDRS_TO_DIAL_MAX,
    )


class SourceBoundTCP(TCP):
    """TCP that dials from the node's listen address when it listens on one address."""

    def __init__(self, listen_host: str) -> None:
        super().__init__()
        try:
            unspecified = ipaddress.ip_address(listen_host).is_unspecified
        except ValueError:
            unspecified = True
        self._source = None if unspecified else listen_host

    async def dial(self, maddr: Multiaddr) -> IRawConnection:
        target_v6 = "ip6" in {p.name for p in maddr.protocols()}
        if self._source is None or (":" in self._source) != target_v6:
            return await super().dial(maddr)
        return await self.dial_with_source(maddr, (self._source, 0))


def disable_auto_connector(network: Any) -> None:
    async def never() -> None:
        return None

    network.auto_connector.maybe_connect = never


def _remote_ip(conn: Any) -> str:
    try:
        address = conn.get_remote_address()
    except (AttributeError, OSError):
        return ""
    return str(address[0]) if address else ""


class ConnectionManager:
    """Admits inbound connections, releases their slots on close, trims above high water."""

    def __init__(
        self,
        network: Any,
        limits: ConnectionLimits,
        stats: TransportStatistics,
        score: Callable[[str], int],
        is_banned: Callable[[str], bool],
        protected_peers: frozenset[str],
    ) -> None:
        self._network = network
        self._limits = limits
        self._stats = stats
        self._score = score
        self._is_banned = is_banned
        self._protected = protected_peers
        self.gate = InboundGate(limits)
        # Whether a peer asked us for peers lately (set by the host: its exchange server sees it).
        self.needy: Callable[[str], bool] = lambda peer_id: False
        self._first_seen_s: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def install(self) -> None:
        """Replace the swarm's inbound handler (looked up per connection by the listener)."""
        self._network._handle_inbound_connection = self.handle_inbound

    async def handle_inbound(self, read_write_closer: ReadWriteCloser, maddr: Multiaddr) -> None:
        ip = _remote_ip(read_write_closer)
        if not self.gate.try_admit(ip, self._network.get_total_connections()):
            self._stats.connections_refused += 1
            logger.debug("inbound connection from %s refused: over a connection cap", ip)
            await _close_quietly(read_write_closer)
            return
        try:
            await self._serve_inbound(read_write_closer, maddr)
        finally:
            self.gate.release(ip)

    async def _serve_inbound(self, read_write_closer: ReadWriteCloser, maddr: Multiaddr) -> None:
        raw_conn = RawConnection(read_write_closer, False)
        try:
            muxed = await self._network.upgrade_inbound_raw_conn(raw_conn, maddr)
        except Exception as error:  # a failed handshake: nothing of it stays
            logger.debug("inbound connection from %s failed: %r", maddr, error)
            await _close_quietly(raw_conn)
            return
        peer = muxed.peer_id.to_base58()
        if self._is_banned(peer):
            self._stats.connections_refused += 1
            logger.info("connection from banned peer %s closed", peer)
            await _close_quietly(muxed)
            return
        await _wait_closed(muxed, self._network)

    async def run_trimmer(self) -> None:
        while True:
            await trio.sleep(TRIM_INTERVAL_S)
            await self.trim()

    async def trim(self) -> int:
        """Close what `choose_trim` picks; returns how many connections were closed."""
        now_s = trio.current_time()
        connections = list(self._network.connections.items())
        # Nothing can be above a cap: skip building the views (looking through each
        # connection's layers for a relay cost 3-4 % of an idle node's CPU, every second).
        limits = self._limits
        if (
            len(connections) <= limits.peers_high
            and sum(len(c) for _, c in connections) <= limits.connections_high
            and all(len(c) <= limits.connections_per_peer_max for _, c in connections)
        ):
            return 0
        views, by_key = [], {}
        for peer, conns in connections:
            text = peer.to_base58()
            for conn in conns:
                opened_s = self._first_seen_s.setdefault(conn, now_s)
                view = ConnectionView(
                    key=id(conn),
                    peer_id=text,
                    outbound=getattr(conn, "direction", None) == Direction.OUTBOUND,
                    opened_ms=int(opened_s * 1000),
                    protected=text in self._protected,
                    score=self._score(text),
                    relayed=carried_by_stream(getattr(conn, "muxed_conn", None)),
                    needy=self.needy(text),
                )
                views.append(view)
                by_key[view.key] = conn
        chosen = choose_trim(views, self._limits, int(now_s * 1000))
        for key in chosen:
            self._stats.connections_trimmed += 1
            with trio.move_on_after(CLOSE_TIMEOUT_S):
                await by_key[key].close()
        if chosen:
            logger.info("trimmed %d connections above a watermark", len(chosen))
        return len(chosen)


async def _wait_closed(muxed: IMuxedConn, network: Any) -> None:
    """Until the connection closes (its slot is freed then) or the swarm stops."""
    async with trio.open_nursery() as nursery:

        async def until(wait: Callable[[], Any]) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(until, muxed.event_closed.wait)  # type: ignore[attr-defined]
        nursery.start_soon(until, network.manager.wait_finished)


async def _close_quietly(conn: Any) -> None:
    with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
        scope.shield = True
        try:
            await conn.close()
        except Exception as error:
            logger.debug("close failed: %r", error)
