"""Every example in examples/ is built with its own script, run in the real sandbox, and published
as a real job on a three-node loopback network, where two replicas must agree on it.

C and Rust are built with Debian's toolchains (installed by tests/syspkg.py or skipped saying
why). The Python examples use the machine's shared compiled CPython (the `python_runtime`
fixture compiles it once per machine, about 85 s).
"""

from __future__ import annotations

import collections
import csv
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from hearth import Client
from hearth.inference import chunk_input
from hearth.node.sandbox import ExecutionResult, JobRequest, SandboxConfig, SandboxPool
from hearth.testnet import launch, python_net
from tests import syspkg

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TEXT = (ROOT / "docs" / "architecture.md").read_bytes()
GENERATE = EXAMPLES / "inference" / "generate.py"
WEIGHTS = (EXAMPLES / "inference" / "model.npz").read_bytes()
PROMPT = "Hearth is "
PYTHON_FUEL_MAX = 50_000_000_000
PYTHON_DEADLINE_S = 600
# A worker's first Python job loads the 355 MB compiled CPython before it starts: tens of
# seconds on a loaded machine, past the lease derived from the fuel alone.
PYTHON_LEASE_S = 240


def build(script: Path, product: Path) -> bytes:
    done = subprocess.run([str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return product.read_bytes()


@pytest.fixture(scope="module")
def c_module() -> bytes:
    clang = syspkg.require("clang", "clang", "lld", "wasi-libc", "libclang-rt-dev-wasm32")
    syspkg.require("wasm-ld", "lld")
    builtins = subprocess.run(
        [clang, "--target=wasm32-wasi", "--print-libgcc-file-name"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    syspkg.require_files(
        ["/usr/lib/wasm32-wasi/libc.a", "/usr/include/wasm32-wasi/stdio.h", builtins],
        "wasi-libc",
        "libclang-rt-dev-wasm32",
    )
    return build(EXAMPLES / "c" / "build.sh", EXAMPLES / "c" / "wordstats.wasm")


@pytest.fixture(scope="module")
def rust_module() -> bytes:
    syspkg.require_files(
        ["/usr/bin/rustc", "/usr/lib/rustlib/wasm32-wasi/lib"], "rustc", "libstd-rust-dev-wasm32"
    )
    return build(EXAMPLES / "rust" / "build.sh", EXAMPLES / "rust" / "topwords.wasm")


@pytest.fixture(scope="module")
def sandbox_home(tmp_path_factory: pytest.TempPathFactory, python_runtime: Path) -> Path:
    return tmp_path_factory.mktemp("sandbox-home")


def run_twice(home: Path, request: JobRequest) -> ExecutionResult:
    """Run ``request`` in two fresh worker processes; they must agree on output and fuel."""

    async def once() -> ExecutionResult:
        async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
            return await pool.run(request)

    first, second = trio.run(once), trio.run(once)
    assert first.ok, (first.error_message, first.stderr_tail)
    assert first.verdict == second.verdict, (first.fuel_used, second.fuel_used)
    return first


def job(runtime: str, module: bytes, job_input: bytes) -> JobRequest:
    python = runtime == "python"
    return JobRequest(
        runtime=runtime,  # type: ignore[arg-type]
        module=module,
        input=job_input,
        fuel_max=PYTHON_FUEL_MAX if python else 10_000_000_000,
        memory_bytes_max=512 * 1024 * 1024,
        deadline_ms=PYTHON_DEADLINE_S * 1000 if python else 60_000,
        output_bytes_max=1024 * 1024,
    )


def wordstats(data: bytes) -> bytes:
    """What examples/c/wordstats.c prints, computed here."""
    fnv = 0xCBF29CE484222325
    for byte in data:
        fnv = ((fnv ^ byte) * 0x100000001B3) % (1 << 64)
    words = data.split()
    mean = sum(len(w) for w in words) / len(words)
    lines = data.count(b"\n")
    line = f"lines {lines} words {len(words)} bytes {len(data)} fnv1a {fnv:016x}"
    return f"{line} mean_word {mean:.6f}\n".encode()


def topwords(data: bytes) -> bytes:
    """What examples/rust/topwords.rs prints for ASCII text, computed here."""
    counts = collections.Counter(w.lower() for w in re.split(r"[^A-Za-z0-9]+", data.decode()) if w)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:10]
    return "".join(f"{count} {word}\n" for word, count in ranked).encode()


def test_c_example_builds_and_runs_in_the_sandbox(c_module: bytes, tmp_path: Path) -> None:
    result = run_twice(tmp_path, job("wasm", c_module, TEXT))
    assert result.output == wordstats(TEXT)


def test_rust_example_builds_and_runs_in_the_sandbox(rust_module: bytes, tmp_path: Path) -> None:
    text = TEXT.decode().encode("ascii", "replace")
    result = run_twice(tmp_path, job("wasm", rust_module, text))
    assert result.output == topwords(text)


def energy_expected(data: bytes) -> dict[str, tuple[float, float, int, float]]:
    """What examples/python/energy.py computes per home, here with numpy alone."""
    rows: dict[str, list[tuple[int, float, float]]] = collections.defaultdict(list)
    for row in csv.DictReader(io.StringIO(data.decode())):
        rows[row["home"]].append((int(row["hour"]), float(row["kwh"]), float(row["price_mc"])))
    out = {}
    for home, readings in rows.items():
        hours, kwh, price = (np.array(column) for column in zip(*readings, strict=True))
        slope = float(np.polyfit(hours, kwh, 1)[0])
        out[home] = (kwh.sum(), (kwh * price).sum(), int(hours[kwh.argmax()]), slope)
    return out


def check_energy(output: bytes, data: bytes) -> None:
    *table, versions = output.decode().strip().splitlines()
    assert versions == "numpy 2.5.2 pandas 3.0.6"
    got = {row["home"]: row for row in csv.DictReader(io.StringIO("\n".join(table)))}
    expected = energy_expected(data)
    assert set(got) == set(expected)
    for home, (kwh, cost, peak, slope) in expected.items():
        assert float(got[home]["kwh"]) == pytest.approx(kwh, abs=1e-3)
        assert float(got[home]["cost_mc"]) == pytest.approx(cost, abs=0.1)
        assert int(got[home]["peak_hour"]) == peak
        assert float(got[home]["trend_kwh_per_h"]) == pytest.approx(slope, abs=1e-5)


def test_python_pandas_example_runs_in_the_sandbox(sandbox_home: Path) -> None:
    data = (EXAMPLES / "python" / "energy.csv").read_bytes()
    source = (EXAMPLES / "python" / "energy.py").read_bytes()
    result = run_twice(sandbox_home, job("python", source, data))
    check_energy(result.output, data)


@pytest.fixture(scope="module")
def network(
    tmp_path_factory: pytest.TempPathFactory, python_runtime: Path
) -> Iterator[list[launch.LaunchedNode]]:
    nodes = python_net.up(tmp_path_factory.mktemp("examples-net"), 3)
    try:
        yield nodes
    finally:
        launch.stop(nodes)


def publish(node: launch.LaunchedNode, path: Path, data: bytes, **options: Any) -> bytes:
    """Run ``path`` as a job from ``node``; return its output once two replicas agreed."""
    with Client(node.home, timeout_s=120) as client:
        result = client.run(path, data, replicas=2, **options)
    assert result.ok, result.reason
    matching = [r for r in result.summary["replicas_detail"] if r["verdict"] == "match"]
    assert len(matching) == 2 and len({r["worker"] for r in matching}) == 2
    assert len({(r["result_digest"], r["fuel_used"]) for r in matching}) == 1
    return result.output


def test_c_and_rust_examples_verify_on_the_network(
    network: list[launch.LaunchedNode], c_module: bytes, rust_module: bytes
) -> None:
    assert publish(network[0], EXAMPLES / "c" / "wordstats.wasm", TEXT) == wordstats(TEXT)
    text = TEXT.decode().encode("ascii", "replace")
    assert publish(network[1], EXAMPLES / "rust" / "topwords.wasm", text) == topwords(text)


def test_python_pandas_example_verifies_on_the_network(
    network: list[launch.LaunchedNode],
) -> None:
    data = (EXAMPLES / "python" / "energy.csv").read_bytes()
    output = publish(
        network[2],
        EXAMPLES / "python" / "energy.py",
        data,
        fuel_max=PYTHON_FUEL_MAX,
        deadline_s=PYTHON_DEADLINE_S,
        lease_s=PYTHON_LEASE_S,
    )
    check_energy(output, data)


def generate_here(request: bytes) -> bytes:
    """examples/inference/generate.py run by this machine's CPython and numpy."""
    done = subprocess.run(
        [sys.executable, str(GENERATE)], input=request, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_generate(home: Path, text: str, tokens: int, seed: int) -> ExecutionResult:
    request = chunk_input(WEIGHTS, text, tokens, seed, temperature_milli=800)
    return run_twice(home, job("python", GENERATE.read_bytes(), request))


def test_inference_example_agrees_with_numpy_here_and_across_chunkings(sandbox_home: Path) -> None:
    source = GENERATE.read_bytes()
    greedy = chunk_input(WEIGHTS, PROMPT, 16, seed=0, temperature_milli=0)
    assert run_twice(sandbox_home, job("python", source, greedy)).output == generate_here(greedy)
    at_once = run_generate(sandbox_home, PROMPT, 16, seed=7)
    first = run_generate(sandbox_home, PROMPT, 9, seed=7)
    second = run_generate(sandbox_home, PROMPT + first.output.decode(), 7, seed=7)
    assert len(at_once.output.decode()) == 16
    assert at_once.output == first.output + second.output


def test_inference_streams_text_verified_by_two_replicas(
    network: list[launch.LaunchedNode], sandbox_home: Path
) -> None:
    expected = run_generate(sandbox_home, PROMPT, 24, seed=3)
    with Client(network[0].home, timeout_s=120) as client:
        chunks = list(
            client.generate(GENERATE, WEIGHTS, PROMPT, tokens=24, chunk_tokens=8, seed=3,
                            replicas=2, fuel_max=PYTHON_FUEL_MAX, deadline_s=PYTHON_DEADLINE_S,
                            lease_s=PYTHON_LEASE_S)
        )  # fmt: skip
    assert [len(chunk.text) for chunk in chunks] == [8, 8, 8]
    assert all(chunk.verified_by == 2 for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks).encode() == expected.output


def test_the_training_script_makes_weights_the_model_program_reads(tmp_path: Path) -> None:
    sys.path.insert(0, str(EXAMPLES / "inference"))
    try:
        import train
    finally:
        sys.path.remove(str(EXAMPLES / "inference"))
    weights = train.train(train.corpus_text(), steps=60, seed=1)
    assert float(weights["loss"]) < np.log(len(weights["vocab"]))  # better than a uniform guess
    np.savez(tmp_path / "model.npz", **weights)
    request = chunk_input((tmp_path / "model.npz").read_bytes(), PROMPT, 5, 0, 800)
    assert len(generate_here(request).decode()) == 5
