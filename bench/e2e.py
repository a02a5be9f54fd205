"""Publish-to-verified latency of a small job on a five-node local network.

Starts five real nodes on 127.0.0.2-6, publishes small echo jobs one after another from the
fourth node, and times each from submission to a verified result. It prints the latency
percentiles next to the configured bid window (the floor a sealed-bid auction imposes) and, as
a baseline measured in the same run, the time of the same job in the local sandbox alone.
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
from hearth.testnet import launch
from hearth.testnet.demo import module_path, node_config
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--bid-window-ms", type=int, default=JobOptions.bid_window_ms)
    args = parser.parse_args()
    data = os.urandom(4096)
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        nodes = launch.up(Path(tmp), NODES, configs=[node_config(i) for i in range(NODES)])
        try:
            launch.wait_for(lambda: market_complete(nodes), 30, "the market")
            latencies_ms = []
            options = JobOptions(bid_window_ms=args.bid_window_ms)
            with Client(nodes[PUBLISHER].home) as client:
                for i in range(args.jobs):
                    started = time.perf_counter()
                    job_id = client.submit(module_path("echo"), data + bytes([i]), options)
                    result = client.wait(job_id)
                    elapsed_ms = (time.perf_counter() - started) * 1000
                    if not result.ok:
                        sys.exit(f"job {job_id} failed: {result.reason}")
                    latencies_ms.append(elapsed_ms)
                    print(f"job {i + 1:>3}/{args.jobs}: {elapsed_ms:7.0f} ms", flush=True)
        finally:
            launch.stop(nodes)
        baseline_ms = local_baseline_ms(data, Path(tmp), 5)
    figures = {
        "nodes": NODES,
        "jobs": args.jobs,
        "bid_window_ms": args.bid_window_ms,
        "latency_ms_p50": round(percentile(latencies_ms, 50)),
        "latency_ms_p99": round(percentile(latencies_ms, 99)),
        "latency_ms_max": round(max(latencies_ms)),
        "local_sandbox_warm_ms": round(baseline_ms, 1),
        "p50_over_bid_window": round(percentile(latencies_ms, 50) / args.bid_window_ms, 2),
    }
    print(
        f"publish-to-verified p50 {figures['latency_ms_p50']} ms, p99 "
        f"{figures['latency_ms_p99']} ms, bid window {args.bid_window_ms} ms, "
        f"local sandbox alone {figures['local_sandbox_warm_ms']} ms"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
