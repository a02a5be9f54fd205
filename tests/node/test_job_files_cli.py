"""`hearth job run` with files, here in the sandbox: inputs, arguments, environment and an
output folder; a bad path or flag is one line on stderr and a non-zero exit (ADR 0024)."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "node" / "sandbox" / "modules" / "files_sum.wat"


def hearth(home: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", "job", "run", "--local", str(MODULE), *args],
        env={**os.environ, "HEARTH_HOME": str(home)},
        capture_output=True,
        timeout=120,
    )


def test_a_local_job_reads_an_input_folder_and_fills_an_output_folder(tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "data").write_bytes(bytes(range(256)) * 8)
    out = tmp_path / "out"
    done = hearth(tmp_path, "--input", str(inputs), "--output", f"{out}/", "--arg", "a b")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(b"job.wasm\0a b\0")
    count, total = struct.unpack("<QQ", (out / "sum.bin").read_bytes())
    words = struct.unpack("<256Q", (inputs / "data").read_bytes())
    assert count == 2048 and total == sum(words) % 2**64


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--input", "/nonexistent/x", "--input", "/nonexistent/y"], "does not exist"),
        (["--env", "NOEQUALS"], "is not KEY=VALUE"),
        (["--env", "=x"], "is not an environment variable name"),
        (["--stdin", "/nonexistent/stdin"], "does not exist"),
    ],
)
def test_bad_file_flags_are_one_line(tmp_path: Path, flags: list[str], message: str) -> None:
    done = hearth(tmp_path, *flags, "--output", f"{tmp_path}/out/")
    assert done.returncode != 0
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def test_an_output_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"")
    done = hearth(tmp_path, "--arg", "x", "--output", str(tmp_path / "file"))
    assert done.returncode != 0 and b"is a file" in done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1
