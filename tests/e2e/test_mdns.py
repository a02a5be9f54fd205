"""Two boxes on one home LAN find each other by mDNS, with no bootstrap at all (ADR 0036).

Each node runs as a real process in its own network namespace; the namespaces hang on one
bridge, like two machines on a home switch, and have no other way out. Needs root (to create
namespaces); skipped with the reason where they cannot be created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth.node.home import init_home
from hearth.testnet import launch
from tests import syspkg
from tests.e2e.network import TESTNET_CONFIG

pytestmark = pytest.mark.integration

SUBNET = "10.77.{}.0"
FIND_S_MAX = 30.0


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


@pytest.fixture
def lan() -> Iterator[list[tuple[str, str]]]:
    """Two namespaces on one bridge: [(namespace, address), ...]; all removed afterwards."""
    syspkg.require_root("network namespaces")
    syspkg.require("ip", "iproute2")
    tag = f"{os.getpid() % 10000:04d}"
    bridge, third = f"hdbr{tag}", str(int(tag) % 250 + 1)
    made: list[str] = []
    try:
        if _ip("link", "add", bridge, "type", "bridge").returncode:
            pytest.skip("cannot create a bridge here (no CAP_NET_ADMIN?)")
        _ip("link", "set", bridge, "up")
        boxes = []
        for index in (1, 2):
            ns = f"hd{tag}n{index}"
            created = _ip("netns", "add", ns)
            if created.returncode:
                pytest.skip(f"cannot create a network namespace: {created.stderr.strip()}")
            made.append(ns)
            outside, inside = f"hd{tag}v{index}", f"hd{tag}p{index}"
            address = f"10.77.{third}.{index}"
            for args in (
                ("link", "add", outside, "type", "veth", "peer", "name", inside),
                ("link", "set", outside, "master", bridge, "up"),
                ("link", "set", inside, "netns", ns),
                ("-n", ns, "addr", "add", f"{address}/24", "dev", inside),
                ("-n", ns, "link", "set", inside, "up", "multicast", "on"),
                ("-n", ns, "link", "set", "lo", "up"),
            ):
                result = _ip(*args)
                assert result.returncode == 0, (args, result.stderr)
            boxes.append((ns, address))
        yield boxes
    finally:
        for ns in made:
            _ip("netns", "del", ns)
        _ip("link", "del", bridge)


def start_in(ns: str, home: Path, host: str) -> subprocess.Popen[bytes]:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "hearth.node", "node", "start"]
    argv += ["--host", host, "--port", "0"]
    with (home / "node.out").open("ab") as out:
        return subprocess.Popen(
            argv,
            env={**os.environ, "HEARTH_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def peers_in(ns: str, home: Path) -> set[str]:
    argv = ["ip", "netns", "exec", ns, sys.executable, "-m", "hearth.node", "peers", "--json"]
    env = {**os.environ, "HEARTH_HOME": str(home)}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    if result.returncode:
        return set()
    return {p["peer_id"] for p in json.loads(result.stdout)["peers"] if p["connected"]}


def test_two_nodes_on_one_lan_find_each_other_by_mdns(
    lan: list[tuple[str, str]], tmp_path: Path
) -> None:
    config = TESTNET_CONFIG.replace("mdns = false", "mdns = true")
    assert "mdns = true" in config
    nodes: list[launch.LaunchedNode] = []
    try:
        for index, (ns, address) in enumerate(lan):
            home = tmp_path / f"box{index}"
            init_home(home, config)
            (home / "swarm.key").write_text("ab" * 32 + "\n")
            process = start_in(ns, home, address)
            nodes.append(launch.LaunchedNode(index, home, address, process.pid, {}))
            nodes[-1].info = launch.wait_until_listening(home, process, 60)
        first, second = nodes
        (ns, _), _ = lan
        launch.wait_for(
            lambda: second.info["peer_id"] in peers_in(ns, first.home),
            FIND_S_MAX,
            "the first box to find the second by mDNS",
        )
        # One of them dialled the other at the LAN address its announcement named.
        logs = (first.home / "node.log").read_text() + (second.home / "node.log").read_text()
        assert "found by mDNS at /ip4/10.77." in logs
    finally:
        launch.stop(nodes)
