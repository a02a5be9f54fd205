"""`/metrics` on real node processes that have run jobs: Prometheus text with their numbers."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

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


def test_the_metrics_and_the_example_scrape_config_pass_promtool(tmp_path: Path) -> None:
    promtool = syspkg.require("promtool", "prometheus")
    nodes = start(tmp_path / "promtool", [config(60)])
    try:
        text = scrape(nodes[0])
    finally:
        launch.stop(nodes)
    lint = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    # The example as a host would fill it in: their token file in place of the placeholders.
    example = (ROOT / "docs" / "prometheus.yml").read_text()
    token = str(paths.token_path(nodes[0].home))
    filled = tmp_path / "prometheus.yml"
    filled.write_text(
        example.replace("/home/host/.local/share/hearth/api.token", token).replace(
            "/tmp/hearth-testnet/node0/api.token", token
        )
    )
    check = subprocess.run(
        [promtool, "check", "config", str(filled)], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr
