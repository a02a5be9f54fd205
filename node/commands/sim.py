"""`hearth sim`: run the real protocol engines on a simulated network, seeded and checked."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from hearth.node.commands.common import fail

if TYPE_CHECKING:
    from hearth.testnet.sim.simulation import SimConfig


NodesOpt = Annotated[int | None, typer.Option("--nodes", "-n", help="Nodes (default: scenario's).")]
JobsOpt = Annotated[int | None, typer.Option("--jobs", "-j", help="Jobs (default: scenario's).")]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", "-s", help="Run seed (default: scenario's).")
]
ScenarioOpt = Annotated[Path | None, typer.Option("--scenario", help="A scenario TOML file.")]
FakeOpt = Annotated[
    bool, typer.Option("--fake-signatures", help="Skip envelope signature checks (largest runs).")
]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Report directory.")]
SwarmOpt = Annotated[
    bool, typer.Option("--swarm", help="Draw every fault rate from the seed (ADR 0018).")
]


ClockOffsetOpt = Annotated[
    int,
    typer.Option("--clock-offset-ms-max", min=0, help="Each clock is off by up to this many ms."),
]
ClockDriftOpt = Annotated[
    int,
    typer.Option("--clock-drift-ppm-max", min=0, help="Each clock drifts by up to this many ppm."),
]
DuplicateOpt = Annotated[
    int, typer.Option("--duplicate-pct", min=0, help="Percent of messages delivered twice.")
]
ReorderOpt = Annotated[
    int,
    typer.Option(
        "--reorder-pct", min=0, help="Percent of messages held back, so others overtake them."
    ),
]
StorageLatencyOpt = Annotated[
    int, typer.Option("--storage-latency-ms-max", min=0, help="Sends wait up to this for a commit.")
]
StorageFailOpt = Annotated[
    int, typer.Option("--storage-fail-pct", min=0, help="Percent of ledger writes that fail.")
]
CrashOpt = Annotated[
    int,
    typer.Option("--crash-after-commit-pct", min=0, help="Percent of commits followed by a crash."),
]
LateConnectOpt = Annotated[
    int,
    typer.Option(
        "--late-connect-pct", min=0, help="Percent of first messages before PeerConnected."
    ),
]
LossOpt = Annotated[
    int | None, typer.Option("--loss-pct", min=0, max=100, help="Loss (default: scenario's).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress lines.")]


def register(app: typer.Typer) -> None:
    @app.command("sim")
    def sim(
        nodes: NodesOpt = None,
        jobs: JobsOpt = None,
        seed: SeedOpt = None,
        scenario: ScenarioOpt = None,
        fake_signatures: FakeOpt = False,
        out: OutOpt = Path("sim-out"),
        quiet: QuietOpt = False,
        swarm: SwarmOpt = False,
        clock_offset_ms_max: ClockOffsetOpt = 0,
        clock_drift_ppm_max: ClockDriftOpt = 0,
        duplicate_pct: DuplicateOpt = 0,
        reorder_pct: ReorderOpt = 0,
        storage_latency_ms_max: StorageLatencyOpt = 0,
        storage_fail_pct: StorageFailOpt = 0,
        crash_after_commit_pct: CrashOpt = 0,
        late_connect_pct: LateConnectOpt = 0,
        loss_pct: LossOpt = None,
    ) -> None:
        """Simulate N nodes running J jobs; print a summary and the trace hash; exit 1 on a
        broken invariant, printing the command that replays it."""
        from hearth.testnet.scenario import Scenario, ScenarioError, load_scenario
        from hearth.testnet.sim.fault_rates import FaultRates
        from hearth.testnet.sim.simulation import SimConfig

        try:
            rates = FaultRates(
                clock_offset_ms_max=clock_offset_ms_max,
                clock_drift_ppm_max=clock_drift_ppm_max,
                duplicate_pct=duplicate_pct,
                reorder_pct=reorder_pct,
                storage_latency_ms_max=storage_latency_ms_max,
                storage_fail_pct=storage_fail_pct,
                crash_after_commit_pct=crash_after_commit_pct,
                late_connect_pct=late_connect_pct,
                loss_pct=loss_pct,
            )
        except ValueError as exc:
            fail(str(exc), exit_code=2)
        if swarm and rates.shown():
            fail("--swarm draws every fault rate from the seed; give no rate with it", exit_code=2)

        try:
            loaded = load_scenario(scenario) if scenario is not None else Scenario()
        except ScenarioError as exc:
            fail(str(exc), exit_code=2)
        config = SimConfig(
            nodes=loaded.nodes if nodes is None else nodes,
            jobs=loaded.jobs if jobs is None else jobs,
            seed=loaded.seed if seed is None else seed,
            scenario=loaded,
            scenario_path="" if scenario is None else str(scenario),
            fake_signatures=fake_signatures,
            faults=rates,
            swarm=swarm,
        )
        if config.nodes < 2 or config.jobs < 0:
            fail("--nodes must be at least 2 and --jobs at least 0", exit_code=2)
        _run(config, out, quiet)


def _run(config: SimConfig, out: Path, quiet: bool) -> None:
    from hearth.testnet.sim.run import run_simulation

    signatures = "FAKE (not verified)" if config.fake_signatures else "real Ed25519"
    typer.echo(
        f"hearth sim: {config.nodes} nodes, {config.jobs} jobs, seed {config.seed}, "
        f"scenario {config.scenario.name}, signatures {signatures}"
    )
    rates = config.rates.shown()
    shown = " ".join(f"{name}={value}" for name, value in rates.items()) or "none"
    typer.echo(f"faults{' (swarm: drawn from the seed)' if config.swarm else ''}: {shown}")
    progress = None if quiet else (lambda line: typer.echo(f"  {line}"))
    result = run_simulation(config, out=out, progress=progress)
    summary = result.summary
    for key in _SHOWN:
        typer.echo(f"{key:>24}: {summary[key]}")
    for key in _FAULT_COUNTERS:
        if key in summary["counters"]:
            typer.echo(f"{key:>24}: {summary['counters'][key]}")
    typer.echo(f"report: {out}")
    typer.echo(f"trace sha256: {result.trace_sha256}")
    if result.violation is not None:
        violation = result.violation
        t_s = (violation.at_ms - _t0_ms()) / 1000
        typer.echo(f"INVARIANT FAILED at t={t_s:.3f}s: {violation}", err=True)
        typer.echo(f"seed: {config.seed}", err=True)
        typer.echo(f"replay: {result.replay}", err=True)
        sys.exit(1)


def _t0_ms() -> int:
    from hearth.testnet.sim.cluster import T0_MS

    return T0_MS


_FAULT_COUNTERS = ("duplicated", "reordered", "crashes_after_commit", "late_connects")
_SHOWN = (
    "jobs_published",
    "jobs_verified",
    "jobs_failed",
    "jobs_unsettled",
    "wrong_results_accepted",
    "latency_ms_p50",
    "latency_ms_p99",
    "credits_sum_mc",
    "cheaters_earned_mc",
    "forks_injected",
    "forks_detected",
    "events",
    "sim_time_ms",
    "wall_s",
    "events_per_s",
    "peak_rss_mb",
)
