"""The edge check on real py-libp2p hosts: what it refuses is neither forwarded nor queued."""

from __future__ import annotations

import pytest
import trio
from libp2p.peer.id import ID

from hearth.node.clock import SystemClock
from hearth.node.edge import EdgeGate
from hearth.p2p.host import Libp2pTransport, open_transport
from hearth.p2p.transport import EdgeCheck, Inbound, PeerEvent, TransportError
from hearth.protocol.events import InboundRefused, Started
from hearth.protocol.messages import PROTOCOL_BID, TOPIC_CAPACITY
from tests.p2p.helpers import ECHO, config, connected_ids, wait_until
from tests.protocol.test_engine_market import make_engine, published

pytestmark = pytest.mark.integration

NO_EXCHANGE_S = 3600.0  # one peer-exchange round at start, then none: the line stays a line


def _gate(refusals: list[object]) -> EdgeGate:
    gate = EdgeGate(make_engine(9), SystemClock())
    gate.submit = lambda event: refusals.append(event) is None
    return gate


def _signed_ad() -> bytes:
    return published(make_engine(1).step(Started(), SystemClock().now_ms()))


def _forged(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])  # the envelope's signature is its last field


def _line_config(name: str, host: str, **overrides: object):  # type: ignore[no-untyped-def]
    return config(name, host, topics=(TOPIC_CAPACITY,), discovery_interval_s=NO_EXCHANGE_S,
                  **overrides)  # fmt: skip


async def _drain(transport: Libp2pTransport, seen: list[Inbound]) -> None:
    async for item in transport.inbound:
        seen.append(item)


@pytest.mark.parametrize("b_checks", [True, False], ids=["checked", "unchecked"])
async def test_a_badly_signed_gossip_message_is_not_forwarded_to_a_third_peer(
    b_checks: bool,
) -> None:
    refusals: list[object] = []
    b_check: EdgeCheck | None = _gate(refusals) if b_checks else None
    # A is the attacker (it checks nothing it publishes); C checks nothing, to see what B sends.
    async with open_transport(_line_config("b", "127.0.0.3"), b_check) as b:
        b_addr = (b.listen_addrs[0],)
        async with (
            open_transport(_line_config("a", "127.0.0.2", bootstrap=b_addr)) as a,
            open_transport(_line_config("c", "127.0.0.4", bootstrap=b_addr)) as c,
            trio.open_nursery() as nursery,
        ):
            await wait_until(lambda: connected_ids(b) == {a.peer_id, c.peer_id})
            await wait_until(
                lambda: b.topic_peers(TOPIC_CAPACITY) == sorted([a.peer_id, c.peer_id])
            )
            await wait_until(lambda: a.topic_peers(TOPIC_CAPACITY) == [b.peer_id])
            await wait_until(lambda: c.topic_peers(TOPIC_CAPACITY) == [b.peer_id])
            assert connected_ids(c) == {b.peer_id}  # a line: C hears A only through B
            seen_b: list[Inbound] = []
            seen_c: list[Inbound] = []
            nursery.start_soon(_drain, b, seen_b)
            nursery.start_soon(_drain, c, seen_c)

            good = _signed_ad()
            bad = _forged(good)
            await a.publish(TOPIC_CAPACITY, bad)
            await a.publish(TOPIC_CAPACITY, good)
            # One path A -> B -> C, in order: had B forwarded the bad one, it would come first.
            await wait_until(lambda: any(item.data == good for item in seen_c))
            got_c = [item.data for item in seen_c]
            if b_checks:
                assert got_c == [good]
                assert [item.data for item in seen_b] == [good]
                assert all(item.verified for item in seen_b)
                assert b.statistics().gossip_refused == 1
                assert refusals == [InboundRefused(a.peer_id, TOPIC_CAPACITY, "bad-signature")]
            else:
                assert got_c == [bad, good]  # without the validator B forwards the forgery
            nursery.cancel_scope.cancel()


async def test_the_first_frame_of_a_connection_carries_its_remote_ip() -> None:
    refusals: list[object] = []
    async with (
        open_transport(config("srv", "127.0.0.2"), _gate(refusals)) as server,
        open_transport(config("cli", "127.0.0.5")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        # The very first inbound item of this connection already knows where it came from.
        await client.send(server.peer_id, ECHO, b"not an engine channel: passes the edge")
        with trio.fail_after(5):
            first = await server.inbound.receive()
        assert (first.data, first.remote_ip) == (
            b"not an engine channel: passes the edge",
            "127.0.0.5",
        )


async def test_a_request_refused_at_the_edge_is_never_queued() -> None:
    refusals: list[object] = []
    async with (
        open_transport(
            config("srv2", "127.0.0.2", protocols=(PROTOCOL_BID,)), _gate(refusals)
        ) as server,
        open_transport(config("cli2", "127.0.0.5")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        with pytest.raises(TransportError):
            await client.request(server.peer_id, PROTOCOL_BID, _forged(_signed_ad()), 2_000)
        await wait_until(lambda: server.statistics().edge_refused == 1)
        assert server.inbound.statistics().current_buffer_used == 0
        assert refusals == [InboundRefused(client.peer_id, PROTOCOL_BID, "bad-signature")]


async def test_connection_events_are_pushed_with_the_observed_address() -> None:
    async with (
        open_transport(_line_config("hub", "127.0.0.2")) as hub,
        open_transport(_line_config("leaf", "127.0.0.6")) as leaf,
    ):
        await leaf.connect(hub.listen_addrs[0])
        with trio.fail_after(5):
            assert await hub.peer_events.receive() == PeerEvent(leaf.peer_id, True, "127.0.0.6")
            assert await leaf.peer_events.receive() == PeerEvent(hub.peer_id, True, "127.0.0.2")
        await hub.host.disconnect(ID.from_base58(leaf.peer_id))
        with trio.fail_after(5):
            assert await hub.peer_events.receive() == PeerEvent(leaf.peer_id, False)
