"""Reduce a finished (or interrupted) testnet run to summary.json: figures, checks, provenance."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from hearth.testnet import plan, report

if TYPE_CHECKING:
    from hearth.testnet.run import Runner

COMPLETED_PCT_MIN = 99.0
COMPLETED_PCT_MIN_FAULTS = 50.0  # a lab scenario with partitions or relay loss (ADR 0037)


def summarise(runner: Runner) -> dict[str, Any]:
    jobs = runner.jobs
    published = [j for j in jobs if j.state not in ("planned", "publish-failed")]
    verified = [j for j in jobs if j.state == "verified"]
    latencies = [float(j.latency_ms) for j in verified if j.latency_ms is not None]
    nodes = _nodes(runner)
    balances = [n["balance_mc"] for n in nodes]
    cheaters = [n for n in nodes if n["role"] in plan.CHEATING_ROLES]
    completed_pct = round(100 * len(verified) / len(published), 2) if published else None
    summary: dict[str, Any] = {
        "scenario": runner.plan.scenario.name,
        "scenario_path": str(runner.options.scenario_path),
        "scenario_text": runner.scenario_text,
        "seed": runner.plan.scenario.seed,
        "versions": {**report.versions(), "python": sys.version.split()[0]},
        "command": " ".join(sys.argv),
        "finished_at_ms": int(time.time() * 1000),
        "elapsed_s": round(time.monotonic() - runner.started_s, 1),
        "duration_s": runner.plan.duration_s,
        "interrupted": runner.interrupted,
        "error": runner.error,
        "nodes": nodes,
        "publishers": [f"node{i}" for i in runner.plan.publishers],
        "jobs_planned": len(jobs),
        "jobs_published": len(published),
        "jobs_verified": len(verified),
        "jobs_failed": sum(1 for j in jobs if j.state == "failed"),
        "jobs_lost": sum(1 for j in jobs if j.state == "lost"),
        "jobs_not_published": sum(1 for j in jobs if j.state == "publish-failed"),
        "jobs_completed_pct": completed_pct,
        "wrong_results_accepted": sum(1 for j in verified if j.correct is False),
        "latency_ms_p50": report.percentile(latencies, 50),
        "latency_ms_p99": report.percentile(latencies, 99),
        "replicas_used_mean": _mean([j.replicas_used for j in published if j.replicas_used]),
        "credits_sum_mc": sum(balances) if None not in balances else None,
        "ledgers_settled": bool(runner.final.get("settled", False)),
        "cheaters_earned_mc": sum(max(0, n["balance_mc"] or 0) for n in cheaters),
        "cheater_replicas_rejected": _cheater_replicas(runner, paid=False),
        "cheater_replicas_paid": _cheater_replicas(runner, paid=True),
        **_forks(runner, nodes),
        "nodes_killed": sum(n["kills"] for n in nodes),
        "nodes_restarted": sum(n["restarts"] for n in nodes),
        "nodes_died": [n["name"] for n in nodes if n["died"]],
        "not_applied_on_real_processes": _not_applied(runner),
        "jobs": [j.json() for j in jobs],
    }
    # A lab's faults (partitions, relay loss) may fail the jobs caught in them: like cheaters,
    # they make completion a figure to report, not a check (ADR 0037).
    lab = runner.plan.scenario.lab
    faults = lab is not None and bool(lab.faults)
    summary["checks"] = _checks(summary, cheaters=bool(cheaters) or faults)
    if faults and not cheaters:  # but most jobs get through: the faults are brief
        completed = summary["jobs_completed_pct"]
        summary["checks"]["jobs_completed_half_under_faults"] = (
            completed is not None and completed >= COMPLETED_PCT_MIN_FAULTS
        )
    summary["ok"] = all(summary["checks"].values())
    return summary


def _nodes(runner: Runner) -> list[dict[str, Any]]:
    row = runner.final.get("balances", {})
    reputation = runner.final.get("reputation", {})
    rows = []
    for m in runner.nodes:
        seen = {p: s for (p, n), s in reputation.items() if n == m.plan.name}
        rows.append(
            {
                "name": m.plan.name,
                "role": m.plan.role,
                "behaviour": m.plan.behaviour or "honest",
                "profile": m.plan.profile,
                "operator": m.plan.operator,
                "host": m.launched.host,
                "peer_id": m.launched.info.get("peer_id", ""),
                "balance_mc": row.get(f"balance_mc_{m.plan.name}"),
                "reputation_by_publisher": seen,
                "kills": m.kills,
                "restarts": m.restarts,
                "died": m.died,
                "up_at_end": m.up,
            }
        )
    return rows


def _cheater_replicas(runner: Runner, *, paid: bool) -> int:
    """Replicas that cheating nodes ran, counted as paid or as not paid (outvoted, dropped)."""
    cheaters = {m.plan.name for m in runner.nodes if m.plan.role in plan.CHEATING_ROLES}
    return sum(
        1
        for job in runner.jobs
        for w in job.workers
        if w["node"] in cheaters and (w["paid_mc"] > 0) == paid
    )


def _not_applied(runner: Runner) -> list[str]:
    s = runner.plan.scenario
    skipped = []
    if s.loss_pct:
        skipped.append("network.loss_pct (loopback does not drop packets)")
    if s.partition_at_s >= 0:
        skipped.append("network.partition_* (no partitions between loopback processes)")
    return skipped


def _checks(summary: dict[str, Any], cheaters: bool) -> dict[str, bool]:
    """Safety always; liveness as every job decided, and >= 99% verified where none cheat.

    Where cheaters answer, a job whose replicas hold no honest majority must fail (that is the
    verification rule working), so completion is reported but not required there.
    """
    completed = summary["jobs_completed_pct"]
    checks = {
        "no_wrong_result_accepted": summary["wrong_results_accepted"] == 0,
        "credits_conserved": summary["credits_sum_mc"] == 0,
        "cheaters_earned_nothing": summary["cheaters_earned_mc"] == 0,
        "every_job_decided": summary["jobs_lost"] == 0 and summary["jobs_not_published"] == 0,
        "no_node_died": not summary["nodes_died"],
        "not_interrupted": not summary["interrupted"] and not summary["error"],
        "every_fork_detected": summary["forks_detected"] == len(summary["forkers"]),
        "no_honest_node_refused": not summary["honest_nodes_refused_wrongly"],
    }
    if not cheaters:
        checks["jobs_completed_99pct"] = completed is not None and completed >= COMPLETED_PCT_MIN
    return checks


def _forks(runner: Runner, nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Forkers that every honest node still up refuses (it holds a fork proof against them)."""
    refused = runner.final.get("refused", {})
    forkers = [n for n in nodes if n["role"] == "ledger_forker" and n["peer_id"]]
    honest = [n["name"] for n in nodes if n["role"] == "honest" and n["name"] in refused]
    detected = [
        f["name"] for f in forkers if honest and all(f["peer_id"] in refused[h] for h in honest)
    ]
    wrongly = sorted({p for h in honest for p in refused[h]} - {f["peer_id"] for f in forkers})
    return {
        "forkers": [f["name"] for f in forkers],
        "forks_detected": len(detected),
        "honest_nodes_refused_wrongly": wrongly,
    }


def _mean(values: list[int]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None
