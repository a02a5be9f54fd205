"""Open a py-libp2p host on one address and expose it as a `Transport` (`open_transport`).

The host speaks Noise and Yamux only: py-libp2p's `new_host` also offers plaintext and SECIO by
default, and a peer that proposed plaintext would get an unauthenticated link. With a `psk` the
TCP connection is wrapped in libp2p pnet (XSalsa20 under the shared key) before Noise, so nodes
of another testnet cannot even finish a handshake.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_PROTOCOL
from libp2p.network.config import RetryConfig
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.exceptions import MuxedStreamError
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL
from libp2p.stream_muxer.yamux.yamux import Yamux
from libp2p.tools.anyio_service import background_trio_service

from hearth.p2p import discovery, finder
from hearth.p2p.addresses import is_circuit
from hearth.p2p.connmgr import PeerAsks
from hearth.p2p.dialing import AddressBook
from hearth.p2p.gossip import TopicGate, build_gossip, subscribe_topics
from hearth.p2p.market_sync import MARKET_SYNC_PROTOCOL, MarketSync
from hearth.p2p.notify import ConnectionNotifee, conn_ip
from hearth.p2p.patches import service as service_patch
from hearth.p2p.patches import shutdown as shutdown_patch
from hearth.p2p.patches import swarm as swarm_patch
from hearth.p2p.patches import tcp as tcp_patch
from hearth.p2p.patches import yamux as yamux_patch
from hearth.p2p.peers import PeerReputation
from hearth.p2p.relay import NatService, is_relayed, stream_relayed
from hearth.p2p.streams import StreamServer, check_frame, request_on, send_on
from hearth.p2p.transport import (
    EdgeCheck,
    HostConfig,
    Inbound,
    ListenError,
    PeerEvent,
    PeerStatus,
    PeerUnreachableError,
    TransportError,
    TransportStatistics,
)
from hearth.p2p.wire import WIRE_PROTOCOL, WireSender, WireServer, wire_handler
from hearth.protocol import limits
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.messages import TOPIC_CAPACITY

logger = logging.getLogger(__name__)

PING_BYTES = 32  # the libp2p ping protocol's fixed payload
# A peer that asked us for peers within three of its few-peer intervals may depend on us: the
# trimmer keeps it (p2p/connmgr.py, issue 14).
PEER_ASK_NEEDY_MS = int(3 * discovery.EXCHANGE_INTERVAL_S_MAX_FEW_PEERS * 1000)


def _listen_multiaddr(config: HostConfig) -> multiaddr.Multiaddr:
    family = "ip6" if ":" in config.listen_host else "ip4"
    return multiaddr.Multiaddr(f"/{family}/{config.listen_host}/tcp/{config.port}")


class _Advertised:
    """identify's address list: the NAT service's choice (ADR 0035) once it exists.

    Installed over the host's `get_addrs`: upstream's `addrs_factory` path strips the first
    /p2p/ part of every address and so turns ``<relay>/p2p/<relay id>/p2p-circuit`` into a
    direct address of ours at the relay's IP.
    """

    def __init__(self) -> None:
        self.nat: NatService | None = None

    def install(self, host: IHost) -> None:
        upstream = host.get_addrs

        def get_addrs() -> list[multiaddr.Multiaddr]:
            if self.nat is None:
                return upstream()
            me = f"/p2p/{host.get_id().to_base58()}"
            return [multiaddr.Multiaddr(a + me) for a in self.nat.advertised()]

        host.get_addrs = get_addrs  # type: ignore[method-assign]


def _new_libp2p_host(config: HostConfig) -> IHost:
    tcp_patch.install()
    shutdown_patch.install()
    service_patch.install()
    key_pair = create_new_key_pair(config.seed)
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=key_pair,
        sec_opt={TProtocol(NOISE_PROTOCOL): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL): Yamux},
        listen_addrs=[_listen_multiaddr(config)],
        psk=config.psk.hex() if config.psk is not None else None,
        transports=[swarm_patch.SourceBoundTCP(config.listen_host)],
        connection_config=swarm_patch.connection_config(config.connection_limits),
    )


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


def _to_id(peer_id: str) -> ID:
    try:
        return ID.from_base58(peer_id)
    except Exception as error:
        raise ValueError(f"not a peer id: {peer_id!r}") from error


class Libp2pTransport:
    """The `Transport` over a running py-libp2p host. Made by `open_transport` only."""

    def __init__(
        self,
        host: IHost,
        pubsub: Pubsub,
        config: HostConfig,
        check: EdgeCheck | None = None,
        advertised: _Advertised | None = None,
    ) -> None:
        self.host = host  # exposed for tests and diagnostics; the node uses the methods
        self._pubsub = pubsub
        self._config = config
        self._stats = TransportStatistics()
        self._reputation = PeerReputation()
        self._rtt_ms: dict[str, float] = {}
        self._timeout_s = config.stream_read_timeout_ms / 1000
        self._inbound_send, self._inbound_receive = trio.open_memory_channel[Inbound](
            config.inbound_messages_max
        )
        self._check = check
        self._server = StreamServer(
            self._deliver, self._reputation, self._stats, self._timeout_s, check
        )
        self._book = AddressBook()
        self.finding = finder.Finding()
        self._muxer_guard = self._install_bounds()
        self._wire = WireSender(
            self._open_stream,
            self._send_on_own_stream,
            self._stats,
            self._timeout_s,
            self._reputation.adjust,
        )
        self._notifee = ConnectionNotifee(on_gone=self._wire.peer_gone)
        self.host.get_network().register_notifee(self._notifee)
        self._wire_server = WireServer(
            self._deliver, self._reputation, self._stats, frozenset(config.protocols),
            self._timeout_s, check,
        )  # fmt: skip
        self.nat = NatService(
            host,
            config.relay,
            self._reputation,
            self._probe,
            self._own_transport_addrs,
            config.announce,
        )
        if advertised is not None:
            advertised.nat = self.nat
        # Anti-entropy for the market (ADR 0039), on nodes that take part in it.
        self.market_sync: MarketSync | None = None
        if TOPIC_CAPACITY in config.topics:
            self.market_sync = MarketSync(
                TOPIC_CAPACITY, self.request, self._deliver, check, self._reputation, self._stats
            )

    def _install_bounds(self) -> yamux_patch.MuxerGuard:
        """Put the host under our yamux and connection bounds (ADR 0014), before it listens."""
        network: Any = self.host.get_network()  # the Swarm: its internals are patched here
        limits = self._config.connection_limits
        guard = yamux_patch.MuxerGuard(limits.streams_per_peer_max, self._reputation.adjust)
        yamux_patch.install(network, yamux_patch.bounded_yamux(guard))
        swarm_patch.disable_auto_connector(network)
        # One TCP attempt per dial: our callers budget dials and back off themselves.
        network.retry_config = RetryConfig(max_retries=0)
        self._connections = swarm_patch.ConnectionManager(
            network,
            limits,
            self._stats,
            self._reputation.score,
            self._reputation.is_banned,
            frozenset(discovery.peer_id_of(addr) for addr in self._config.bootstrap),
        )
        self._peer_asks = PeerAsks(PEER_ASK_NEEDY_MS, limits.connections_max)
        self._connections.needy = lambda peer_id: self._peer_asks.needy(peer_id, _now_ms())
        self._connections.install()
        return guard

    @property
    def peer_id(self) -> str:
        return str(self.host.get_id().to_base58())

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        """Where we listen, dialable (``.../p2p/<id>``): what node.json and testnets hand out."""
        return tuple(f"{a}/p2p/{self.peer_id}" for a in self._own_transport_addrs())

    @property
    def advertised_addrs(self) -> tuple[str, ...]:
        """What identify tells peers (ADR 0035): announce, confirmed, listen, relay addresses."""
        return tuple(str(a) for a in self.host.get_addrs())

    def reachability(self) -> dict[str, Any]:
        return self.nat.to_json()

    def _own_transport_addrs(self) -> list[str]:
        return [discovery.transport_addr(a) for a in self.host.get_transport_addrs()]

    async def _probe(self, peer: ID, addr: multiaddr.Multiaddr) -> bool:
        """A dial-back's handshake probe (ADR 0035). One that worked proves the address as the
        peer exchange's own probe would, so it is recorded: a bootstrap node asked for a
        dial-back by every newcomer then does not handshake with each of them a second time
        to vouch for it (issue 14)."""
        ok = await discovery.probe(self.host, peer, addr)
        if ok:
            self._book.record_working(peer.to_base58(), discovery.transport_addr(addr))
        return ok

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Inbound]:
        return self._inbound_receive

    @property
    def peer_events(self) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._notifee.receive

    @property
    def reputation(self) -> PeerReputation:
        return self._reputation

    def statistics(self) -> TransportStatistics:
        self._stats.windows_exceeded = self._muxer_guard.windows_exceeded
        self._stats.streams_refused = self._muxer_guard.streams_refused
        return self._stats

    def topic_peers(self, topic: str) -> list[str]:
        """Peers we would forward ``topic`` to right now (its mesh), sorted."""
        router = self._pubsub.router
        mesh = getattr(router, "mesh", {}).get(topic, set())
        return sorted(str(p.to_base58()) for p in mesh)

    def gossip_state(self, topic: str) -> dict[str, int]:
        """What the router holds for ``topic``, for diagnostics (issue 14): peers subscribed,
        mesh, fanout, peers in a GRAFT backoff, graylisted peers; and the connection counters."""
        router: Any = self._pubsub.router
        subscribed = self._pubsub.peer_topics.get(topic, set())
        now_s = int(time.time())
        backoff = getattr(router, "back_off", {}).get(topic, {})
        scorer = getattr(router, "scorer", None)
        graylisted = 0 if scorer is None else sum(
            1 for p in subscribed if scorer.is_graylisted(p, [topic])
        )  # fmt: skip
        return {
            "connected": len(self.host.get_network().connections),
            "subscribed": len(subscribed),
            "mesh": len(getattr(router, "mesh", {}).get(topic, ())),
            "fanout": len(getattr(router, "fanout", {}).get(topic, ())),
            "backoff": sum(1 for until in backoff.values() if until > now_s),
            "graylisted": graylisted,
            "connections_refused": self._stats.connections_refused,
            "connections_trimmed": self._stats.connections_trimmed,
            "dials_failed": self._stats.dials_failed,
            "bootstrap_dials": self._stats.bootstrap_dials,
            "exchange_dials_refused": self._stats.exchange_dials_refused,
            "exchange_rounds": self._stats.exchange_rounds,
            "exchange_asks_failed": self._stats.exchange_asks_failed,
            "exchange_dials": self._stats.exchange_dials,
            "inbound_dropped": self._stats.inbound_dropped,
            "market_sync_asks": self._stats.market_sync_asks,
            "market_sync_asks_failed": self._stats.market_sync_asks_failed,
            "market_sync_ads": self._stats.market_sync_ads,
            "verified": sum(
                1 for p in self.host.get_connected_peers() if self._book.verified(p.to_base58())
            ),  # connected peers at an address we saw work: what our peer exchange passes on
        }

    async def start(self, nursery: trio.Nursery) -> None:
        for protocol_id in self._config.protocols:
            self.host.set_stream_handler(TProtocol(protocol_id), self._make_handler(protocol_id))
        self.host.set_stream_handler(
            TProtocol(discovery.PEER_EXCHANGE_PROTOCOL), self._serve_exchange
        )
        self.host.set_stream_handler(
            TProtocol(WIRE_PROTOCOL), wire_handler(self._wire_server, conn_ip)
        )
        nursery.start_soon(self._connections.run_trimmer)
        nursery.start_soon(self._wire.run_idle_closer)
        gate = TopicGate(self._reputation, self._stats, self._check)
        await subscribe_topics(
            self._pubsub, self._config.topics, gate, self._deliver, self._stats, nursery,
            self._seen_gossip,
        )  # fmt: skip
        if self.market_sync is not None:
            self.host.set_stream_handler(TProtocol(MARKET_SYNC_PROTOCOL), self._serve_market)
            nursery.start_soon(self.market_sync.run, self._market_peers)
        for addr in self._config.bootstrap:
            nursery.start_soon(
                discovery.keep_bootstrap_connected,
                self.host,
                self._book,
                addr,
                self._config.discovery_interval_s,
                self._count_failed_dial,
                self._count_bootstrap_dial,
            )
        exchange = discovery.PeerExchange(
            self.host,
            self.request,
            self._reputation,
            self._stats,
            self._book,
            self._remote_ip,
            own_ip=self._config.listen_host,
            dial_circuit=self._dial_circuit,
        )
        self.exchange = exchange
        nursery.start_soon(exchange.run, self._config.discovery_interval_s)
        own_ips = (self._config.listen_host,)
        self.finding = await finder.start_finding(
            nursery, self.host, self._book, self._config.discovery, own_ips, self._config.psk
        )
        nursery.start_soon(self.nat.run, self._config.upnp)

    def close_inbound(self) -> None:
        """End the node's `async for` over `inbound`; later items are dropped and counted."""
        self._inbound_send.close()
        self._notifee.close()

    async def publish(self, topic: str, data: bytes) -> None:
        if len(data) > limits.GOSSIP_MESSAGE_BYTES_MAX:
            raise LocalProtocolError(f"gossip message of {len(data)} bytes exceeds the cap")
        await self._pubsub.publish(topic, data)

    async def request(self, peer_id: str, protocol_id: str, data: bytes, timeout_ms: int) -> bytes:
        check_frame(data)
        deadline_s = trio.current_time() + timeout_ms / 1000
        with trio.move_on_at(deadline_s) as scope:
            stream = await self._open_stream(peer_id, protocol_id)
        if scope.cancelled_caught:
            raise PeerUnreachableError(f"no stream to {peer_id} within {timeout_ms} ms")
        return await request_on(stream, data, max(deadline_s - trio.current_time(), 0.001))

    async def send(self, peer_id: str, protocol_id: str, data: bytes) -> None:
        """One way, on the peer's long-lived stream (ADR 0038); older peers get one per message."""
        await self._wire.send(peer_id, protocol_id, data)

    async def _send_on_own_stream(self, peer_id: str, protocol_id: str, data: bytes) -> None:
        check_frame(data)
        with trio.move_on_after(self._timeout_s) as scope:
            stream = await self._open_stream(peer_id, protocol_id)
        if scope.cancelled_caught:
            raise PeerUnreachableError(f"no stream to {peer_id} within {self._timeout_s} s")
        await send_on(stream, data, self._timeout_s)

    async def connect(self, multiaddr_text: str) -> str:
        info = discovery.parse_peer_addr(multiaddr_text)
        if info.peer_id in self.host.get_connected_peers():
            return str(info.peer_id.to_base58())
        if is_circuit(multiaddr_text):
            if not await self._dial_circuit(info.peer_id, multiaddr_text):
                self._count_failed_dial()
                raise PeerUnreachableError(f"could not connect through a relay: {multiaddr_text}")
            return str(info.peer_id.to_base58())
        if not await discovery.dial(self.host, info, fresh=True):
            self._count_failed_dial()
            raise PeerUnreachableError(f"could not connect to {multiaddr_text}")
        self._book.record_working(info.peer_id.to_base58(), discovery.transport_addr(info.addrs[0]))
        return str(info.peer_id.to_base58())

    async def ping(self, peer_id: str) -> float:
        """Round trip in ms of one libp2p ping (`/ipfs/ping/1.0.0`), remembered for `peers()`."""
        payload = secrets.token_bytes(PING_BYTES)
        echo = b""
        with trio.move_on_after(self._timeout_s) as scope:
            stream = await self._open_stream(peer_id, PING_PROTOCOL)
            try:
                started_s = trio.current_time()
                await stream.write(payload)
                echo = await self._read_echo(stream)
                rtt_ms = (trio.current_time() - started_s) * 1000
            except (StreamError, MuxedStreamError) as error:  # the peer died mid-ping
                raise PeerUnreachableError(f"ping to {peer_id} broke off: {error!r}") from error
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await stream.reset()
        if scope.cancelled_caught:
            raise PeerUnreachableError(f"no ping reply from {peer_id} within {self._timeout_s} s")
        if echo != payload:
            raise TransportError(f"{peer_id} answered a ping with other bytes")
        self._rtt_ms[peer_id] = rtt_ms
        return rtt_ms

    def peers(self) -> list[PeerStatus]:
        own = self.host.get_id()
        connected = set(self.host.get_connected_peers())
        store = self.host.get_peerstore()
        known = (set(store.peers_with_addrs()) | connected) - {own}
        out = []
        for peer in sorted(known, key=str):
            text = str(peer.to_base58())
            addrs = tuple(
                sorted(
                    {
                        f"{discovery.transport_addr(a)}/p2p/{text}"
                        for a in discovery.known_addrs(self.host, peer)
                    }
                )
            )
            status = PeerStatus(text, addrs, peer in connected, self._rtt_ms.get(text))
            if peer in connected:
                status = dataclasses.replace(
                    status,
                    remote_ip=self._remote_ip(peer),
                    connection=self.nat.connection_kind(peer),
                    connections_opened=tuple(self.nat.opened.get(text, ())),
                )
            out.append(status)
        return out

    def _remote_ip(self, peer: ID) -> str:
        """The observed address of a live connection: unlike listen addresses, not self-reported.

        A relayed connection's socket address is the relay's, not the peer's: it has none.
        """
        for conn in self.host.get_network().connections.get(peer) or []:
            if is_relayed(conn):
                continue
            ip = conn_ip(conn.muxed_conn)
            if ip:
                return ip
        return ""

    def _deliver(self, item: Inbound) -> bool:
        try:
            self._inbound_send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True

    def _count_failed_dial(self) -> None:
        self._stats.dials_failed += 1

    def _count_bootstrap_dial(self) -> None:
        self._stats.bootstrap_dials += 1

    def _make_handler(self, protocol_id: str) -> Callable[[INetStream], Awaitable[None]]:
        async def handle(stream: INetStream) -> None:
            peer_id = str(stream.muxed_conn.peer_id.to_base58())
            remote_ip = conn_ip(stream.muxed_conn)
            await self._server.handle(stream, peer_id, protocol_id, remote_ip)

        return handle

    async def _serve_exchange(self, stream: INetStream) -> None:
        requester_ip = "" if stream_relayed(stream) else conn_ip(stream.muxed_conn)
        self._peer_asks.asked(stream.muxed_conn.peer_id.to_base58(), _now_ms())
        await discovery.serve_exchange(
            self.host, self._book, stream, self._timeout_s, requester_ip, self.nat.reserved_for
        )

    def _seen_gossip(self, topic: str, data: bytes) -> None:
        if self.market_sync is not None and topic == self.market_sync.topic:
            self.market_sync.seen(data)

    def _market_peers(self) -> list[str]:
        """Connected peers subscribed to the capacity topic: the ones a market sync may ask;
        every connected peer while none is known to be.

        A newcomer whose one link is a busy bootstrap node may wait many seconds for that
        node's subscriptions (its pubsub stream to us opens late under load), and its market
        stayed empty all that time although the node would have answered an ask (issue 14).
        A peer that does not serve the market fails the ask, which is counted."""
        subscribed = self._pubsub.peer_topics.get(TOPIC_CAPACITY, set())
        connected = set(self.host.get_connected_peers())
        peers = [p for p in subscribed if p in connected] or list(connected)
        return sorted(p.to_base58() for p in peers)

    async def _serve_market(self, stream: INetStream) -> None:
        assert self.market_sync is not None
        peer = str(stream.muxed_conn.peer_id.to_base58())
        if self._reputation.is_banned(peer):
            self._stats.requests_refused += 1
            with trio.move_on_after(1):
                await stream.reset()
            return
        await self.market_sync.serve(stream, peer, self._timeout_s)

    async def _dial_circuit(self, peer: ID, addr: str) -> bool:
        ok = await self.nat.dial_circuit(addr, peer)
        if ok:
            self._stats.relayed_dials += 1
        return ok

    async def _open_stream(self, peer_id: str, protocol_id: str) -> INetStream:
        peer = _to_id(peer_id)
        failure: Exception | None = None
        for attempt in range(2):
            # Direct addresses failed (a home behind NAT): its relay addresses are the fallback.
            if attempt == 1:
                connected = peer in self.host.get_connected_peers()
                if connected or not await self.nat.connect_via_relay(peer):
                    break
                self._stats.relayed_dials += 1
            try:
                return await self.host.new_stream(peer, [TProtocol(protocol_id)])
            except trio.Cancelled:
                raise
            except Exception as error:
                failure = error
        raise PeerUnreachableError(f"no {protocol_id} stream to {peer_id}: {failure}") from failure

    @staticmethod
    async def _read_echo(stream: INetStream) -> bytes:
        echo = b""
        while len(echo) < PING_BYTES:
            chunk = await stream.read(PING_BYTES - len(echo))
            if not chunk:
                break
            echo += chunk
        return echo


@asynccontextmanager
async def open_transport(
    config: HostConfig, check: EdgeCheck | None = None
) -> AsyncIterator[Libp2pTransport]:
    """Run a host, gossipsub and discovery; yield the transport once it listens.

    ``check`` is the node's edge check (ADR 0021): gossip it does not accept is neither
    delivered nor forwarded, and stream requests it does not accept are never queued.
    Everything it starts runs in a nursery inside this context and stops when it exits.
    """
    advertised = _Advertised()
    host = _new_libp2p_host(config)
    advertised.install(host)
    pubsub, router = build_gossip(host, config.gossip_heartbeat_s)
    transport = Libp2pTransport(host, pubsub, config, check, advertised)
    async with host.run(listen_addrs=[_listen_multiaddr(config)]):
        if not host.get_addrs():  # upstream logs a failed listen and carries on without one
            why = tcp_patch.why_not_listening(config.listen_host, config.port)
            raise ListenError(f"cannot listen on {config.listen_host}:{config.port}: {why}")
        async with _gossip_running(pubsub, router), transport.nat.running():
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                await transport.start(nursery)
                try:
                    yield transport
                finally:
                    transport.close_inbound()
                    nursery.cancel_scope.cancel()


@asynccontextmanager
async def _gossip_running(pubsub: Pubsub, router: GossipSub) -> AsyncIterator[None]:
    async with (
        background_trio_service(pubsub),
        background_trio_service(router),
    ):
        yield
