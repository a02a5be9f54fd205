"""Run one simulation end to end and say how to replay it. I/O: the report, when ``out`` is set."""

from __future__ import annotations

import dataclasses
import gc
import resource
import shlex
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hearth.testnet.sim.checkers import InvariantViolation
from hearth.testnet.sim.report import summarise, write_report
from hearth.testnet.sim.simulation import SimConfig, Simulation

GC_THRESHOLD_0 = 50_000  # allocations between young collections (CPython's default: 700)


@dataclasses.dataclass
class SimResult:
    summary: dict[str, Any]
    trace_sha256: str
    violation: InvariantViolation | None
    replay: str
    simulation: Simulation


def replay_command(config: SimConfig, out: str | Path = "sim-out") -> str:
    """The exact command that runs ``config`` again."""
    parts = ["hearth", "sim", "--nodes", str(config.nodes), "--jobs", str(config.jobs)]
    parts += ["--seed", str(config.seed)]
    if config.scenario_path:
        parts += ["--scenario", config.scenario_path]
    if config.fake_signatures:
        parts.append("--fake-signatures")
    parts += ["--swarm"] if config.swarm else config.faults.flags()
    parts += ["--out", str(out)]
    return shlex.join(parts)


def run_simulation(
    config: SimConfig,
    *,
    out: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SimResult:
    """Build, run and check; an invariant failure is returned, not raised."""
    started_s = time.perf_counter()
    simulation = Simulation(config, progress)
    setup_s = time.perf_counter() - started_s
    violation: InvariantViolation | None = None
    # The nodes built at setup live for the whole run: move them out of the collector's sight
    # (gc.freeze), and collect young objects less often; at 80,000 nodes every full collection
    # otherwise walks tens of millions of objects that can never be garbage.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_0, *thresholds[1:])
    try:
        simulation.run()
    except InvariantViolation as exc:
        violation = exc
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    wall_s = time.perf_counter() - started_s
    summary = summarise(simulation)
    trace = simulation.cluster.trace.hexdigest()
    sim_s = summary["sim_time_ms"] / 1000
    summary.update(
        trace_sha256=trace,
        invariant_failed=None if violation is None else str(violation),
        wall_s=round(wall_s, 2),
        setup_s=round(setup_s, 2),
        events_per_s=int(summary["events"] / max(wall_s - setup_s, 1e-9)),
        sim_to_real_ratio=round(sim_s / max(wall_s, 1e-9), 3),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    )
    replay = replay_command(config, out or "sim-out")
    if out is not None:
        write_report(simulation, summary, out)
    return SimResult(summary, trace, violation, replay, simulation)
