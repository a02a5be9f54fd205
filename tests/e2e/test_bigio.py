"""A 64 MiB input job across three real nodes: each worker fetches each chunk exactly once, from
the publisher and from the other worker, and the verified output folder is right; then the same
network runs a job with files from the CLI (ADR 0024)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from hearth.testnet import bigio, launch
from tests.e2e.network import hearth

pytestmark = pytest.mark.integration

SIZE_BYTES = 64 * bigio.MIB


def cli_job_with_files(tmp_path: Path, nodes: list[launch.LaunchedNode]) -> None:
    inputs = tmp_path / "cli-in"
    inputs.mkdir()
    (inputs / "data").write_bytes(bytes(range(256)) * 40)
    out = tmp_path / "cli-out"
    run = hearth(
        nodes[1].home,
        "job", "run", str(bigio.MODULE), "--input", str(inputs), "--output", f"{out}/",
        "--arg", "hello", "--env", "MODE=cli", "--replicas", "2", "--json",
        timeout_s=180,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["state"] == "accepted" and report["files"] == ["sum.bin"]
    assert report["stdout_bytes"] == len(b"job.wasm\0hello\0MODE=cli\0")
    count, total = struct.unpack("<QQ", (out / "sum.bin").read_bytes())
    words = struct.unpack("<1280Q", (inputs / "data").read_bytes())
    assert count == 10240 and total == sum(words) % 2**64
    missing = hearth(
        nodes[1].home, "job", "run", str(bigio.MODULE), "--input", str(tmp_path / "nope"),
        "--input", str(inputs), "--output", f"{out}/",
    )  # fmt: skip
    assert missing.returncode != 0 and missing.stderr.strip().count("\n") == 0
    assert "does not exist" in missing.stderr


def test_a_64_mib_input_is_fetched_once_per_worker_and_the_output_is_right(
    tmp_path: Path,
) -> None:
    figures = bigio.run(tmp_path, SIZE_BYTES, then=lambda ns: cli_job_with_files(tmp_path, ns))
    assert figures["output_ok"], figures
    assert len(figures["workers"]) == 2
    for worker in figures["workers"]:
        assert figures["worker_chunks_downloaded"][worker] == figures["chunks"]  # once each
        assert figures["worker_bytes_downloaded"][worker] == SIZE_BYTES
    assert figures["progress_updates"]["upload"] >= figures["chunks"]  # the bar moved per chunk
    assert figures["progress_updates"]["download"] >= 1
    assert all(mb < 512 for mb in figures["node_peak_rss_mb"].values()), figures
