"""A gossipsub stream that dies while its connection stays (p2p/patches/gossipsub.py, issue 14)."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from hearth.p2p.host import Libp2pTransport, open_transport
from tests.p2p.helpers import TOPIC, config, wait_until

pytestmark = pytest.mark.integration


async def _receive(transport: Libp2pTransport, data: bytes) -> None:
    with trio.fail_after(10):
        async for item in transport.inbound:
            if item.data == data:
                return


async def test_a_connected_peer_keeps_its_topics_when_our_stream_to_it_dies() -> None:
    async with open_transport(config("a", "127.0.0.2")) as a:  # noqa: SIM117 (b needs a's address)
        async with open_transport(config("b", "127.0.0.3", bootstrap=(a.listen_addrs[0],))) as b:
            pubsub: object = a._pubsub
            b_id = ID.from_base58(b.peer_id)
            peers = pubsub.peers  # type: ignore[attr-defined]
            await wait_until(lambda: b_id in peers and a.gossip_state(TOPIC)["subscribed"] == 1)
            await wait_until(lambda: b.gossip_state(TOPIC)["subscribed"] == 1)
            old = peers[b_id]
            await old.reset()  # our stream to b dies; the connection and b's stream to us stay

            # The next write to b fails; the stream is reopened while b stays connected.
            await a.publish(TOPIC, b"lost with the stream")
            await wait_until(lambda: b_id in peers and peers[b_id] is not old)
            assert b.peer_id in {p.to_base58() for p in a.host.get_connected_peers()}
            # Upstream forgot b's topics here; b announced them once, on its own stream.
            assert a.gossip_state(TOPIC)["subscribed"] == 1

            await a.publish(TOPIC, b"after the reopen")
            await _receive(b, b"after the reopen")
            await b.publish(TOPIC, b"and back")
            await _receive(a, b"and back")
