"""Connection events from py-libp2p's swarm notifications, as a bounded channel of `PeerEvent`.

The node used to diff `Transport.peers()` every second, so a peer's first messages could beat its
connection event by up to a second. The swarm calls a registered `INotifee` as each connection
is added (after the muxer is up, before or after its first streams: hence `Inbound.remote_ip`)
and after each is removed. A peer counts as connected from its first connection to the close of
its last; each new connection is announced with its own observed address, which the peer cannot
forge. The swarm awaits its notifees inline, so ours never blocks: a full channel drops the event
and counts it.
"""

from __future__ import annotations

from typing import Any

import trio
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from multiaddr import Multiaddr

from hearth.p2p.transport import PEER_EVENTS_MAX, PeerEvent

_CARRIER_ATTRS = ("secured_conn", "_conn", "conn", "_wrapped", "stream")
_CARRIER_DEPTH_MAX = 8
_CARRIER_LAYERS_MAX = 8


def carried_by_stream(muxed_conn: Any) -> bool:
    """Whether a connection runs inside a libp2p stream: a circuit relay connection (ADR 0035).

    Its socket address is the relay's, so it says nothing of the peer; and upstream tags it as
    relayed only after the swarm has announced it, so the layers are looked through instead.
    """
    layers = [muxed_conn]
    for _ in range(_CARRIER_DEPTH_MAX):
        inner = []
        for layer in layers:
            if isinstance(layer, INetStream):
                return True
            for attr in _CARRIER_ATTRS:
                try:
                    inner.append(object.__getattribute__(layer, attr))
                except AttributeError:
                    continue
        layers = [x for x in inner if x is not None][:_CARRIER_LAYERS_MAX]
        if not layers:
            return False
    return False


def conn_ip(muxed_conn: Any) -> str:
    """The remote IP of a connection as its socket sees it ("" if it has none, or is relayed)."""
    if carried_by_stream(muxed_conn):
        return ""
    try:
        address = muxed_conn.get_remote_address()
    except (AttributeError, OSError):
        return ""
    return str(address[0]) if address else ""


class ConnectionNotifee(INotifee):
    def __init__(self, events_max: int = PEER_EVENTS_MAX) -> None:
        self._send, self.receive = trio.open_memory_channel[PeerEvent](events_max)
        self.dropped = 0

    def _emit(self, event: PeerEvent) -> None:
        try:
            self._send.send_nowait(event)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        self._emit(PeerEvent(str(peer.to_base58()), True, conn_ip(conn.muxed_conn)))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        peer = conn.muxed_conn.peer_id
        if not network.connections.get(peer):  # the swarm removed this one before telling us
            self._emit(PeerEvent(str(peer.to_base58()), False))

    def close(self) -> None:
        self._send.close()

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: Multiaddr) -> None:
        return None
