"""Capacity ads are coalesced in the driver's queue: the newest of each author waits, once."""

from __future__ import annotations

import random

import trio

from hearth.node.driver import Driver
from hearth.p2p.memory import MemoryNetwork
from hearth.protocol.effects import Publish
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.events import MessageReceived, Started, TimerFired
from hearth.protocol.identity import Identity
from hearth.protocol.messages import TOPIC_CAPACITY
from hearth.protocol.timers import MarketAdTimer
from tests.node.test_driver_boundary import TrioClock
from tests.p2p.helpers import config, seed, wait_until
from tests.protocol.harness import make_profile


def ads(engine: Engine, now_ms: int, count: int) -> list[bytes]:
    """``count`` successive ads of ``engine``, a second apart."""
    out = []
    for i in range(count):
        event = Started() if i == 0 else TimerFired(MarketAdTimer())
        effects = engine.step(event, now_ms + i * 1000)
        out += [e.data for e in effects if isinstance(e, Publish)]
    return out


async def test_an_ad_takes_the_place_of_its_authors_ad_still_queued(
    autojump_clock: trio.abc.Clock,
) -> None:
    net = MemoryNetwork()
    async with (
        net.open_transport(config("node", "127.0.0.2")) as node,
        trio.open_nursery() as nursery,
    ):
        engine = Engine(EngineConfig(Identity(seed("node")), make_profile(0)), random.Random(0))
        driver = Driver(engine, node, TrioClock())
        stepped: list[bytes] = []
        driver.observers.append(
            lambda event, effects: isinstance(event, MessageReceived) and stepped.append(event.data)
        )
        now_ms = TrioClock().now_ms()
        alice = Engine(EngineConfig(Identity(seed("alice")), make_profile(1)), random.Random(1))
        bob = Engine(EngineConfig(Identity(seed("bob")), make_profile(2)), random.Random(2))
        alices, [bobs] = ads(alice, now_ms, 3), ads(bob, now_ms, 1)
        for data in (*alices, bobs):
            author = (alice if data in alices else bob).identity.peer_id
            driver._queue_ad(str(author), MessageReceived(author, TOPIC_CAPACITY, data))
        assert driver.ads_superseded == 2
        await nursery.start(driver.run)
        await wait_until(lambda: len(stepped) == 2)
        assert stepped == [alices[-1], bobs]  # alice's newest, in her first ad's place
        entry = engine.market.get(alice.identity.peer_id, TrioClock().now_ms())
        assert entry is not None and entry.created_ms == now_ms + 2000
        nursery.cancel_scope.cancel()
