"""`/metrics` on real node processes that have run jobs: Prometheus text with their numbers."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from hearth import Client
from hearth.node import paths
from hearth.testnet import launch
from tests import syspkg
from tests.e2e.network import ECHO, ROOT, assert_books_balance, config, start

pytestmark = pytest.mark.integration

FAMILIES_MIN = 15
JOBS = 2


def scrape(node: launch.LaunchedNode) -> str:
    token = paths.read_token(paths.token_path(node.home))
    response = httpx.get(
        node.info["api"] + "/metrics", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def families_of(text: str) -> dict[str, Metric]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], name: str, **labels: str) -> float:
    family = families[name]
    return sum(
        s.value
        for s in family.samples
        if s.name in (name, name + "_total") and labels.items() <= s.labels.items()
    )


def log_events(home: Path) -> list[str]:
    lines = (home / "node.log").read_text().splitlines()
    return [json.loads(line)["event"] for line in lines if line.startswith("{")]


def test_metrics_of_nodes_that_ran_jobs_parse_into_families_with_work_in_them(
    tmp_path: Path,
) -> None:
    nodes = start(tmp_path / "metrics", [config(40 + 20 * i) for i in range(3)])
    try:
        publisher, workers = nodes[0], nodes[1:]
        with Client(publisher.home) as client:
            for number in range(JOBS):
                result = client.run(ECHO, f"job {number}".encode(), replicas=2)
                assert result.ok, result.reason
        assert_books_balance(nodes)
        texts = {node.index: scrape(node) for node in nodes}
        refused = httpx.get(publisher.info["api"] + "/metrics", timeout=10)
        worker_events = log_events(workers[0].home) + log_events(workers[1].home)
        publisher_events = log_events(publisher.home)
    finally:
        launch.stop(nodes)

    assert refused.status_code == 401
    scraped = {index: families_of(text) for index, text in texts.items()}
    for families in scraped.values():
        assert len(families) >= FAMILIES_MIN, sorted(families)
        assert value(families, "hearth_peers_connected") == len(nodes) - 1
        assert value(families, "hearth_ads_heard") > 0
        assert value(families, "hearth_ledger_entries") > 1
        # Direct messages went on long-lived streams (ADR 0038), none on a stream of their own.
        assert value(families, "hearth_wire_events", event="streams_opened") >= 1
        assert value(families, "hearth_wire_events", event="legacy_sends") == 0
        assert value(families, "hearth_wire_events", event="sends_dropped") == 0
    mine = scraped[publisher.index]
    assert value(mine, "hearth_jobs_published") == JOBS
    assert value(mine, "hearth_jobs_finished", outcome="paid") == JOBS
    assert value(mine, "hearth_verification_verdicts", verdict="match") == 2 * JOBS
    assert value(mine, "hearth_credits_spent_mc") > 0
    assert value(mine, "hearth_credits_balance_mc") < 0
    theirs = [scraped[w.index] for w in workers]
    # Each job ran on two replicas: with two workers, each ran every job.
    for families in theirs:
        assert value(families, "hearth_bids_sent") >= JOBS
        assert value(families, "hearth_bids_won") == JOBS
        assert value(families, "hearth_sandbox_runs", result="ok") == JOBS
        assert value(families, "hearth_sandbox_fuel") > 0
        assert value(families, "hearth_credits_earned_mc") > 0
        assert value(families, "hearth_jobs", role="worker") == JOBS
    earned = sum(value(f, "hearth_credits_earned_mc") for f in theirs)
    assert earned == value(mine, "hearth_credits_spent_mc")
    assert value(mine, "hearth_energy_paused") == 0
    for event in ("bid-sent", "award-accepted", "job-executed"):
        assert event in worker_events
    for event in ("job-phase", "job-verdict"):
        assert event in publisher_events


def filled_example(node: launch.LaunchedNode, path: Path) -> Path:
    """docs/prometheus.yml as a host fills it in: their token file and their node's API port
    in place of the placeholders (and a scrape every second, for the test's sake)."""
    token = str(paths.token_path(node.home))
    target = node.info["api"].removeprefix("http://")
    text = (ROOT / "docs" / "prometheus.yml").read_text()
    for placeholder, value in (
        ("/home/host/.local/share/hearth/api.token", token),
        ("/tmp/hearth-testnet/node0/api.token", token),
        ("127.0.0.1:9464", target),
        ("127.0.0.1:9470", target),
        ("scrape_interval: 15s", "scrape_interval: 1s"),
    ):
        assert placeholder in text, placeholder
        text = text.replace(placeholder, value)
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_prometheus_scrapes_a_node_with_the_example_config_and_promtool_lints_the_text(
    tmp_path: Path,
) -> None:
    promtool = syspkg.require("promtool", "prometheus")
    prometheus = syspkg.require("prometheus", "prometheus")
    nodes = start(tmp_path / "node", [config(60)])
    server = None
    try:
        text = scrape(nodes[0])
        example = filled_example(nodes[0], tmp_path / "prometheus.yml")
        check = subprocess.run(
            [promtool, "check", "config", str(example)], capture_output=True, text=True, timeout=60
        )
        assert check.returncode == 0, check.stdout + check.stderr
        web = f"127.0.0.1:{free_port()}"
        server = subprocess.Popen(
            [prometheus, f"--config.file={example}", f"--web.listen-address={web}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("wb"),
        )  # fmt: skip
        series: list[Any] = []

        def scraped() -> bool:
            assert server is not None and server.poll() is None, "prometheus exited"
            try:
                answer = httpx.get(
                    f"http://{web}/api/v1/query", params={"query": "hearth_ledger_entries"}
                ).json()
            except (httpx.HTTPError, ValueError):
                return False
            series[:] = answer.get("data", {}).get("result", [])
            return len(series) == 2  # one series per scrape job in the example

        launch.wait_for(scraped, 60, "prometheus to scrape the node with the example config")
        targets = httpx.get(f"http://{web}/api/v1/targets").json()["data"]["activeTargets"]
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        launch.stop(nodes)
    assert {t["health"] for t in targets} == {"up"}, targets
    assert {float(one["value"][1]) for one in series} == {1.0}  # the genesis entry
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
