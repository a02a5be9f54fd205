"""The `wasm` runtime: one pinned engine, compiled modules cached by hash, a job run under limits.

Runs inside a worker process (node/sandbox/worker.py), never in the node itself.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Final

import wasmtime as wt

from hearth.node.sandbox import wasi, wasi_fs
from hearth.node.sandbox.config import COMPILED_MODULES_CACHED_MAX, STDERR_TAIL_BYTES_MAX
from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime, module_fuel
from hearth.protocol import limits

WASMTIME_VERSION: Final = "49.0.0"  # the network's pin (ADR 0005); another version refuses jobs
WASM_MAGIC: Final = b"\0asm"
WASM_PAGE_BYTES: Final = 65536
TABLE_ELEMENTS_MAX: Final = 1_000_000
EPOCH_TICK_MS: Final = 10


class ModuleRefused(Exception):
    """The bytes are not a WebAssembly module this sandbox will compile."""


def check_wasmtime_pin() -> None:
    found = metadata.version("wasmtime")
    if found != WASMTIME_VERSION:
        raise RuntimeError(f"wasmtime {found} is installed; the network runs {WASMTIME_VERSION}")


def make_engine(*, metered: bool = True, epoch_interruption: bool = False) -> wt.Engine:
    """The engine every honest replica runs: same features, same stack, NaNs canonical."""
    config = wt.Config()
    config.consume_fuel = metered
    config.epoch_interruption = epoch_interruption
    config.cranelift_nan_canonicalization = True
    config.max_wasm_stack = limits.JOB_WASM_STACK_BYTES
    # Features whose results may differ between hosts or that share memory across threads.
    config.wasm_threads = False
    config.shared_memory = False
    config.wasm_relaxed_simd = False
    # One job per core: the pool, not the compiler, decides how many cores are busy.
    config.parallel_compilation = False
    return wt.Engine(config)


def engine_fingerprint(*, metered: bool, epoch_interruption: bool) -> str:
    """Names the compiled-code flavour, so a cache never hands one engine another's code."""
    flags = f"fuel{int(metered)}-epoch{int(epoch_interruption)}"
    return f"wasmtime-{WASMTIME_VERSION}-{flags}-stack{limits.JOB_WASM_STACK_BYTES}"


class ModuleCache:
    """Compiled modules by module SHA-256: in memory (LRU), then ``directory``, else compiled.

    The directory holds at most ``bytes_max`` of compiled code: after each store the least
    recently used files go (a load marks a file used). Workers share the directory, so a file
    may vanish under another worker: that is a miss, never an error. A store that fails (a full
    disk) only costs the next worker a compile."""

    def __init__(
        self, engine: wt.Engine, directory: Path | None, *, bytes_max: int | None = None
    ) -> None:
        self.engine = engine
        self.directory = directory
        self.bytes_max = bytes_max
        self._memory: collections.OrderedDict[bytes, wt.Module] = collections.OrderedDict()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(directory, 0o700)  # compiled code is run as found: only we may write it

    def get(self, module: bytes) -> tuple[wt.Module, bool]:
        """The compiled module and whether it came from a cache."""
        digest = hashlib.sha256(module).digest()
        found = self._memory.get(digest)
        if found is None:
            found = self._load(digest)
        hit = found is not None
        if found is None:
            found = self._compile(module)
            self._store(digest, found)
        self._memory[digest] = found
        self._memory.move_to_end(digest)
        while len(self._memory) > COMPILED_MODULES_CACHED_MAX:
            self._memory.popitem(last=False)
        return found, hit

    def _path(self, digest: bytes) -> Path | None:
        return None if self.directory is None else self.directory / f"{digest.hex()}.cwasm"

    def _load(self, digest: bytes) -> wt.Module | None:
        path = self._path(digest)
        if path is None:
            return None
        try:
            os.utime(path)  # most recently used: the last to be evicted
            return wt.Module.deserialize_file(self.engine, str(path))
        except FileNotFoundError:
            return None
        except wt.WasmtimeError:
            path.unlink(missing_ok=True)  # written by another engine build: compile afresh
            return None

    def _compile(self, module: bytes) -> wt.Module:
        # wasmtime-py would read non-binary bytes as WAT text; jobs must be binary.
        if not module.startswith(WASM_MAGIC):
            raise ModuleRefused("not a WebAssembly binary (no \\0asm header)")
        try:
            return wt.Module(self.engine, module)
        except wt.WasmtimeError as exc:
            raise ModuleRefused(wasi.describe(exc)) from None

    def _store(self, digest: bytes, compiled: wt.Module) -> None:
        path = self._path(digest)
        if path is None or self.bytes_max == 0:
            return
        partial = path.with_suffix(f".{os.getpid()}.partial")
        try:
            partial.write_bytes(compiled.serialize())
            os.replace(partial, path)  # atomic: a reader sees a whole file or none
        except OSError as exc:  # a full disk or a quota: run uncached rather than fail the job
            partial.unlink(missing_ok=True)
            print(f"hearth-sandbox: compiled module not cached: {exc}", file=sys.stderr)
            return
        self._trim(keep=path)

    def _trim(self, keep: Path) -> None:
        """Evict the least recently used files until the directory fits ``bytes_max``."""
        if self.bytes_max is None or self.directory is None:
            return
        files = []
        for entry in os.scandir(self.directory):
            if entry.name.endswith(".cwasm"):
                with contextlib.suppress(FileNotFoundError):  # another worker evicted it
                    info = entry.stat()
                    files.append((info.st_mtime_ns, info.st_size, Path(entry.path)))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.bytes_max:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


class EpochTicker:
    """Advances the engine's epoch every EPOCH_TICK_MS while a job runs (epoch mode only)."""

    def __init__(self, engine: wt.Engine) -> None:
        self.engine = engine
        self._stop = threading.Event()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        self._stop.clear()
        thread = threading.Thread(target=self._tick, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            thread.join()

    def _tick(self) -> None:
        while not self._stop.wait(EPOCH_TICK_MS / 1000):
            self.engine.increment_epoch()


class WasmRunner:
    """Runs wasm jobs one at a time in this process."""

    def __init__(
        self,
        cache_dir: Path | None,
        *,
        epoch_interruption: bool = False,
        module_cache_bytes_max: int | None = None,
    ) -> None:
        check_wasmtime_pin()
        self.engine = make_engine(epoch_interruption=epoch_interruption)
        fingerprint = engine_fingerprint(metered=True, epoch_interruption=epoch_interruption)
        directory = cache_dir and cache_dir / fingerprint
        self.cache = ModuleCache(self.engine, directory, bytes_max=module_cache_bytes_max)
        self.ticker = EpochTicker(self.engine) if epoch_interruption else None
        self.wasi = wasi.Wasi()
        self.linker = wt.Linker(self.engine)
        self.wasi.define(self.linker)

    def compile(self, module: bytes) -> wt.Module | ExecutionResult:
        try:
            return self.cache.get(module)[0]
        except ModuleRefused as exc:
            return ExecutionResult.failure(Runtime.WASM, ErrorKind.INVALID_MODULE, str(exc))

    def run(self, compiled: wt.Module, request: JobRequest) -> ExecutionResult:
        refused = refuse_costly_module(request)
        if refused is not None:
            return refused
        store = wt.Store(self.engine)
        store.set_limits(
            memory_size=request.memory_bytes_max,
            table_elements=TABLE_ELEMENTS_MAX,
            instances=1,
            tables=8,
            memories=1,
        )
        store.set_fuel(request.fuel_max - module_fuel(request.module))  # fuel_used includes it
        job = wasi.JobIO(
            input=request.input,
            output_bytes_max=request.output_bytes_max,
            stderr_bytes_max=STDERR_TAIL_BYTES_MAX,
            fuel_max=request.fuel_max,
            store=store,
            argv=("job.wasm", *request.args) if request.args else (),
            environ=tuple(f"{key}={value}" for key, value in request.env),
            fs=wasi_fs.Preopens(
                request.input_dir,
                request.output_dir,
                request.output_dir_bytes_max,
                request.output_files_max,
            )
            if request.input_dir or request.output_dir
            else None,
            seed=request.seed,
        )
        self.wasi.job = job
        try:
            with self.ticker.running() if self.ticker else contextlib.nullcontext():
                if self.ticker:
                    store.set_epoch_deadline(max(1, request.deadline_ms // EPOCH_TICK_MS))
                return self._execute(store, compiled, job, request)
        finally:
            if job.fs is not None:
                job.fs.close_all()
            self.wasi.job = None
            # Each store reserves ~6 GiB of address space for its memory; a trap's traceback
            # keeps the store alive in a cycle until the next garbage collection, so a worker
            # running jobs back to back ran out of address space (RLIMIT_AS): free it now.
            store.close()

    def _execute(
        self, store: wt.Store, compiled: wt.Module, job: wasi.JobIO, request: JobRequest
    ) -> ExecutionResult:
        instance: wt.Instance | None = None
        exit_code = 0
        try:
            instance = self.linker.instantiate(store, compiled)
            start = instance.exports(store).get("_start")
            if not isinstance(start, wt.Func):
                return self._fail(job, ErrorKind.INVALID_MODULE, "no _start function exported")
            start(store)
        except wasi.ProcExit as exit_:
            exit_code = exit_.code
        except wasi.OutputTooLarge as exc:
            return self._fail(job, ErrorKind.OUTPUT_TOO_LARGE, str(exc))
        except wasi.FuelExhausted:
            return self._fail(job, ErrorKind.OUT_OF_FUEL, _out_of_fuel(request))
        except wt.Trap as trap:
            return self._trap(store, instance, job, request, trap)
        except wt.WasmtimeError as exc:
            return self._instantiate_error(job, request, exc)
        return self._finish(job, exit_code)

    def _finish(self, job: wasi.JobIO, exit_code: int) -> ExecutionResult:
        if exit_code != 0:
            message = f"exited with code {exit_code}"
            return self._fail(job, ErrorKind.EXIT, message, exit_code=exit_code)
        return ExecutionResult(
            runtime=Runtime.WASM,
            output=bytes(job.output),
            fuel_used=job.fuel_spent(),
            exit_code=0,
            stderr_tail=bytes(job.stderr),
        )

    def _trap(
        self,
        store: wt.Store,
        instance: wt.Instance | None,
        job: wasi.JobIO,
        request: JobRequest,
        trap: wt.Trap,
    ) -> ExecutionResult:
        code = trap.trap_code
        if code == wt.TrapCode.OUT_OF_FUEL:
            return self._fail(job, ErrorKind.OUT_OF_FUEL, _out_of_fuel(request))
        if code == wt.TrapCode.INTERRUPT:
            return self._fail(job, ErrorKind.DEADLINE, f"deadline of {request.deadline_ms} ms")
        name = code.name.lower().replace("_", " ") if code is not None else wasi.describe(trap)
        if _memory_at_cap(store, instance, request.memory_bytes_max):
            message = f"memory limit of {request.memory_bytes_max} bytes reached (trap: {name})"
            return self._fail(job, ErrorKind.MEMORY_LIMIT, message)
        return self._fail(job, ErrorKind.TRAP, f"trap: {name}")

    def _instantiate_error(
        self, job: wasi.JobIO, request: JobRequest, exc: wt.WasmtimeError
    ) -> ExecutionResult:
        text = wasi.describe(exc)
        if "exceeds memory limits" in text or "memory minimum size" in text:
            message = f"module needs more than the memory limit of {request.memory_bytes_max} bytes"
            return self._fail(job, ErrorKind.MEMORY_LIMIT, message)
        return self._fail(job, ErrorKind.INVALID_MODULE, text)

    def _fail(
        self, job: wasi.JobIO, kind: ErrorKind, message: str, *, exit_code: int | None = None
    ) -> ExecutionResult:
        return ExecutionResult(
            runtime=Runtime.WASM,
            fuel_used=job.fuel_spent(),
            error_kind=kind,
            error_message=message,
            exit_code=exit_code,
            stderr_tail=bytes(job.stderr),
        )


def refuse_costly_module(request: JobRequest) -> ExecutionResult | None:
    """Out of fuel before compiling, if the module's size alone costs more than ``fuel_max``."""
    charge = module_fuel(request.module)
    if charge <= request.fuel_max:
        return None
    message = f"out of fuel: the module's size costs {charge} units, more than {request.fuel_max}"
    return ExecutionResult.failure(
        Runtime.WASM, ErrorKind.OUT_OF_FUEL, message, fuel_used=request.fuel_max
    )


def _out_of_fuel(request: JobRequest) -> str:
    return f"out of fuel after {request.fuel_max} units"


def _memory_at_cap(store: wt.Store, instance: wt.Instance | None, memory_bytes_max: int) -> bool:
    """A trap with memory grown to within a page of the cap is charged to the memory limit:
    `memory.grow` past the cap returns -1 and a guest's allocator then aborts."""
    if instance is None:
        return False
    memory = instance.exports(store).get("memory")
    if not isinstance(memory, wt.Memory):
        return False
    return memory.data_len(store) + WASM_PAGE_BYTES > memory_bytes_max
