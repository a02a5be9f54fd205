"""The simulator runs the daemon's restore path: a publisher that crashes mid-job gets its saved
job back as a ``JobRestored`` event through ``Engine.step`` and finishes it, paying once."""

from __future__ import annotations

from hearth.testnet.scenario import Scenario
from hearth.testnet.sim.cluster import Control
from hearth.testnet.sim.simulation import SimConfig, Simulation

CALM = Scenario(name="calm", duration_s=20)
DOWN_MS = 4_000


def test_a_job_survives_its_publisher_crashing_through_restore() -> None:
    sim = Simulation(SimConfig(nodes=30, jobs=1, seed=7, scenario=CALM))
    cluster = sim.cluster
    while not sim.jobs or next(iter(sim.jobs.values())).phase != "running":
        cluster.step()  # until the job is awarded: its winners are working for the publisher
    [record] = sim.jobs.values()
    publisher = cluster.nodes[record.publisher]
    assert record.job_id in publisher.saved
    crashed_engine = publisher.engine

    cluster.stop(publisher)  # a crash: the engine and every timer are gone, the saved state stays
    assert not publisher.alive and len(publisher.timers) == 0
    cluster.push(cluster.now_ms + DOWN_MS, -1, Control("up", publisher.index))
    sim.run()  # the checkers raise on any violation (paid twice, wrong result, credits)

    assert cluster.counters["jobs_restored"] == 1
    assert publisher.alive and publisher.life == 1 and publisher.engine is not crashed_engine
    assert publisher.engine is not None
    job = publisher.engine.publisher.jobs[record.job_id]  # the restored job, in the new engine
    assert job.phase.value == "paid" and record.phase == "paid"
    assert sim.checker.pending_pays == 0 and sim.checker.unsettled_mc == 0
