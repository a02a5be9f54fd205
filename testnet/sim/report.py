"""The run's report: summary.json figures and PNG plots (matplotlib, Agg). I/O: writes ``out``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hearth.protocol.identity import PeerId
from hearth.testnet.sim import faults
from hearth.testnet.sim.cluster import T0_MS
from hearth.testnet.sim.simulation import Simulation


def percentile(values: list[int], pct: int) -> int:
    """Nearest-rank percentile of integers; -1 for no values."""
    if not values:
        return -1
    ordered = sorted(values)
    rank = max(1, -(-pct * len(ordered) // 100))
    return ordered[rank - 1]


def summarise(sim: Simulation) -> dict[str, Any]:
    records = [sim.jobs[job] for job in sim.job_order]
    verified = [r for r in records if r.phase == "paid"]
    latencies = [r.finished_ms - r.published_ms for r in verified]
    cluster, checker = sim.cluster, sim.checker
    cheaters_earned = sum(
        checker.earned_mc_by_node[node.index]
        for node in cluster.nodes
        if node.role in faults.CHEATERS or node.role in faults.STALLERS
    )
    balances = [node.ledger.balance_mc() for node in cluster.nodes]
    counters = dict(sorted(cluster.counters.items()))
    return {
        "scenario": sim.scenario.name,
        "seed": sim.config.seed,
        "nodes": sim.config.nodes,
        "roles": _role_counts(sim),
        "fake_signatures": sim.config.fake_signatures,
        "swarm": sim.config.swarm,
        "faults": sim.rates.shown(),
        "jobs_published": len(records),
        "jobs_verified": len(verified),
        "jobs_failed": sum(1 for r in records if r.phase == "failed"),
        "jobs_unsettled": sum(1 for r in records if r.phase not in ("paid", "failed")),
        "wrong_results_accepted": checker.wrong_results_accepted,
        "latency_ms_p50": percentile(latencies, 50),
        "latency_ms_p99": percentile(latencies, 99),
        "awards_per_job_mean_x100": (
            sum(r.awards for r in records) * 100 // len(records) if records else 0
        ),
        "credits_sum_mc": sum(balances),
        "cheaters_earned_mc": cheaters_earned,
        "forks_injected": len(checker.forks_injected),
        "forks_detected": len(checker.forks_detected),
        "pays_pending": checker.pending_pays,
        "events": cluster.events,
        "sim_time_ms": cluster.now_ms - T0_MS,
        "counters": counters,
    }


def _role_counts(sim: Simulation) -> dict[str, int]:
    counts: dict[str, int] = {}
    for role in sim.roles:
        counts[role] = counts.get(role, 0) + 1
    return dict(sorted(counts.items()))


def reputation_by_class(sim: Simulation) -> tuple[list[int], list[int]]:
    """Sum of the scores publishers hold of each worker, split honest vs adversarial."""
    totals: dict[PeerId, int] = {}
    for node in sim.cluster.nodes:
        if node.engine is None or not node.engine.publisher.jobs:
            continue
        for peer, record in node.engine.reputation.items():
            totals[peer] = totals.get(peer, 0) + record.score
    honest: list[int] = []
    adversarial: list[int] = []
    for peer, total in sorted(totals.items()):
        index = sim.cluster.index_by_peer.get(peer)
        if index is None:
            continue
        role = sim.cluster.nodes[index].role
        (honest if role in (faults.HONEST, "crash_restart") else adversarial).append(total)
    return honest, adversarial


def write_report(sim: Simulation, summary: dict[str, Any], out: Path) -> list[Path]:
    """Write summary.json and the plots; returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "summary.json"
    path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [path, *_plots(sim, out)]


def _plots(sim: Simulation, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    records = [sim.jobs[job] for job in sim.job_order]

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        written.append(out / name)

    fig, ax = plt.subplots(figsize=(6, 4))
    latencies_s = [(r.finished_ms - r.published_ms) / 1000 for r in records if r.phase == "paid"]
    ax.hist(latencies_s or [0], bins=40, color="tab:blue")
    ax.set(title="Job latency (verified jobs)", xlabel="seconds", ylabel="jobs")
    save(fig, "latency.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    times_s = [t / 1000 for t, _ in sim.balance_samples]
    for column, node in enumerate(sim.sampled):
        style = "-" if sim.roles[node] == faults.HONEST else "--"
        ax.plot(times_s, [row[column] for _, row in sim.balance_samples], style, linewidth=1)
    ax.set(title="Credits of sampled nodes (dashed: adversarial)", xlabel="s", ylabel="mc")
    save(fig, "credits.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    awards = [r.awards for r in records if r.phase in ("paid", "failed")]
    ax.hist(awards or [0], bins=range(0, max(awards or [0]) + 2), color="tab:green")
    ax.set(title="Replicas awarded per job", xlabel="awards", ylabel="jobs")
    save(fig, "replicas.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    honest, adversarial = reputation_by_class(sim)
    ax.boxplot([honest or [0], adversarial or [0]])
    ax.set_xticks([1, 2], ["honest", "adversarial"])
    ax.set(title="Reputation held by publishers", ylabel="summed score")
    save(fig, "reputation.png")
    return written
