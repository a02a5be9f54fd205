"""`hearth testnet demo`: six real nodes, jobs from different peers, verified, paid, audited.

It starts one node per host profile (`hearth init --profile`, so prices differ), publishes a
handful of jobs from different peers at once, shows each verified result and what it cost, waits
for every receipt to be countersigned, shows the credits each ledger moved (they sum to zero),
runs `hearth ledger verify` on every node, shows each profile's earnings against the estimated
energy cost of its work (from its /metrics and its config), and stops everything it started.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
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

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from hearth.client import Client, JobResult
from hearth.node import calibrate, config, lifeline, paths
from hearth.node.earnings import Earnings, estimate
from hearth.node.profiles import PROFILES, render
from hearth.testnet import launch
from hearth.testnet.observe import ask, market_complete

NODES = len(PROFILES)  # one host per profile
SETTLE_TIMEOUT_S = 60.0
CORES_PER_HOST = 1  # every host shares this one machine
# The energy a sensor would report on a sunny day, for the hosts that follow one (`cat` of a
# file, so the demo needs no MQTT broker and no charge controller).
SUNNY = {"battery_pct": 80, "solar_w": 200, "load_w": 60}


@dataclass(frozen=True)
class DemoJob:
    publisher: int
    module: str
    data: bytes

    def expected(self) -> bytes | None:
        return self.data if self.module == "echo" else None


def module_path(name: str) -> Path:
    return Path(str(resources.files("hearth.node.sandbox").joinpath("modules", f"{name}.wat")))


def node_config(index: int, home: Path) -> str:
    """The profile's config as `hearth init --profile` writes it, fitted to a loopback testnet:
    one core each, Wasm only, its own operator, a sensor command reading a file instead of MQTT
    or a charge controller (a command's reading is as fresh as its run; a file's is as old as
    the file), and no idle-only pause (the demo's own load would keep those hosts out)."""
    name = PROFILES[index]
    energy_file = home / "energy.json"
    return (
        render(name, cpu_count=CORES_PER_HOST)
        .replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")
        .replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')
        .replace('operator = ""', f'operator = "{name}"', 1)
        .replace('sensor = "mqtt"', 'sensor = "command"')
        .replace('sensor = "file"', 'sensor = "command"')
        .replace('sensor_command = ""', f'sensor_command = "cat {energy_file}"')
        .replace("idle_only = true", "idle_only = false")
    )


def prepare(root: Path) -> list[str]:
    """Each host's config, the sunny reading its energy sensor reads, and this machine's fuel
    rate, measured once here rather than by each node as it starts (they share the machine)."""
    configs = []
    fuel_per_s = calibrate.measure_fuel_per_s()
    for index in range(NODES):
        home = launch.node_home(root, index)
        home.mkdir(parents=True, exist_ok=True)
        (home / "energy.json").write_text(json.dumps(SUNNY) + "\n")
        calibration = {"fuel_per_s": fuel_per_s, "measured_at_s": int(time.time())}
        (home / calibrate.CALIBRATION_FILE).write_text(json.dumps(calibration) + "\n")
        configs.append(node_config(index, home))
    return configs


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
        nodes = launch.up(root, NODES, configs=prepare(root), tied=True)
        try:
            launch.wait_for(lambda: market_complete(nodes), 30, "every node to see every other")
            self.show_market(nodes)
            self.publish(nodes, demo_jobs(self.rng))
            launch.wait_for(lambda: pending_pays(nodes) == 0, SETTLE_TIMEOUT_S, "receipts")
            self.show_ledgers(nodes)
            self.show_earnings(nodes)
        finally:
            with lifeline.held():  # a second Ctrl-C must not cut the shutdown short
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
        for column in ("node", "host profile", "energy", "power W", "price mc/Tfuel"):
            table.add_column(column)
        for node in nodes:
            host = config.load(paths.config_path(node.home))
            price = str(prices.get(node.info["peer_id"], "-"))
            power = str(host.pricing.power_w)
            table.add_row(node.name, PROFILES[node.index], host.energy_source, power, price)
        self.console.print(table)

    def publish(self, nodes: list[launch.LaunchedNode], jobs: list[DemoJob]) -> None:
        self.console.print(f"[bold]publishing {len(jobs)} jobs[/] from nodes 1-{NODES - 1}")
        names = {n.info["peer_id"]: n.name for n in nodes}
        table = Table(title="Jobs (each run on independent hosts; accepted only when they agree)")
        for column in ("job", "from", "module", "verified", "ran on", "fuel", "paid mc", "s"):
            table.add_column(column)
        # Not `with`: on Ctrl-C that would wait for every job before the nodes are stopped.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(jobs))
        try:
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
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
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

    def show_earnings(self, nodes: list[launch.LaunchedNode]) -> None:
        table = Table(title="Earnings against energy cost (estimated from fuel, power and tariff)")
        columns = ("profile", "jobs", "fuel", "earned mc", "energy kWh", "cost mc", "net mc")
        for column in columns:
            table.add_column(column, justify="left" if column == "profile" else "right")
        spent_mc = 0
        rows = []
        for node in nodes:
            earnings, spent = host_earnings(node)
            spent_mc += spent
            rows.append(earnings)
            table.add_row(
                PROFILES[node.index], str(earnings.jobs), f"{earnings.fuel / 1e6:,.1f} M",
                str(earnings.earned_mc), f"{earnings.energy_kwh:.1e}",
                f"{earnings.energy_cost_mc:.2f}", f"{earnings.net_mc:+.2f}",
            )  # fmt: skip
        if sum(e.earned_mc for e in rows) != spent_mc:
            self.failures.append(f"earned {sum(e.earned_mc for e in rows)} mc, spent {spent_mc}")
        if not any(e.jobs for e in rows) or any(e.jobs and not e.fuel for e in rows):
            self.failures.append("the metrics show no work, or work that burnt no fuel")
        self.console.print(table)


def metric_values(node: launch.LaunchedNode) -> dict[tuple[str, str], float]:
    """``/metrics`` as (sample name, its labels' values joined) -> value."""
    token = paths.read_token(paths.token_path(node.home))
    response = httpx.get(
        node.info["api"] + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    response.raise_for_status()
    return {
        (sample.name, ",".join(sample.labels.values())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def host_earnings(node: launch.LaunchedNode) -> tuple[Earnings, int]:
    """(what the host earned against its energy cost, what it spent publishing)."""
    values = metric_values(node)
    status = ask(node, "/v1/status")
    energy = status.get("energy") or {}  # the energy state, where the node reports one
    host = config.load(paths.config_path(node.home))
    earnings = estimate(
        host.pricing,
        status["ad"]["fuel_per_s"],
        jobs=int(values.get(("hearth_sandbox_runs_total", "ok"), 0)),
        fuel=int(values[("hearth_sandbox_fuel_total", "")]),
        earned_mc=int(values[("hearth_credits_earned_mc_total", "")]),
        now_ms=status["now_ms"],
        mode=energy.get("mode"),
    )
    return earnings, int(values[("hearth_credits_spent_mc_total", "")])


def run_demo(seed: int, directory: Path | None = None) -> bool:
    console = Console()
    if directory is not None:
        return Demo(console, seed).run(directory)
    with tempfile.TemporaryDirectory(prefix="hearth-demo-") as tmp:
        return Demo(console, seed).run(Path(tmp))
