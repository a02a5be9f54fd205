"""Connection events are pushed to the engine, messages carry their IP, the engine's book bans."""

from __future__ import annotations

import random

import pytest
import trio

from hearth.node.driver import Driver
from hearth.p2p.memory import MemoryNetwork
from hearth.p2p.transport import TransportError
from hearth.protocol import limits
from hearth.protocol.engine import PENALTY_POINTS_DEFAULT, Engine, EngineConfig
from hearth.protocol.events import MessageReceived, PeerConnected, PeerDisconnected
from hearth.protocol.identity import Identity, PeerId
from hearth.protocol.messages import PROTOCOL_BID
from tests.node.test_driver_boundary import TrioClock
from tests.p2p.helpers import config, seed, wait_until
from tests.protocol.harness import make_profile

POLL_INTERVAL_S_OLD = 1.0  # the driver used to diff transport.peers() this often


async def test_connection_events_reach_the_engine_at_once_and_messages_carry_the_ip(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    seen: list[object] = []
    async with (
        net.open_transport(config("node", "127.0.0.2", protocols=(PROTOCOL_BID,))) as node,
        trio.open_nursery() as nursery,
    ):
        engine = Engine(EngineConfig(Identity(seed("node")), make_profile(0)), random.Random(0))
        driver = Driver(engine, node, TrioClock())
        driver.observers.append(lambda event, effects: seen.append(event))
        await nursery.start(driver.run)
        started_s = trio.current_time()
        async with net.open_transport(
            config("peer", "127.0.0.3", bootstrap=node.listen_addrs)
        ) as peer:
            peer_id = PeerId(peer.peer_id)
            await wait_until(lambda: engine.peer_ips.get(peer_id) == "127.0.0.3")
            assert trio.current_time() - started_s < POLL_INTERVAL_S_OLD
            assert PeerConnected(peer_id, "127.0.0.3") in seen
            await wait_until(lambda: engine.reputation.get(peer_id).rtt_ms >= 0)  # pinged at once
            assert trio.current_time() - started_s < POLL_INTERVAL_S_OLD
            await peer.send(node.peer_id, PROTOCOL_BID, b"not even an envelope")
            await wait_until(lambda: any(isinstance(e, MessageReceived) for e in seen))
        [message] = [e for e in seen if isinstance(e, MessageReceived)]
        assert (message.ip, message.verified) == ("127.0.0.3", False)
        await wait_until(lambda: PeerDisconnected(peer_id) in seen)
        nursery.cancel_scope.cancel()


async def test_the_engines_book_decides_a_ban_and_the_transport_enforces_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        net.open_transport(config("node", "127.0.0.2", protocols=(PROTOCOL_BID,))) as node,
        net.open_transport(config("peer", "127.0.0.3", bootstrap=node.listen_addrs)) as peer,
        trio.open_nursery() as nursery,
    ):
        engine = Engine(EngineConfig(Identity(seed("node")), make_profile(0)), random.Random(0))
        driver = Driver(engine, node, TrioClock())
        await nursery.start(driver.run)
        peer_id = PeerId(peer.peer_id)
        sends_to_ban = -limits.REPUTATION_BAN_SCORE // PENALTY_POINTS_DEFAULT  # "malformed"
        for _ in range(sends_to_ban - 1):
            await peer.send(node.peer_id, PROTOCOL_BID, b"not even an envelope")
        await wait_until(lambda: engine.reputation.get(peer_id).penalties == sends_to_ban - 1)
        assert node.reputation.score(peer.peer_id) == 0  # the transport's book is not charged
        assert not node.reputation.is_banned(peer.peer_id)
        await peer.send(node.peer_id, PROTOCOL_BID, b"not even an envelope")
        await wait_until(lambda: node.reputation.is_banned(peer.peer_id))
        with pytest.raises(TransportError):
            await peer.send(node.peer_id, PROTOCOL_BID, b"refused before the engine")
        nursery.cancel_scope.cancel()
