"""Task bundles: many tasks of one module in one job, their results under one Merkle root.

I/O: none. ADR 0033. A batch travels as ordinary jobs whose input is a *task bundle* (the
inputs of many tasks of the same module) and whose output is a *result bundle*: one leaf per
task (what replicas must agree on for that task), the Merkle root over the leaves, and the
outputs. The job's result digest covers the hash of the result bundle, so a worker's commitment
binds the root and every leaf; one award, one commitment and one settlement serve many tasks,
and when replicas disagree the leaves that differ name the tasks.

Both are msgpack arrays with a magic string first, so that a worker tells a task bundle from a
plain input by its first bytes. Every field a peer sent is checked before it is used
(``BundleError``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, Final

import msgpack

from hearth.protocol import limits
from hearth.protocol.errors import RemoteProtocolError

TASKS_MAGIC: Final = "hearth/tasks/1"
RESULTS_MAGIC: Final = "hearth/task-results/1"
TASKS_PER_BUNDLE_MAX: Final = 4096
ERROR_KIND_BYTES_MAX: Final = 64
_LEAF_DOMAIN: Final = b"hearth/task-leaf/1\x00"
_NODE_DOMAIN: Final = b"hearth/task-node/1\x00"
_EMPTY_ROOT: Final = hashlib.sha256(_NODE_DOMAIN).digest()


class BundleError(RemoteProtocolError):
    """A task or result bundle that does not parse or does not add up."""

    def __init__(self, what: str) -> None:
        super().__init__(f"bad task bundle: {what}", reason="invalid-bundle")


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise BundleError(what)


def _pack(value: list[Any]) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _has_magic(data: bytes, magic: str, length: int) -> bool:
    head = _pack([magic] + [0] * (length - 1))
    return len(data) > len(magic) + 2 and data[: len(magic) + 2] == head[: len(magic) + 2]


def _unpack(data: bytes, magic: str, length: int) -> list[Any]:
    _require(len(data) <= limits.BLOB_BYTES_MAX, "size")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BundleError(f"not msgpack ({exc})") from None
    _require(isinstance(fields, list) and len(fields) == length, "shape")
    _require(fields[0] == magic, "magic")
    checked: list[Any] = fields
    return checked


@dataclasses.dataclass(frozen=True)
class TaskBundle:
    """The input of a bundle job: each task runs the job's module on one of ``inputs``, with at
    most ``fuel_max`` fuel and ``output_bytes_max`` bytes of output each."""

    fuel_max: int
    output_bytes_max: int
    inputs: tuple[bytes, ...]

    def encode(self) -> bytes:
        return _pack([TASKS_MAGIC, self.fuel_max, self.output_bytes_max, list(self.inputs)])


def is_task_bundle(data: bytes) -> bool:
    return _has_magic(data, TASKS_MAGIC, 4)


def decode_tasks(data: bytes) -> TaskBundle:
    _, fuel_max, output_bytes_max, inputs = _unpack(data, TASKS_MAGIC, 4)
    _require(isinstance(fuel_max, int) and 0 < fuel_max <= limits.JOB_FUEL_MAX, "fuel_max")
    _require(
        isinstance(output_bytes_max, int) and 0 <= output_bytes_max <= limits.JOB_OUTPUT_BYTES_MAX,
        "output_bytes_max",
    )
    _require(isinstance(inputs, list) and 0 < len(inputs) <= TASKS_PER_BUNDLE_MAX, "inputs")
    _require(all(isinstance(item, bytes) for item in inputs), "an input")
    return TaskBundle(fuel_max, output_bytes_max, tuple(inputs))


@dataclasses.dataclass(frozen=True)
class TaskResult:
    """What the replicas must agree on for one task (the sandbox's verdict, as for a job)."""

    error_kind: str
    output: bytes
    fuel_used: int
    exit_code: int
    stderr: bytes

    @property
    def ok(self) -> bool:
        return not self.error_kind and self.exit_code == 0


def leaf(index: int, result: TaskResult) -> bytes:
    """The leaf of task ``index``: its place and its verdict, so a reordering changes it."""
    return hashlib.sha256(
        _LEAF_DOMAIN
        + index.to_bytes(4, "big")
        + hashlib.sha256(result.output).digest()
        + result.fuel_used.to_bytes(8, "big")
        + result.exit_code.to_bytes(8, "big", signed=True)
        + hashlib.sha256(result.stderr).digest()
        + result.error_kind.encode()
    ).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Binary Merkle tree; an odd node is carried up as it is (never paired with itself, so two
    different leaf lists never share a root, unlike Bitcoin's duplication, CVE-2012-2459)."""
    if not leaves:
        return _EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        paired = [
            hashlib.sha256(_NODE_DOMAIN + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


@dataclasses.dataclass(frozen=True)
class ResultBundle:
    root: bytes
    results: tuple[TaskResult, ...]

    @property
    def fuel_used(self) -> int:
        return sum(result.fuel_used for result in self.results)

    def leaves(self) -> list[bytes]:
        return [leaf(i, result) for i, result in enumerate(self.results)]


def encode_results(results: Sequence[TaskResult]) -> bytes:
    """The output of a bundle job: the root first, then each task's verdict and output."""
    bundle = ResultBundle(merkle_root([leaf(i, r) for i, r in enumerate(results)]), tuple(results))
    rows = [[r.error_kind, r.output, r.fuel_used, r.exit_code, r.stderr] for r in bundle.results]
    return _pack([RESULTS_MAGIC, bundle.root, rows, 0])


def decode_results(data: bytes, tasks: int) -> ResultBundle:
    """A result bundle for ``tasks`` tasks, its root checked against its leaves."""
    _, root, rows, _ = _unpack(data, RESULTS_MAGIC, 4)
    _require(isinstance(root, bytes) and len(root) == limits.HASH_BYTES, "root")
    _require(isinstance(rows, list) and len(rows) == tasks, "number of results")
    results = []
    for row in rows:
        _require(isinstance(row, list) and len(row) == 5, "a result")
        error_kind, output, fuel_used, exit_code, stderr = row
        _require(isinstance(error_kind, str) and len(error_kind) <= ERROR_KIND_BYTES_MAX, "kind")
        _require(isinstance(output, bytes) and isinstance(stderr, bytes), "an output")
        _require(isinstance(fuel_used, int) and 0 <= fuel_used <= limits.JOB_FUEL_MAX, "fuel")
        _require(isinstance(exit_code, int) and -1 <= exit_code <= limits.EXIT_CODE_MAX, "exit")
        results.append(TaskResult(error_kind, output, fuel_used, exit_code, stderr))
    bundle = ResultBundle(root, tuple(results))
    _require(merkle_root(bundle.leaves()) == root, "root does not match its leaves")
    return bundle


def differing_tasks(first: ResultBundle, second: ResultBundle) -> list[int]:
    """The tasks on which two replicas' results differ: the leaves that do not match."""
    return [
        i for i, (a, b) in enumerate(zip(first.leaves(), second.leaves(), strict=True)) if a != b
    ]
