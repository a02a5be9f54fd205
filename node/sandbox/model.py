"""What the sandbox is asked to run and what it answers: runtimes, error kinds, request, result."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from typing import Any, Final

from hearth.protocol import limits

# What a wasm module's own bytes cost before its first instruction (ADR 0005). Deterministic:
# a function of the bytes alone, so it is part of the fuel_used replicas agree on.
MODULE_FUEL_PER_BYTE: Final = 1  # reading and validating any byte of the module
CODE_FUEL_PER_BYTE: Final = 1_000  # compiling: 1-2 us per code byte measured, at ~1 fuel per ns
DATA_FUEL_PER_BYTE: Final = 1  # copying a data segment into linear memory at instantiation
WASM_HEADER_BYTES: Final = 8  # b"\0asm" and the version
WASM_SECTION_CODE: Final = 10
WASM_SECTION_DATA: Final = 11
# Honest modules have a dozen sections; past this many (custom sections can repeat without end)
# the rest of the module is charged as code, so the scan stays short and hides nothing.
WASM_SECTIONS_SCANNED_MAX: Final = 1024
SEED_BYTES_MAX: Final = 64


class Runtime(enum.StrEnum):
    WASM = "wasm"
    PYTHON = "python"


class ErrorKind(enum.StrEnum):
    """Why a job did not succeed; stable strings, shown to users and compared across replicas."""

    OUT_OF_FUEL = "out-of-fuel"
    MEMORY_LIMIT = "memory-limit"
    DEADLINE = "deadline"
    TRAP = "trap"
    EXIT = "exit"  # the program ended itself with a non-zero status
    INVALID_MODULE = "invalid-module"
    OUTPUT_TOO_LARGE = "output-too-large"
    COMPILE_TIMEOUT = "compile-timeout"
    CRASHED = "crashed"  # the worker process died; the node did not


# Failures that depend on the host's wall clock or health rather than on the job alone; replicas
# must not be judged on them.
NONDETERMINISTIC_KINDS = frozenset(
    {ErrorKind.DEADLINE, ErrorKind.COMPILE_TIMEOUT, ErrorKind.CRASHED}
)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}; got {value!r}")


def module_fuel(module: bytes) -> int:
    """Fuel charged for a wasm module's size: every byte, plus its code section (compiled) and its
    data section (copied into memory). A malformed section list charges what was read."""
    code_bytes, data_bytes = _section_bytes(module)
    return (
        MODULE_FUEL_PER_BYTE * len(module)
        + CODE_FUEL_PER_BYTE * code_bytes
        + DATA_FUEL_PER_BYTE * data_bytes
    )


def _section_bytes(module: bytes) -> tuple[int, int]:
    """(code section bytes, data section bytes) from the module's section headers."""
    sizes = {WASM_SECTION_CODE: 0, WASM_SECTION_DATA: 0}
    offset = WASM_HEADER_BYTES
    for _ in range(WASM_SECTIONS_SCANNED_MAX):
        if offset >= len(module):
            break
        section_id = module[offset]
        size, offset = _leb128_u32(module, offset + 1)
        if size is None or offset + size > len(module):
            break  # not a module wasmtime will compile: it is refused after the charge
        if section_id in sizes:
            sizes[section_id] += size
        offset += size
    else:
        sizes[WASM_SECTION_CODE] += max(0, len(module) - offset)  # unscanned: charged as code
    return sizes[WASM_SECTION_CODE], sizes[WASM_SECTION_DATA]


def _leb128_u32(data: bytes, offset: int) -> tuple[int | None, int]:
    value = 0
    for shift in range(0, 35, 7):
        if offset >= len(data):
            return None, offset
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
    return None, offset


def task_seed(seed: bytes, index: int) -> bytes:
    """The guest seed of task ``index`` of a series (ADR 0033): the job's seed and the task's
    place, so replicas of a task draw the same bytes and two tasks of a bundle different ones.
    A seed too long to take the index (job ids may be up to 64 bytes) is hashed first."""
    if len(seed) + 4 > SEED_BYTES_MAX:
        seed = hashlib.sha256(seed).digest()
    return seed + index.to_bytes(4, "big")


@dataclass(frozen=True)
class JobRequest:
    """One job for the sandbox. ``module`` is a wasm binary or, for ``python``, UTF-8 source."""

    runtime: Runtime
    module: bytes
    input: bytes
    fuel_max: int
    memory_bytes_max: int
    deadline_ms: int
    output_bytes_max: int
    # Arguments, environment and folders of a job with a bundle (ADR 0024); host paths of the
    # folders the guest sees as /input (read-only) and /output (writable, bounded).
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    input_dir: str = ""
    output_dir: str = ""
    output_dir_bytes_max: int = 0
    output_files_max: int = 0
    # Keys the guest's random stream (ADR 0022): the job id on a node, so every replica of a job
    # draws the same bytes and two jobs draw different ones.
    seed: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "runtime", Runtime(self.runtime))
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "env", tuple((str(k), str(v)) for k, v in self.env))
        _check_range("seed bytes", len(self.seed), 0, SEED_BYTES_MAX)
        _check_range("module bytes", len(self.module), 1, limits.JOB_MODULE_BYTES_MAX)
        _check_range("input bytes", len(self.input), 0, limits.JOB_INPUT_BYTES_MAX)
        _check_range("fuel_max", self.fuel_max, 1, limits.JOB_FUEL_MAX)
        _check_range("memory_bytes_max", self.memory_bytes_max, 65536, limits.JOB_MEMORY_BYTES_MAX)
        _check_range("deadline_ms", self.deadline_ms, 1, limits.JOB_DEADLINE_MS_MAX)
        _check_range("output_bytes_max", self.output_bytes_max, 0, limits.JOB_OUTPUT_BYTES_MAX)

    @property
    def module_sha256(self) -> bytes:
        return hashlib.sha256(self.module).digest()

    def to_message(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime.value,
            "module": self.module,
            "input": self.input,
            "fuel_max": self.fuel_max,
            "memory_bytes_max": self.memory_bytes_max,
            "deadline_ms": self.deadline_ms,
            "output_bytes_max": self.output_bytes_max,
            "args": list(self.args),
            "env": [list(pair) for pair in self.env],
            "input_dir": self.input_dir,
            "output_dir": self.output_dir,
            "output_dir_bytes_max": self.output_dir_bytes_max,
            "output_files_max": self.output_files_max,
            "seed": self.seed,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> JobRequest:
        return cls(**message)


@dataclass(frozen=True)
class ExecutionResult:
    """How one job ended. ``fuel_used`` is deterministic except for the wall-clock kinds, where
    the worker was stopped from outside and 0 is reported; ``elapsed_ms`` is this host's alone."""

    runtime: Runtime
    output: bytes = b""
    fuel_used: int = 0
    error_kind: ErrorKind | None = None
    error_message: str = ""
    exit_code: int | None = None
    stderr_tail: bytes = b""
    elapsed_ms: int = 0
    output_sha256: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_sha256", hashlib.sha256(self.output).digest())
        if self.error_kind is None:
            assert not self.error_message, "a successful result carries no error message"
        else:
            assert self.error_message, "a failure says what stopped it"

    @property
    def ok(self) -> bool:
        return self.error_kind is None

    @property
    def verdict(self) -> tuple[str, bytes, int]:
        """What honest replicas must agree on, bit for bit."""
        return (self.error_kind or "", self.output_sha256, self.fuel_used)

    def to_message(self) -> dict[str, Any]:
        return {
            "runtime": self.runtime.value,
            "output": self.output,
            "fuel_used": self.fuel_used,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "error_message": self.error_message,
            "exit_code": self.exit_code,
            "stderr_tail": self.stderr_tail,
            "elapsed_ms": self.elapsed_ms,
        }

    @classmethod
    def from_message(cls, message: dict[str, Any]) -> ExecutionResult:
        kind = message["error_kind"]
        return cls(
            runtime=Runtime(message["runtime"]),
            output=message["output"],
            fuel_used=message["fuel_used"],
            error_kind=ErrorKind(kind) if kind else None,
            error_message=message["error_message"],
            exit_code=message["exit_code"],
            stderr_tail=message["stderr_tail"],
            elapsed_ms=message["elapsed_ms"],
        )

    @classmethod
    def failure(
        cls, runtime: Runtime, kind: ErrorKind, message: str, *, fuel_used: int = 0
    ) -> ExecutionResult:
        return cls(runtime=runtime, error_kind=kind, error_message=message, fuel_used=fuel_used)
