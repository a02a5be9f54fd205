"""A pandas/numpy Python job on a 3-node loopback network, verified by 2 replicas (ADR 0022).

Each node is its own network group (prefix /32), so three nodes on 127.0.0.x are diverse enough
to verify; the nodes share the machine's runtime cache, which `python_runtime` warmed once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hearth import Client
from hearth.testnet import launch
from tests.e2e.network import TESTNET_CONFIG, start

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PYTHON_CONFIG = TESTNET_CONFIG.replace('runtimes = ["wasm"]', 'runtimes = ["wasm", "python"]')
PANDAS_JOB = b"""
import os, sys, time
import numpy as np
import pandas as pd

numbers = [int(word) for word in sys.stdin.read().split()]
rng = np.random.default_rng()  # the job's own random stream: the same on every replica
frame = pd.DataFrame({"n": numbers, "noise": rng.normal(size=len(numbers))})
frame["bucket"] = frame["n"] % 5
table = frame.groupby("bucket").agg(total=("n", "sum"), noise=("noise", "mean"))
print(table.to_csv(), end="")
print("at", time.time(), "urandom", os.urandom(4).hex())
"""


def python_offered(nodes: list[launch.LaunchedNode]) -> bool:
    """True once every node's market shows every other node offering the python runtime."""
    for node in nodes:
        with Client(node.home) as client:
            offers = client.market()["offers"]
        if sum("python" in offer["runtimes"] for offer in offers) < len(nodes) - 1:
            return False
    return True


@pytest.fixture(scope="module")
def three(
    tmp_path_factory: pytest.TempPathFactory, python_runtime: Path
) -> Iterator[list[launch.LaunchedNode]]:
    nodes = start(tmp_path_factory.mktemp("python3"), [PYTHON_CONFIG] * 3)
    try:
        launch.wait_for(lambda: python_offered(nodes), 120, "every node to offer python")
        yield nodes
    finally:
        launch.stop(nodes)


def test_a_pandas_job_is_verified_by_two_replicas_with_equal_fuel(
    three: list[launch.LaunchedNode], tmp_path: Path
) -> None:
    program = tmp_path / "buckets.py"
    program.write_bytes(PANDAS_JOB)
    numbers = " ".join(str(n) for n in range(1, 1001)).encode()
    with Client(three[0].home) as client:
        # A worker's first Python job loads CPython (355 MB) before pandas' import (~4.7e9 fuel):
        # tens of seconds on a loaded 2-core machine, past the lease derived from the fuel alone.
        result = client.run(
            program, numbers, replicas=2, fuel_max=15_000_000_000, deadline_s=240, lease_s=150
        )
    assert result.ok, result.reason
    text = result.output.decode()
    assert text.startswith("bucket,total,noise\n0,100500,")  # 5 + 10 + ... + 1000
    replicas = [r for r in result.summary["replicas_detail"] if r["paid_mc"] > 0]
    assert len(replicas) == 2, result.summary["replicas_detail"]
    assert len({r["worker"] for r in replicas}) == 2
    fuels = {r["fuel_used"] for r in replicas}
    assert len(fuels) == 1 and fuels.pop() > 4_000_000_000, (
        replicas
    )  # pandas' import alone is ~4.7e9
