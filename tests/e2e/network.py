"""Shared helpers for tests on real node processes: configs, the CLI, balances and settlement."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hearth import Client
from hearth.node.config import TEMPLATE
from hearth.testnet import launch

ROOT = Path(__file__).resolve().parents[2]
ECHO = ROOT / "node" / "sandbox" / "modules" / "echo.wat"
LOOP = ROOT / "node" / "sandbox" / "modules" / "bench_loop.wat"
# Wasm only: a node offering python would compile CPython (minutes, 1.7 GB) in the background.
TESTNET_CONFIG = TEMPLATE.replace(
    "network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32"
).replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')


def config(power_w: int = 60) -> str:
    return TESTNET_CONFIG.replace("power_w = 60", f"power_w = {power_w}")


def hearth(home: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI against the node in ``home``, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "hearth.node", *args],
        env={**os.environ, "HEARTH_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def hearth_on_each(
    nodes: list[launch.LaunchedNode], *args: str, timeout_s: float = 60
) -> list[subprocess.CompletedProcess[str]]:
    """Run the same CLI command against every node, the commands side by side."""
    running = [
        subprocess.Popen(
            [sys.executable, "-m", "hearth.node", *args],
            env={**os.environ, "HEARTH_HOME": str(node.home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for node in nodes
    ]
    done = []
    for process in running:
        try:
            stdout, stderr = process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
            raise
        done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return done


def balances(nodes: list[launch.LaunchedNode]) -> dict[str, int]:
    out = {}
    results = hearth_on_each(nodes, "ledger", "balance", "--json")
    for node, result in zip(nodes, results, strict=True):
        assert result.returncode == 0, result.stderr
        out[node.info["peer_id"]] = json.loads(result.stdout)["balance_mc"]
    return out


def settled(nodes: list[launch.LaunchedNode]) -> bool:
    """True once no ledger holds a pending pay: every receipt is countersigned or cancelled."""
    for node in nodes:
        with Client(node.home) as client:
            if client._call("GET", "/v1/ledger/balance")["pending_pays"]:
                return False
    return True


def market_ready(nodes: list[launch.LaunchedNode]) -> bool:
    from hearth.testnet.observe import market_complete

    return market_complete(nodes)


def connected_to_all(nodes: list[launch.LaunchedNode]) -> bool:
    from hearth.testnet.observe import ask

    return all(len(ask(node, "/v1/peers")["peers"]) == len(nodes) - 1 for node in nodes)


def wait_before_killing_the_hub(nodes: list[launch.LaunchedNode]) -> None:
    """Node 0 is everyone's bootstrap. Killed before the others have found each other (nodes
    forked by the zygote are up seconds sooner), it leaves them unlinked: they redial its old
    port, and the restarted node reaches only its own bootstrap. A test that kills node 0 to
    test a restart waits for the whole mesh first."""
    launch.wait_for(lambda: connected_to_all(nodes), 30, "every node to link to every other")


def start(root: Path, configs: list[str]) -> list[launch.LaunchedNode]:
    nodes = launch.up(root, len(configs), configs=configs)
    try:
        launch.wait_for(lambda: market_ready(nodes), 30, "every market to be complete")
    except BaseException:
        launch.stop(nodes)
        raise
    return nodes


def assert_books_balance(nodes: list[launch.LaunchedNode]) -> dict[str, int]:
    """Every receipt settled, every ledger verifies, and the balances sum to zero."""
    launch.wait_for(lambda: settled(nodes), 30, "every receipt to settle")
    for verify in hearth_on_each(nodes, "ledger", "verify"):
        assert verify.returncode == 0, verify.stdout + verify.stderr
    after = balances(nodes)
    assert sum(after.values()) == 0, after
    return after
