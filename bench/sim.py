"""Benchmark `hearth sim`: events/s, simulated-to-real time ratio and peak memory by network size.

Run: ``.venv/bin/python bench/sim.py [--nodes 80000 | --sizes 1000,10000,80000] [--skip-80k]
[--fake-signatures]``. Signatures are real Ed25519, made and checked, unless
``--fake-signatures`` says otherwise (ADR 0034: each distinct signed message is verified once
per run, not once per receiver). Each size runs in its own process, so that peak memory
(``ru_maxrss``) is that size's alone. A run has nodes/10 jobs arriving over a 20 s safety phase
with 10% wrong-result workers, 2% colluders and 1% crash-restart hosts, then a liveness phase
until every job and payment settles. Each run reports messages per job (every message delivered,
direct and gossip, over the jobs published) and jobs verified per simulated second (from the
first job published to the last one settled), and the machine's load average. The last line
printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hearth.testnet.scenario import Scenario  # noqa: E402

BENCH_SCENARIO = Scenario(
    name="bench",
    seed=1,
    duration_s=20,
    job_rate_per_s=500,
    adversary_shares_pct=(("colluder", 2), ("crash_restart", 1), ("wrong_result", 10)),
)
KEPT = (
    "nodes",
    "jobs_published",
    "jobs_verified",
    "jobs_failed",
    "wrong_results_accepted",
    "credits_sum_mc",
    "events",
    "sim_time_ms",
    "wall_s",
    "setup_s",
    "events_per_s",
    "sim_to_real_ratio",
    "peak_rss_mb",
    "trace_sha256",
    "invariant_failed",
    "fake_signatures",
)


def run_one(nodes: int, fake_signatures: bool) -> dict[str, Any]:
    """One size, in this process; returns the summary figures kept by the benchmark."""
    from hearth.testnet.sim.run import run_simulation
    from hearth.testnet.sim.simulation import SimConfig

    config = SimConfig(
        nodes=nodes,
        jobs=max(1, nodes // 10),
        seed=BENCH_SCENARIO.seed,
        scenario=BENCH_SCENARIO,
        fake_signatures=fake_signatures,
    )
    result = run_simulation(config, progress=lambda line: print(f"  [{nodes}] {line}", flush=True))
    figures = {key: result.summary[key] for key in KEPT}
    records = list(result.simulation.jobs.values())
    counters = result.summary["counters"]
    messages = counters.get("deliveries", 0)
    figures["messages"] = messages
    figures["gossip_signatures_verified"] = counters.get("signatures_verified_at_edge", 0)
    figures["gossip_signature_cache_hits"] = counters.get("signature_cache_hits", 0)
    figures["messages_per_job"] = round(messages / max(1, len(records)), 1)
    # Where the messages go: gossip deliveries by topic (ads and ledger heads are periodic,
    # so they grow with nodes x time, not with jobs); the rest are direct sends.
    by_topic = {k.split(":", 1)[1]: v for k, v in counters.items() if k.startswith("deliveries:")}
    by_topic["direct"] = messages - sum(by_topic.values())
    figures["messages_per_job_by_channel"] = {
        k: round(v / max(1, len(records)), 1) for k, v in sorted(by_topic.items())
    }
    finished = [r.finished_ms for r in records if r.phase == "paid"]
    span_ms = max(finished, default=0) - min((r.published_ms for r in records), default=0)
    figures["jobs_per_sim_s"] = round(len(finished) * 1000 / max(1, span_ms), 1)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)  # wall_s counts others' load
    figures["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return figures


def _run_child(command: list[str]) -> list[str]:
    """Run one size in a child process, echoing its progress; returns its output lines."""
    lines: list[str] = []
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.rstrip("\n"))
            if line.startswith("  ["):
                print(line, end="", flush=True)
    if child.returncode != 0 or not lines:
        raise SystemExit(f"{command[3]} nodes failed (exit {child.returncode})")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,80000")
    parser.add_argument("--nodes", type=int, help="One size only (overrides --sizes).")
    parser.add_argument("--skip-80k", action="store_true", help="Leave out sizes above 10,000.")
    parser.add_argument(
        "--fake-signatures", action="store_true", help="Skip Ed25519 (the run says so)."
    )
    parser.add_argument("--real-signatures", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child process's size
    args = parser.parse_args()
    if args.nodes is not None:
        if args.nodes < 1:
            parser.error("--nodes must be at least 1")
        args.sizes = str(args.nodes)
    fake = args.fake_signatures
    if args.one is not None:
        print(json.dumps(run_one(args.one, fake)), flush=True)
        return
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.skip_80k:
        sizes = [size for size in sizes if size <= 10_000]
    print(f"signatures: {'FAKE (envelopes not verified)' if fake else 'real Ed25519'}")
    results = []
    for size in sizes:
        command = [sys.executable, __file__, "--one", str(size)]
        if fake:
            command.append("--fake-signatures")
        lines = _run_child(command)
        figures = json.loads(lines[-1])
        results.append(figures)
        print(
            f"{size:>6} nodes: {figures['wall_s']:>7.1f} s wall, {figures['cpu_s']} s CPU, "
            f"{figures['events']:>9} events, "
            f"{figures['events_per_s']:>6} events/s, sim/real {figures['sim_to_real_ratio']}, "
            f"peak {figures['peak_rss_mb']} MB, {figures['messages_per_job']} messages/job, "
            f"{figures['jobs_per_sim_s']} jobs/sim-s, load {figures['load_avg_1m']}",
            flush=True,
        )
    print(json.dumps({"benchmark": "sim", "fake_signatures": fake, "runs": results}))


if __name__ == "__main__":
    main()
