"""The simulator: seeds replay exactly, invariants hold under faults, a broken rule is caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import hearth.protocol.publisher
from hearth.node.cli import mount
from hearth.protocol.effects import PayWorker
from hearth.protocol.settlement import settle
from hearth.testnet.scenario import Scenario
from hearth.testnet.sim.run import SimResult, run_simulation
from hearth.testnet.sim.simulation import SimConfig

QUICK = Scenario(name="quick", duration_s=20, job_rate_per_s=200)
CHEATERS = Scenario(
    name="cheaters-partition",
    duration_s=40,
    job_rate_per_s=10,
    adversary_shares_pct=(("colluder", 5), ("wrong_result", 20)),
    loss_pct=1,
    partition_at_s=10,
    partition_heal_s=25,
    partition_pct=30,
)
CHEATERS_TOML = """
[run]
name = "broken"
duration_s = 20
job_rate_per_s = 20

[adversaries]
wrong_result = 30
"""


def run(nodes: int, jobs: int, seed: int, scenario: Scenario, **kw: object) -> SimResult:
    return run_simulation(SimConfig(nodes, jobs, seed, scenario, **kw))  # type: ignore[arg-type]


def test_2000_nodes_replay_exactly_and_seeds_differ() -> None:
    # 2,000 nodes; 500 jobs, not 2,000: the run's time goes with the jobs (three runs of 2,000
    # took two minutes of the suite), and bench/sim covers job volume at scale.
    first = run(2000, 500, 5, QUICK, fake_signatures=True)
    assert first.violation is None, first.violation
    assert first.summary["jobs_published"] == 500
    assert first.summary["jobs_unsettled"] == 0
    assert first.summary["credits_sum_mc"] == 0
    again = run(2000, 500, 5, QUICK, fake_signatures=True)
    assert again.trace_sha256 == first.trace_sha256
    other = run(2000, 500, 6, QUICK, fake_signatures=True)
    assert other.violation is None, other.violation
    assert other.trace_sha256 != first.trace_sha256


def test_a_quarter_cheating_and_a_partition_accept_no_wrong_result() -> None:
    result = run(300, 300, 3, CHEATERS)
    summary = result.summary
    assert result.violation is None, result.violation
    assert summary["roles"]["colluder"] + summary["roles"]["wrong_result"] == 75
    assert summary["wrong_results_accepted"] == 0
    assert summary["jobs_unsettled"] == 0  # the liveness phase settled every job
    assert summary["jobs_verified"] >= 270
    assert summary["cheaters_earned_mc"] == 0
    assert summary["credits_sum_mc"] == 0
    assert summary["counters"]["sends_lost"] > 0  # the partition and loss did bite


@pytest.mark.parametrize("seed", [9, 10, 23])  # 9, 10: missed forks; 23: a twin sent to a dead node
def test_forks_are_detected_and_churned_nodes_restart(seed: int) -> None:
    scenario = Scenario(
        name="forks-churn",
        duration_s=30,
        adversary_shares_pct=(("crash_restart", 5), ("ledger_forker", 3)),
        down_pct_per_min=10,
        downtime_s=10,
    )
    result = run(200, 150, seed, scenario)
    summary = result.summary
    assert result.violation is None, result.violation
    assert summary["forks_injected"] >= 4  # of 6 forkers; one that churned down cannot fork
    assert summary["forks_detected"] == summary["forks_injected"]
    assert summary["counters"]["log:fork-detected"] >= summary["forks_injected"]
    assert summary["jobs_verified"] >= 0.99 * 150
    restarted = [node for node in result.simulation.cluster.nodes if node.life > 0]
    assert len(restarted) >= 10


def _pay_the_losers_too(job, digest, reputation, send):  # type: ignore[no-untyped-def]
    """A deliberately broken settlement rule: also pays workers whose result lost the vote."""
    effects = settle(job, digest, reputation, send)
    losers = [slot for slot in job.live() if slot.digest != digest]
    return [*effects, *(PayWorker(job.job_id, slot.worker, 1) for slot in losers)]


def test_a_broken_rule_is_caught_with_a_replay_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(hearth.protocol.publisher, "settle", _pay_the_losers_too)
    scenario = tmp_path / "broken.toml"
    scenario.write_text(CHEATERS_TOML, encoding="utf-8")
    out = tmp_path / "out"
    argv = ["sim", "-n", "100", "-j", "60", "--seed", "4", "--scenario", str(scenario)]
    result = CliRunner().invoke(mount(), [*argv, "--out", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    assert "INVARIANT FAILED" in result.output
    assert "paid-wrong-worker" in result.output
    assert "seed: 4" in result.output
    replay = f"hearth sim --nodes 100 --jobs 60 --seed 4 --scenario {scenario} --out {out}"
    assert f"replay: {replay}" in result.output
    assert "trace sha256: " in result.output
    assert (out / "summary.json").exists()


def test_cli_writes_summary_and_plots(tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        mount(), ["sim", "-n", "60", "-j", "20", "--seed", "2", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "signatures real Ed25519" in result.output
    assert "liveness phase" in result.output  # progress lines
    lines = [line for line in result.output.splitlines() if line.startswith("trace sha256: ")]
    assert len(lines) == 1 and len(lines[0].split()[-1]) == 64
    names = {"summary.json", "latency.png", "credits.png", "replicas.png", "reputation.png"}
    assert names <= {path.name for path in out.iterdir()}


def test_fake_signatures_say_so(tmp_path: Path) -> None:
    argv = ["sim", "-n", "30", "-j", "5", "--fake-signatures", "-q", "-o", str(tmp_path)]
    result = CliRunner().invoke(mount(), argv)
    assert result.exit_code == 0, result.output
    assert "signatures FAKE (not verified)" in result.output
