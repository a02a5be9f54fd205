"""WASI guests see /input read-only and /output writable and bounded, with arguments and an
environment, through a real sandbox worker process (ADR 0024)."""

from __future__ import annotations

import array
import os
import struct
from pathlib import Path

import wasmtime

from hearth.node.sandbox import ErrorKind, JobRequest, SandboxConfig
from hearth.node.sandbox.pool import run_job

MODULES = Path(__file__).resolve().parents[2] / "node" / "sandbox" / "modules"
MIB = 1024 * 1024


def files_sum() -> bytes:
    return bytes(wasmtime.wat2wasm((MODULES / "files_sum.wat").read_text()))


def expected_sum(data: bytes) -> tuple[int, int]:
    """What files_sum.wat computes: words of each 1 MiB read, then the read's tail bytes."""
    total = 0
    for start in range(0, len(data), MIB):
        block = data[start : start + MIB]
        whole = len(block) // 8 * 8
        total += sum(array.array("Q", block[:whole])) + sum(block[whole:])
    return len(data), total % 2**64


def request(input_dir: Path, output_dir: Path | str, **overrides: object) -> JobRequest:
    fields: dict[str, object] = {
        "runtime": "wasm",
        "module": files_sum(),
        "input": b"",
        "fuel_max": 10**10,
        "memory_bytes_max": 64 * MIB,
        "deadline_ms": 60_000,
        "output_bytes_max": MIB,
        "args": ("--mode", "sum"),
        "env": (("LANG", "C"),),
        "input_dir": str(input_dir),
        "output_dir": str(output_dir),
        "output_dir_bytes_max": MIB,
        "output_files_max": 4,
    }
    fields.update(overrides)
    return JobRequest(**fields)  # type: ignore[arg-type]


def folders(tmp_path: Path, data: bytes) -> tuple[Path, Path]:
    input_dir, output_dir = tmp_path / "in", tmp_path / "out"
    input_dir.mkdir()
    output_dir.mkdir()
    (input_dir / "data").write_bytes(data)
    return input_dir, output_dir


def test_a_guest_reads_its_input_file_and_writes_its_output_folder(tmp_path: Path) -> None:
    data = os.urandom(3 * MIB + 13)
    input_dir, output_dir = folders(tmp_path, data)
    config = SandboxConfig(home=tmp_path / "home")
    result = run_job(request(input_dir, output_dir), config)
    assert result.ok, result.error_message
    assert result.output == b"job.wasm\0--mode\0sum\0LANG=C\0"
    assert struct.unpack("<QQ", (output_dir / "sum.bin").read_bytes()) == expected_sum(data)
    assert (input_dir / "data").read_bytes() == data  # untouched
    again_out = tmp_path / "out2"
    again_out.mkdir()
    again = run_job(request(input_dir, again_out), config)
    assert again.fuel_used == result.fuel_used  # a replica agrees on the fuel too


def test_the_input_folder_is_read_only_and_the_output_bounded(tmp_path: Path) -> None:
    input_dir, output_dir = folders(tmp_path, b"12345678")
    config = SandboxConfig(home=tmp_path / "home")
    no_output = run_job(request(input_dir, ""), config)
    assert no_output.exit_code == 100 + 54  # no /output: fd 4 is the input file (ENOTDIR)
    swapped = run_job(request(output_dir, input_dir), config)
    assert swapped.exit_code == 10 + 44  # /input/data does not exist in an empty folder
    no_room = run_job(request(input_dir, output_dir, output_files_max=0), config)
    assert no_room.error_kind is ErrorKind.EXIT and no_room.exit_code == 100 + 51  # ENOSPC
    assert not (output_dir / "sum.bin").exists()


def test_a_guest_cannot_climb_out_of_its_folders(tmp_path: Path) -> None:
    from hearth.node.sandbox.wasi_fs import ERRNO_PERM, ERRNO_ROFS, FsError, Preopens

    input_dir, output_dir = folders(tmp_path, b"x")
    (tmp_path / "secret").write_bytes(b"s")
    (output_dir / "link").symlink_to(tmp_path / "secret")
    fs = Preopens(str(input_dir), str(output_dir), 10, 10)
    for path in (b"../secret", b"/etc/passwd", b"a/../../secret"):
        try:
            fs.open(3, path, 0, 2, 0)
        except FsError as exc:
            assert exc.errno == ERRNO_PERM
        else:
            raise AssertionError(f"{path!r} was opened")
    for fd, path, oflags, errno in ((4, b"link", 0, ERRNO_PERM), (3, b"data", 9, ERRNO_ROFS)):
        try:
            fs.open(fd, path, oflags, 64, 0)
        except FsError as exc:
            assert exc.errno == errno
        else:
            raise AssertionError(f"{path!r} was opened")
    fs.close_all()
