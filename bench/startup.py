"""How long a node takes to start, and a fresh three-node testnet to see a complete market.

First it starts one node at a time on a fresh home (``--starts`` of them) and times each from
the spawn to its ``node.json`` (the node listens on libp2p and on its API, its sandbox worker is
ready); each is stopped before the next. Then it starts three fresh nodes together, as the
tests do (``launch.up``), and times how long after the last one listens every node's market
lists the two others (tests/e2e/test_daemons.py waits for this with a generous bound; the
figure lives here). The fresh homes measure their fuel rate at first start, as a new node does.
Nodes are forked by the launcher's zygote (ADR 0040), whose own start (the imports, once) falls
in the first single start; ``HEARTH_ZYGOTE=0`` times plain processes.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

from hearth.testnet import launch
from hearth.testnet.observe import market_complete

BASE = "127.0.6.2"
MARKET_WAIT_S = 60.0
# Wasm only: a node offering python would compile CPython (minutes) in the background.
CONFIG = launch.default_config().replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')


def one_start_s(root: Path, index: int) -> float:
    """Spawn to node.json of one node on a fresh home; the node is stopped before returning."""
    home = launch.node_home(root, index)
    launch.prepare_home(home, secrets.token_bytes(32), CONFIG)
    host = launch.host_for(index, BASE)
    started = time.monotonic()
    process = launch.start_process(home, host, None, home / "node.out")
    try:
        info = launch.wait_until_listening(home, process, launch.START_TIMEOUT_S)
        elapsed_s = time.monotonic() - started
    finally:
        launch.stop([launch.LaunchedNode(index, home, host, process.pid, {})])
        process.wait()
    assert info["pid"] == process.pid
    return elapsed_s


def three_node_market(root: Path) -> tuple[float, float]:
    """(seconds for three fresh nodes to listen, seconds after that until every market is
    complete)."""
    started = time.monotonic()
    nodes = launch.up(root, 3, configs=[CONFIG] * 3, base=BASE)
    try:
        listening = time.monotonic()
        launch.wait_for(lambda: market_complete(nodes), MARKET_WAIT_S, "every market")
        complete = time.monotonic()
    finally:
        launch.stop(nodes)
    return listening - started, complete - listening


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, default=5, help="single-node starts to time")
    args = parser.parse_args()
    if not 1 <= args.starts <= 50:
        parser.error("--starts takes 1 to 50")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="hearth-bench-startup-") as tmp:
        root = Path(tmp)
        starts_s = [one_start_s(root / "single", i) for i in range(args.starts)]
        up_s, market_s = three_node_market(root / "three")
    figures = {
        "zygote": launch.zygote_enabled(),
        "starts": args.starts,
        "node_start_s_median": round(statistics.median(starts_s), 3),
        "node_start_s_min": round(min(starts_s), 3),
        "node_start_s_max": round(max(starts_s), 3),
        "three_nodes_listening_s": round(up_s, 3),
        "three_nodes_market_complete_s": round(market_s, 3),
        # the machine's 1-minute load average before and after: figures are only as quiet as it
        "load_average": [round(load_before, 1), round(os.getloadavg()[0], 1)],
    }
    print(
        f"node start (spawn to node.json) median {figures['node_start_s_median']} s over "
        f"{args.starts}; three fresh nodes listening in {figures['three_nodes_listening_s']} s, "
        f"every market complete {figures['three_nodes_market_complete_s']} s later; "
        f"{'forked by the zygote' if figures['zygote'] else 'plain processes'}; "
        f"load average {load_before:.1f} before, {figures['load_average'][1]} after"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
