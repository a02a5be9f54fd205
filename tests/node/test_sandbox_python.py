"""The python runtime (CPython-on-WASI) and the `hearth job run` command, through real processes.

CPython is compiled once per machine (about 90 s on two cores) into the shared runtime cache by
the `python_runtime` fixture; every test loads the compiled interpreter from it in about a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from hearth.node.sandbox import ErrorKind, JobRequest, SandboxConfig, SandboxPool
from hearth.node.sandbox.model import task_seed

HEARTH = str(Path(sys.executable).with_name("hearth"))
MODULES = Path(__file__).resolve().parents[2] / "node" / "sandbox" / "modules"

HASH_AND_SUM = b"""
import hashlib, sys
data = sys.stdin.buffer.read()
numbers = [int(word) for word in data.split()]
print(hashlib.sha256(data).hexdigest(), sum(numbers))
"""
RUNAWAY = HASH_AND_SUM + b"\nwhile True:\n    numbers.append(len(numbers))\n    numbers.pop()\n"
PROBE = b"""
import os, socket
for attempt in (lambda: os.listdir("/"), lambda: socket.socket().connect(("127.0.0.1", 22))):
    try:
        attempt()
        print("reached")
    except Exception as error:
        print(type(error).__name__)
print(sorted(os.environ))
"""
NUMBERS = b" ".join(str(n).encode() for n in range(100_000))


@pytest.fixture(scope="session")
def python_home(tmp_path_factory: pytest.TempPathFactory, python_runtime: Path) -> Path:
    home = tmp_path_factory.mktemp("python-home")

    async def warm() -> None:
        async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
            await pool.warm_python()

    trio.run(warm)
    return home


def python_request(source: bytes, job_input: bytes = b"", **overrides: Any) -> JobRequest:
    fields: dict[str, Any] = {
        "runtime": "python",
        "module": source,
        "input": job_input,
        "fuel_max": 20_000_000_000,
        "memory_bytes_max": 512 * 1024 * 1024,
        "deadline_ms": 30_000,
        "output_bytes_max": 1024 * 1024,
    }
    return JobRequest(**(fields | overrides))


async def test_python_job_reports_fuel_and_agrees_across_workers(python_home: Path) -> None:
    expected = f"{hashlib.sha256(NUMBERS).hexdigest()} {sum(range(100_000))}\n".encode()
    results = []
    for _ in range(2):  # a fresh pool each time: a separate worker process
        async with SandboxPool(SandboxConfig(home=python_home, workers=1)) as pool:
            results.append(await pool.run(python_request(HASH_AND_SUM, NUMBERS)))
    first, second = results
    assert first.ok, (first.error_message, first.stderr_tail)
    assert first.output == expected
    assert first.fuel_used > 0
    assert first.verdict == second.verdict  # identical output and fuel


async def test_a_python_series_runs_every_task_as_a_single_job_would(
    python_home: Path,
) -> None:
    inputs = [b"1 2 3", b"40 2", NUMBERS]
    async with SandboxPool(SandboxConfig(home=python_home, workers=1)) as pool:
        series = await pool.run_series(python_request(HASH_AND_SUM), inputs)
        alone = await pool.run(python_request(HASH_AND_SUM, inputs[1], seed=task_seed(b"", 1)))
    assert isinstance(series, list) and all(result.ok for result in series)
    sums = [int(result.output.split()[1]) for result in series]
    assert sums == [6, 42, sum(range(100_000))]
    assert series[1].verdict == alone.verdict


async def test_runaway_python_job_is_stopped_by_its_fuel(python_home: Path) -> None:
    async with SandboxPool(SandboxConfig(home=python_home, workers=1)) as pool:
        started = trio.current_time()
        result = await pool.run(python_request(RUNAWAY, NUMBERS, fuel_max=2_000_000_000))
        elapsed_s = trio.current_time() - started
        assert result.error_kind is ErrorKind.OUT_OF_FUEL, result.error_message
        assert result.fuel_used == 2_000_000_000
        assert elapsed_s < 30 * 1.2
        after = await pool.run(python_request(b"print(6 * 7)"))
        assert after.output == b"42\n"


async def test_python_errors_say_what_stopped_them(python_home: Path) -> None:
    async with SandboxPool(SandboxConfig(home=python_home, workers=1)) as pool:
        raised = await pool.run(python_request(b"raise ValueError('no thanks')"))
        assert raised.error_kind is ErrorKind.EXIT
        assert "ValueError: no thanks" in raised.error_message
        hungry = await pool.run(
            python_request(b"x = bytearray(1 << 30)", memory_bytes_max=64 * 1024 * 1024)
        )
        assert hungry.error_kind is ErrorKind.MEMORY_LIMIT, hungry.error_message
        chatty = await pool.run(python_request(b"print('x' * 5000)", output_bytes_max=1000))
        assert chatty.error_kind is ErrorKind.OUTPUT_TOO_LARGE
        probe = await pool.run(python_request(PROBE))
        assert probe.ok, probe.error_message
        assert probe.output.startswith(b"FileNotFoundError\n")  # no / at all
        assert b"reached" not in probe.output  # nor a socket
        assert b"HEARTH" not in probe.output and b"PATH" not in probe.output.replace(b"TZPATH", b"")


FILES_JOB = b"""
import hashlib, os, sys
data = open("/input/sub/data.bin", "rb").read()
os.makedirs("/output/res", exist_ok=True)
with open("/output/res/digest.txt", "w") as out:
    out.write(hashlib.sha256(data).hexdigest())
print(sys.argv[1:], os.environ["MODE"])
try:
    open("/input/new", "w")
except OSError as error:
    print(type(error).__name__)
"""


async def test_a_python_job_reads_input_files_and_writes_an_output_folder(
    python_home: Path, tmp_path: Path
) -> None:
    """ADR 0024: /input read-only, /output writable, arguments and environment."""
    data = os.urandom(100_000)
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "data.bin").write_bytes(data)
    (tmp_path / "out").mkdir()
    request = python_request(
        FILES_JOB,
        args=("-v", "x y"),
        env=(("MODE", "fast"),),
        input_dir=str(tmp_path / "in"),
        output_dir=str(tmp_path / "out"),
        output_dir_bytes_max=1 << 20,
        output_files_max=8,
    )
    async with SandboxPool(SandboxConfig(home=python_home, workers=1)) as pool:
        result = await pool.run(request)
    assert result.ok, (result.error_message, result.stderr_tail)
    lines = result.output.decode().splitlines()
    assert lines[0] == "['-v', 'x y'] fast"
    assert lines[1] in ("PermissionError", "OSError")  # /input is read-only
    digest = (tmp_path / "out" / "res" / "digest.txt").read_text()
    assert digest == hashlib.sha256(data).hexdigest()


def hearth(home: Path, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HEARTH_HOME=str(home))
    return subprocess.run(
        [HEARTH, "job", *args], capture_output=True, text=True, env=env, timeout=timeout_s
    )


def test_cli_runs_a_wasm_job_and_fails_hostile_ones_fast(tmp_path: Path) -> None:
    home = tmp_path / "home"
    data = os.urandom(50 * 1024)
    (tmp_path / "in.bin").write_bytes(data)
    out = tmp_path / "out.bin"
    done = hearth(home, "run", str(MODULES / "echo.wat"), "--input", str(tmp_path / "in.bin"),
                  "--output", str(out), "--local", "--json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert out.read_bytes() == data
    assert summary["output_sha256"] == hashlib.sha256(data).hexdigest()
    assert summary["fuel_used"] > 0 and summary["output_bytes"] == len(data)
    for name, flags, words, code in [
        ("spin", ["--fuel", "500000000"], "out-of-fuel", 12),
        ("spin", ["--fuel", "10000000000000", "--deadline-s", "1"], "deadline", 14),
        ("grow", ["--memory-mb", "16"], "memory-limit", 13),
    ]:
        failed = hearth(home, "run", str(MODULES / f"{name}.wat"), "--output",
                        str(tmp_path / "none"), "--local", *flags, timeout_s=20)  # fmt: skip
        assert failed.returncode == code  # one exit code per error kind (docs/job-failures.md)
        assert failed.stderr.startswith(f"hearth: {words}:"), failed.stderr
        assert failed.stderr.count("\n") == 1
    assert not (tmp_path / "none").exists()


def test_cli_without_local_and_without_a_node_says_how_to_start_one(tmp_path: Path) -> None:
    done = hearth(tmp_path, "run", str(MODULES / "hello.wat"), "--output", str(tmp_path / "o"))
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "hearth node start" in done.stderr
    assert not (tmp_path / "o").exists()


def test_cli_runs_a_python_job(python_home: Path, tmp_path: Path) -> None:
    program = tmp_path / "job.py"
    program.write_bytes(HASH_AND_SUM)
    (tmp_path / "numbers.txt").write_bytes(NUMBERS)
    done = hearth(python_home, "run", str(program), "--input", str(tmp_path / "numbers.txt"),
                  "--output", str(tmp_path / "out.txt"), "--local", timeout_s=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: fuel used ")
    expected_hash = hashlib.sha256(NUMBERS).hexdigest()
    assert (tmp_path / "out.txt").read_text().startswith(expected_hash)
