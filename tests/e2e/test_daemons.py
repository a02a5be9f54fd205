"""Real daemons as processes on 127.0.0.x: they find each other and price from their own config."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hearth.node.config import TEMPLATE, parse
from hearth.protocol.pricing import price_now
from hearth.testnet import launch
from hearth.testnet.observe import ask

pytestmark = pytest.mark.integration

# A bound for the wait, not a speed target (timed targets live in bench/): the suite shares the
# machine's cores between two workers, each with its own nodes.
MARKET_WAIT_S = 30.0


def config_with(power_w: int, operator: str) -> str:
    text = TEMPLATE.replace("power_w = 60", f"power_w = {power_w}")
    text = text.replace(
        'runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]'
    )  # no CPython compile
    return text.replace('operator = ""', f'operator = "{operator}"')


def hearth(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth.node", *args],
        env={**os.environ, "HEARTH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def three_nodes(tmp_path: Path):  # type: ignore[no-untyped-def]
    configs = [config_with(60 * (i + 1), f"home{i}") for i in range(3)]
    nodes = launch.up(tmp_path / "net", 3, configs=configs)
    try:
        yield nodes
    finally:
        launch.stop(nodes)


def test_three_daemons_list_each_other_with_prices_from_their_config(three_nodes) -> None:  # type: ignore[no-untyped-def]
    # The last node has just started (the fixture returns once its node.json exists).
    peer_ids = {n.info["peer_id"] for n in three_nodes}

    def everyone_listed() -> bool:
        for node in three_nodes:
            offers = ask(node, "/v1/market")["offers"]
            if {o["peer_id"] for o in offers} != peer_ids - {node.info["peer_id"]}:
                return False
        return True

    launch.wait_for(everyone_listed, MARKET_WAIT_S, "each market to list both others")

    views: dict[str, dict[str, int]] = {}
    for node in three_nodes:
        result = hearth(node.home, "market", "--json")
        assert result.returncode == 0, result.stderr
        offers = json.loads(result.stdout)["offers"]
        views[node.info["peer_id"]] = {o["peer_id"]: o["price_mc_per_tfuel"] for o in offers}
        assert set(views[node.info["peer_id"]]) == peer_ids - {node.info["peer_id"]}

    now_ms = time.time_ns() // 1_000_000
    for node in three_nodes:
        config = parse((node.home / "config.toml").read_text())
        fuel_per_s = json.loads((node.home / "calibration.json").read_text())["fuel_per_s"]
        expected = price_now(config.pricing, fuel_per_s, now_ms)
        for view in views.values():
            if node.info["peer_id"] in view:
                assert view[node.info["peer_id"]] == expected
    status = ask(three_nodes[0], "/v1/status")
    assert status["ad"]["operator"] == "home0"


def test_node_json_and_the_api_token(three_nodes) -> None:  # type: ignore[no-untyped-def]
    node = three_nodes[0]
    info = json.loads((node.home / "node.json").read_text())
    assert info["pid"] == node.pid
    assert all(a.endswith(f"/p2p/{info['peer_id']}") for a in info["multiaddrs"])
    assert info["api"].startswith("http://127.0.0.1:")
    assert httpx.get(info["api"] + "/v1/status").status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.get(info["api"] + "/v1/status", headers=wrong).status_code == 401
    peers = hearth(node.home, "peers", "--json")
    assert peers.returncode == 0
    assert len(json.loads(peers.stdout)["peers"]) >= 1


def test_sigterm_stops_a_node_cleanly(tmp_path: Path) -> None:
    [node] = launch.up(tmp_path / "net", 1)
    os.kill(node.pid, signal.SIGTERM)
    launch.wait_for(lambda: not launch.is_running(node.pid), 10, "the node to exit")
    assert not (node.home / "node.json").exists()
    assert "node-stopping" in (node.home / "node.out").read_text()


def test_missing_home_and_bad_config_give_one_line(tmp_path: Path) -> None:
    missing = hearth(tmp_path / "nowhere", "node", "start", "--host", "127.0.0.9")
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0
    assert "hearth init" in missing.stderr

    home = tmp_path / "home"
    assert hearth(home, "init").returncode == 0
    (home / "config.toml").write_text('[energy]\nsource = "coal"\n')
    bad = hearth(home, "node", "start", "--host", "127.0.0.9")
    assert bad.returncode != 0
    assert bad.stderr.strip() == (
        "hearth: config: energy.source: choose one of ['grid', 'solar', 'battery', 'mixed']"
    )
    no_node = hearth(home, "market")
    assert no_node.returncode != 0 and "hearth node start" in no_node.stderr
