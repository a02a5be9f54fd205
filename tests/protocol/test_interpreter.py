"""The one effect interpreter and its timer table, and the events that replaced side doors."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from hearth.protocol.effects import CancelTimer, Effect, Log, Publish, SetTimer
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.events import JobRestored, RuntimeOffered, TimerFired
from hearth.protocol.identity import Identity
from hearth.protocol.interpreter import EFFECT_TYPES, Interpreter, Timers
from hearth.protocol.job_messages import JobId
from hearth.protocol.timers import (
    BidsTimer,
    CountersignTimer,
    JobDeadlineTimer,
    MarketAdTimer,
    SlotTimer,
    TimerKey,
)
from tests.protocol.harness import T0_MS, Cluster, make_profile

ROOT = Path(__file__).resolve().parents[2]
SHELLS = [
    *sorted((ROOT / "node").rglob("*.py")),
    *sorted((ROOT / "testnet").rglob("*.py")),
    ROOT / "tests" / "protocol" / "harness.py",
]
JOB = JobId(bytes(16))


def test_a_key_set_again_replaces_its_deadline_and_a_cancelled_one_never_fires() -> None:
    timers = Timers()
    timers.set(BidsTimer(JOB), 100)
    timers.set(BidsTimer(JobId(bytes(JOB))), 300)  # equal fields: the same timer
    timers.set(JobDeadlineTimer(JOB), 200)
    timers.cancel(JobDeadlineTimer(JOB))
    assert len(timers) == 1 and timers.next_deadline() == 300
    assert timers.due(299) == []
    assert timers.due(300) == [BidsTimer(JOB)]
    assert timers.next_deadline() is None and timers.due(10**9) == []


def test_due_fires_by_deadline_then_in_the_order_the_deadlines_were_set() -> None:
    timers = Timers()
    keys: list[TimerKey] = [SlotTimer(JOB, 2), MarketAdTimer(), SlotTimer(JOB, 1), BidsTimer(JOB)]
    for key in keys:
        timers.set(key, 50)
    timers.set(CountersignTimer(b"\1" * 32), 10)
    assert timers.due(50) == [CountersignTimer(b"\1" * 32), *keys]


def test_take_fires_a_deadline_only_while_it_stands() -> None:
    timers = Timers()
    timers.set(MarketAdTimer(), 100)
    timers.set(MarketAdTimer(), 200)  # the wake-up left for 100 is stale now
    assert not timers.take(MarketAdTimer(), 100)
    assert timers.take(MarketAdTimer(), 200)
    assert not timers.take(MarketAdTimer(), 200)  # fired once
    assert not timers.expedite(MarketAdTimer(), 5)
    timers.set(MarketAdTimer(), 900)
    assert timers.expedite(MarketAdTimer(), 5) and timers.due(5) == [MarketAdTimer()]


def test_the_interpreter_keeps_timers_and_tells_the_shell_when_to_wake() -> None:
    woken: list[tuple[TimerKey, int]] = []
    interpreter: Interpreter[None] = Interpreter(lambda key, at_ms: woken.append((key, at_ms)))
    interpreter.run(SetTimer(BidsTimer(JOB), 70))
    interpreter.run(SetTimer(JobDeadlineTimer(JOB), 80))
    interpreter.run(CancelTimer(BidsTimer(JOB)))
    assert woken == [(BidsTimer(JOB), 70), (JobDeadlineTimer(JOB), 80)]
    assert interpreter.timers.due(100) == [JobDeadlineTimer(JOB)]


def test_handlers_are_looked_up_by_type_and_what_they_return_goes_back() -> None:
    interpreter: Interpreter[str] = Interpreter()
    interpreter.register(Publish, lambda effect: effect.topic)
    assert interpreter.run(Publish("t", b"")) == "t"
    assert Log in interpreter.missing() and Publish not in interpreter.missing()
    assert interpreter.missing() | {Publish, SetTimer, CancelTimer} == EFFECT_TYPES


def test_an_effect_without_a_handler_or_registered_twice_is_a_programming_error() -> None:
    interpreter: Interpreter[None] = Interpreter()
    with pytest.raises(AssertionError, match="no handler for effect Log"):
        interpreter.run(Log("info", "x"))
    interpreter.register(Log, lambda effect: None)
    with pytest.raises(AssertionError, match="Log registered twice"):
        interpreter.register(Log, lambda effect: None)


def test_no_shell_carries_out_effects_with_its_own_isinstance_chain() -> None:
    """The daemon, the simulator and the harness dispatch through ``Interpreter`` only."""
    names = {kind.__name__ for kind in EFFECT_TYPES}
    found = []
    for path in SHELLS:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "isinstance"):
                continue
            if len(node.args) != 2:
                continue
            named = {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
            # The harness reads back its log of what went on the wire by type; it sends nothing so.
            allowed = {"Send", "Publish"} if path.name == "harness.py" else set()
            if named & names - allowed:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []


def test_the_test_harness_registers_every_effect() -> None:
    cluster = Cluster(2)
    assert all(not node.interpreter.missing() for node in cluster.nodes)


def test_a_runtime_is_offered_by_an_event_not_by_swapping_the_config() -> None:
    engine = Engine(EngineConfig(Identity(bytes(32)), make_profile(0)), random.Random(0))
    assert "python" not in engine.market_component.current_ad(T0_MS).runtimes
    assert engine.step(RuntimeOffered("python"), T0_MS) == []
    assert engine.step(RuntimeOffered("python"), T0_MS) == []  # offered once
    assert engine.market_component.current_ad(T0_MS).runtimes == ("wasm", "python")


def test_a_saved_job_comes_back_through_step_and_its_timers_are_typed() -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(3, b"\0asm", b"input")
    cluster.run_until(lambda: cluster.phase(3, job_id) == "running")
    fresh = Engine(cluster.nodes[3].engine.config, random.Random(1))
    effects: list[Effect] = fresh.step(JobRestored(cluster.saved_state(3, job_id)), cluster.now_ms)
    timers = [e.key for e in effects if isinstance(e, SetTimer)]
    assert JobDeadlineTimer(job_id) in timers
    assert all(isinstance(key, SlotTimer) for key in timers if key != JobDeadlineTimer(job_id))
    assert fresh.publisher.summary(job_id) is not None
    later = fresh.step(TimerFired(JobDeadlineTimer(job_id)), 2 * cluster.now_ms)
    assert fresh.publisher.jobs[job_id].phase.value == "failed" and later


def test_timer_labels_stay_what_the_simulator_traced_before_keys_were_typed() -> None:
    assert str(MarketAdTimer()) == "market:ad"
    assert str(SlotTimer(JOB, 3)) == f"publisher:{bytes(16).hex()}:slot-3"
    assert str(CountersignTimer(b"\xab")) == "payments:ab:countersign"
