"""An in-memory `Transport` for tests of the node: the same contract, no sockets, instant links.

Transports opened on one `MemoryNetwork` find each other by peer id. Gossip reaches every
connected subscriber; requests and one-way sends go straight into the peer's bounded inbound
queue. Bounds, drops and errors match the libp2p transport, so node code cannot tell them apart
except by speed. Works under trio's `autojump_clock` (no real time is read).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from hearth.p2p.peers import PeerReputation
from hearth.p2p.transport import (
    PEER_EVENTS_MAX,
    EdgeCheck,
    HostConfig,
    Inbound,
    PeerEvent,
    PeerStatus,
    PeerUnreachableError,
    ReplyFn,
    RequestTimeoutError,
    TransportError,
    TransportStatistics,
)
from hearth.protocol import limits
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.identity import Identity
from hearth.protocol.inbound import Verdict


class MemoryNetwork:
    """The shared medium. ``rtt_ms`` is what `ping` reports (no delay is simulated)."""

    def __init__(self, rtt_ms: float = 1.0) -> None:
        self.rtt_ms = rtt_ms
        self._nodes: dict[str, MemoryTransport] = {}

    @asynccontextmanager
    async def open_transport(
        self, config: HostConfig, check: EdgeCheck | None = None
    ) -> AsyncIterator[MemoryTransport]:
        transport = MemoryTransport(self, config, check)
        if transport.peer_id in self._nodes:
            raise LocalProtocolError(f"{transport.peer_id} is already on this network")
        self._nodes[transport.peer_id] = transport
        try:
            for addr in config.bootstrap:
                await transport.connect(addr)
            # Stands in for peer exchange: peers of our peers become our peers.
            for peer_id in sorted(transport.connected_ids()):
                for other in sorted(self._nodes[peer_id].connected_ids()):
                    if other != transport.peer_id:
                        self.link(transport.peer_id, other)
            yield transport
        finally:
            for peer_id in list(transport.connected_ids()):
                self.unlink(transport.peer_id, peer_id)
            del self._nodes[transport.peer_id]
            transport.close_inbound()

    def node(self, peer_id: str) -> MemoryTransport | None:
        return self._nodes.get(peer_id)

    def link(self, a: str, b: str) -> None:
        for one, other in ((a, b), (b, a)):
            node = self._nodes[one]
            if other not in node._connected:
                node._connected.add(other)
                node._emit(PeerEvent(other, True, self._nodes[other]._config.listen_host))

    def unlink(self, a: str, b: str) -> None:
        """Cut the link between two peers (a partition); either may reconnect later."""
        for one, other in ((a, b), (b, a)):
            node = self._nodes.get(one)
            if node is not None and other in node._connected:
                node._connected.discard(other)
                node._emit(PeerEvent(other, False))


class MemoryTransport:
    """One node's end of a `MemoryNetwork`. Made by `MemoryNetwork.open_transport` only."""

    def __init__(
        self, network: MemoryNetwork, config: HostConfig, check: EdgeCheck | None = None
    ) -> None:
        self._network = network
        self._config = config
        self._check = check
        self._peer_id = str(Identity(config.seed).peer_id)
        self._connected: set[str] = set()
        self._rtt_ms: dict[str, float] = {}
        self._stats = TransportStatistics()
        self._reputation = PeerReputation()
        self._send, self._receive = trio.open_memory_channel[Inbound](config.inbound_messages_max)
        self._events_send, self._events_receive = trio.open_memory_channel[PeerEvent](
            PEER_EVENTS_MAX
        )

    @property
    def peer_id(self) -> str:
        return self._peer_id

    @property
    def listen_addrs(self) -> tuple[str, ...]:
        port = self._config.port or 4001
        return (f"/ip4/{self._config.listen_host}/tcp/{port}/p2p/{self._peer_id}",)

    @property
    def inbound(self) -> trio.MemoryReceiveChannel[Inbound]:
        return self._receive

    @property
    def peer_events(self) -> trio.MemoryReceiveChannel[PeerEvent]:
        return self._events_receive

    @property
    def reputation(self) -> PeerReputation:
        return self._reputation

    def statistics(self) -> TransportStatistics:
        return self._stats

    def reachability(self) -> dict[str, Any]:
        """In memory every node reaches every other directly."""
        return {"state": "public", "forced": True, "advertised": list(self.listen_addrs)}

    def connected_ids(self) -> set[str]:
        return set(self._connected)

    def close_inbound(self) -> None:
        self._send.close()
        self._events_send.close()

    def _emit(self, event: PeerEvent) -> None:
        try:
            self._events_send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._stats.inbound_dropped += 1

    async def publish(self, topic: str, data: bytes) -> None:
        if len(data) > limits.GOSSIP_MESSAGE_BYTES_MAX:
            raise LocalProtocolError(f"gossip message of {len(data)} bytes exceeds the cap")
        await trio.lowlevel.checkpoint()
        for peer_id in sorted(self._connected):
            peer = self._network.node(peer_id)
            if peer is not None and topic in peer._config.topics:
                peer._accept_gossip(self._peer_id, topic, data)

    async def request(self, peer_id: str, protocol_id: str, data: bytes, timeout_ms: int) -> bytes:
        answered = trio.Event()
        answer: list[bytes] = []

        async def reply(reply_data: bytes) -> None:
            _check_frame(reply_data)
            if answered.is_set():
                raise LocalProtocolError("a request can be answered only once")
            answer.append(reply_data)
            answered.set()
            await trio.lowlevel.checkpoint()

        await self._deliver_to(peer_id, protocol_id, data, reply)
        with trio.move_on_after(timeout_ms / 1000):
            await answered.wait()
        if not answer:
            raise RequestTimeoutError(f"no reply from {peer_id} within {timeout_ms} ms")
        return answer[0]

    async def send(self, peer_id: str, protocol_id: str, data: bytes) -> None:
        async def reply(reply_data: bytes) -> None:
            _check_frame(reply_data)  # the requester has gone: the answer goes nowhere
            await trio.lowlevel.checkpoint()

        await self._deliver_to(peer_id, protocol_id, data, reply)

    async def connect(self, multiaddr: str) -> str:
        await trio.lowlevel.checkpoint()
        peer_id = multiaddr.rsplit("/p2p/", 1)[-1]
        if "/p2p/" not in multiaddr or self._network.node(peer_id) is None:
            self._stats.dials_failed += 1
            raise PeerUnreachableError(f"could not connect to {multiaddr}")
        if peer_id != self._peer_id:
            self._network.link(self._peer_id, peer_id)
        return peer_id

    async def ping(self, peer_id: str) -> float:
        await trio.lowlevel.checkpoint()
        if peer_id not in self._connected:
            raise PeerUnreachableError(f"not connected to {peer_id}")
        self._rtt_ms[peer_id] = self._network.rtt_ms
        return self._network.rtt_ms

    def peers(self) -> list[PeerStatus]:
        out = []
        for peer_id in sorted(self._connected):
            peer = self._network.node(peer_id)
            addrs = peer.listen_addrs if peer is not None else ()
            rtt_ms = self._rtt_ms.get(peer_id)
            out.append(PeerStatus(peer_id, addrs, True, rtt_ms, connection="direct"))
        return out

    async def _deliver_to(
        self, peer_id: str, protocol_id: str, data: bytes, reply: ReplyFn
    ) -> None:
        _check_frame(data)
        await trio.lowlevel.checkpoint()
        peer = self._network.node(peer_id)
        if peer is None or peer_id not in self._connected:
            raise PeerUnreachableError(f"not connected to {peer_id}")
        if protocol_id not in peer._config.protocols:
            raise PeerUnreachableError(f"{peer_id} does not serve {protocol_id}")
        peer._accept_stream(self._peer_id, protocol_id, data, reply)

    def _accept_gossip(self, author: str, topic: str, data: bytes) -> None:
        if self._reputation.is_banned(author) or not self._checked(author, topic, data, True):
            self._stats.gossip_refused += 1
        elif not self._offer(Inbound(author, topic, data, verified=self._check is not None)):
            self._stats.inbound_dropped += 1

    def _accept_stream(self, sender: str, protocol_id: str, data: bytes, reply: ReplyFn) -> None:
        if self._reputation.is_banned(sender):
            self._stats.requests_refused += 1
            raise TransportError(f"{self._peer_id} refused the stream")
        if not self._checked(sender, protocol_id, data, False):
            self._stats.edge_refused += 1
            raise TransportError(f"{self._peer_id} refused the request at its edge")
        # The memory network "observes" a sender at the host it listens on.
        peer = self._network.node(sender)
        remote_ip = peer._config.listen_host if peer is not None else ""
        item = Inbound(sender, protocol_id, data, reply, remote_ip, self._check is not None)
        if not self._offer(item):
            self._stats.inbound_dropped += 1
            raise TransportError(f"{self._peer_id} dropped the request: inbound queue full")

    def _checked(self, sender: str, channel: str, data: bytes, gossip: bool) -> bool:
        if self._check is None:
            return True
        return self._check(sender, channel, data, gossip=gossip) is Verdict.ACCEPT

    def _offer(self, item: Inbound) -> bool:
        try:
            self._send.send_nowait(item)
        except (trio.WouldBlock, trio.ClosedResourceError):
            return False
        return True


def _check_frame(data: bytes) -> None:
    if len(data) > limits.FRAME_BYTES_MAX:
        raise LocalProtocolError(f"frame of {len(data)} bytes exceeds {limits.FRAME_BYTES_MAX}")
