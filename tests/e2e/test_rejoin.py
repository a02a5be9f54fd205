"""A node restarted while its only bootstrap is down finds the network again from its peer store.

Real node processes on 127.0.0.x: three nodes join through node0; node2 learns node1 by peer
exchange and keeps it in ``peers.sqlite``; node2 stops, node0 (its only bootstrap) stops, and
node2 starts again with that dead bootstrap: it must be connected to node1 within 10 s of its
start (ADR 0036).
"""

from __future__ import annotations

import re
import sqlite3
import time
from pathlib import Path

import pytest

from hearth.node.client import NodeClient
from hearth.p2p.peerstore import PEERSTORE_FILE
from hearth.testnet import launch
from tests.e2e.network import TESTNET_CONFIG

pytestmark = pytest.mark.integration

REJOIN_S_MAX = 10.0


def connected(home: Path) -> set[str]:
    client = NodeClient(home)
    try:
        return {p["peer_id"] for p in client.get("/v1/peers")["peers"] if p["connected"]}
    finally:
        client.close()


def stored(home: Path) -> set[str]:
    path = home / PEERSTORE_FILE
    if not path.exists():
        return set()
    with sqlite3.connect(path) as db:
        return {row[0] for row in db.execute("SELECT peer_id FROM known")}


def last_reconnect(node: launch.LaunchedNode) -> tuple[int, int, int]:
    """(peers reconnected, known peers dialled, ms taken) of the node's latest start."""
    pattern = r"reconnected to (\d+) of (\d+) known peers in (\d+) ms"
    found = re.findall(pattern, (node.home / "node.log").read_text())
    assert found, "the node logs its reconnect"
    reconnected, known, took_ms = (int(g) for g in found[-1])
    return reconnected, known, took_ms


def test_a_restart_with_the_bootstrap_down_reconnects_from_the_peer_store(
    tmp_path: Path,
) -> None:
    nodes = launch.up(tmp_path, 3, configs=[TESTNET_CONFIG] * 3)
    try:
        node0, node1, node2 = nodes
        peer1 = node1.info["peer_id"]
        launch.wait_for(lambda: peer1 in connected(node2.home), 30, "node2 to meet node1")
        # Whichever of the two dialled, node2 keeps node1 once it has seen node1's own address
        # work (its dial, or its probe of an inbound peer), at its next flush.
        launch.wait_for(lambda: peer1 in stored(node2.home), 30, "node2 to keep node1")
        launch.stop([node2])
        assert peer1 in stored(node2.home)
        assert node0.info["peer_id"] in stored(node2.home)
        launch.stop([node0])
        # The same bootstrap as before, now down: only the peer store can bring node2 back.
        bootstrap = node0.info["multiaddrs"][0]
        started_s = time.monotonic()
        process = launch.start_process(node2.home, node2.host, bootstrap, node2.home / "node.out")
        node2.pid = process.pid
        launch.wait_until_listening(node2.home, process, 60)
        # The node is up once it listens; on a loaded machine starting Python takes a while.
        launch.wait_for(lambda: peer1 in connected(node2.home), 30, "node2 to rejoin")
        print(f"connected to node1 {time.monotonic() - started_s:.2f} s after the spawn")
        reconnected, known, took_ms = last_reconnect(node2)
        print(f"reconnected to {reconnected} of {known} known peers in {took_ms} ms")
        assert (reconnected, known) == (1, 2)  # node1 answered; node0, the bootstrap, did not
        assert took_ms <= REJOIN_S_MAX * 1000
        # The dead bootstrap was dialled, failed, and is counted against its entry.
        with sqlite3.connect(node2.home / PEERSTORE_FILE) as db:
            failures = dict(db.execute("SELECT peer_id, failures FROM known"))
        assert failures[node0.info["peer_id"]] >= 1
    finally:
        launch.stop(nodes)
