"""`hearth testnet demo`: five real nodes, jobs from different peers, verified, paid, audited.

It starts the nodes with different host profiles (so prices differ), publishes a handful of jobs
from different peers at once, shows each verified result and what it cost, waits for every
receipt to be countersigned, shows the credits each ledger moved (they sum to zero), runs
`hearth ledger verify` on every node, and stops everything it started.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hearth.client import Client, JobResult
from hearth.node.config import TEMPLATE
from hearth.testnet import launch
from hearth.testnet.observe import ask, market_complete

NODES = 5
SETTLE_TIMEOUT_S = 60.0
PROFILES = (  # (label, power W, tariff credits/kWh, energy source)
    ("gaming PC", 180, 30.0, "grid"),
    ("panel box + battery", 40, 30.0, "battery"),
    ("solar streetlight", 15, 30.0, "solar"),
    ("old laptop", 35, 30.0, "grid"),
    ("home server", 90, 22.0, "mixed"),
)


@dataclass(frozen=True)
class DemoJob:
    publisher: int
    module: str
    data: bytes

    def expected(self) -> bytes | None:
        return self.data if self.module == "echo" else None


def module_path(name: str) -> Path:
    return Path(str(resources.files("hearth.node.sandbox").joinpath("modules", f"{name}.wat")))


def node_config(index: int) -> str:
    label, power_w, tariff, source = PROFILES[index % len(PROFILES)]
    return (
        TEMPLATE.replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")
        .replace("power_w = 60", f"power_w = {power_w}")
        .replace("tariff_per_kwh = 30.0", f"tariff_per_kwh = {tariff}")
        .replace('source = "grid"', f'source = "{source}"')
        .replace('operator = ""', f'operator = "{label}"')
        .replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')
    )


def demo_jobs(rng: random.Random) -> list[DemoJob]:
    jobs = []
    for i in range(6):
        publisher = 1 + i % (NODES - 1)
        if i % 2 == 0:
            jobs.append(DemoJob(publisher, "echo", rng.randbytes(rng.randrange(1_000, 60_000))))
        else:
            iterations = rng.randrange(20_000_000, 120_000_000)
            jobs.append(DemoJob(publisher, "bench_loop", struct.pack("<Q", iterations)))
    return jobs


def run_job(node: launch.LaunchedNode, job: DemoJob) -> tuple[JobResult, float]:
    started_s = time.monotonic()
    with Client(node.home) as client:
        result = client.run(module_path(job.module), job.data, replicas=2, replicas_max=4)
    return result, time.monotonic() - started_s


def pending_pays(nodes: list[launch.LaunchedNode]) -> int:
    return sum(ask(node, "/v1/ledger/balance")["pending_pays"] for node in nodes)


def verify_ledger(node: launch.LaunchedNode) -> tuple[bool, str]:
    result = subprocess.run(
        [sys.executable, "-m", "hearth.node", "ledger", "verify"],
        env={**os.environ, "HEARTH_HOME": str(node.home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode == 0, (result.stdout + result.stderr).strip().splitlines()[-1]


class Demo:
    def __init__(self, console: Console, seed: int) -> None:
        self.console = console
        self.rng = random.Random(seed)
        self.failures: list[str] = []

    def run(self, root: Path) -> bool:
        started_s = time.monotonic()
        self.console.print(f"[bold]starting {NODES} nodes[/] in {root} on 127.0.0.2-{1 + NODES}")
        nodes = launch.up(root, NODES, configs=[node_config(i) for i in range(NODES)])
        try:
            launch.wait_for(lambda: market_complete(nodes), 30, "every node to see every other")
            self.show_market(nodes)
            self.publish(nodes, demo_jobs(self.rng))
            launch.wait_for(lambda: pending_pays(nodes) == 0, SETTLE_TIMEOUT_S, "receipts")
            self.show_ledgers(nodes)
        finally:
            launch.stop(nodes)
        elapsed_s = time.monotonic() - started_s
        verdict = "[green]all checks passed[/]" if not self.failures else "[red]FAILED[/]"
        self.console.print(f"{verdict} in {elapsed_s:.0f} s; every node stopped")
        for failure in self.failures:
            self.console.print(f"[red]- {failure}[/]")
        return not self.failures

    def show_market(self, nodes: list[launch.LaunchedNode]) -> None:
        view = ask(nodes[0], "/v1/market")
        prices = {o["peer_id"]: o["price_mc_per_tfuel"] for o in view["offers"]}
        prices[view["self"]["peer_id"]] = view["self"]["price_mc_per_tfuel"]
        table = Table(title="The market (prices from each host's power, tariff and fuel rate)")
        for column in ("node", "host profile", "energy", "price mc/Tfuel"):
            table.add_column(column)
        for node in nodes:
            label, _, _, source = PROFILES[node.index % len(PROFILES)]
            table.add_row(node.name, label, source, str(prices.get(node.info["peer_id"], "-")))
        self.console.print(table)

    def publish(self, nodes: list[launch.LaunchedNode], jobs: list[DemoJob]) -> None:
        self.console.print(f"[bold]publishing {len(jobs)} jobs[/] from nodes 1-{NODES - 1}")
        names = {n.info["peer_id"]: n.name for n in nodes}
        table = Table(title="Jobs (each run on independent hosts; accepted only when they agree)")
        for column in ("job", "from", "module", "verified", "ran on", "fuel", "paid mc", "s"):
            table.add_column(column)
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = [pool.submit(run_job, nodes[job.publisher], job) for job in jobs]
            for job, future in zip(jobs, futures, strict=True):
                result, elapsed_s = future.result()
                self.check_job(job, result)
                workers = [
                    names.get(r["worker"], "?")
                    for r in result.summary["replicas_detail"]
                    if r["paid_mc"] > 0
                ]
                table.add_row(
                    result.job_id[:8], nodes[job.publisher].name, job.module,
                    "[green]yes[/]" if result.ok else f"[red]no: {result.reason}[/]",
                    ", ".join(workers), str(result.fuel_used), str(result.paid_mc),
                    f"{elapsed_s:.1f}",
                )  # fmt: skip
        self.console.print(table)

    def check_job(self, job: DemoJob, result: JobResult) -> None:
        if not result.ok:
            self.failures.append(f"job {result.job_id} did not succeed: {result.message}")
            return
        expected = job.expected()
        if expected is not None and result.output != expected:
            self.failures.append(f"job {result.job_id} returned the wrong bytes")
        if hashlib.sha256(result.output).hexdigest() != result.output_sha256:
            self.failures.append(f"job {result.job_id}: output does not match its hash")

    def show_ledgers(self, nodes: list[launch.LaunchedNode]) -> None:
        table = Table(title="Credits moved (mutual credit: every node started at 0)")
        for column in ("node", "balance mc", "ledger entries", "hearth ledger verify"):
            table.add_column(column)
        total = 0
        for node in nodes:
            balance = ask(node, "/v1/ledger/balance")
            ok, line = verify_ledger(node)
            if not ok:
                self.failures.append(f"{node.name}: ledger verify failed: {line}")
            total += balance["balance_mc"]
            table.add_row(
                node.name,
                f"{balance['balance_mc']:+d}",
                str(balance["head_seq"] + 1),
                "[green]ok[/]" if ok else f"[red]{line}[/]",
            )
        table.add_row("[bold]sum[/]", f"[bold]{total:+d}[/]", "", "")
        if total != 0:
            self.failures.append(f"balances sum to {total} mc, not 0")
        self.console.print(table)


def run_demo(seed: int, directory: Path | None = None) -> bool:
    console = Console()
    if directory is not None:
        return Demo(console, seed).run(directory)
    with tempfile.TemporaryDirectory(prefix="hearth-demo-") as tmp:
        return Demo(console, seed).run(Path(tmp))
