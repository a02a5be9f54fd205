"""Real py-libp2p hosts on 127.0.0.x: discovery, gossip, request/response, bounds, psk."""

from __future__ import annotations

import socket

import pytest
import trio
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from hearth.p2p.host import Libp2pTransport, open_transport
from hearth.p2p.peers import BAN_SCORE
from hearth.p2p.streams import encode_varint
from hearth.p2p.transport import (
    Inbound,
    PeerUnreachableError,
    RequestTimeoutError,
    Transport,
    TransportError,
)
from hearth.protocol import limits
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.identity import Identity
from tests.p2p.helpers import (
    ECHO,
    SILENT,
    TOPIC,
    config,
    connected_ids,
    seed,
    serve_echo,
    wait_until,
)

pytestmark = pytest.mark.integration

PSK_A = bytes(range(32))
PSK_B = bytes(range(1, 33))


def _conforms(transport: Libp2pTransport) -> Transport:
    return transport  # mypy proves Libp2pTransport satisfies the Transport protocol


async def raw_stream(client: Libp2pTransport, server: Libp2pTransport, protocol_id: str):  # type: ignore[no-untyped-def]
    return await client.host.new_stream(ID.from_base58(server.peer_id), [TProtocol(protocol_id)])


async def test_three_nodes_form_a_full_mesh_and_gossip() -> None:
    async with open_transport(config("a", "127.0.0.2")) as a:
        boot = (a.listen_addrs[0],)
        async with (
            open_transport(config("b", "127.0.0.3", bootstrap=boot)) as b,
            open_transport(config("c", "127.0.0.4", bootstrap=boot)) as c,
        ):
            nodes = (a, b, c)
            ids = {t.peer_id for t in nodes}
            # b and c never heard of each other. Our peer exchange joins them in well under a
            # second; py-libp2p's own auto-connector would take about 10 s, past this bound.
            full = lambda: all(connected_ids(t) == ids - {t.peer_id} for t in nodes)  # noqa: E731
            await wait_until(full, timeout_s=5)
            await wait_until(lambda: all(len(t.topic_peers(TOPIC)) == 2 for t in nodes))

            await b.publish(TOPIC, b"capacity ad from b")
            with trio.fail_after(5):
                got_a = await a.inbound.receive()
                got_c = await c.inbound.receive()
            for got in (got_a, got_c):
                assert got == Inbound(b.peer_id, TOPIC, b"capacity ad from b")
                assert got.reply is None
            # Our own publication is not handed back to us.
            assert b.inbound.statistics().current_buffer_used == 0


async def test_peer_id_is_protocol_identity_derivation() -> None:
    async with open_transport(config("id", "127.0.0.2")) as node:
        expected = Identity(seed("id")).peer_id
        assert node.peer_id == expected
        assert str(node.host.get_id()) == expected
        (addr,) = node.listen_addrs
        assert addr.startswith("/ip4/127.0.0.2/tcp/")
        assert addr.endswith(f"/p2p/{expected}")
        assert int(addr.split("/")[4]) > 0


async def test_request_reply_send_and_ping() -> None:
    seen: list[Inbound] = []
    async with (
        open_transport(config("srv", "127.0.0.2")) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, server, seen)
        assert await client.connect(server.listen_addrs[0]) == server.peer_id

        assert await client.request(server.peer_id, ECHO, b"bid", 5000) == b"echo:bid"
        assert await client.request(server.peer_id, ECHO, b"", 5000) == b"echo:"
        big = bytes(limits.FRAME_BYTES_MAX - len(b"echo:"))
        assert await client.request(server.peer_id, ECHO, big, 10_000) == b"echo:" + big

        await client.send(server.peer_id, SILENT, b"one-way")
        await wait_until(lambda: any(i.data == b"one-way" for i in seen))
        assert seen[-1].peer_id == client.peer_id and seen[-1].channel == SILENT

        rtt_ms = await client.ping(server.peer_id)
        assert 0 < rtt_ms < 5000
        (status,) = client.peers()
        assert (status.peer_id, status.connected, status.rtt_ms) == (server.peer_id, True, rtt_ms)
        assert status.addrs == server.listen_addrs
        nursery.cancel_scope.cancel()


async def test_unserved_protocol_and_unknown_peer_fail_fast() -> None:
    async with (
        open_transport(config("srv", "127.0.0.2", protocols=())) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        with trio.fail_after(5), pytest.raises(PeerUnreachableError):
            await client.request(server.peer_id, ECHO, b"x", 3000)
        with trio.fail_after(8), pytest.raises(PeerUnreachableError):
            await client.request(Identity(seed("nobody")).peer_id, ECHO, b"x", 1000)


async def test_oversize_frames_are_refused_both_ways() -> None:
    async with (
        open_transport(config("srv", "127.0.0.2")) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        with pytest.raises(LocalProtocolError):
            await client.request(server.peer_id, ECHO, bytes(limits.FRAME_BYTES_MAX + 1), 5000)
        with pytest.raises(LocalProtocolError):
            await client.publish(TOPIC, bytes(limits.GOSSIP_MESSAGE_BYTES_MAX + 1))

        # A hostile peer announces a frame over the cap: refused before any body is read.
        stream = await raw_stream(client, server, ECHO)
        await stream.write(encode_varint(limits.FRAME_BYTES_MAX + 1))
        await wait_until(lambda: server.statistics().frames_refused == 1, timeout_s=5)
        with trio.fail_after(5):
            try:
                chunk = await stream.read(1)
            except StreamError:  # reset: the server hung up on us
                chunk = b""
        assert chunk == b""
        assert server.reputation.score(client.peer_id) < 0
        assert server.inbound.statistics().current_buffer_used == 0


async def test_malformed_length_prefix_is_refused() -> None:
    async with (
        open_transport(config("srv", "127.0.0.2")) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        stream = await raw_stream(client, server, ECHO)
        await stream.write(b"\xff" * 6)  # a varint that never ends
        await wait_until(lambda: server.statistics().frames_refused == 1, timeout_s=5)


async def test_stalled_peers_hit_the_read_timeout_and_wedge_nothing() -> None:
    seen: list[Inbound] = []
    fast = {"stream_read_timeout_ms": 400}
    async with (
        open_transport(config("srv", "127.0.0.2", **fast)) as server,
        open_transport(config("cli", "127.0.0.3", **fast)) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, server, seen)
        await client.connect(server.listen_addrs[0])

        # Client stalls mid-frame: the server gives up after its read timeout.
        stream = await raw_stream(client, server, ECHO)
        await stream.write(encode_varint(10) + b"abc")
        with trio.fail_after(5):
            await wait_until(lambda: server.statistics().read_timeouts == 1)

        # Server never answers: the requester gives up after its own timeout.
        started_s = trio.current_time()
        with pytest.raises(RequestTimeoutError):
            await client.request(server.peer_id, SILENT, b"are you there", 300)
        assert 0.25 < trio.current_time() - started_s < 2

        # Both sides still serve normal traffic.
        assert await client.request(server.peer_id, ECHO, b"ok", 5000) == b"echo:ok"
        nursery.cancel_scope.cancel()


async def test_inbound_queue_bound_drops_and_counts() -> None:
    async with (
        open_transport(config("srv", "127.0.0.2", inbound_messages_max=2)) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        for index in range(5):
            await client.send(server.peer_id, SILENT, b"msg %d" % index)
        await wait_until(lambda: server.statistics().inbound_dropped == 3)
        assert server.inbound.statistics().current_buffer_used == 2
        # Nothing was blocked: a request is refused at once while the queue is still full.
        with trio.fail_after(5), pytest.raises(TransportError):
            await client.request(server.peer_id, ECHO, b"x", 3000)
        assert server.statistics().inbound_dropped == 4
        kept = {(await server.inbound.receive()).data for _ in range(2)}
        assert kept < {b"msg %d" % index for index in range(5)}


async def test_banned_peer_is_refused() -> None:
    async with (
        open_transport(config("srv", "127.0.0.2")) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
    ):
        await client.connect(server.listen_addrs[0])
        server.reputation.adjust(client.peer_id, BAN_SCORE)
        with trio.fail_after(5), pytest.raises(TransportError):
            await client.request(server.peer_id, ECHO, b"x", 3000)
        assert server.statistics().requests_refused == 1


async def test_bootstrap_retries_until_the_node_appears() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.5", 0))
        port = probe.getsockname()[1]
    boot = f"/ip4/127.0.0.5/tcp/{port}/p2p/{Identity(seed('late')).peer_id}"
    async with open_transport(config("early", "127.0.0.3", bootstrap=(boot,))) as early:
        await wait_until(lambda: early.statistics().dials_failed >= 2)
        async with open_transport(config("late", "127.0.0.5", port=port)) as late:
            await wait_until(lambda: early.peer_id in connected_ids(late))


async def test_private_network_keys_must_match() -> None:
    async with (
        open_transport(config("a", "127.0.0.2", psk=PSK_A)) as a,
        open_transport(config("b", "127.0.0.3", psk=PSK_B)) as b,
        open_transport(config("c", "127.0.0.4", psk=PSK_A)) as c,
    ):
        with trio.fail_after(10), pytest.raises(PeerUnreachableError):
            await b.connect(a.listen_addrs[0])
        assert a.peer_id not in connected_ids(b)
        assert await c.connect(a.listen_addrs[0]) == a.peer_id
        assert await c.ping(a.peer_id) > 0
        await wait_until(lambda: c.peer_id in connected_ids(a))
        assert b.peer_id not in connected_ids(a)
