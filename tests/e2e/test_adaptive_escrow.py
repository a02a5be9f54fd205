"""Adaptive jobs' held pay on real nodes (ADR 0034, amendments): held while the batch runs, paid
by the publisher itself once its batch is over, without waiting for the hold's date."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from hearth import Client, JobOptions
from hearth.testnet import launch
from tests.e2e.network import ECHO, assert_books_balance, config
from tests.e2e.network import start as start_network

pytestmark = pytest.mark.integration

JOBS = 3


def owed_mc(node: launch.LaunchedNode) -> int:
    """What ``node``, as a worker, counts as owed to it by publishers (held pay included)."""
    with Client(node.home) as client:
        found: int = client._call("GET", "/v1/ledger/balance")["owed_mc"]
    return found


def test_an_adaptive_batch_holds_pay_until_it_ends_then_pays_every_worker(tmp_path: Path) -> None:
    nodes = start_network(tmp_path / "adaptive", [config(60 + 10 * i) for i in range(4)])
    try:
        publisher, workers = nodes[0], nodes[1:]
        options = JobOptions(replicas=2, verify="adaptive")
        with Client(publisher.home) as client:
            job_ids = [client.submit(ECHO, os.urandom(1_000), options) for _ in range(JOBS)]
            for job_id in job_ids:
                assert client.wait(job_id).ok
            summaries: list[dict[str, Any]] = [client.job(job_id) for job_id in job_ids]
        # No host has a record with this publisher yet: every job ran on two hosts, and the
        # pay decided for them is held (the batch's end comes batch_idle_ms after its last job).
        assert {s["verified_by"] for s in summaries} == {"replicated"}, summaries
        paid: dict[str, int] = {}
        for summary in summaries:
            assert summary["pay_held_mc"] == summary["paid_mc"] > 0, summary
            for replica in summary["replicas_detail"]:
                if replica["paid_mc"]:
                    paid[replica["worker"]] = paid.get(replica["worker"], 0) + replica["paid_mc"]
        waiting = [node for node in workers if node.info["peer_id"] in paid]
        assert waiting
        # The note reaches the worker just after the verdict: it counts the held pay as owed.
        launch.wait_for(
            lambda: any(owed_mc(node) > 0 for node in waiting), 8, "a worker to count held pay"
        )

        def released() -> bool:
            with Client(publisher.home) as client:
                return all(client.job(job_id)["pay_held_mc"] == 0 for job_id in job_ids)

        launch.wait_for(released, 60, "the publisher to end the batch and release held pay")
        after = assert_books_balance(nodes)  # settled, verified, summing to zero
        for node in workers:
            assert after[node.info["peer_id"]] == paid.get(node.info["peer_id"], 0)
        launch.wait_for(
            lambda: all(owed_mc(node) == 0 for node in workers), 30, "workers to be owed nothing"
        )
        assert -after[publisher.info["peer_id"]] == sum(paid.values())
    finally:
        launch.stop(nodes)
