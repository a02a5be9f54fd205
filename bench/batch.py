"""Throughput of a batch: many small echo tasks in verified bundles on a five-node local network.

Starts five real nodes on 127.0.0.2-6, writes ``--tasks`` input files of ``--task-bytes`` each,
and runs `hearth job map` on them from one node with ``--replicas`` replicas. Every output is
checked against its input (the module echoes). In the same run it measures the same task in
local sandboxes, two ways: one pool of one worker per core of this machine, and as many pools as
the network has hosts, each as big as a host's (every host's pool at once, as in the network).
Each is measured in three rounds, alternately, one before the network starts and two after it
stops, so that the rounds bracket the batch; ``local_runs_per_s`` is the best of all rounds, so
that the baseline is never the weaker one (the median of each way, and the efficiency against
the faster median, are reported beside it). The
network's ``efficiency`` is tasks_per_s x replicas / local_runs_per_s, the share of the machine's
sandbox throughput that verified work gets (1.0: the network costs nothing beyond the replicas).
Then every host must still take a single job from the same publisher. The machine's load average
is reported beside each measurement (other work on a shared machine skews both). The bench's
folders are spread over the file system's block groups (``spread_folders``; ``--folders-in-place``
does not), so that creating its files does not depend on what other work deleted in /tmp lately.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from hearth.batch import BatchOptions
from hearth.client import Client, JobOptions
from hearth.node.config import TEMPLATE
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.model import JobRequest, Runtime
from hearth.node.sandbox.pool import SandboxPool
from hearth.node.sandbox.shipped import wasm_bytes
from hearth.protocol.bidding import WorkerConfig
from hearth.testnet import launch
from hearth.testnet.demo import module_path
from hearth.testnet.observe import market_complete

NODES = 5
PUBLISHER = 0
LOCAL_ROUNDS_BEFORE = 1  # rounds of each local measurement before the network starts
LOCAL_ROUNDS_AFTER = 2  # and after it stops: the batch is bracketed by the machine's state
CORES = os.cpu_count() or 1
# ext4's inode flags (linux/fs.h): FS_TOPDIR_FL asks the Orlov allocator to spread the folders
# made inside a folder over block groups with free inodes, as it does for top-level folders.
FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_TOPDIR_FL = 0x80086601, 0x40086602, 0x00020000
CONFIG = (
    TEMPLATE.replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")
    .replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')
    .replace("cores = 1", f"cores = {CORES}")
)


def local_runs_per_s(data: bytes, home: Path, runs: int, pools: int) -> float:
    """The same task in ``pools`` warm local sandbox pools of one worker per core, kept busy."""
    request = JobRequest(Runtime.WASM, wasm_bytes("echo"), data, 10**9, 64 << 20, 10_000, 1 << 20)

    async def measure() -> float:
        async with contextlib.AsyncExitStack() as stack:
            opened = [
                await stack.enter_async_context(
                    SandboxPool(SandboxConfig(home=_made(home / f"pool-{i}"), workers=CORES))
                )
                for i in range(pools)
            ]
            for pool in opened:
                for _ in range(CORES):
                    assert (await pool.run(request)).ok  # warm: workers started, module compiled
            left = [runs]

            async def drain(pool: SandboxPool) -> None:
                while left[0] > 0:
                    left[0] -= 1
                    assert (await pool.run(request)).ok

            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for pool in opened:
                    for _ in range(CORES):
                        nursery.start_soon(drain, pool)
            return runs / (time.perf_counter() - started)

    return trio.run(measure)


def spread_folders(root: Path) -> bool:
    """Have the file system place the folders made in ``root`` apart from the folder it sits in.

    On ext4 without a journal (this machine's root), a new file skips every inode of its block
    group deleted in the last one to six minutes, probing each: 1,000 files cost 420 ms of
    kernel time in /tmp's group, which this shared machine's test runs churn, against 29 ms in
    a group of its own (measured on this machine). The bench measures the network, not how
    many files other work deleted in /tmp lately, so its folders go to groups of their own.
    False where the file system has no such flag (the bench runs the same, in place)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return False
    try:
        flags = struct.unpack("l", fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("l", 0)))[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("l", flags | FS_TOPDIR_FL))
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def measure_local(
    rounds: dict[int, list[float]], data: bytes, home: Path, runs: int, count: int
) -> None:
    """``count`` rounds of each local measurement (by number of pools), alternated, appended
    to ``rounds``."""
    for _ in range(count):
        for pools, found in rounds.items():
            found.append(local_runs_per_s(data, home, runs, pools))


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def load_average() -> float:
    return round(os.getloadavg()[0], 1)


def run_map(home: Path, inputs: Path, outputs: Path, args: argparse.Namespace) -> dict[str, object]:
    command = [
        sys.executable, "-m", "hearth", "job", "map", str(module_path("echo")),
        "--inputs", str(inputs), "--outputs", str(outputs), "--replicas", str(args.replicas),
        "--bid-window-ms", str(args.bid_window_ms), "--fuel", str(args.fuel), "--json",
    ]  # fmt: skip
    done = subprocess.run(
        command, env={**os.environ, "HEARTH_HOME": str(home)}, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(f"hearth job map failed ({done.returncode}): {done.stderr.strip()}")
    summary: dict[str, object] = json.loads(done.stdout)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--task-bytes", type=int, default=1024)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--bid-window-ms", type=int, default=BatchOptions.bid_window_ms)
    parser.add_argument("--fuel", type=int, default=10_000_000, help="fuel_max per task")
    parser.add_argument(
        "--folders-in-place",
        action="store_true",
        help="leave the bench's folders where the file system puts them (see spread_folders)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-batch-") as tmp:
        root = Path(tmp)
        spread = not args.folders_in_place and spread_folders(root)
        inputs, outputs = root / "inputs", root / "outputs"
        inputs.mkdir()
        for i in range(args.tasks):
            (inputs / f"task-{i:06d}").write_bytes(os.urandom(args.task_bytes))
        data, runs = os.urandom(args.task_bytes), max(500, args.tasks)
        rounds: dict[int, list[float]] = {1: [], NODES - 1: []}
        measure_local(rounds, data, root / "local", runs, LOCAL_ROUNDS_BEFORE)
        nodes = launch.up(root / "net", NODES, configs=[CONFIG] * NODES)
        try:
            launch.wait_for(lambda: market_complete(nodes), 30, "the market")
            load_before = load_average()
            summary = run_map(nodes[PUBLISHER].home, inputs, outputs, args)
            load_after = load_average()
            wrong = sum(
                1
                for path in inputs.iterdir()
                if not (outputs / path.name).is_file()
                or (outputs / path.name).read_bytes() != path.read_bytes()
            )
            willing, single_ok, single_reason = single_jobs_ok(nodes, args.bid_window_ms)
        finally:
            launch.stop(nodes)
        measure_local(rounds, data, root / "local", runs, LOCAL_ROUNDS_AFTER)
        load_local = load_average()
    local_one, local_hosts = max(rounds[1]), max(rounds[NODES - 1])
    local = max(local_one, local_hosts)
    median = max(statistics.median(rounds[1]), statistics.median(rounds[NODES - 1]))
    tasks_per_s = float(summary["tasks_per_s"])  # type: ignore[arg-type]
    figures = {
        "nodes": NODES,
        "tasks": args.tasks,
        "task_bytes": args.task_bytes,
        "replicas": args.replicas,
        "verified": summary["verified"],
        "failed": summary["failed"],
        "wrong_outputs": wrong,
        "bundles": summary["bundles"],
        "bundles_failed": summary["bundles_failed"],
        "elapsed_s": summary["elapsed_s"],
        "tasks_per_s": tasks_per_s,
        "local_runs_per_s": round(local, 1),
        "local_runs_per_s_one_pool": round(local_one, 1),
        "local_runs_per_s_host_pools": round(local_hosts, 1),
        "local_rounds_one_pool": [round(r, 1) for r in rounds[1]],
        "local_rounds_host_pools": [round(r, 1) for r in rounds[NODES - 1]],
        "local_runs_per_s_median": round(median, 1),
        "efficiency_vs_median": round(tasks_per_s * args.replicas / median, 3),
        "local_pools": [1, NODES - 1],
        "local_workers_per_pool": CORES,
        "efficiency": round(tasks_per_s * args.replicas / local, 3),
        "spent_mc": summary["spent_mc"],
        "hosts_still_taking_its_jobs": willing,
        "single_job_after_batch_ok": single_ok,
        "single_job_reason": single_reason,
        "bid_window_ms": args.bid_window_ms,
        "folders_spread": spread,
        "bundle_trace_ms": summary.get("bundle_trace_ms", {}),
        "bundle_trace_ms_max": summary.get("bundle_trace_ms_max", {}),
        "first_bundle_ms": summary.get("first_bundle_ms", 0.0),
        "load_before": load_before,
        "load_after": load_after,
        "load_after_local": load_local,
    }
    print(
        f"{figures['verified']}/{args.tasks} verified in {figures['elapsed_s']} s: "
        f"{tasks_per_s} tasks/s, local sandbox {figures['local_runs_per_s']} runs/s, "
        f"efficiency {figures['efficiency']} (load {load_before}-{load_after}, {load_local})"
    )
    print(json.dumps(figures))


def single_jobs_ok(nodes: list[launch.LaunchedNode], bid_window_ms: int) -> tuple[int, bool, str]:
    """After the batch: how many hosts still take work from the publisher (their reputation of
    it is above the score under which they refuse a publisher), and whether a single job from
    it is then verified (and why not)."""
    publisher = nodes[PUBLISHER].info["peer_id"]
    willing = 0
    for node in nodes:
        if node is nodes[PUBLISHER]:
            continue
        with Client(node.home) as client:
            peers = {p["peer_id"]: p for p in client.peers()}
        score = peers.get(publisher, {}).get("reputation", 0)
        willing += score >= WorkerConfig().publisher_score_min
    options = JobOptions(bid_window_ms=bid_window_ms)
    with Client(nodes[PUBLISHER].home) as client:
        result = client.run(module_path("echo"), b"a single job", **vars(options))
    return willing, result.ok, result.reason


if __name__ == "__main__":
    main()
