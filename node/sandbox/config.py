"""The host's sandbox settings and defaults: pool size, folders, and the backstops around a job."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from hearth.node import paths

# Defaults a job gets when its publisher names no limit (the CLI's defaults too).
DEFAULT_FUEL_MAX: Final = 10_000_000_000  # about 10-30 s of tight wasm on a home CPU
DEFAULT_MEMORY_BYTES_MAX: Final = 256 * 1024 * 1024
DEFAULT_DEADLINE_MS: Final = 30 * 1000
DEFAULT_OUTPUT_BYTES_MAX: Final = 16 * 1024 * 1024

# Host-side backstops; none of them changes a successful result.
COMPILE_TIMEOUT_MS: Final = 10 * 1000  # a wasm module that compiles longer is refused
# A worker's first Python job loads the compiled CPython: ~1-3 s idle, 10+ s on a loaded machine.
PYTHON_LOAD_TIMEOUT_MS: Final = 3 * 60 * 1000
WORKER_START_TIMEOUT_MS: Final = 30 * 1000
DEADLINE_GRACE_MS: Final = 50  # past the deadline, the worker is killed after this much more
STDERR_TAIL_BYTES_MAX: Final = 4096
COMPILED_MODULES_CACHED_MAX: Final = 64  # per worker, in memory
# Disk for compiled job modules, least recently used evicted first. Every distinct module a
# publisher sends is compiled once, so without a cap a stream of new modules fills the disk.
# CPython-on-WASI's one-off compile lives apart and is not counted.
MODULE_CACHE_BYTES_MAX: Final = 512 * 1024 * 1024
# A worker's host-side heap (Python, the compiler; RLIMIT_DATA). A guest's linear memory is
# held by the store limits instead: wasmtime commits it with mprotect, which RLIMIT_DATA skips.
WORKER_DATA_BYTES_MAX: Final = 2 * 1024 * 1024 * 1024
# Address space is a looser backstop: wasmtime reserves 4 GiB and more per linear memory before
# a byte is used, and a warm CPython-on-WASI worker peaks near 18 GiB of reservations.
WORKER_ADDRESS_SPACE_BYTES_MAX: Final = 32 * 1024 * 1024 * 1024


def _allowed_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


@dataclass(frozen=True)
class SandboxConfig:
    """Everything a `SandboxPool` needs. ``home`` is the node's data directory."""

    home: Path = field(default_factory=paths.data_dir)
    workers: int = field(default_factory=_allowed_cores)
    compile_timeout_ms: int = COMPILE_TIMEOUT_MS
    python_load_timeout_ms: int = PYTHON_LOAD_TIMEOUT_MS
    # Compiled runtimes (CPython-on-WASI), shared by every home on the machine; compiling one
    # has no time limit (trusted work on a pinned binary, minutes on a busy machine).
    runtime_cache: Path = field(default_factory=paths.runtime_cache_dir)
    worker_start_timeout_ms: int = WORKER_START_TIMEOUT_MS
    deadline_grace_ms: int = DEADLINE_GRACE_MS
    worker_data_bytes_max: int = WORKER_DATA_BYTES_MAX
    worker_address_space_bytes_max: int = WORKER_ADDRESS_SPACE_BYTES_MAX
    # Epoch interruption lets a worker stop a job at its deadline without dying, but it costs
    # ~1.6x on top of fuel (ADR 0005); off, the pool kills the worker at the deadline instead.
    epoch_interruption: bool = False
    module_cache_bytes_max: int = MODULE_CACHE_BYTES_MAX  # 0: keep no compiled module on disk

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1; got {self.workers}")
        if self.module_cache_bytes_max < 0:
            raise ValueError(
                f"module_cache_bytes_max must be >= 0; got {self.module_cache_bytes_max}"
            )

    @property
    def cache_dir(self) -> Path:
        return paths.cache_dir(self.home) / "sandbox"

    @property
    def scratch_dir(self) -> Path:
        return self.home / "scratch"

    def worker_settings(self, index: int) -> dict[str, Any]:
        """What one worker process is told at start (JSON on its command line)."""
        return {
            "cache_dir": str(self.cache_dir),
            "runtime_cache": str(self.runtime_cache),
            "scratch_dir": str(self.scratch_dir / f"worker-{index}"),
            "data_bytes_max": self.worker_data_bytes_max,
            "address_space_bytes_max": self.worker_address_space_bytes_max,
            "epoch_interruption": self.epoch_interruption,
            "module_cache_bytes_max": self.module_cache_bytes_max,
        }
