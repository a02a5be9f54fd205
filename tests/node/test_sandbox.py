"""The wasm sandbox through the real pool: real wasmtime, real worker processes, hostile modules."""

from __future__ import annotations

import hashlib
import os
import signal
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
import wasmtime

from hearth.node.sandbox import ErrorKind, ExecutionResult, JobRequest, SandboxConfig, SandboxPool
from hearth.node.sandbox.shipped import wasm_bytes
from hearth.node.sandbox.wasi import ERRNO_BADF

COMPILE_TIMEOUT_MS = 1000
# Fuel a tight loop burns in about a second on a slow shared core; the exact time is checked
# against what the job reports, not assumed.
SPIN_FUEL = 1_000_000_000
CANONICAL_NAN_F64 = 0x7FF8000000000000


def request(module: bytes | str, job_input: bytes = b"", **overrides: Any) -> JobRequest:
    fields: dict[str, Any] = {
        "runtime": "wasm",
        "module": wasm_bytes(module) if isinstance(module, str) else module,
        "input": job_input,
        "fuel_max": 5_000_000_000,
        "memory_bytes_max": 64 * 1024 * 1024,
        "deadline_ms": 10_000,
        "output_bytes_max": 1024 * 1024,
    }
    return JobRequest(**(fields | overrides))


def config_for(home: Path, workers: int = 2) -> SandboxConfig:
    return SandboxConfig(home=home, workers=workers, compile_timeout_ms=COMPILE_TIMEOUT_MS)


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[SandboxPool]:
    async with SandboxPool(config_for(tmp_path / "home")) as opened:
        yield opened


def slow_to_compile_module() -> bytes:
    """~850 KB that takes Cranelift seconds: thousands of locals live across a loop."""
    locals_count, ops = 3000, 60000
    body = []
    for i in range(ops):
        a, b = (i * 7919) % locals_count, (i * 104729 + 1) % locals_count
        c = (a + b) % locals_count
        product = f"(i64.mul (local.get {b}) (local.get {c}))"
        body.append(f"(local.set {a} (i64.add (local.get {a}) {product}))")
    total = " ".join(f"(local.get {i})" for i in range(locals_count))
    total += " i64.add" * (locals_count - 1)
    func = (
        f'(func (export "_start") (local{" i64" * locals_count}) '
        f"(loop {' '.join(body)} (br_if 0 (i64.eqz (local.get 0)))) {total} drop)"
    )
    return wasmtime.wat2wasm(f'(module (memory (export "memory") 1) {func})')


async def timed(pool: SandboxPool, job: JobRequest) -> tuple[ExecutionResult, float]:
    started = trio.current_time()
    result = await pool.run(job)
    return result, trio.current_time() - started


async def assert_next_job_runs_at_once(pool: SandboxPool) -> None:
    result, elapsed_s = await timed(pool, request("hello"))
    assert result.ok and result.output == b"hello\n"
    assert elapsed_s < 2.0  # a replacement worker starts in well under a second


async def test_echo_returns_50_kb_of_random_input_byte_for_byte(pool: SandboxPool) -> None:
    data = os.urandom(50 * 1024)
    result = await pool.run(request("echo", data))
    assert result.ok, result.error_message
    assert result.output == data
    assert result.output_sha256 == hashlib.sha256(data).digest()
    assert result.fuel_used > 0


HOSTILE = [
    ("grow", {}, ErrorKind.MEMORY_LIMIT, "memory limit"),
    ("huge_memory", {}, ErrorKind.MEMORY_LIMIT, "memory limit"),
    ("recurse", {}, ErrorKind.TRAP, "stack overflow"),
    ("unknown_import", {}, ErrorKind.INVALID_MODULE, "unknown import"),
    ("flood", {}, ErrorKind.OUTPUT_TOO_LARGE, "output passed"),
    ("exit_code", {}, ErrorKind.EXIT, "code 7"),
    ("spin", {"fuel_max": SPIN_FUEL}, ErrorKind.OUT_OF_FUEL, "out of fuel"),
]


@pytest.mark.parametrize(("name", "overrides", "kind", "words"), HOSTILE)
async def test_hostile_module_ends_with_its_error(
    pool: SandboxPool, name: str, overrides: dict[str, Any], kind: ErrorKind, words: str
) -> None:
    result, elapsed_s = await timed(pool, request(name, **overrides))
    assert result.error_kind is kind, result.error_message
    assert words in result.error_message
    assert result.output == b""
    assert elapsed_s < 10.0 * 1.2  # the deadline it was given; fuel ends most far sooner
    await assert_next_job_runs_at_once(pool)


async def test_out_of_fuel_reports_exactly_its_budget(pool: SandboxPool) -> None:
    result = await pool.run(request("spin", fuel_max=12_345_678))
    assert result.error_kind is ErrorKind.OUT_OF_FUEL
    assert result.fuel_used == 12_345_678


async def test_not_webassembly_is_refused(pool: SandboxPool) -> None:
    for junk in (b"#!/bin/sh\nrm -rf /\n", b"(module)", b"\0asm\x01\0\0\0\xff\xff"):
        result = await pool.run(request(junk))
        assert result.error_kind is ErrorKind.INVALID_MODULE, junk
    await assert_next_job_runs_at_once(pool)


async def test_spinning_module_stops_at_its_deadline(pool: SandboxPool) -> None:
    result, elapsed_s = await timed(pool, request("spin", fuel_max=10**15, deadline_ms=1000))
    assert result.error_kind is ErrorKind.DEADLINE
    assert 1.0 <= elapsed_s <= 1.2
    await assert_next_job_runs_at_once(pool)


async def test_slow_to_compile_module_stops_at_the_compile_timeout(pool: SandboxPool) -> None:
    result, elapsed_s = await timed(pool, request(slow_to_compile_module()))
    assert result.error_kind is ErrorKind.COMPILE_TIMEOUT, result.error_message
    assert elapsed_s <= COMPILE_TIMEOUT_MS / 1000 * 1.2
    await assert_next_job_runs_at_once(pool)


async def test_a_killed_worker_is_reported_and_replaced(pool: SandboxPool) -> None:
    results: list[ExecutionResult] = []

    async def run_spin() -> None:
        results.append(await pool.run(request("spin", fuel_max=10**15, deadline_ms=5000)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_spin)
        await pool.wait_job_running()
        for pid in pool.statistics().worker_pids:  # the busy one and the idle one
            os.kill(pid, signal.SIGKILL)
    [result] = results
    assert result.error_kind is ErrorKind.CRASHED
    assert "SIGKILL" in result.error_message
    await assert_next_job_runs_at_once(pool)
    assert pool.statistics().workers_replaced >= 1


async def test_wasi_requests_for_files_sockets_and_environment_find_nothing(
    pool: SandboxPool,
) -> None:
    result = await pool.run(request("wasi_probe"))
    assert result.ok, result.error_message
    argc, environ, prestat, path_open, accept, write5, clock_errno = struct.unpack_from(
        "<7I", result.output
    )
    assert (argc, environ) == (0, 0)
    assert (prestat, path_open, accept, write5) == (ERRNO_BADF,) * 4
    assert clock_errno == 0
    clock_ns = struct.unpack_from("<Q", result.output, 28)[0]
    assert 0 < clock_ns < result.fuel_used  # the clock is fuel spent so far, not the host's
    again = await pool.run(request("wasi_probe"))
    assert again.output == result.output  # clock and randomness are the same on every run


async def test_no_file_appears_outside_the_sandbox_folders(tmp_path: Path) -> None:
    home = tmp_path / "home"
    before = set(Path.cwd().iterdir())
    async with SandboxPool(config_for(home)) as pool:
        for name in ("echo", "wasi_probe", "flood", "grow"):
            await pool.run(request(name, b"x" * 100))
    assert {p.name for p in home.iterdir()} <= {"cache", "scratch"}
    assert set(Path.cwd().iterdir()) == before
    scratch_files = [p for p in (home / "scratch").rglob("*") if p.is_file()]
    assert all(p.suffix == ".log" for p in scratch_files)


async def test_compiled_modules_are_cached_by_module_hash(tmp_path: Path) -> None:
    module = wasm_bytes("hello")
    async with SandboxPool(config_for(tmp_path / "home", workers=1)) as pool:
        assert (await pool.run(request(module))).ok
    cached = list((tmp_path / "home" / "cache" / "sandbox").rglob("*.cwasm"))
    assert [p.stem for p in cached] == [hashlib.sha256(module).hexdigest()]
    async with SandboxPool(config_for(tmp_path / "home", workers=1)) as pool:
        assert (await pool.run(request(module))).output == b"hello\n"


@pytest.mark.parametrize(
    ("name", "job_input"),
    [
        ("int_mix", os.urandom(4096)),
        # a is 0.0 (so a-a over a-a is NaN); b is a NaN carrying a payload and the sign bit.
        ("float_nan", struct.pack("<dQ", 0.0, 0xFFF4_0000_DEAD_BEEF)),
    ],
)
async def test_two_worker_processes_agree_bit_for_bit(
    tmp_path: Path, name: str, job_input: bytes
) -> None:
    results = []
    for replica in ("a", "b"):  # separate pools: separate processes, caches and compilations
        async with SandboxPool(config_for(tmp_path / replica, workers=1)) as pool:
            pids = pool.statistics().worker_pids
            results.append((await pool.run(request(name, job_input)), pids))
    (first, first_pids), (second, second_pids) = results
    assert first_pids != second_pids
    assert first.ok and second.ok
    assert first.output == second.output and first.fuel_used == second.fuel_used
    assert first.verdict == second.verdict
    if name == "float_nan":
        words = struct.unpack("<8Q", first.output)
        f64_nans = [w for w in words[:6] if (w >> 52) & 0x7FF == 0x7FF and w & (2**52 - 1)]
        assert len(f64_nans) >= 5
        assert set(f64_nans) == {CANONICAL_NAN_F64}  # NaN canonicalisation is on
        assert words[6] == 0x7FC00000  # the f32 NaN, canonical too


async def test_a_new_core_cap_grows_the_pool_now_and_shrinks_it_between_jobs(
    tmp_path: Path,
) -> None:
    async with SandboxPool(config_for(tmp_path / "home", workers=1)) as pool:
        await pool.resize(2)
        assert pool.statistics().workers == 2
        results: list[ExecutionResult] = []

        async def run_spin() -> None:
            results.append(await pool.run(request("spin", fuel_max=10**15, deadline_ms=1500)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_spin)
            await pool.wait_job_running()
            await pool.resize(1)  # the busy worker finishes its job; the surplus one retires after
            echoed = await pool.run(request("echo", b"still served"))
            assert echoed.ok and echoed.output == b"still served"
        assert results[0].error_kind is ErrorKind.DEADLINE
        assert pool.statistics().workers == 1
        with pytest.raises(ValueError, match="at least 1"):
            await pool.resize(0)
