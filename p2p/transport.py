"""The byte-moving interface the node uses: `Transport`, its config, inbound items and errors.

No libp2p here, so node/ and its tests can type against `Transport` and run on the in-memory
implementation in `p2p.memory` without opening a socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from hearth.p2p.finding_config import DiscoveryConfig
from hearth.p2p.peers import PeerReputation
from hearth.protocol import limits
from hearth.protocol.errors import HearthError
from hearth.protocol.inbound import Verdict

PEER_EVENTS_MAX = 1024  # connection events queued for the node; a full queue drops and counts

# An answer to a request: at most one frame, written back on the request's own stream.
ReplyFn = Callable[[bytes], Awaitable[None]]


class TransportError(HearthError):
    """The network failed us (dial, stream, timeout); not a protocol violation by the peer."""


class ListenError(TransportError):
    """The host could not listen on its address (taken by another process, or not ours)."""


class PeerUnreachableError(TransportError):
    """No connection to the peer could be made, or the stream could not be opened."""


class RequestTimeoutError(TransportError):
    """The peer did not answer (or finish a frame) within the timeout."""


class SendQueueFullError(TransportError):
    """Too many sends (or bytes) already wait for one peer's stream: this one is dropped."""


class EdgeCheck(Protocol):
    """The node's check of an inbound message before we forward (gossip) or queue it (ADR 0021).

    ``sender`` handed us the bytes: the stream's peer, or the gossip message's forwarder. Only
    ``Verdict.ACCEPT`` lets the message through; p2p knows nothing else of what it checks.
    """

    def __call__(self, sender: str, channel: str, data: bytes, *, gossip: bool) -> Verdict: ...


@dataclass(frozen=True)
class ConnectionLimits:
    """Bounds on connections and streams, so that no flood can eclipse a node (ADR 0014).

    Above ``connections_high`` the least valuable connections are closed until
    ``connections_low`` remain; at ``connections_max`` new inbound connections are refused
    before their handshake. Connections younger than ``trim_grace_ms`` and those to bootstrap
    peers are never trimmed. Below that, more than ``peers_high`` peers are shed down to
    ``peers_low`` (inbound peers that do not depend on us: `p2p.connmgr`). The defaults are
    twice and one and a half times `limits.PEERS_CONNECTED_TARGET`, the peers a node dials:
    room for the inbound ones, so that nodes do not shed each other's links in turn.
    """

    connections_low: int = 64
    connections_high: int = 96
    connections_max: int = 128
    connections_per_ip_max: int = 8  # inbound, counted from the TCP source address
    connections_per_peer_max: int = 2
    streams_per_peer_max: int = 64  # inbound streams open (or holding unread data) at once
    trim_grace_ms: int = 10_000
    peers_low: int = limits.PEERS_CONNECTED_TARGET * 3 // 2
    peers_high: int = limits.PEERS_CONNECTED_TARGET * 2

    def __post_init__(self) -> None:
        if not 0 < self.connections_low <= self.connections_high <= self.connections_max:
            raise ValueError("need 0 < connections_low <= connections_high <= connections_max")
        if not 0 < self.peers_low <= self.peers_high:
            raise ValueError("need 0 < peers_low <= peers_high")
        for name in ("connections_per_ip_max", "connections_per_peer_max", "streams_per_peer_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.trim_grace_ms < 0:
            raise ValueError("trim_grace_ms must not be negative")


RELAY_HOP_MODES = ("auto", "on", "off")
REACHABILITY_MODES = ("auto", "public", "private")


@dataclass(frozen=True)
class RelaySettings:
    """Reachability, relay and hole-punching settings (config [network] and [relay], ADR 0035).

    ``hop``: serve circuit relay v2 when a dial-back says we are public ("auto"), always, or
    never. The circuit limits are sized for Hearth: a job's module and inputs (blobs up to tens
    of MiB) fit in ``circuit_bytes_max``, and DCUtR usually moves the peers to a direct
    connection long before ``circuit_duration_s``. ``reachability`` forces the dial-back's
    answer ("auto" asks peers).
    """

    hop: str = "auto"
    reservations_max: int = 64
    circuits_max: int = 8  # circuits at once per reserved peer
    circuit_bytes_max: int = 256 << 20
    circuit_duration_s: int = 1800
    reservation_ttl_s: int = 3600
    relays_to_reserve: int = 2
    hole_punch: bool = True
    reachability: str = "auto"

    def __post_init__(self) -> None:
        if self.hop not in RELAY_HOP_MODES:
            raise ValueError(f"relay hop must be one of {RELAY_HOP_MODES}")
        if self.reachability not in REACHABILITY_MODES:
            raise ValueError(f"reachability must be one of {REACHABILITY_MODES}")
        for name in ("reservations_max", "circuits_max", "circuit_bytes_max"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.circuit_duration_s < 10 or self.reservation_ttl_s < 300:
            raise ValueError("circuit_duration_s must be >= 10 and reservation_ttl_s >= 300")
        if not 0 <= self.relays_to_reserve <= 8:
            raise ValueError("relays_to_reserve must be 0-8")


@dataclass(frozen=True)
class HostConfig:
    """Everything needed to open a node's network presence.

    ``seed`` is the node's 32-byte Ed25519 seed: the libp2p peer ID is derived from it exactly as
    ``protocol.identity.peer_id_from_public_key`` does. ``psk`` is a 32-byte private-network key
    (libp2p pnet): hosts with different keys cannot complete a handshake.
    """

    seed: bytes
    listen_host: str = "127.0.0.1"
    port: int = 0  # 0: let the OS choose
    bootstrap: tuple[str, ...] = ()  # multiaddrs ending in /p2p/<peer id>
    topics: tuple[str, ...] = ()
    protocols: tuple[str, ...] = ()  # request/response protocol ids this node serves
    psk: bytes | None = None
    gossip_heartbeat_s: int = 1  # py-libp2p's default is 120 s; see NOTES-DEPENDENCIES.md
    discovery_interval_s: float = 1.0  # how often to ask peers for their peers
    inbound_messages_max: int = limits.EVENT_QUEUE_MESSAGES_MAX
    stream_read_timeout_ms: int = limits.STREAM_READ_TIMEOUT_MS
    connection_limits: ConnectionLimits = ConnectionLimits()
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)  # ADR 0036
    relay: RelaySettings = RelaySettings()
    announce: tuple[str, ...] = ()  # multiaddrs /ip4/<ip>/tcp/<port> we advertise besides ours
    upnp: bool = False  # ask the home router for a port mapping (miniupnpc)

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise ValueError(f"seed must be 32 bytes, got {len(self.seed)}")
        if self.psk is not None and len(self.psk) != 32:
            raise ValueError(f"psk must be 32 bytes, got {len(self.psk)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if self.inbound_messages_max < 1:
            raise ValueError("inbound_messages_max must be at least 1")


@dataclass(frozen=True)
class Inbound:
    """One item for the node: a gossip message (``reply`` is None) or a direct-stream frame.

    ``peer_id`` is the gossip message's signing author, or the stream's authenticated remote peer.
    ``channel`` is the topic or the protocol id. ``reply`` writes one answer frame back on the
    stream; it does nothing if the requester has gone (a one-way `send`, or it timed out).
    ``remote_ip`` is the observed address of the stream's connection ("" for gossip, whose
    author may be hops away, and where the transport has no address). ``verified``: the edge
    check accepted these exact bytes.
    """

    peer_id: str
    channel: str
    data: bytes
    reply: ReplyFn | None = field(default=None, compare=False)
    remote_ip: str = ""
    verified: bool = False


@dataclass(frozen=True)
class PeerEvent:
    """A peer's first connection opened (``connected``) or its last one closed.

    ``remote_ip`` is the observed address of the connection that opened ("" when closing).
    """

    peer_id: str
    connected: bool
    remote_ip: str = ""


@dataclass(frozen=True)
class PeerStatus:
    peer_id: str
    addrs: tuple[str, ...]
    connected: bool
    rtt_ms: float | None  # last measured ping round trip; None until pinged
    remote_ip: str = ""  # the IP the live connection actually comes from ("" if none)
    connection: str = ""  # "direct" | "hole-punched" | "relayed" ("" if not connected)
    connections_opened: tuple[str, ...] = ()  # "relayed"/"direct", oldest first (ADR 0035)


@dataclass
class TransportStatistics:
    """Counters of what the transport refused or dropped, for logs, metrics and tests."""

    inbound_dropped: int = 0  # inbound queue full
    frames_refused: int = 0  # oversize or malformed frame from a peer
    read_timeouts: int = 0  # a peer stalled mid-frame
    requests_refused: int = 0  # stream from a banned peer or on a protocol we do not serve
    gossip_refused: int = 0  # oversize gossip, from a banned author, or refused by the edge check
    edge_refused: int = 0  # stream requests the edge check refused (never queued)
    dials_failed: int = 0
    bootstrap_dials: int = 0  # dials of a bootstrap node (its failures are in dials_failed)
    connections_refused: int = 0  # inbound over a cap, or from a banned peer
    connections_trimmed: int = 0  # closed by the connection manager above high water
    windows_exceeded: int = 0  # yamux receive window overrun: connection closed
    streams_refused: int = 0  # inbound stream over the per-peer cap: reset
    exchange_dials: int = 0  # dials to addresses learnt by peer exchange
    exchange_dials_refused: int = 0  # candidates refused by a dial budget or backoff
    wire_streams_opened: int = 0  # long-lived outbound streams opened (ADR 0038)
    wire_reopens: int = 0  # a write failed on a long-lived stream and was tried on a new one
    wire_sends_dropped: int = 0  # a peer's send queue was full: the message was not sent
    wire_legacy_sends: int = 0  # sent on a stream of its own: the peer has no /hearth/wire/1
    wire_frames: int = 0  # frames read from peers' long-lived streams
    wire_frames_paced: int = 0  # reads held back: their peer was over its frame rate
    wire_write_stalls: int = 0  # a peer stopped reading our stream past the timeout: reset
    exchange_rounds: int = 0  # peer-exchange rounds run (they back off: ADR 0036)
    exchange_asks_failed: int = 0  # a peer did not answer our peer-exchange request in time
    foreign_addrs: int = 0  # addresses a peer passed that we could not reach, or not its own
    relayed_dials: int = 0  # connections made through a relay after direct dials failed
    market_sync_asks: int = 0  # asks for a peer's capacity ads (ADR 0039)
    market_sync_asks_failed: int = 0  # unanswered in time, or a reply that broke the format
    market_sync_ads: int = 0  # ads a sync brought that we lacked, handed to the node


class Transport(Protocol):
    """What node/ needs from the network. All methods are trio-async; none blocks forever."""

    @property
    def peer_id(self) -> str: ...

    @property
    def listen_addrs(self) -> tuple[str, ...]: ...

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Inbound]: ...

    @property
    def peer_events(self) -> trio.MemoryReceiveChannel[PeerEvent]:
        """Connections as they open and close, pushed by the transport (never polled)."""
        ...

    @property
    def reputation(self) -> PeerReputation:
        """Shared with the node: it penalises bad messages, we refuse banned peers."""
        ...

    async def publish(self, topic: str, data: bytes) -> None: ...

    async def request(self, peer_id: str, protocol_id: str, data: bytes, timeout_ms: int) -> bytes:
        """Send one frame on a new stream and return the peer's one reply frame."""
        ...

    async def send(self, peer_id: str, protocol_id: str, data: bytes) -> None:
        """Send one frame to the peer, one way; delivery is not confirmed.

        Frames to one peer leave in the order the sends were called, on one long-lived stream
        (ADR 0038); a send that cannot be queued or written raises a `TransportError`.
        """
        ...

    async def connect(self, multiaddr: str) -> str:
        """Dial a multiaddr ending in /p2p/<id>; return the peer id."""
        ...

    async def ping(self, peer_id: str) -> float:
        """Round trip in ms over the standard libp2p ping protocol."""
        ...

    def peers(self) -> list[PeerStatus]: ...

    def statistics(self) -> TransportStatistics: ...

    def reachability(self) -> dict[str, Any]:
        """This node's reachability and advertised addresses, as JSON (ADR 0035)."""
        ...
