"""Deterministic guests (ADR 0022): every shipped module, every example and a pandas/numpy job give
the same output and the same fuel on two separate worker processes whose hosts disagree about
the time (libfaketime moves one worker's clock 1000 days ahead), the time zone and the locale.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hearth.node.sandbox import (
    ExecutionResult,
    JobRequest,
    Runtime,
    SandboxConfig,
    SandboxPool,
    guest_world,
)
from hearth.node.sandbox.model import NONDETERMINISTIC_KINDS
from hearth.node.sandbox.pool import worker_environment
from hearth.node.sandbox.shipped import module_names, wasm_bytes
from tests import syspkg

REPO = Path(__file__).resolve().parents[2]
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
SHIFT_DAYS = 1000
OTHER_HOST = {
    "LD_PRELOAD": LIBFAKETIME,
    "FAKETIME": f"+{SHIFT_DAYS}d",
    "TZ": "Pacific/Kiritimati",
    "LANG": "fr_FR.UTF-8",
    "LC_ALL": "fr_FR.UTF-8",
    "HEARTH_DETERMINISM_PROBE": "another host",
}
SDK_IMPORT = re.compile(rb"^\s*(from|import)\s+hearth\b", re.MULTILINE)
SEED = b"job-0001"
JOB_INPUT = b"1 2 3 5 8 13 21 34 55 89\n"
# Everything a guest could read from its host, and numpy/pandas work on top of it. The NaN's bits
# come from wasm's f64 arithmetic: x86 makes 0xfff8..., canonicalisation 0x7ff8....
PANDAS_JOB = b"""
import datetime, hashlib, os, random, struct, sys, time, uuid
import numpy as np
import pandas as pd

rng = np.random.default_rng()  # seeded from the guest's entropy: the job's random stream
frame = pd.DataFrame({"k": rng.integers(0, 7, 2000), "v": rng.normal(size=2000)})
stats = frame.groupby("k")["v"].agg(["sum", "mean", "std"])
m = rng.normal(size=(40, 40))
inverse = np.linalg.inv(m @ m.T + np.eye(40))
inf = float(np.float64(sys.stdin.buffer.read().split()[-1])) * 1e308 * 10
nan_bits = struct.pack("<d", inf - inf).hex()
print(hashlib.sha256(stats.to_csv().encode()).hexdigest(), inverse.sum().hex())
print("nan", nan_bits, np.array([inf]) - np.array([inf]))
print("time", time.time(), time.monotonic(), datetime.datetime.now().isoformat())
print("random", os.urandom(8).hex(), uuid.uuid4(), random.random(), hash("hearth"))
print("env", sorted(os.environ), os.environ.get("TZ"), os.getcwd())
print("pandas", pd.__version__, pd.Timestamp.now().year)
"""


# fuel_max, memory_bytes_max and deadline_ms per runtime
LIMITS = {
    Runtime.WASM: (300_000_000, 64 << 20, 60_000),
    Runtime.PYTHON: (40_000_000_000, 512 << 20, 120_000),
}


def job(runtime: Runtime, module: bytes, seed: bytes = SEED) -> JobRequest:
    fuel_max, memory_bytes_max, deadline_ms = LIMITS[runtime]
    return JobRequest(runtime, module, JOB_INPUT, fuel_max, memory_bytes_max, deadline_ms,
                      output_bytes_max=1 << 20, seed=seed)  # fmt: skip


def example_jobs() -> dict[str, JobRequest]:
    """Every guest program under examples/: wasm modules, and Python programs (an SDK script,
    which imports hearth, runs on the developer's machine, not in a guest)."""
    jobs: dict[str, JobRequest] = {}
    for path in sorted((REPO / "examples").rglob("*")):
        name = str(path.relative_to(REPO))
        if path.suffix in (".wasm", ".wat"):  # wasmtime compiles WAT text as well
            jobs[name] = job(Runtime.WASM, path.read_bytes())
        elif path.suffix == ".py" and not SDK_IMPORT.search(path.read_bytes()):
            jobs[name] = job(Runtime.PYTHON, path.read_bytes())
    return jobs


def all_jobs() -> dict[str, JobRequest]:
    jobs = {f"modules/{name}.wat": job(Runtime.WASM, wasm_bytes(name)) for name in module_names()}
    jobs |= example_jobs()
    jobs["pandas+numpy"] = job(Runtime.PYTHON, PANDAS_JOB)
    return jobs


async def run_all(home: Path, jobs: dict[str, JobRequest]) -> dict[str, ExecutionResult]:
    """Each job in one fresh worker process (a pool of one, started in the current environment)."""
    async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
        return {name: await pool.run(job) for name, job in jobs.items()}


def host_clock(overrides: dict[str, str]) -> float:
    probe = [sys.executable, "-c", "import time; print(time.time())"]
    env = worker_environment() | overrides
    return float(subprocess.run(probe, env=env, capture_output=True, check=True).stdout)


@pytest.mark.slow
async def test_every_guest_agrees_across_hosts_with_different_clocks(
    tmp_path: Path, python_runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syspkg.require_files([LIBFAKETIME], "libfaketime")
    # The second host's worker really sees another clock.
    assert host_clock(OTHER_HOST) - time.time() > (SHIFT_DAYS - 1) * 86400
    jobs = all_jobs()
    assert "examples/hash_and_sum.py" in jobs and "modules/wasi_probe.wat" in jobs
    here = await run_all(tmp_path / "here", jobs)
    with monkeypatch.context() as patch:
        for key, value in OTHER_HOST.items():
            patch.setenv(key, value)
        there = await run_all(tmp_path / "there", jobs)
    for name in jobs:
        mine, theirs = here[name], there[name]
        assert mine.error_kind not in NONDETERMINISTIC_KINDS, (name, mine.error_message)
        assert mine.verdict == theirs.verdict, (name, mine.error_message, theirs.error_message)
        assert mine.output == theirs.output and mine.exit_code == theirs.exit_code, name
    pandas = here["pandas+numpy"]
    assert pandas.ok, (pandas.error_message, pandas.stderr_tail[-500:])
    lines = pandas.output.decode().splitlines()
    assert lines[1].startswith("nan 000000000000f87f")  # the canonical NaN, 0x7ff8000000000000
    assert "2023-11-14T22:13:20" in lines[2]  # the virtual clock, not this host's
    assert "HEARTH_DETERMINISM_PROBE" not in lines[4] and "TZ" in lines[4]


async def test_the_random_stream_is_the_jobs_own(tmp_path: Path, python_runtime: Path) -> None:
    probe = b"import os, random; print(os.urandom(16).hex())"
    jobs = {
        "python-a": job(Runtime.PYTHON, probe, b"job-a"),
        "python-a-again": job(Runtime.PYTHON, probe, b"job-a"),
        "python-b": job(Runtime.PYTHON, probe, b"job-b"),
    }
    probe_wasm = wasm_bytes("wasi_probe")  # its last 16 bytes of output are from random_get
    jobs |= {name: job(Runtime.WASM, probe_wasm, seed) for name, seed in
             [("wasm-a", b"job-a"), ("wasm-a-again", b"job-a"), ("wasm-b", b"job-b")]}  # fmt: skip
    results = await run_all(tmp_path, jobs)
    assert all(result.ok for result in results.values()), results
    for runtime in ("python", "wasm"):
        a, again, b = (results[f"{runtime}-{n}"].output for n in ("a", "a-again", "b"))
        assert a == again and a[-16:] != b[-16:], runtime


async def test_the_guest_sees_no_host_file_identity_or_time(
    tmp_path: Path, python_runtime: Path
) -> None:
    """The stdlib zip is a per-process copy on the host: its inode and times must not show."""
    probe = b"""
import os, sys
for path in (sys.path[0], os.path.dirname(sys.path[0]), os.environ["HOME"]):
    st = os.stat(path)
    print(st.st_ino, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)
"""
    result = (await run_all(tmp_path, {"stat": job(Runtime.PYTHON, probe)}))["stat"]
    assert result.ok, (result.error_message, result.stderr_tail)
    fixed = f"0 {guest_world.REALTIME_BASE_NS} {guest_world.REALTIME_BASE_NS} "
    fixed += f"{guest_world.REALTIME_BASE_NS}\n"
    assert result.output.decode() == fixed * 3
