"""A bundle's tasks run one after another in one warm sandbox worker, as one call (ADR 0033)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import wasmtime

from hearth.node.sandbox import ExecutionResult, SandboxConfig, SandboxPool, frames
from hearth.node.sandbox.model import ErrorKind, task_seed
from hearth.node.sandbox.worker import SERIES_FRAME_OUTPUT_BYTES, Worker
from tests.node.test_sandbox import request

# Traps when its input starts with a zero byte; else writes 8 bytes of its random stream, then
# its input: a task's own failure, and a seed of its own per task.
SEEDED_ECHO = """
(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "random_get" (func $random_get (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 1032))
    (i32.store (i32.const 4) (i32.const 60000))
    (drop (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
    (if (i32.eqz (i32.load8_u (i32.const 1032))) (then unreachable))
    (drop (call $random_get (i32.const 1024) (i32.const 8)))
    (i32.store (i32.const 0) (i32.const 1024))
    (i32.store (i32.const 4) (i32.add (i32.load (i32.const 8)) (i32.const 8)))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 12)))))
"""


def seeded_echo() -> bytes:
    return bytes(wasmtime.wat2wasm(SEEDED_ECHO))


def results_of(got: list[ExecutionResult] | ExecutionResult) -> list[ExecutionResult]:
    assert isinstance(got, list), got
    return got


async def test_a_series_runs_every_task_in_order_in_one_call(tmp_path: Path) -> None:
    config = SandboxConfig(home=tmp_path / "home", workers=2)
    inputs = [b"task %d" % i for i in range(5)]
    inputs.insert(2, b"\0 traps")  # its own failure, not the series'
    series = request(seeded_echo(), seed=b"job")
    async with SandboxPool(config) as pool:
        first = results_of(await pool.run_series(series, inputs))
        again = results_of(await pool.run_series(series, inputs))
        stats = pool.statistics()
        fifth = dataclasses.replace(series, input=inputs[4], seed=task_seed(b"job", 4))
        alone = await pool.run(fifth)
    assert [r.output[8:] for r in first if r.ok] == [b"task %d" % i for i in range(5)]
    assert first[2].error_kind is ErrorKind.TRAP
    assert [r.verdict for r in first] == [r.verdict for r in again]  # replicas agree
    streams = {r.output[:8] for r in first if r.ok}
    assert len(streams) == 5  # each task draws from its own seed
    assert alone.output == first[4].output  # the same seed as a job by itself
    assert stats.jobs_run == 12 and stats.workers_replaced == 0


async def test_a_module_that_fails_by_itself_fails_every_task(tmp_path: Path) -> None:
    config = SandboxConfig(home=tmp_path / "home", workers=1)
    async with SandboxPool(config) as pool:
        costly = results_of(await pool.run_series(request("echo", fuel_max=10), [b"a", b"b"]))
        garbage = results_of(await pool.run_series(request(b"not wasm"), [b"a", b"b"]))
        replaced = pool.statistics().workers_replaced
    assert [r.error_kind for r in costly] == [ErrorKind.OUT_OF_FUEL] * 2
    assert [r.error_kind for r in garbage] == [ErrorKind.INVALID_MODULE] * 2
    assert replaced == 0


async def test_a_series_that_overruns_fails_as_a_whole_and_costs_its_worker(
    tmp_path: Path,
) -> None:
    config = SandboxConfig(home=tmp_path / "home", workers=1, deadline_grace_ms=100)
    async with SandboxPool(config) as pool:
        spin = request("spin", fuel_max=10**15, deadline_ms=300)
        got = await pool.run_series(spin, [b"", b""])
        replaced = pool.statistics().workers_replaced
        after = results_of(await pool.run_series(request("echo"), [b"after"]))
    assert isinstance(got, ExecutionResult) and got.error_kind is ErrorKind.DEADLINE
    assert replaced == 1
    assert after[0].output == b"after"


async def test_outputs_larger_than_a_frame_come_back_in_several(tmp_path: Path) -> None:
    big = SERIES_FRAME_OUTPUT_BYTES // 3 + 1
    inputs = [bytes([i + 1]) * big for i in range(7)]
    series = request("echo", output_bytes_max=2 * big)
    async with SandboxPool(SandboxConfig(home=tmp_path / "home", workers=1)) as pool:
        got = results_of(await pool.run_series(series, inputs))
    assert [r.output for r in got] == inputs
    out = io.BytesIO()  # the same series in this process, to count its frames
    settings = SandboxConfig(home=tmp_path / "here").worker_settings(0)
    Worker(settings, out).run_series(series, inputs)
    out.seek(0)
    sent = list(iter(lambda: frames.read_frame(out), None))
    assert [frame["phase"] for frame in sent] == ["compiled"] + ["results"] * 3 + ["done"]
    assert [len(frame.get("results", [])) for frame in sent] == [0, 2, 2, 2, 1]
