"""A bundle's tasks run one after another in one warm sandbox worker (ADR 0033)."""

from __future__ import annotations

from pathlib import Path

from hearth.node.sandbox import SandboxConfig, SandboxPool
from hearth.node.sandbox.model import ErrorKind
from tests.node.test_sandbox import request


async def test_a_series_runs_every_task_in_order_in_one_worker(tmp_path: Path) -> None:
    config = SandboxConfig(home=tmp_path / "home", workers=2)
    async with SandboxPool(config) as pool:
        series = [request("echo", b"task %d" % i) for i in range(5)]
        series.insert(2, request("spin", fuel_max=10_000))  # its own failure, not the series'
        results = await pool.run_series(series)
        stats = pool.statistics()
    assert [r.output for r in results if r.ok] == [b"task %d" % i for i in range(5)]
    assert results[2].error_kind is ErrorKind.OUT_OF_FUEL
    assert stats.jobs_run == 6 and stats.workers_replaced == 0


async def test_a_task_that_overruns_costs_its_worker_and_the_rest_go_on(tmp_path: Path) -> None:
    config = SandboxConfig(home=tmp_path / "home", workers=1, deadline_grace_ms=100)
    async with SandboxPool(config) as pool:
        series = [
            request("echo", b"before"),
            request("spin", deadline_ms=200),
            request("echo", b"after"),
        ]
        results = await pool.run_series(series)
        replaced = pool.statistics().workers_replaced
    assert results[0].output == b"before" and results[2].output == b"after"
    assert results[1].error_kind is ErrorKind.DEADLINE
    assert replaced == 1
