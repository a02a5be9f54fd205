"""The driver on a virtual clock: timers fire through the shared interpreter, and local commands
go through the driver's queue and report their refusal to the caller."""

from __future__ import annotations

import pytest
import trio

from hearth.protocol.effects import CancelTimer, JobProgress, SaveJob, SetTimer
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.events import MessageReceived, PublishJob, RuntimeOffered, TimerFired
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import JobId
from hearth.protocol.timers import BidsTimer, JobDeadlineTimer, MarketAdTimer, SlotTimer, TimerKey
from tests.node.test_driver_boundary import running_driver

JOB = JobId(bytes(16))


def publish_job(job_id: JobId, now_ms: int, replicas: int = 2) -> PublishJob:
    return PublishJob(
        job_id=job_id,
        runtime="wasm",
        module_hash=b"\1" * 32,
        module_bytes=10,
        input_hash=b"\2" * 32,
        input_bytes=10,
        fuel_max=10**9,
        memory_mb_max=64,
        deadline_ms=now_ms + 120_000,
        max_price_mc_per_tfuel=50_000,
        bid_window_ms=1_000,
        replicas=replicas,
    )


async def test_timers_fire_at_their_deadlines_and_a_cancelled_one_never(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_driver() as (driver, _peer, _):
        fired: list[tuple[int, TimerKey]] = []

        def observe(event: object, effects: list[object]) -> None:
            # Only the timers set here: the node's own (its next capacity ad) run beside them.
            if isinstance(event, TimerFired) and not isinstance(event.key, MarketAdTimer):
                fired.append((driver.clock.now_ms() - start_ms, event.key))

        driver.observers.append(observe)
        start_ms = driver.clock.now_ms()
        driver.execute_all(
            [
                SetTimer(BidsTimer(JOB), start_ms + 5_000),
                SetTimer(JobDeadlineTimer(JOB), start_ms + 2_000),
                SetTimer(SlotTimer(JOB, 0), start_ms + 3_000),
                CancelTimer(SlotTimer(JOB, 0)),
                SetTimer(BidsTimer(JOB), start_ms + 4_000),  # replaces the deadline at 5 s
            ]
        )
        await trio.sleep(10)
        assert fired == [(2_000, JobDeadlineTimer(JOB)), (4_000, BidsTimer(JOB))]
        timers = driver.interpreter.timers
        assert not any(
            key in timers for key in (BidsTimer(JOB), JobDeadlineTimer(JOB), SlotTimer(JOB, 0))
        )


async def test_a_local_command_goes_through_the_queue_and_its_refusal_comes_back(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_driver() as (driver, _peer, _):
        saved: list[SaveJob] = []
        driver.interpreter.register(SaveJob, saved.append)  # what JobService registers
        driver.interpreter.register(JobProgress, lambda effect: None)
        now_ms = driver.clock.now_ms()
        with pytest.raises(LocalProtocolError, match="replicas"):
            await driver.call(publish_job(JOB, now_ms, replicas=0))
        assert driver.engine.publisher.summary(JOB) is None
        await driver.call(publish_job(JOB, now_ms))
        summary = driver.engine.publisher.summary(JOB)  # taken by the engine when call returns
        assert summary is not None and summary.phase == "bidding"
        assert driver.interpreter.timers.deadline_ms(BidsTimer(JOB)) == now_ms + 1_000
        assert [save.job_id for save in saved] == [JOB]
        assert driver.boundary.failures == 0  # a refused command is the caller's, not a failure


async def test_a_command_that_fails_in_the_engine_is_logged_and_reported_false(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with running_driver() as (driver, peer, _):
        assert not await driver.call(MessageReceived(PeerId(peer.peer_id), "t", b"boom"))
        assert driver.boundary.failures == 1  # the boundary caught it, as for any event
        assert await driver.call(RuntimeOffered("python"))
        assert "python" in driver.engine.config.profile.runtimes
