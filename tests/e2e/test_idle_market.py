"""A dozen idle nodes converge, stay converged past an ad's lifetime, and drop no ad as expired.

The CI-sized twin of `bench/idle.py` (ADR 0032): the 50-node run is a benchmark, not a test.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from hearth.node.home import load_token
from hearth.protocol import limits
from hearth.testnet import launch
from hearth.testnet.observe import ask, market_complete
from tests.e2e.network import TESTNET_CONFIG

pytestmark = pytest.mark.integration

NODES = 12
CONVERGE_S = 60.0
# Longer than an ad's life: a market still complete at the end holds renewed ads only.
HOLD_S = limits.CAPACITY_AD_TTL_MS / 1000 + 5
SAMPLE_S = 5.0


def expired_drops(node: launch.LaunchedNode) -> int:
    """Messages this node refused or dropped as expired, at the edge or in its own queue."""
    total = 0
    for line in _metrics(node).splitlines():
        counters = ("hearth_edge_refused_total{", "hearth_engine_dropped_total{")
        if line.startswith(counters) and 'reason="expired"' in line:
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _metrics(node: launch.LaunchedNode) -> str:
    token = load_token(node.home)
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(node.info["api"] + "/metrics", headers=headers, timeout=10).text


def test_a_dozen_idle_nodes_converge_and_stay_converged(tmp_path: Path) -> None:
    nodes = launch.up(tmp_path / "net", NODES, configs=[TESTNET_CONFIG] * NODES)
    try:
        started_s = time.monotonic()
        launch.wait_for(lambda: market_complete(nodes), CONVERGE_S, "every market to be complete")
        converged_s = time.monotonic() - started_s

        deadline_s = time.monotonic() + HOLD_S
        while time.monotonic() < deadline_s:
            time.sleep(SAMPLE_S)
            sizes = [len(ask(n, "/v1/market")["offers"]) for n in nodes]
            assert sizes == [NODES - 1] * NODES, (converged_s, sizes)
        drops = {n.name: expired_drops(n) for n in nodes}
        assert sum(drops.values()) == 0, drops
    finally:
        launch.stop(nodes)
