"""A pool that starts its workers in the background (the daemon's way: node/runtime.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.node.sandbox import JobRequest, Runtime, SandboxConfig, SandboxPool
from hearth.node.sandbox.shipped import wasm_bytes


async def test_entering_returns_before_the_workers_and_wait_started_waits_for_all(
    tmp_path: Path,
) -> None:
    async with SandboxPool(SandboxConfig(home=tmp_path, workers=2), wait_for_workers=False) as pool:
        assert pool.statistics().workers == 0  # spawned, not yet started: the caller goes on
        await pool.wait_started()
        assert pool.statistics().workers == 2
        job = JobRequest(Runtime.WASM, wasm_bytes("hello"), b"", 10**9, 64 << 20, 10_000, 1 << 20)
        assert (await pool.run(job)).output == b"hello\n"


async def test_a_worker_that_cannot_start_ends_what_runs_inside_the_pool(tmp_path: Path) -> None:
    config = SandboxConfig(home=tmp_path, workers=1, worker_start_timeout_ms=1)
    with pytest.raises(ExceptionGroup) as caught:
        async with SandboxPool(config, wait_for_workers=False) as pool:
            await pool.wait_started()  # cancelled when the worker's start fails
    assert caught.group_contains(RuntimeError, match="sandbox worker did not start")
