"""A worker is paid only after the publisher's job state is durable (ADR 0019), across a kill -9.

The publisher runs with ``HEARTH_TEST_CRASH_AT=before-pay-commit`` (node/testhooks.py): it kills
itself with SIGKILL the moment its driver is about to commit a PAY entry, that is after the
step's ``SaveJob`` has run and before the pay is durable or its offer has left. Restarted
without the hook, it must pay every worker exactly once, from the saved job alone.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from hearth import Client, JobOptions
from hearth.node.testhooks import BEFORE_PAY_COMMIT
from hearth.testnet import launch
from tests.e2e.network import (
    ECHO,
    assert_books_balance,
    balances,
    config,
    hearth,
    market_ready,
    wait_before_killing_the_hub,
)
from tests.e2e.network import start as start_network

pytestmark = pytest.mark.integration


def restart(node: launch.LaunchedNode, bootstrap: str, env: dict[str, str]) -> Any:
    """Start ``node`` again in its home; ``env`` is added to this process's environment."""
    (node.home / "node.json").unlink(missing_ok=True)
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        process = launch.start_process(node.home, node.host, bootstrap, node.home / "node.out")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    node.pid = process.pid
    return process


def entries(home: Path) -> list[dict[str, Any]]:
    shown = hearth(home, "ledger", "show", "--json")
    assert shown.returncode == 0, shown.stderr
    found: list[dict[str, Any]] = json.loads(shown.stdout)
    return found


def receipts(home: Path, kind: str, job_id: str) -> list[dict[str, Any]]:
    return [
        e["body"]["receipt"]
        for e in entries(home)
        if e["kind"] == kind and e["body"]["receipt"]["job_id"] == job_id
    ]


def test_a_publisher_killed_between_saving_and_paying_pays_each_worker_once(
    tmp_path: Path,
) -> None:
    nodes = start_network(tmp_path / "crash", [config(60 + 10 * i) for i in range(4)])
    try:
        publisher, bootstrap = nodes[0], nodes[1].info["multiaddrs"][0]
        wait_before_killing_the_hub(nodes)
        os.kill(publisher.pid, signal.SIGKILL)  # come back with the crash point armed
        launch.wait_for(lambda: not launch.is_running(publisher.pid), 10, "the publisher to die")
        process = restart(publisher, bootstrap, {"HEARTH_TEST_CRASH_AT": BEFORE_PAY_COMMIT})
        publisher.info = launch.wait_until_listening(publisher.home, process, 60)
        launch.wait_for(lambda: market_ready(nodes), 30, "every market to be complete")

        with Client(publisher.home) as client:
            job_id = client.submit(ECHO, os.urandom(2_000), JobOptions(replicas=2))
        assert process.wait(timeout=120) == -signal.SIGKILL  # died at the pay, by its own hand
        # Between the two writes: the job is saved as paid, no pay is on the chain, and no
        # worker has earned anything.
        [state] = list((publisher.home / "jobs").glob("*.state"))
        assert state.stem == job_id
        assert receipts(publisher.home, "pay", job_id) == []
        assert all(balance == 0 for balance in balances(nodes).values())

        process = restart(publisher, bootstrap, {})
        publisher.info = launch.wait_until_listening(publisher.home, process, 60)
        with Client(publisher.home) as client:
            summary = client.job(job_id)  # restored as it was saved: verified and paid
        assert summary["state"] == "accepted", summary
        paid = {r["worker"]: r["paid_mc"] for r in summary["replicas_detail"]}
        paid = {worker: mc for worker, mc in paid.items() if mc > 0}
        assert len(paid) == 2

        after = assert_books_balance(nodes)  # settled, verified, summing to zero
        pays = receipts(publisher.home, "pay", job_id)
        assert len(pays) == 2 and len({p["payee"] for p in pays}) == 2  # once per worker
        for node in nodes[1:]:
            earned = receipts(node.home, "earn", job_id)
            worker = node.info["peer_id"]
            assert len(earned) == (1 if worker in paid else 0)
            assert after[worker] == paid.get(worker, 0)
    finally:
        launch.stop(nodes)
