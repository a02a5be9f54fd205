"""A dozen idle nodes converge, every node takes in every other's renewed ad while its market
stays complete, and no ad is dropped as expired.

The CI-sized twin of `bench/idle.py` (ADR 0032): the 50-node run, held for many ad lifetimes, is
a benchmark, not a test. Here one round of renewals is enough: ads are renewed every
``CAPACITY_AD_INTERVAL_MS`` and live ``CAPACITY_AD_TTL_MS`` (three intervals), so a renewal that
reaches every node in time keeps every market complete for good (the timers themselves are
tested in tests/protocol/test_engine_market.py).
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
# One ad interval from convergence, and the time a renewal takes to cross the mesh under load.
RENEWED_S = limits.CAPACITY_AD_INTERVAL_MS / 1000 + 30
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


def ad_times(node: launch.LaunchedNode) -> dict[str, int]:
    """When each ad in this node's market was created (its author's clock), by peer."""
    return {offer["peer_id"]: offer["created_ms"] for offer in ask(node, "/v1/market")["offers"]}


def test_a_dozen_idle_nodes_converge_and_stay_converged(tmp_path: Path) -> None:
    nodes = launch.up(tmp_path / "net", NODES, configs=[TESTNET_CONFIG] * NODES)
    try:
        started_s = time.monotonic()
        launch.wait_for(lambda: market_complete(nodes), CONVERGE_S, "every market to be complete")
        converged_s = time.monotonic() - started_s
        first = {n.name: ad_times(n) for n in nodes}

        deadline_s = time.monotonic() + RENEWED_S
        waiting = {n.name for n in nodes}
        while waiting:
            assert time.monotonic() < deadline_s, (converged_s, "no renewed ads at", waiting)
            time.sleep(SAMPLE_S)
            for node in nodes:
                now = ad_times(node)
                assert now.keys() == first[node.name].keys(), (converged_s, node.name, sorted(now))
                if all(now[peer] > created_ms for peer, created_ms in first[node.name].items()):
                    waiting.discard(node.name)
        drops = {n.name: expired_drops(n) for n in nodes}
        assert sum(drops.values()) == 0, drops
    finally:
        launch.stop(nodes)
