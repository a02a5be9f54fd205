"""The driver's failure boundary: a handler that raises fails its own work, never ``Driver.run``."""

from __future__ import annotations

import dataclasses
import errno
import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from hearth.node.driver import Driver
from hearth.node.logs import LOGGER_NAME, LogLimiter
from hearth.p2p.memory import MemoryNetwork
from hearth.p2p.transport import Inbound, Transport
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.events import MessageReceived
from hearth.protocol.identity import Identity, PeerId
from tests.p2p.helpers import ECHO, TOPIC, config, seed
from tests.protocol.harness import make_profile


class TrioClock:
    """Milliseconds on trio's clock, so that autojump_clock drives the log limiter too."""

    def now_ms(self) -> int:
        return int(trio.current_time() * 1000)


class CrashingEngine(Engine):
    """A real engine, except that a message of b"boom" raises from ``step`` (a bug a peer found)."""

    def step(self, event: object, now_ms: int) -> list[object]:
        if isinstance(event, MessageReceived) and event.data == b"boom":
            raise ZeroDivisionError("a bug reached by a peer's message")
        return super().step(event, now_ms)


@dataclasses.dataclass(frozen=True)
class Crash:
    """An effect whose handler fails: ``how`` is "sync" or "async"."""

    how: str


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.getMessage() == name]


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


async def answer_or_crash(item: Inbound) -> None:
    """A request handler with the bug of issue 12: some inputs make it raise."""
    assert item.reply is not None
    if item.data == b"seek":
        raise OSError(errno.EINVAL, "Invalid argument")
    if item.data == b"group":
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_raise, ValueError("one"))
            nursery.start_soon(_raise, KeyError("two"))
    if item.data == b"interrupt":
        raise KeyboardInterrupt
    await item.reply(b"ok:" + item.data)


async def _raise(exc: Exception) -> None:
    raise exc


@asynccontextmanager
async def running_driver() -> AsyncIterator[tuple[Driver, Transport, trio.Nursery]]:
    net = MemoryNetwork()
    async with (
        net.open_transport(config("node", "127.0.0.2")) as node,
        net.open_transport(config("peer", "127.0.0.3", bootstrap=node.listen_addrs)) as peer,
        trio.open_nursery() as nursery,
    ):
        identity = Identity(seed("node"))
        engine = CrashingEngine(EngineConfig(identity, make_profile(0)), random.Random(0))
        driver = Driver(engine, node, TrioClock())
        driver.request_handlers[ECHO] = answer_or_crash

        def crash_now(effect: Crash) -> None:
            raise RuntimeError("a sync effect handler failed")

        async def crash_later() -> None:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.ENOSPC, "No space left on device")

        def crash(effect: Crash) -> object:
            return crash_later() if effect.how == "async" else crash_now(effect)

        driver.interpreter.register(Crash, crash)
        await nursery.start(driver.run)
        yield driver, peer, nursery
        nursery.cancel_scope.cancel()


async def test_a_request_handler_that_raises_does_not_end_the_driver(
    autojump_clock: trio.abc.Clock, records: Records
) -> None:
    async with running_driver() as (driver, peer, _):
        node_id = driver.transport.peer_id
        for bad in (b"seek", b"group"):
            with pytest.raises(trio.TooSlowError):
                with trio.fail_after(1):
                    await peer.request(node_id, ECHO, bad, 60_000)
        assert await peer.request(node_id, ECHO, b"still here", 1_000) == b"ok:still here"
        assert driver.boundary.failures == 2
        assert driver.transport.reputation.score(peer.peer_id) < 0
        [first, second] = records.events("handler-failed")
        assert first.exc_info is not None
        assert isinstance(first.exc_info[1], OSError) and first.exc_info[1].errno == errno.EINVAL
        assert first.fields["peer"] == peer.peer_id  # type: ignore[attr-defined]
        assert isinstance(second.exc_info[1], ExceptionGroup)  # type: ignore[index]


async def test_effects_and_a_failing_step_are_bounded_too(
    autojump_clock: trio.abc.Clock, records: Records
) -> None:
    async with running_driver() as (driver, peer, _):
        driver.execute_all([Crash("sync"), Crash("async"), Crash("sync")])
        await driver.submit(MessageReceived(PeerId(peer.peer_id), TOPIC, b"boom"))
        await peer.publish(TOPIC, b"boom")
        await trio.sleep(1)
        assert driver.boundary.failures == 5
        whats = sorted(r.fields["what"] for r in records.events("handler-failed"))  # type: ignore[attr-defined]
        assert whats == [
            "effect:Crash", "effect:Crash", "effect:Crash", "step:MessageReceived",
            "step:MessageReceived",
        ]  # fmt: skip
        assert driver.transport.reputation.score(peer.peer_id) < 0
        node_id = driver.transport.peer_id
        assert await peer.request(node_id, ECHO, b"alive", 1_000) == b"ok:alive"


async def test_the_same_failure_repeated_is_logged_a_few_times_and_counted(
    autojump_clock: trio.abc.Clock, records: Records
) -> None:
    async with running_driver() as (driver, _peer, _):
        for _ in range(200):
            driver.execute_all([Crash("sync")])
        assert driver.boundary.failures == 200
        assert len(records.events("handler-failed")) == LogLimiter().lines_max
        await trio.sleep(11)  # one log window: the driver summarises what it held back
        [summary] = records.events("log-lines-suppressed")
        assert summary.fields == {"key": "effect:Crash:RuntimeError", "count": 190}  # type: ignore[attr-defined]


async def test_a_flood_of_rejected_messages_is_summarised_not_logged_line_by_line(
    autojump_clock: trio.abc.Clock, records: Records
) -> None:
    async with running_driver() as (driver, peer, _):
        for _ in range(300):
            await peer.publish(TOPIC, b"\x93garbage")
            await trio.testing.wait_all_tasks_blocked()  # the driver takes each before the next
        await trio.sleep(11)
        dropped = records.events("message-dropped")
        assert len(dropped) == LogLimiter().lines_max
        [summary] = records.events("log-lines-suppressed")
        delivered = 300 - driver.transport.statistics().gossip_refused  # the rest: peer banned
        assert delivered > 2 * len(dropped)
        assert summary.fields["count"] == delivered - len(dropped)  # type: ignore[attr-defined]


async def test_keyboard_interrupt_and_cancellation_still_end_the_driver(
    autojump_clock: trio.abc.Clock,
) -> None:
    with pytest.raises(BaseException) as raised:
        async with running_driver() as (driver, peer, _):
            with trio.move_on_after(1):
                await peer.request(driver.transport.peer_id, ECHO, b"interrupt", 60_000)
            await trio.sleep_forever()
    assert raised.group_contains(KeyboardInterrupt) or raised.type is KeyboardInterrupt
    with trio.move_on_after(5) as scope:  # a cancelled node stops: nothing swallows Cancelled
        async with running_driver():
            await trio.sleep_forever()
    assert scope.cancelled_caught
