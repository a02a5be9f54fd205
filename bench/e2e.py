"""Publish-to-verified latency of a small job on a five-node local network.

Starts five real nodes on 127.0.0.2-6, publishes small echo jobs (2 replicas) one after another
from the fourth node, and times each from submission to a verified result. It does so twice in
one run: with directed invitations and early close (ADR 0031, the default), then on a fresh
network with them off (`[node] directed_invitations = false`: every call gossiped, every auction
waiting its whole bid window, ADR 0006), and prints both beside the time of the same job in the
local sandbox alone. It also counts the messages one job costs, from the nodes' metrics.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from hearth.client import Client, JobOptions
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.model import JobRequest, Runtime
from hearth.node.sandbox.pool import SandboxPool
from hearth.node.sandbox.shipped import wasm_bytes
from hearth.protocol.messages import TOPIC_CAPACITY
from hearth.testnet import launch
from hearth.testnet.demo import metric_values, module_path, prepare
from hearth.testnet.observe import market_complete

NODES = 5
PUBLISHER = 3


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def local_baseline_ms(data: bytes, home: Path, runs: int) -> float:
    """The same job in a warm local sandbox pool: what execution alone costs."""
    request = JobRequest(Runtime.WASM, wasm_bytes("echo"), data, 10**9, 64 << 20, 10_000, 1 << 20)

    async def measure() -> float:
        async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
            assert (await pool.run(request)).ok  # warm: worker started, module compiled
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                assert (await pool.run(request)).ok
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times)

    return trio.run(measure)


def messages_sent(nodes: list[launch.LaunchedNode]) -> int:
    """Messages every node has sent so far (direct and gossip), from its metrics; capacity ads
    left out: they go out on their own clock whether or not jobs run."""
    return round(
        sum(
            value
            for node in nodes
            for (name, channel), value in metric_values(node).items()
            if name == "hearth_messages_sent_total" and channel != TOPIC_CAPACITY
        )
    )


def run_network(
    root: Path, jobs: int, bid_window_ms: int, *, directed: bool
) -> tuple[list[float], float]:
    """Start five nodes under ``root``, publish ``jobs`` echo jobs one by one, stop them.

    Returns the latencies and the messages all nodes sent per job."""
    configs = prepare(root)
    if not directed:
        configs = [
            config.replace("directed_invitations = true", "directed_invitations = false")
            for config in configs
        ]
    data = os.urandom(4096)
    nodes = launch.up(root, NODES, configs=configs)
    latencies_ms = []
    try:
        launch.wait_for(lambda: market_complete(nodes), 30, "the market")
        options = JobOptions(bid_window_ms=bid_window_ms, replicas=2)
        before = messages_sent(nodes)
        with Client(nodes[PUBLISHER].home) as client:
            for i in range(jobs):
                started = time.perf_counter()
                job_id = client.submit(module_path("echo"), data + bytes([i]), options)
                result = client.wait(job_id)
                elapsed_ms = (time.perf_counter() - started) * 1000
                if not result.ok:
                    sys.exit(f"job {job_id} failed: {result.reason}")
                latencies_ms.append(elapsed_ms)
                label = "directed" if directed else "fixed-window"
                print(f"{label} job {i + 1:>3}/{jobs}: {elapsed_ms:7.0f} ms", flush=True)
        per_job = (messages_sent(nodes) - before) / jobs
    finally:
        launch.stop(nodes)
    return latencies_ms, per_job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--old-jobs", type=int, default=10, help="jobs on the fixed-window path")
    parser.add_argument("--bid-window-ms", type=int, default=JobOptions.bid_window_ms)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        root = Path(tmp)
        directed, messages = run_network(root / "new", args.jobs, args.bid_window_ms, directed=True)
        fixed, fixed_messages = run_network(
            root / "fixed", args.old_jobs, args.bid_window_ms, directed=False
        )
        baseline_ms = local_baseline_ms(os.urandom(4096), Path(tmp), 5)
    figures = {
        "nodes": NODES,
        "replicas": 2,
        "jobs": args.jobs,
        "bid_window_ms": args.bid_window_ms,
        "latency_ms_p50": round(percentile(directed, 50)),
        "latency_ms_p99": round(percentile(directed, 99)),
        "latency_ms_max": round(max(directed)),
        "messages_per_job": round(messages, 1),
        "fixed_window_jobs": args.old_jobs,
        "fixed_window_latency_ms_p50": round(percentile(fixed, 50)),
        "fixed_window_latency_ms_p99": round(percentile(fixed, 99)),
        "fixed_window_messages_per_job": round(fixed_messages, 1),
        "local_sandbox_warm_ms": round(baseline_ms, 1),
        # the machine's 1-minute load average before and after: figures are only as quiet as it
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    print(
        f"publish-to-verified p50 {figures['latency_ms_p50']} ms, p99 "
        f"{figures['latency_ms_p99']} ms (fixed {args.bid_window_ms} ms window: p50 "
        f"{figures['fixed_window_latency_ms_p50']} ms, p99 "
        f"{figures['fixed_window_latency_ms_p99']} ms), local sandbox alone "
        f"{figures['local_sandbox_warm_ms']} ms; load average {load_before:.1f} before, "
        f"{figures['load_average'][1]} after"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
