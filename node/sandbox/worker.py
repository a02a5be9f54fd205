"""A sandbox worker process: runs one job at a time for the pool, under resource limits.

Started as ``python -m hearth.node.sandbox.worker SETTINGS_JSON`` by node/sandbox/pool.py. It reads
request frames on stdin and answers on stdout: "ready" once, then for each job "compiled" (the
module is compiled; the deadline starts) and "done" with the result. A *series* (the tasks of a
bundle, ADR 0033) is one request for many inputs of one module: "compiled" once, then its
results in as few frames as their outputs allow ("results" frames, then "done"), so a task
costs no frames of its own. The pool kills it on any overrun, so nothing here needs to be
trusted to stop. ``--warm-python`` compiles CPython into the cache and exits.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, Final

from hearth.node.sandbox import frames, python
from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime, task_seed
from hearth.node.sandbox.wasm import WasmRunner, refuse_costly_module

# A series' results go back in frames of about this much output each (a bundle's outputs may
# add up to far more than one frame may hold).
SERIES_FRAME_OUTPUT_BYTES: Final = 4 * 1024 * 1024


def apply_limits(settings: dict[str, Any], *, heap_limited: bool) -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    address_space = settings["address_space_bytes_max"]
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))
    if heap_limited:
        data = settings["data_bytes_max"]
        resource.setrlimit(resource.RLIMIT_DATA, (data, data))


def enter_scratch(settings: dict[str, Any]) -> None:
    """Anything a library writes to the working or temporary directory lands in scratch."""
    scratch = Path(settings["scratch_dir"])
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chdir(scratch)
    os.environ["TMPDIR"] = str(scratch)


def private_stdout() -> BinaryIO:
    """Frames get their own copy of stdout; fd 1 then points at stderr, so a stray print from a
    library cannot corrupt the frame stream."""
    frames_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return frames_out


class Worker:
    def __init__(self, settings: dict[str, Any], out: BinaryIO) -> None:
        self.cache_dir = Path(settings["cache_dir"])
        self.runtime_cache = Path(settings["runtime_cache"])
        self.out = out
        self.wasm = WasmRunner(
            self.cache_dir,
            epoch_interruption=settings["epoch_interruption"],
            module_cache_bytes_max=settings["module_cache_bytes_max"],
        )
        self.python_loaded = False

    def serve(self, stream: BinaryIO) -> None:
        frames.write_frame(self.out, {"phase": "ready", "pid": os.getpid()})
        while (message := frames.read_frame(stream)) is not None:
            request = JobRequest.from_message(message["job"])
            if "inputs" in message:
                self.run_series(request, message["inputs"])
                continue
            result = self.run(request)
            frames.write_frame(self.out, {"phase": "done", "result": result.to_message()})

    def run(self, request: JobRequest) -> ExecutionResult:
        prepared = self._prepare(request)
        if isinstance(prepared, ExecutionResult):
            return prepared
        self._compiled()
        return self._timed(lambda: prepared(request))

    def run_series(self, request: JobRequest, inputs: list[bytes]) -> None:
        """Run ``request``'s module on each input in turn (task *i* keyed by its own seed) and
        send the results: each frame carries at least one result and, past the first, no more
        than ``SERIES_FRAME_OUTPUT_BYTES`` of outputs, so frames stay within their bound."""
        prepared = self._prepare(request)
        if isinstance(prepared, ExecutionResult):  # the module's own failure is every task's
            results = [prepared.to_message()] * len(inputs)
            frames.write_frame(self.out, {"phase": "done", "results": results})
            return
        self._compiled()
        pending: list[dict[str, Any]] = []
        pending_bytes = 0
        for index, data in enumerate(inputs):
            task = dataclasses.replace(request, input=data, seed=task_seed(request.seed, index))
            result = self._timed(functools.partial(prepared, task))
            if pending and pending_bytes + len(result.output) > SERIES_FRAME_OUTPUT_BYTES:
                frames.write_frame(self.out, {"phase": "results", "results": pending})
                pending, pending_bytes = [], 0
            pending.append(result.to_message())
            pending_bytes += len(result.output) + len(result.stderr_tail)
        frames.write_frame(self.out, {"phase": "done", "results": pending})

    def _prepare(
        self, request: JobRequest
    ) -> Callable[[JobRequest], ExecutionResult] | ExecutionResult:
        """What runs the request's module once it is compiled (or loaded), or why it cannot."""
        if request.runtime is Runtime.WASM:
            too_costly = refuse_costly_module(request)  # before the compiler sees it
            if too_costly is not None:
                return too_costly
            compiled = self.wasm.compile(request.module)
            if isinstance(compiled, ExecutionResult):
                return compiled
            return lambda task: self.wasm.run(compiled, task)
        if not self.python_loaded:
            python.warm(self.runtime_cache)  # loads the cached CPython into this process
            self.python_loaded = True
        return lambda task: python.run(task, self.runtime_cache)

    def _compiled(self) -> None:
        frames.write_frame(self.out, {"phase": "compiled"})

    def _timed(self, job: Callable[[], ExecutionResult]) -> ExecutionResult:
        started_ns = time.perf_counter_ns()
        result = job()
        elapsed_ms = (time.perf_counter_ns() - started_ns) // 1_000_000
        return dataclasses.replace(result, elapsed_ms=elapsed_ms)


PARENT_POLL_S = 1.0


def die_with_parent() -> None:
    """Exit as soon as the process that started this worker is gone.

    A serving worker also exits at the end of its stdin, but a compile of CPython never reads
    it: without this, a node or CLI killed mid-compile would leave the compile running. (Linux's
    parent-death signal will not do: trio forks from a helper thread, whose exit would fire it.)
    """
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main(argv: list[str]) -> int:
    die_with_parent()
    warm_python = "--warm-python" in argv
    settings = json.loads(next(arg for arg in argv if not arg.startswith("--")))
    # Compiling CPython is trusted work on a pinned binary and needs ~1.7 GB of heap.
    apply_limits(settings, heap_limited=not warm_python)
    enter_scratch(settings)
    if warm_python:
        python.warm(Path(settings["runtime_cache"]))
        return 0
    out = private_stdout()
    try:
        Worker(settings, out).serve(sys.stdin.buffer)
    except MemoryError:
        return 3  # the pool reports the job as crashed; this process is gone, the node is not
    except Exception as exc:
        failure = ExecutionResult.failure(Runtime.WASM, ErrorKind.CRASHED, f"worker: {exc!r}")
        frames.write_frame(out, {"phase": "done", "result": failure.to_message()})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
