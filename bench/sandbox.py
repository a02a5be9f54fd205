"""Sandbox figures: fuel-metered vs unmetered time, warm start, Python warm start; JSON last.

Run: .venv/bin/python bench/sandbox.py [--home DIR] [--iterations N] [--no-python]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
import wasmtime as wt

from hearth.node import paths
from hearth.node.sandbox import JobRequest, SandboxConfig, SandboxPool
from hearth.node.sandbox.shipped import wasm_bytes
from hearth.node.sandbox.wasm import make_engine

FUEL_MAX = 2**62


def time_mix(iterations: int, *, metered: bool, epoch: bool) -> tuple[float, int]:
    """Seconds for one call of the benchmark loop, best of three, and the fuel it used."""
    engine = make_engine(metered=metered, epoch_interruption=epoch)
    module = wt.Module(engine, wasm_bytes("bench_loop"))
    best_s, fuel_used = float("inf"), 0
    for _ in range(3):
        store = wt.Store(engine)
        if metered:
            store.set_fuel(FUEL_MAX)
        if epoch:
            store.set_epoch_deadline(1 << 40)
        # The loop imports WASI but `mix` calls none of it; stubs satisfy the linker.
        mix = wt.Instance(store, module, stub_imports(store, module)).exports(store)["mix"]
        assert isinstance(mix, wt.Func)
        started = time.perf_counter()
        mix(store, iterations)
        best_s = min(best_s, time.perf_counter() - started)
        fuel_used = FUEL_MAX - store.get_fuel() if metered else 0
    return best_s, fuel_used


def stub_imports(store: wt.Store, module: wt.Module) -> list[Any]:
    stubs = []
    for item in module.imports:
        func_type = item.type
        assert isinstance(func_type, wt.FuncType)
        stubs.append(wt.Func(store, func_type, lambda *args: 0))
    return stubs


def job(module: bytes, runtime: str = "wasm", job_input: bytes = b"") -> JobRequest:
    return JobRequest(
        runtime=runtime,  # type: ignore[arg-type]
        module=module,
        input=job_input,
        fuel_max=50_000_000_000,
        memory_bytes_max=512 * 1024 * 1024,
        deadline_ms=60_000,
        output_bytes_max=1024 * 1024,
    )


async def pool_figures(home: Path, python: bool) -> dict[str, float]:
    figures: dict[str, float] = {}
    async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
        hello = job(wasm_bytes("hello"))
        started = time.perf_counter()
        assert (await pool.run(hello)).ok
        figures["cold_start_ms"] = (time.perf_counter() - started) * 1000  # includes compile
        figures["warm_start_ms"] = await median_ms(pool, hello, 20)
        if python:
            started = time.perf_counter()
            await pool.warm_python()
            figures["python_warm_s"] = time.perf_counter() - started
            tiny = job(b"print(1)", "python")
            started = time.perf_counter()
            assert (await pool.run(tiny)).ok
            figures["python_first_job_ms"] = (time.perf_counter() - started) * 1000
            figures["python_warm_start_ms"] = await median_ms(pool, tiny, 5)
    return figures


async def median_ms(pool: SandboxPool, request: JobRequest, count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        result = await pool.run(request)
        assert result.ok, result.error_message
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, default=None, help="node data dir (default: a temp")
    parser.add_argument("--iterations", type=int, default=200_000_000)
    parser.add_argument("--no-python", action="store_true")
    args = parser.parse_args()
    unmetered_s, _ = time_mix(args.iterations, metered=False, epoch=False)
    metered_s, fuel_used = time_mix(args.iterations, metered=True, epoch=False)
    both_s, _ = time_mix(args.iterations, metered=True, epoch=True)
    print(f"loop of {args.iterations}: unmetered {unmetered_s:.3f} s, fuel {metered_s:.3f} s, "
          f"fuel+epoch {both_s:.3f} s, fuel used {fuel_used}")  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        home = args.home or (paths.data_dir() if not args.no_python else Path(scratch))
        figures = trio.run(pool_figures, home, not args.no_python)
    for name, value in figures.items():
        print(f"{name}: {value:.1f}")
    summary = {
        "iterations": args.iterations,
        "unmetered_s": round(unmetered_s, 4),
        "metered_s": round(metered_s, 4),
        "ratio": round(metered_s / unmetered_s, 3),
        "ratio_goal": 1.7,
        "epoch_and_fuel_s": round(both_s, 4),
        "epoch_and_fuel_ratio": round(both_s / unmetered_s, 3),
        "fuel_used": fuel_used,
        **{name: round(value, 1) for name, value in figures.items()},
    }
    print(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
