"""Reachability, circuit relay v2 and hole punching composed on one host (`NatService`, ADR 0035).

py-libp2p 0.8.1 has the parts; `new_host` wires none of them, and each needs care:
- Relay v2 *hop* (`CircuitV2Protocol`) is served only while a dial-back says we are public (or
  config forces it), behind a per-peer budget, with limits sized for Hearth (`RelaySettings`).
  Upstream registers its hop handler once at start; ours is registered always and refuses while
  we are not public, so a node that turns public later starts relaying without a restart.
- Reservations are made explicitly as soon as a node is private and connected to candidates:
  upstream's relay discovery runs its first pass before any relay is connected and the next
  one 300 s later. We renew each reservation `RESERVATION_RENEW_MARGIN_S` before it expires
  and keep at most `RelaySettings.relays_to_reserve`.
- Relayed dials are made here, not by the swarm: the swarm drops every /p2p-circuit address,
  and the relay transport's outbound upgrade forgets the private-network (pnet) wrapping that
  the inbound side applies, so under a psk a relayed handshake could never complete.
- DCUtR (`DCUtRProtocol`) drives hole punches over relayed connections on its own; peers it
  connected directly are "hole-punched" in `connection_kind`. Where the router answers a
  punch with a reset, the relayed connection simply stays.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, TypeVar

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.connection_types import ConnectionType
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID, CircuitV2Protocol
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.security.pnet.protector import new_protected_conn
from libp2p.tools.anyio_service import background_trio_service

from hearth.p2p import addresses, upnp
from hearth.p2p.dialing import TokenBuckets
from hearth.p2p.notify import carried_by_stream, conn_ip
from hearth.p2p.peers import PeerReputation
from hearth.p2p.reachability import (
    DIALBACK_BYTES_MAX,
    DIALBACK_PROTOCOL,
    DIALBACK_TIMEOUT_MS,
    SERVERS_PER_ROUND,
    DialbackServer,
    Reachability,
    State,
    encode_request,
    parse_answer,
)
from hearth.p2p.streams import encode_frame, read_frame
from hearth.p2p.transport import RelaySettings
from hearth.protocol import limits

logger = logging.getLogger(__name__)
T = TypeVar("T")

RESERVATION_RENEW_MARGIN_S: Final = 120
RELAY_RETRY_S: Final = 10.0  # a relay that refused or failed a reservation is left alone this long
NAT_ROUND_S: Final = 2.0
REACHABILITY_RECHECK_S: Final = 300.0
REACHABILITY_RETRY_S: Final = 15.0
# (burst, ms per token): hop requests (reservations, connects) we serve for one peer.
HOP_REQUESTS_PER_PEER: Final = (8, 5_000)
PENALTY_HOP_FLOOD: Final = -20
PENALTY_FORGED_RESERVATION: Final = -50  # a reservation asked for another peer's id
# A relay whose circuit failed is tried after the others for this long; one that let a circuit
# hang past the dial timeout also loses reputation (a refusal may be honest: no reservation).
RELAY_FAILED_BACKOFF_S: Final = 120.0
RELAYS_FAILED_MAX: Final = 1024
PENALTY_RELAY_STALLED: Final = -10
CIRCUITS_PER_DIAL_MAX: Final = 2  # relays tried for one peer before giving up
PENALTY_BAD_DIALBACK: Final = -20
CONNECTION_HISTORY_MAX: Final = 8
PUNCH_ADDRS_MAX: Final = 8  # addresses we send, and read, in one DCUtR CONNECT
# Hole-punch sessions we drive to one peer while it stays relayed (each is upstream's three
# dial rounds, ~20 s when they all fail), the waits between them, and how many peers we punch
# at once: one failing peer must not hold up the others (upstream drove one peer at a time).
PUNCH_SESSIONS_MAX: Final = 4
PUNCH_BACKOFF_S: Final = (1.0, 3.0, 8.0)
PUNCH_PEERS_AT_ONCE: Final = 4
PUNCH_SWEEP_S: Final = 2.0  # a relayed peer missed by the wake-up is found this late at most


def _ms() -> int:
    return int(trio.current_time() * 1000)


def is_relayed(conn: Any) -> bool:
    """Whether a swarm connection runs through a relay.

    Not `get_transport_addresses()` alone: where a connection was never tagged it falls back
    to the peer's *peerstore* addresses, which list its /p2p-circuit addresses once it holds a
    reservation, so every direct connection to a private node would look relayed.
    """
    tagged = getattr(conn, "_actual_transport_addresses", None) or []
    if any(addresses.is_circuit(str(a)) for a in tagged):
        return True
    return carried_by_stream(getattr(conn, "muxed_conn", None))


class NatService:
    """Dial-back client and server, relay hop and client, DCUtR: one per host."""

    def __init__(
        self,
        host: IHost,
        settings: RelaySettings,
        reputation: PeerReputation,
        probe: Any,  # async (peer ID, Multiaddr) -> bool: a fresh connection proving the peer
        listen_addrs: Callable[[], list[str]],
        announce: tuple[str, ...],
    ) -> None:
        self._host = host
        self._settings = settings
        self._reputation = reputation
        self._probe = probe
        self._listen = listen_addrs
        self._announce = list(announce)
        self._candidates_extra: list[str] = []  # a UPnP mapping, until a dial-back confirms it
        self.reachability = Reachability(forced=_forced(settings.reachability))
        self._server = DialbackServer()
        relay_limits = RelayLimits(
            duration=settings.circuit_duration_s,
            data=settings.circuit_bytes_max,
            max_circuit_conns=settings.circuits_max,
            max_reservations=settings.reservations_max,
            reservation_ttl=settings.reservation_ttl_s,
        )
        self._protocol = _HearthHop(host, relay_limits, self._hop_request_allowed)
        self._relay = CircuitV2Transport(
            host, self._protocol, RelayConfig(roles=RelayRole.STOP | RelayRole.CLIENT)
        )
        self._dcutr = _HearthDCUtR(host, self) if settings.hole_punch else None
        self._hop_budget = TokenBuckets(*HOP_REQUESTS_PER_PEER)
        self.forged_reservations = 0
        self._reserved: dict[ID, tuple[str, int]] = {}  # relay -> (its address, expiry unix s)
        self._relay_retry_at: dict[ID, float] = {}
        self._dialling: set[ID] = set()
        self._relay_failed: OrderedDict[str, float] = OrderedDict()  # relay -> backoff end (s)
        self._punch_port: int | None = None
        self.hop_refused = 0
        self.punched: set[str] = set()
        # peer -> kinds of its connections in the order they opened ("relayed", "direct"), so
        # that a report can tell "relayed first, then hole-punched" from "direct all along"
        self.opened: OrderedDict[str, list[str]] = OrderedDict()
        host.get_network().register_notifee(_KindRecorder(self))

    # --- what others see -------------------------------------------------------------------

    def serving_hop(self) -> bool:
        mode = self._settings.hop
        return mode == "on" or (mode == "auto" and self.reachability.current() is State.PUBLIC)

    def circuit_addrs(self) -> list[str]:
        me = self._host.get_id().to_base58()
        return [
            f"{addr}/p2p/{relay.to_base58()}{addresses.CIRCUIT}/p2p/{me}"
            for relay, (addr, _) in sorted(self._reserved.items(), key=lambda kv: str(kv[0]))
        ]

    def advertised(self) -> list[str]:
        """Our addresses for identify (without /p2p/ suffix on direct ones)."""
        me = f"/p2p/{self._host.get_id().to_base58()}"
        circuits = [a.removesuffix(me) for a in self.circuit_addrs()]
        return addresses.advertised(
            self._listen(), self._announce, self.reachability.confirmed_addrs(), circuits
        )

    def reserved_for(self, peer: ID) -> bool:
        """Whether ``peer`` holds a reservation on our relay (we vouch for its circuit address)."""
        return bool(self._protocol.resource_manager.has_reservation(peer))

    def connection_kind(self, peer: ID) -> str:
        """ "direct", "hole-punched" or "relayed" for a connected peer ("" if not connected)."""
        conns = self._host.get_network().connections.get(peer) or []
        if not conns:
            return ""
        if all(is_relayed(c) for c in conns):
            return "relayed"
        text = peer.to_base58()
        if self._dcutr is not None and peer in self._dcutr._direct_connections:
            self.punched.add(text)
        return "hole-punched" if text in self.punched else "direct"

    def punch_addrs(self) -> list[str]:
        """Where peers should aim a hole punch at us: our public IP (as dial-back servers saw
        it) with our punch port, which a port-keeping router maps to itself; confirmed and
        announced addresses too. Never a private address: a peer dialling our 192.168.1.10
        reaches its own home."""
        ports = [self.punch_port(ip) for ip in self._listen_ips()][:1]
        out: list[str] = []
        for ip in self.reachability.observed_ips():
            if addresses.scope_of(ip) is addresses.Scope.PUBLIC:
                family = "ip6" if ":" in ip else "ip4"
                out += [f"/{family}/{ip}/tcp/{port}" for port in ports]
        for addr in [*self.reachability.confirmed_addrs(), *self._announce]:
            if addr not in out and _public(addr):
                out.append(addr)
        return out[:PUNCH_ADDRS_MAX]

    def _listen_ips(self) -> list[str]:
        return [a.split("/")[2] for a in self._listen() if "/tcp/" in a and a.startswith("/ip4/")]

    def punch_port(self, ip: str) -> int:
        """The port hole-punch dials leave from: not the listen port, whose socket stays
        exclusive (no SO_REUSEPORT, `patches/tcp.py`); chosen free once and kept, so the
        address sent in a DCUtR CONNECT is the one the dial then opens."""
        if self._punch_port is None:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((ip, 0))
                self._punch_port = int(probe.getsockname()[1])
        return self._punch_port

    def note_opened(self, peer: ID, relayed: bool) -> None:
        if relayed and self._dcutr is not None:
            self._dcutr.wake()  # punch now, not at the next sweep
        kinds = self.opened.setdefault(peer.to_base58(), [])
        kinds[:] = [*kinds, "relayed" if relayed else "direct"][-CONNECTION_HISTORY_MAX:]
        self.opened.move_to_end(peer.to_base58())
        while len(self.opened) > limits.REPUTATION_PEERS_MAX:
            self.opened.popitem(last=False)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.reachability.to_json(),
            "advertised": self.advertised(),
            "relay_hop": self.serving_hop(),
            "reservations": [
                {"relay": r.to_base58(), "addr": a, "expires_s": e}
                for r, (a, e) in sorted(self._reserved.items(), key=lambda kv: str(kv[0]))
            ],
            "hop_refused": self.hop_refused,
            "forged_reservations_refused": self.forged_reservations,
            "dialbacks_refused": self._server.refused,
        }

    # --- running ---------------------------------------------------------------------------

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        self._host.set_stream_handler(TProtocol(DIALBACK_PROTOCOL), self._serve_dialback)
        async with background_trio_service(self._protocol):
            self._host.set_stream_handler(HOP_PROTOCOL, self._serve_hop)
            self._host.set_stream_handler(STOP_PROTOCOL_ID, self._protocol._handle_stop_stream)
            if self._dcutr is None:
                yield
                return
            async with background_trio_service(self._dcutr):
                yield

    async def run(self, upnp: bool = False) -> None:
        """Check reachability now and then; while private, hold reservations on relays."""
        if upnp:
            await self._map_upnp()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._reachability_loop)
            nursery.start_soon(self._reservation_loop)

    async def _map_upnp(self) -> None:
        ports = {int(a.rsplit("/", 1)[1]) for a in self._listen() if "/tcp/" in a}
        for port in sorted(ports)[:1]:
            mapped = await upnp.map_port(port)
            if mapped:
                self._candidates_extra.append(mapped)
                logger.info("UPnP: the router maps %s to us; a dial-back will confirm it", mapped)

    async def _reachability_loop(self) -> None:
        while True:
            if self.reachability.forced is not None:
                return
            asked = await self.check_reachability()
            if not asked:  # nobody to ask yet: look again soon
                await trio.sleep(NAT_ROUND_S)
                continue
            known = self.reachability.state is not State.UNKNOWN
            await trio.sleep(REACHABILITY_RECHECK_S if known else REACHABILITY_RETRY_S)

    async def check_reachability(self) -> int:
        """Ask up to `SERVERS_PER_ROUND` directly connected peers to dial us back; answers."""
        candidates = [a for a in self._listen() if not addresses.is_circuit(a)]
        candidates += [a for a in [*self._announce, *self._candidates_extra] if a not in candidates]
        if not candidates:
            return 0
        network: Any = self._host.get_network()
        servers = [
            p
            for p in sorted(self._host.get_connected_peers(), key=str)
            if any(not is_relayed(c) for c in network.connections.get(p) or [])
        ][:SERVERS_PER_ROUND]
        answered = 0
        for server in servers:
            if await self._ask_dialback(server, candidates):
                answered += 1
        return answered

    async def _ask_dialback(self, server: ID, candidates: list[str]) -> bool:
        async def talk(stream: INetStream) -> bytes:
            await stream.write(encode_frame(encode_request(candidates)))
            return await read_frame(stream, frame_bytes_max=DIALBACK_BYTES_MAX)

        reply = await self._on_stream(server, DIALBACK_PROTOCOL, DIALBACK_TIMEOUT_MS, talk)
        if reply is None:
            return False
        if not reply:  # refused (rate limit): no information
            return False
        answer = parse_answer(reply)
        if answer is None:
            self._reputation.adjust(server.to_base58(), PENALTY_BAD_DIALBACK)
            return False
        before = self.reachability.current()
        after = self.reachability.record(server.to_base58(), answer)
        if after is not before:
            logger.info("reachability: %s (dial-back by %s)", after.value, server)
        return True

    async def _serve_dialback(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        observed = "" if stream_relayed(stream) else conn_ip(stream.muxed_conn)

        async def probe(addr: str) -> bool:
            return bool(await self._probe(peer, multiaddr.Multiaddr(addr)))

        try:
            with trio.fail_after(DIALBACK_TIMEOUT_MS / 1000):
                request = await read_frame(stream, frame_bytes_max=DIALBACK_BYTES_MAX)
                reply = await self._server.answer(request, observed, probe, _ms())
                await stream.write(encode_frame(reply))
            await stream.close()
        except trio.Cancelled:
            raise
        except Exception as error:
            logger.debug("serving a dial-back to %s failed: %r", peer, error)
            await _reset(stream)

    async def _serve_hop(self, stream: INetStream) -> None:
        text = stream.muxed_conn.peer_id.to_base58()
        if not self.serving_hop() or self._reputation.is_banned(text):
            self.hop_refused += 1
            await _reset(stream)
            return
        self._protocol.allow_hop = True
        await self._protocol._handle_hop_stream(stream)

    def _hop_request_allowed(self, peer: ID, named: bytes) -> bool:
        """Whether to serve one hop message (a stream may carry many, so each is counted):
        within the peer's budget and, for a reservation, for the asking peer itself."""
        text = peer.to_base58()
        if named and named != peer.to_bytes():
            # Upstream reserves for whatever id the message names: one peer could fill every
            # slot with made-up ids. Only a peer's own slot can carry its circuits anyway.
            self.forged_reservations += 1
            self.hop_refused += 1
            self._reputation.adjust(text, PENALTY_FORGED_RESERVATION)
            return False
        if not self._hop_budget.available(text, _ms()):
            self.hop_refused += 1
            self._reputation.adjust(text, PENALTY_HOP_FLOOD)
            return False
        self._hop_budget.take(text, _ms())
        return True

    async def _reservation_loop(self) -> None:
        while True:
            if self.reachability.current() is State.PRIVATE:
                await self._keep_reservations()
            elif self._reserved and self.reachability.current() is State.PUBLIC:
                self._reserved.clear()  # reachable directly: relay addresses only cost hops
            await trio.sleep(NAT_ROUND_S)

    async def _keep_reservations(self) -> None:
        now_s = time.time()  # reservation expiry is wall-clock unix seconds on the wire
        for relay, (_, expires_s) in list(self._reserved.items()):
            gone = relay not in self._host.get_connected_peers()
            if gone or expires_s - now_s < RESERVATION_RENEW_MARGIN_S:
                del self._reserved[relay]
        if len(self._reserved) >= self._settings.relays_to_reserve:
            return
        for relay in self._relay_candidates(now_s):
            if len(self._reserved) >= self._settings.relays_to_reserve:
                break
            await self._reserve(relay)

    def _relay_candidates(self, now_s: float) -> list[ID]:
        network: Any = self._host.get_network()
        out = []
        for peer in sorted(self._host.get_connected_peers(), key=str):
            if peer in self._reserved or self._relay_retry_at.get(peer, 0) > now_s:
                continue
            if peer.to_base58() in self.punched:
                continue  # hole-punched: behind NAT too, it cannot relay
            conns = [c for c in network.connections.get(peer) or [] if not is_relayed(c)]
            ip = next((conn_ip(c.muxed_conn) for c in conns if conn_ip(c.muxed_conn)), "")
            if ip and addresses.scope_of(ip) is not addresses.Scope.UNUSABLE:
                out.append(peer)
        return out

    async def _reserve(self, relay: ID) -> bool:
        addr = self._relay_addr(relay)

        async def talk(stream: INetStream) -> bool:
            return bool(await self._relay._make_reservation(stream, relay))

        ok = await self._on_stream(relay, HOP_PROTOCOL, limits.DIAL_TIMEOUT_MS, talk)
        if not ok or not addr:
            self._relay_retry_at[relay] = time.time() + RELAY_RETRY_S
            return False
        expires_s = int(self._relay._reservations.get(relay, 0))
        self._reserved[relay] = (addr, expires_s)
        logger.info("reserved a relay slot on %s, advertising %s/p2p-circuit", relay, addr)
        return True

    async def _on_stream(
        self, peer: ID, protocol: str, timeout_ms: int, talk: Callable[[INetStream], Awaitable[T]]
    ) -> T | None:
        """``talk`` on a new stream to ``peer``, closed after; None if anything failed."""
        try:
            with trio.fail_after(timeout_ms / 1000):
                stream = await self._host.new_stream(peer, [TProtocol(protocol)])
                try:
                    return await talk(stream)
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(1):
                        await stream.close()
        except trio.Cancelled:
            raise
        except Exception as error:
            logger.debug("%s with %s failed: %r", protocol, peer, error)
            return None

    def _relay_addr(self, relay: ID) -> str:
        """The address we reached the relay at: what peers outside our network can dial too."""
        network: Any = self._host.get_network()
        for conn in network.connections.get(relay) or []:
            if is_relayed(conn):
                continue
            try:
                host, port = conn.muxed_conn.get_remote_address()
            except Exception:
                continue
            family = "ip6" if ":" in str(host) else "ip4"
            return f"/{family}/{host}/tcp/{port}"
        return ""

    # --- dialling through relays -----------------------------------------------------------

    async def dial_circuit(self, addr: str, peer: ID) -> bool:
        """Connect to ``peer`` through the relay named in ``addr`` (``.../p2p-circuit``)."""
        network: Any = self._host.get_network()
        target = addr if addr.endswith(f"/p2p/{peer.to_base58()}") else f"{addr}/p2p/{peer}"
        # One relayed dial per peer at a time, none once connected: every extra connection
        # past the per-peer cap is trimmed, with the streams on it (ADR 0014).
        if peer in self._host.get_connected_peers() or peer in self._dialling:
            return peer in self._host.get_connected_peers()
        if self._reputation.is_banned(_relay_of(target)):
            return False  # a relay that stalled circuits again and again is not asked again
        self._dialling.add(peer)
        try:
            return await self._dial_circuit(target, peer, network)
        finally:
            self._dialling.discard(peer)

    async def _dial_circuit(self, target: str, peer: ID, network: Any) -> bool:
        relay = _relay_of(target)
        try:
            with trio.fail_after(limits.DIAL_TIMEOUT_MS / 1000):
                raw = await self._relay._dial_via_circuit_addr(
                    multiaddr.Multiaddr(target), _peer_info(peer, target)
                )
                if network.psk is not None:
                    raw = new_protected_conn(raw, network.psk)
                conn = await network.upgrade_outbound_raw_conn(raw, peer)
            # As upstream's inbound side does: the pnet wrapper hides the circuit address.
            conn.set_transport_info([multiaddr.Multiaddr(target)], ConnectionType.RELAYED)
            self._relay_failed.pop(relay, None)
            return True
        except trio.Cancelled:
            raise
        except Exception as error:
            logger.debug("relayed dial to %s via %s failed: %r", peer, target, error)
            self._note_relay_failed(relay, stalled=isinstance(error, trio.TooSlowError))
            return False

    def _note_relay_failed(self, relay: str, stalled: bool) -> None:
        if not relay:
            return
        self._relay_failed[relay] = time.time() + RELAY_FAILED_BACKOFF_S
        self._relay_failed.move_to_end(relay)
        while len(self._relay_failed) > RELAYS_FAILED_MAX:
            self._relay_failed.popitem(last=False)
        if stalled:
            self._reputation.adjust(relay, PENALTY_RELAY_STALLED)

    def relay_failing(self, relay: str) -> bool:
        """Whether a circuit through ``relay`` failed lately (its circuits are tried last)."""
        return self._relay_failed.get(relay, 0.0) > time.time()

    async def connect_via_relay(self, peer: ID) -> bool:
        """After direct dials failed: try the circuit addresses the peerstore holds for ``peer``,
        through relays whose circuits worked before those that failed lately, and never
        through a banned relay."""
        try:
            known = [str(a) for a in self._host.get_peerstore().addrs(peer)]
        except Exception:
            return False
        circuits = [
            a
            for a in dict.fromkeys(known)
            if addresses.is_circuit(a) and not self._reputation.is_banned(_relay_of(a))
        ]
        circuits.sort(key=lambda a: self.relay_failing(_relay_of(a)))  # stable: healthy first
        for addr in circuits[:CIRCUITS_PER_DIAL_MAX]:
            if await self.dial_circuit(addr, peer):
                return True
        return False


def _relay_of(addr: str) -> str:
    """The relay's peer id in ``.../p2p/<relay>/p2p-circuit...`` ("" if it names none)."""
    head = addr.split(addresses.CIRCUIT, 1)[0]
    parts = head.rstrip("/").split("/")
    return parts[-1] if len(parts) >= 2 and parts[-2] == "p2p" else ""


class _HearthHop(CircuitV2Protocol):
    """Upstream's relay hop with each message gated by ``allowed(peer, named peer id)``.

    allow_hop=False at start: upstream would register its own unguarded hop handler; ours
    (`NatService._serve_hop`) hands it the streams it accepts. A refused message gets a
    status and the stream is reset, which ends upstream's read loop on it.
    """

    def __init__(
        self, host: IHost, relay_limits: RelayLimits, allowed: Callable[[ID, bytes], bool]
    ) -> None:
        super().__init__(host, limits=relay_limits, allow_hop=False)
        self._allowed = allowed

    async def _gate(self, stream: INetStream, named: bytes) -> bool:
        if self._allowed(stream.muxed_conn.peer_id, named):
            return True
        with trio.move_on_after(1):
            try:
                await self._send_status(stream, StatusCode.PERMISSION_DENIED, "refused")
            except Exception as error:
                logger.debug("refusing a hop request: %r", error)
        await _reset(stream)
        return False

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        named = bytes(msg.peer.id) if msg.HasField("peer") else b""
        if await self._gate(stream, named):
            await super()._handle_reserve(stream, msg)

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        if await self._gate(stream, b""):
            await super()._handle_connect(stream, msg)


async def _reset(stream: INetStream) -> None:
    with trio.move_on_after(1):
        try:
            await stream.reset()
        except Exception as error:
            logger.debug("reset failed: %r", error)


class _HearthDCUtR(DCUtRProtocol):
    """Upstream DCUtR with Hearth's addresses and one driver per pair of peers.

    - Our CONNECT carries `NatService.punch_addrs`: upstream predicts from identify's observed
      addresses, which through a relay are the relay's view (or none), and then falls back to
      our listen address, the private 192.168.1.10 of every home.
    - The peer's CONNECT addresses are dialled only where public: a hostile peer cannot aim
      our dials at private networks, nor at itself-as-us behind a shared private address.
    - Only the peer with the smaller ID starts a session. Upstream drives from both ends, and
      two crossed sessions dial the same address pair from the same port in opposite roles.
    """

    def __init__(self, host: IHost, nat: NatService) -> None:
        super().__init__(host)
        self._nat = nat
        self._wake = trio.Event()
        self._driving: set[ID] = set()
        self._sessions: dict[ID, int] = {}  # sessions driven since the peer last disconnected
        self.sessions_driven = 0

    def wake(self) -> None:
        self._wake.set()

    def drives(self, peer_id: ID) -> bool:
        """Only the peer with the smaller id starts sessions; the other answers."""
        return self.host.get_id().to_bytes() < peer_id.to_bytes()

    async def initiate_hole_punch(self, peer_id: ID) -> bool:
        if not self.drives(peer_id):
            return False  # the other end drives; we answer in `_handle_dcutr_stream`
        return await super().initiate_hole_punch(peer_id)

    def on_peer_disconnected(self, peer_id: ID) -> None:
        super().on_peer_disconnected(peer_id)
        if not self.host.get_network().connections.get(peer_id):
            self._sessions.pop(peer_id, None)  # a later relayed connection gets a new budget

    def _to_punch(self) -> list[ID]:
        """Peers we drive that are connected through relays only, with budget left; none
        while we know no public address of ours (a CONNECT without one cannot succeed)."""
        if not self._nat.punch_addrs():
            return []
        network: Any = self.host.get_network()
        for gone in [p for p in self._sessions if not network.connections.get(p)]:
            del self._sessions[gone]  # bounded by the connected peers, whatever the notifees do
        out = []
        for peer, conns in list(network.connections.items()):
            if peer in self._driving or self._sessions.get(peer, 0) >= PUNCH_SESSIONS_MAX:
                continue
            if conns and self.drives(peer) and all(is_relayed(c) for c in conns):
                out.append(peer)
        return out

    async def _auto_drive_loop(self) -> None:
        """Upstream's loop swept every 2 s and punched one peer at a time, three sessions at
        most, so a peer behind a resetting router held up the others for a minute. Ours
        starts a session as soon as a relayed connection opens, drives up to
        `PUNCH_PEERS_AT_ONCE` peers at once, and retries each with a short backoff."""
        limiter = trio.CapacityLimiter(PUNCH_PEERS_AT_ONCE)
        async with trio.open_nursery() as nursery:
            while True:
                for peer in self._to_punch():
                    self._driving.add(peer)
                    nursery.start_soon(self._drive, peer, limiter)
                with trio.move_on_after(PUNCH_SWEEP_S):
                    await self._wake.wait()
                self._wake = trio.Event()

    async def _drive(self, peer: ID, limiter: trio.CapacityLimiter) -> None:
        try:
            while self._sessions.get(peer, 0) < PUNCH_SESSIONS_MAX:
                network: Any = self.host.get_network()
                conns = network.connections.get(peer) or []
                if not conns or not all(is_relayed(c) for c in conns):
                    return  # gone, or direct by now (perhaps the other way round)
                done = self._sessions.get(peer, 0)
                self._sessions[peer] = done + 1
                self.sessions_driven += 1
                # Upstream counts sessions too (three, then never again); ours is the budget.
                self._hole_punch_attempts.pop(peer, None)
                async with limiter:
                    if await self.initiate_hole_punch(peer):
                        return
                if done < len(PUNCH_BACKOFF_S):
                    await trio.sleep(PUNCH_BACKOFF_S[done])
        except trio.Cancelled:
            raise
        except Exception as error:
            logger.debug("driving a hole punch to %s failed: %r", peer, error)
        finally:
            self._driving.discard(peer)

    async def _get_observed_addrs(self) -> list[bytes]:
        return [multiaddr.Multiaddr(a).to_bytes() for a in self._nat.punch_addrs()]

    def _decode_observed_addrs(self, addr_bytes: list[bytes]) -> list[multiaddr.Multiaddr]:
        out = []
        for addr in super()._decode_observed_addrs(addr_bytes[:PUNCH_ADDRS_MAX]):
            text = str(addr)
            if _public(text) and "/tcp/" in text and not addresses.is_circuit(text):
                out.append(addr)
        return out

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        # Hearth dials a peer's direct addresses before its relayed ones (`Libp2pTransport`);
        # upstream's would also dial the private addresses identify put in the peerstore.
        return await self._verify_direct_connection(peer_id)

    async def _dial_peer(
        self,
        peer_id: ID,
        addr: multiaddr.Multiaddr,
        source: tuple[str, int] | None = None,
        as_responder: bool = False,
    ) -> None:
        """One punch dial from our punch port, as upstream's but for two of its defects: its
        responder dial wraps the socket in the private-network key and the inbound upgrade
        wraps it again (the handshake then hangs), and peerstore addresses it adds may be
        private ones (a peer's 192.168.1.10 is our own home)."""
        if not _public(str(addr)):
            return
        if source is not None:
            source = (source[0], self._nat.punch_port(source[0]))
        network: Any = self.host.get_network()
        try:
            with trio.fail_after(self.dial_timeout):
                if as_responder:
                    await _dial_as_responder(network, addr, peer_id, source)
                else:
                    await network.dial_addr(addr, peer_id, source)
        except trio.Cancelled:
            raise
        except Exception as error:
            logger.debug("hole-punch dial to %s at %s failed: %r", peer_id, addr, error)
            return
        if await self._verify_direct_connection(peer_id):
            self._direct_connections.add(peer_id)
            # upstream forgets the peer here when any of its connections closes (the relayed
            # one, after its grace): the node remembers it was punched
            self._nat.punched.add(peer_id.to_base58())
            logger.info("hole-punched a direct connection to %s at %s", peer_id, addr)


async def _dial_as_responder(
    network: Any, addr: multiaddr.Multiaddr, peer: ID, source: tuple[str, int] | None
) -> None:
    """Dial ``addr`` and run the handshake as the inbound side (DCUtR's initiator is the
    server of a simultaneous open); ``upgrade_inbound_raw_conn`` applies the pnet key."""
    transport = network.transport_manager.transport_for_dialing(addr)
    if transport is None:
        raise ValueError(f"no transport dials {addr}")
    target = addr if "/p2p/" in str(addr) else multiaddr.Multiaddr(f"{addr}/p2p/{peer}")
    if source is not None and hasattr(transport, "dial_with_source"):
        raw = await transport.dial_with_source(target, source)
    else:
        raw = await transport.dial(target)
    try:
        muxed = await network.upgrade_inbound_raw_conn(raw, target)
    except BaseException:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await raw.close()
        raise
    if muxed.peer_id != peer:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await muxed.close()
        raise ValueError(f"{addr} answered as {muxed.peer_id}, not {peer}")


def _public(addr: str) -> bool:
    return addresses.scope_of(addresses.ip_of(addr)) is addresses.Scope.PUBLIC


def _peer_info(peer: ID, addr: str) -> PeerInfo:
    return PeerInfo(peer, [multiaddr.Multiaddr(addr)])


class _KindRecorder(INotifee):
    """Notes whether each new connection is relayed, as the swarm announces it (never blocks)."""

    def __init__(self, nat: NatService) -> None:
        self._nat = nat

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._nat.note_opened(conn.muxed_conn.peer_id, carried_by_stream(conn.muxed_conn))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        return None

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


def stream_relayed(stream: INetStream) -> bool:
    """Whether ``stream`` runs over a relayed connection (its remote address is the relay's)."""
    return carried_by_stream(stream.muxed_conn)


def _forced(mode: str) -> State | None:
    return {"public": State.PUBLIC, "private": State.PRIVATE}.get(mode)
