"""Loopback nodes that offer the python runtime, for examples, tests and benchmarks.

Every home on the machine shares one compiled CPython (`paths.runtime_cache_dir`, ADR 0022):
`warm` compiles it once (minutes) or loads it (seconds); nodes started after it offer `python`
as soon as they have loaded it.
"""

from __future__ import annotations

from pathlib import Path

from hearth.node import paths
from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE
from hearth.node.sandbox import python
from hearth.testnet import launch
from hearth.testnet.observe import ask

# Loopback nodes share one /24; a /32 group lets two of them be the replicas of one job.
PYTHON_CONFIG = TEMPLATE.replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")
OFFER_TIMEOUT_S = 300  # each node loads the 355 MB compiled CPython; slow on a loaded machine


def warm() -> Path:
    """Compile (or load) CPython into the machine's runtime cache; return that cache."""
    cache = paths.runtime_cache_dir()
    python.warm(cache)
    return cache


def up(root: Path, count: int) -> list[launch.LaunchedNode]:
    """Start ``count`` nodes offering wasm and python; return once each sees the others' python."""
    nodes = launch.up(root, count, configs=[PYTHON_CONFIG] * count)
    try:
        launch.wait_for(
            lambda: python_offered(nodes), OFFER_TIMEOUT_S, "every node to offer python"
        )
    except BaseException:
        launch.stop(nodes)
        raise
    return nodes


def python_offered(nodes: list[launch.LaunchedNode]) -> bool:
    """True once every node's market lists every other node with the python runtime."""
    for node in nodes:
        others = {n.info["peer_id"] for n in nodes} - {node.info["peer_id"]}
        try:
            offers = ask(node, "/v1/market")["offers"]
        except CommandError:
            return False
        if others - {o["peer_id"] for o in offers if "python" in o["runtimes"]}:
            return False
    return True
