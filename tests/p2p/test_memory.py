"""The in-memory Transport keeps the same contract as the libp2p one (for node tests)."""

from __future__ import annotations

import pytest
import trio

from hearth.p2p.memory import MemoryNetwork
from hearth.p2p.transport import Inbound, PeerUnreachableError, RequestTimeoutError, Transport
from hearth.protocol import limits
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.identity import Identity
from tests.p2p.helpers import ECHO, SILENT, TOPIC, config, connected_ids, seed, serve_echo


async def test_bootstrap_meshes_gossips_and_answers(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    seen: list[Inbound] = []
    async with net.open_transport(config("a", "127.0.0.2")) as a:
        boot = a.listen_addrs
        async with (
            net.open_transport(config("b", "127.0.0.3", bootstrap=boot)) as b,
            net.open_transport(config("c", "127.0.0.4", bootstrap=boot)) as c,
            trio.open_nursery() as nursery,
        ):
            nodes: tuple[Transport, ...] = (a, b, c)
            assert a.peer_id == Identity(seed("a")).peer_id
            for node in nodes:
                assert connected_ids(node) == {t.peer_id for t in nodes} - {node.peer_id}
            await b.publish(TOPIC, b"ad")
            assert await a.inbound.receive() == Inbound(b.peer_id, TOPIC, b"ad")
            assert await c.inbound.receive() == Inbound(b.peer_id, TOPIC, b"ad")

            nursery.start_soon(serve_echo, a, seen)
            assert await c.request(a.peer_id, ECHO, b"x", 1000) == b"echo:x"
            with pytest.raises(RequestTimeoutError):
                await c.request(a.peer_id, SILENT, b"x", 1000)
            with pytest.raises(PeerUnreachableError):
                await c.request(a.peer_id, "/not/served", b"x", 1000)
            with pytest.raises(LocalProtocolError):
                await c.send(a.peer_id, ECHO, bytes(limits.FRAME_BYTES_MAX + 1))
            assert await c.ping(a.peer_id) == net.rtt_ms
            nursery.cancel_scope.cancel()


async def test_queue_bound_and_partition(autojump_clock: trio.abc.Clock) -> None:
    net = MemoryNetwork()
    async with (
        net.open_transport(config("a", "127.0.0.2", inbound_messages_max=2)) as a,
        net.open_transport(config("b", "127.0.0.3")) as b,
    ):
        await b.connect(a.listen_addrs[0])
        for _ in range(5):
            await b.publish(TOPIC, b"m")
        assert a.statistics().inbound_dropped == 3
        net.unlink(a.peer_id, b.peer_id)
        with pytest.raises(PeerUnreachableError):
            await b.send(a.peer_id, SILENT, b"x")
