"""Batches: one module over many inputs, run in verified bundles, resumable (ADR 0033).

Theory of operation
-------------------
A batch is a list of tasks, one input each, named in a stable order (the sorted files of a
folder or a glob, or the position in a list). The runner, a client of the local node's API like
the rest of the SDK, cuts the queued tasks into *bundles*: one ordinary job whose input is a task
bundle (protocol.bundles) and whose verified output carries every task's result under one
Merkle root. One award, one commitment and one settlement serve the whole bundle; the module is
uploaded once and every host fetches it once.

    queued --bundle published--> running --bundle verified--> verified | failed (the task's own)
    running --bundle failed or lost--> queued (again, at most ``attempts_max`` times) | failed

Bundles start at ``bundle_tasks_first`` tasks and grow (``bundle_growth`` times) while they
verify quickly (within half their deadline, and a bigger one would run in a quarter of it: a
bundle's fixed cost, one auction and one settlement, is then worth spreading over more tasks),
and halve when one fails. At most ``bundles_in_flight`` run at once and each new bundle takes a
slot's fair share of the work not yet done (queued and running), so the first wave is spread
evenly over every slot and the last bundles are smaller.

Resuming: with a journal (the CLI keeps one per batch in the node's home), every bundle is
written down *before* it is published, under a job id the runner chose, and every verified
bundle after its outputs are written. A restarted runner replays the journal: verified tasks
stay done, a bundle that was published is followed to its end on the node (which restored it)
and is published again only if the node never heard of it. So no task is paid twice.
Budget: no bundle is published whose worst case (every replica at the max price, every task at
its fuel limit) would take the spending past the budget.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import hashlib
import json
import math
import os
import secrets
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import anyio
import anyio.abc

from hearth.client import AsyncClient, HearthError, module_bytes, runtime_for
from hearth.protocol import bundles
from hearth.protocol.causes import TRANSIENT_CAUSES
from hearth.protocol.pricing import cost_mc

QUEUED, RUNNING, VERIFIED, FAILED = 0, 1, 2, 3
JOURNAL_NAME = "journal.jsonl"
CANCEL_MARKER = "cancelled"
RESULT_FETCH_S_MAX = 30.0
MC_PER_CREDIT = 1000
TRANSIENT_ATTEMPTS_FACTOR = 4
FUEL_PER_S_FALLBACK = 500_000_000  # a slow home CPU's wasm fuel rate (node/calibrate.py)
PIPELINE_DEPTH = 1  # bundles per offered core (2: one more waits in the host's backlog)


class BatchError(HearthError):
    """The batch cannot start or go on; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class BatchOptions:
    runtime: str | None = None
    replicas: int = 2
    replicas_max: int = 3
    max_price_mc_per_tfuel: int = 100_000
    budget_mc: int | None = None  # all the batch may spend; None: no limit
    fuel_max: int = 1_000_000_000  # per task
    memory_mb_max: int = 64
    output_bytes_max: int = 1 << 20  # per task
    deadline_s: int = 120  # per bundle
    bid_window_ms: int = 500
    prefer: str = "cheapest"
    # The first bundles' size: measured on loopback, a bundle's fixed cost (auction, award,
    # commit-reveal, settlement, two API round trips) is about 0.25 CPU-seconds across the
    # network, the sandbox cost of a millisecond task about 1.4 ms for two replicas, so a
    # bundle of millisecond tasks needs a couple of hundred of them for the network to cost no
    # more than the work (ADR 0033, amendment of 2026-12-03). Fuel still bounds its worst case.
    bundle_tasks_first: int = 256
    bundle_tasks_min: int = 16  # the smallest bundle spreading the queue over slots makes
    bundle_tasks_max: int = 1024
    bundle_bytes_max: int = 16 << 20
    bundle_growth: int = 4  # a bundle verified quickly makes the next this many times bigger
    bundles_in_flight: int = 0  # 0: as many as the market's hosts can run all replicas of
    attempts_max: int = 3  # bundles a task may fail in (four times more when hosts were busy)
    # Hosts bid only on work they can finish in time at their fuel rate, so a bundle holds at
    # most a quarter of its deadline's worth of fuel_max at this rate (0: this node's calibrated
    # rate, ``FUEL_PER_S_FALLBACK`` if it has none).
    fuel_per_s: int = 0

    def tasks_by_fuel_max(self) -> int:
        """The most tasks a bundle may hold for hosts to take it within its deadline."""
        fuel_per_s = self.fuel_per_s or FUEL_PER_S_FALLBACK
        return max(1, fuel_per_s * self.deadline_s // 4 // self.fuel_max)

    def task_cost_mc_max(self) -> int:
        """The most one task can cost: every replica at the max price and the fuel limit."""
        return self.replicas_max * cost_mc(self.max_price_mc_per_tfuel, self.fuel_max)


def output_digest(output: bytes) -> str:
    """What the journal keeps of a verified output, so that a resumed batch can tell an output
    file that is still the one verified from one lost or changed since (16 bytes, hex)."""
    return hashlib.blake2b(output, digest_size=16).hexdigest()


@dataclasses.dataclass(frozen=True)
class TaskOutcome:
    """One task's verified result: ``ok`` if it exited 0; else what its replicas agreed on."""

    index: int
    name: str
    ok: bool
    output: bytes
    error_kind: str
    exit_code: int
    fuel_used: int
    reason: str = ""  # why a task was not run at all (its bundles kept failing)


class TaskSource(Protocol):
    def __len__(self) -> int: ...
    def name(self, index: int) -> str: ...
    def read(self, index: int) -> bytes: ...


class FileTasks:
    """Tasks from the files of a folder, or the files a glob matches, in sorted order.

    Only the paths are held (as strings: 100,000 tasks take a few MB); inputs are read as their
    bundle is made.
    """

    def __init__(self, spec: str) -> None:
        folder = Path(spec)
        if folder.is_dir():
            with os.scandir(folder) as entries:
                found = [e.path for e in entries if e.is_file()]
        else:
            found = [p for p in glob.iglob(spec, recursive=True) if os.path.isfile(p)]
        if not found:
            raise BatchError(f"no input files in {spec}: give a folder with files or a glob")
        self._paths = sorted(os.path.abspath(p) for p in found)
        names = {os.path.basename(p) for p in self._paths}
        if len(names) != len(self._paths):
            raise BatchError(f"{spec} matches two files of the same name; outputs would collide")

    def __len__(self) -> int:
        return len(self._paths)

    def name(self, index: int) -> str:
        return os.path.basename(self._paths[index])

    def read(self, index: int) -> bytes:
        try:
            return Path(self._paths[index]).read_bytes()
        except OSError as exc:
            raise BatchError(f"cannot read input {self._paths[index]}: {exc.strerror}") from None

    def fingerprint(self) -> bytes:
        digest = hashlib.sha256()
        for path in self._paths:
            digest.update(path.encode() + b"\0")
        return digest.digest()


class MemoryTasks:
    """Tasks given as bytes (``Client.map``); named by their position."""

    def __init__(self, inputs: Sequence[bytes]) -> None:
        if not inputs:
            raise BatchError("no inputs: a batch needs at least one task")
        self._inputs = inputs

    def __len__(self) -> int:
        return len(self._inputs)

    def name(self, index: int) -> str:
        return str(index)

    def read(self, index: int) -> bytes:
        return bytes(self._inputs[index])


class Journal:
    """An append-only record of a batch, one JSON line each, synced (or in memory alone)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if path is not None and path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):  # a line torn by a crash ends the record
                    self.records.append(json.loads(line))

    def cancelled(self) -> bool:
        """Has `hearth job cancel` marked this batch (from another process)?"""
        return self.path is not None and (self.path.parent / CANCEL_MARKER).exists()

    def mark_cancelled(self) -> None:
        self.append({"kind": "cancel"})
        if self.path is not None:
            (self.path.parent / CANCEL_MARKER).touch()

    def append(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        if self.path is None:
            return
        with self.path.open("a") as file:
            file.write(json.dumps(record, separators=(",", ":")) + "\n")
            file.flush()
            os.fsync(file.fileno())


@dataclasses.dataclass
class HostTally:
    tasks: int = 0
    fuel: int = 0
    paid_mc: int = 0
    mismatches: int = 0


@dataclasses.dataclass
class BatchStats:
    batch_id: str
    tasks: int
    verified: int = 0
    failed: int = 0
    running: int = 0
    spent_mc: int = 0
    budget_mc: int | None = None
    bundles: int = 0
    bundles_failed: int = 0
    started_s: float = dataclasses.field(default_factory=time.monotonic)
    hosts: dict[str, HostTally] = dataclasses.field(default_factory=dict)
    stopped: str = ""  # why the batch ended before every task was done ("" if it did not)
    # Where verified bundles' time went: for each step (the input stored, the job published,
    # each phase the node reported, the results fetched), ms since the bundle started.
    traces: list[dict[str, float]] = dataclasses.field(default_factory=list)

    first_bundle_ms: float = 0.0  # from the batch's start to its first bundle (setup)

    def bundle_trace_ms(
        self, pick: Callable[[list[float]], float] = statistics.median
    ) -> dict[str, float]:
        """Over verified bundles, the median (or ``pick``) of each step's time since the
        bundle started."""
        steps: dict[str, list[float]] = {}
        for trace in self.traces:
            for step, at_ms in trace.items():
                steps.setdefault(step, []).append(at_ms)
        picked = {step: round(pick(times), 1) for step, times in steps.items()}
        return dict(sorted(picked.items(), key=lambda item: item[1]))

    @property
    def queued(self) -> int:
        return self.tasks - self.verified - self.failed - self.running

    @property
    def tasks_per_s(self) -> float:
        elapsed = time.monotonic() - self.started_s
        return (self.verified + self.failed) / elapsed if elapsed > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "batch_id": self.batch_id,
            "tasks": self.tasks,
            "verified": self.verified,
            "failed": self.failed,
            "not_done": self.tasks - self.verified - self.failed,
            "bundles": self.bundles,
            "bundles_failed": self.bundles_failed,
            "spent_mc": self.spent_mc,
            "budget_mc": self.budget_mc,
            "tasks_per_s": round(self.tasks_per_s, 1),
            "elapsed_s": round(time.monotonic() - self.started_s, 3),
            "mismatches": sum(h.mismatches for h in self.hosts.values()),
            "hosts": {peer: dataclasses.asdict(h) for peer, h in sorted(self.hosts.items())},
            "stopped": self.stopped,
            "bundle_trace_ms": self.bundle_trace_ms(),
            "bundle_trace_ms_max": self.bundle_trace_ms(max),
            "first_bundle_ms": self.first_bundle_ms,
        }


@dataclasses.dataclass
class Bundle:
    number: int
    job_id: str
    tasks: list[int]
    started_s: float = dataclasses.field(default_factory=time.monotonic)
    trace: dict[str, float] = dataclasses.field(default_factory=dict)

    def mark(self, step: str) -> None:
        """Note when ``step`` first happened (ms since the bundle started)."""
        self.trace.setdefault(step, round((time.monotonic() - self.started_s) * 1000, 1))


@dataclasses.dataclass
class BundleEnd:
    bundle: Bundle
    summary: dict[str, Any] | None  # None: the node does not know the job
    results: bundles.ResultBundle | None = None
    problem: str = ""
    outcomes: list[TaskOutcome] = dataclasses.field(default_factory=list)  # already emitted


Emit = Callable[[list[TaskOutcome]], Any]
Prepare = Callable[[list[str]], Any]  # the names of a bundle's tasks, as it starts


def check_budget(options: BatchOptions) -> None:
    """Before anything is sent: can the budget pay even one task?"""
    budget = options.budget_mc
    one = options.task_cost_mc_max()
    if budget is not None and budget < one:
        raise BatchError(
            f"a budget of {budget / MC_PER_CREDIT:g} credits is less than one task can cost "
            f"({one / MC_PER_CREDIT:g} credits: {options.replicas_max} replicas at "
            f"--max-price {options.max_price_mc_per_tfuel} and --fuel {options.fuel_max}); "
            "raise --budget or lower --max-price or --fuel"
        )


def batch_id_for(module: bytes, fingerprint: bytes, outputs: str, options: BatchOptions) -> str:
    """The same module, inputs, outputs and replicas name the same batch: a rerun resumes it."""
    seed = hashlib.sha256(module).digest() + fingerprint + outputs.encode()
    seed += f"{options.replicas}/{options.replicas_max}/{options.fuel_max}".encode()
    return hashlib.sha256(seed).hexdigest()[:16]


class BatchRunner:
    def __init__(
        self,
        client: AsyncClient,
        module: Path,
        source: TaskSource,
        options: BatchOptions,
        *,
        batch_id: str,
        journal: Journal,
        emit: Emit,
        on_progress: Callable[[BatchStats], None] = lambda stats: None,
        prepare: Prepare | None = None,
    ) -> None:
        self.client, self.module, self.source, self.options = client, module, source, options
        self.journal, self.emit, self.on_progress = journal, emit, on_progress
        self.prepare = prepare
        self.state = bytearray(len(source))
        self.attempts = bytearray(len(source))
        self.queue: deque[int] = deque()
        self.in_flight: dict[int, Bundle] = {}
        self.reserved_mc: dict[int, int] = {}
        self.stats = BatchStats(batch_id, len(source), budget_mc=options.budget_mc)
        self.size = options.bundle_tasks_first
        self.cancelled = False
        self._recovered: list[Bundle] = []
        self._numbers = 0
        self._module_hash = ""
        self._runtime = runtime_for(module, options.runtime)

    async def run(self) -> BatchStats:
        check_budget(self.options)
        self._recovered = self._replay()
        if self.cancelled:
            self.stats.stopped = "cancelled"
            return self.stats
        if self.options.fuel_per_s <= 0:
            rate = calibrated_fuel_per_s(self.client.home)
            self.options = dataclasses.replace(self.options, fuel_per_s=rate)
        if self.options.bundles_in_flight <= 0:
            offers = (await self.client.market()).get("offers", [])
            in_flight = bundles_in_flight_for(offers, self.options.replicas)
            self.options = dataclasses.replace(self.options, bundles_in_flight=in_flight)
        data = module_bytes(self.module)
        self._module_hash = await self.client.put_blob(data)
        self.on_progress(self.stats)
        try:
            await self._run_bundles()
        except BaseExceptionGroup as group:  # the node went away, or an input went missing
            found = group.subgroup(lambda exc: isinstance(exc, HearthError))
            if found is None:
                raise
            first = found.exceptions[0]
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None
        if not self.stats.stopped and self.stats.verified + self.stats.failed < self.stats.tasks:
            self.stats.stopped = "budget" if self.options.budget_mc is not None else "incomplete"
        if self.cancelled:
            self.stats.stopped = "cancelled"
        return self.stats

    async def _run_bundles(self) -> None:
        recovered = self._recovered
        send, receive = anyio.create_memory_object_stream[BundleEnd](math.inf)
        async with anyio.create_task_group() as group:
            for bundle in recovered:
                self._start(bundle)
                self._prepare(bundle, group)
                group.start_soon(self._follow, bundle, send)
            while True:
                while not self.cancelled and self._room():
                    fresh = self._next_bundle()
                    if fresh is None:
                        break
                    self._start(fresh)
                    self._prepare(bundle=fresh, group=group)
                    group.start_soon(self._publish, fresh, send)
                if not self.in_flight:
                    break
                await self._finish(await receive.receive())
                self.on_progress(self.stats)

    def _prepare(self, bundle: Bundle, group: anyio.abc.TaskGroup) -> None:
        """Let the caller get ready for the bundle's outputs while it runs (the CLI makes the
        files' inodes then, not all at the end)."""
        if self.prepare is not None:
            names = [self.source.name(index) for index in bundle.tasks]
            group.start_soon(_maybe_await, self.prepare(names))

    # Journal replay

    def _replay(self) -> list[Bundle]:
        """Verified tasks stay done; bundles published but not ended are followed again."""
        open_bundles: dict[int, Bundle] = {}
        for record in self.journal.records:
            kind = record.get("kind")
            if kind == "bundle":
                number = int(record["no"])
                open_bundles[number] = Bundle(number, record["job"], list(record["tasks"]))
                self._numbers = max(self._numbers, number + 1)
            elif kind == "done":
                bundle = open_bundles.pop(int(record["no"]), None)
                self.stats.spent_mc += int(record.get("paid_mc", 0))
                if bundle is None:
                    continue
                for index in bundle.tasks:
                    self.state[index] = QUEUED
                for index in record.get("verified", []):
                    self.state[index] = VERIFIED
                for index in record.get("failed", []):
                    self.state[index] = FAILED
            elif kind == "lost":  # verified, but its output file is gone: run it again
                for index in record.get("tasks", []):
                    self.state[index] = QUEUED
            elif kind == "cancel":
                self.cancelled = True
        self.cancelled = self.cancelled or self.journal.cancelled()
        self.stats.verified = self.state.count(VERIFIED)
        self.stats.failed = self.state.count(FAILED)
        followed = {i for bundle in open_bundles.values() for i in bundle.tasks}
        self.queue.extend(
            i for i in range(len(self.state)) if self.state[i] == QUEUED and i not in followed
        )
        return list(open_bundles.values())

    # Scheduling

    def _room(self) -> bool:
        if self.journal.cancelled():
            self.cancelled = True
        return bool(self.queue) and len(self.in_flight) < self.options.bundles_in_flight

    def _affordable(self, tasks: int) -> int:
        """How many of ``tasks`` the budget still covers at their worst case."""
        if self.options.budget_mc is None:
            return tasks
        left = self.options.budget_mc - self.stats.spent_mc - sum(self.reserved_mc.values())
        return max(0, min(tasks, left // max(1, self.options.task_cost_mc_max())))

    def _next_bundle(self) -> Bundle | None:
        # Each slot's fair share of the work not yet done: the first wave is spread evenly
        # over every slot, and bundles shrink as the queue drains, so the tail is short.
        left = len(self.queue) + self.stats.running
        spread = -(-left // self.options.bundles_in_flight)
        size = min(self.size, self.options.tasks_by_fuel_max())
        count = self._affordable(min(size, max(spread, self.options.bundle_tasks_min)))
        count = min(count, len(self.queue))
        if count == 0:
            return None
        tasks = [self.queue.popleft() for _ in range(count)]
        bundle = Bundle(self._numbers, secrets.token_hex(16), tasks)
        self._numbers += 1
        return bundle

    def _start(self, bundle: Bundle) -> None:
        if not self.stats.first_bundle_ms:
            self.stats.first_bundle_ms = round((time.monotonic() - self.stats.started_s) * 1000, 1)
        self.in_flight[bundle.number] = bundle
        self.reserved_mc[bundle.number] = len(bundle.tasks) * self.options.task_cost_mc_max()
        for index in bundle.tasks:
            self.state[index] = RUNNING
        self.stats.running += len(bundle.tasks)

    async def _publish(self, bundle: Bundle, send: Any) -> None:
        inputs: list[bytes] = []
        size = 0
        for position, index in enumerate(bundle.tasks):
            data = self.source.read(index)
            size += len(data)
            if size > self.options.bundle_bytes_max and inputs:
                self._requeue_tail(bundle, position)  # keep a bundle within its byte bound
                break
            inputs.append(data)
        options = self.options
        payload = bundles.TaskBundle(options.fuel_max, options.output_bytes_max, tuple(inputs))
        self.journal.append(
            {"kind": "bundle", "no": bundle.number, "job": bundle.job_id, "tasks": bundle.tasks}
        )
        if self.journal.cancelled():  # cancelled from another process: publish nothing more
            self.cancelled = True
            await send.send(BundleEnd(bundle, None, problem="cancelled"))
            return
        input_hash = await self.client.put_blob(payload.encode())
        bundle.mark("stored")
        fuel_max = min(options.fuel_max * len(inputs), bundles_fuel_cap())
        body = {
            "runtime": self._runtime,
            "module_hash": self._module_hash,
            "input_hash": input_hash,
            "fuel_max": fuel_max,
            "memory_mb_max": options.memory_mb_max,
            "deadline_s": options.deadline_s,
            "replicas": options.replicas,
            "replicas_max": options.replicas_max,
            "max_price_mc_per_tfuel": options.max_price_mc_per_tfuel,
            "prefer": options.prefer,
            "bid_window_ms": options.bid_window_ms,
            "job_id": bundle.job_id,
        }
        await self.client.publish(body)
        bundle.mark("published")
        await self._follow(bundle, send)

    def _requeue_tail(self, bundle: Bundle, position: int) -> None:
        tail = bundle.tasks[position:]
        del bundle.tasks[position:]
        for index in reversed(tail):
            self.state[index] = QUEUED
            self.queue.appendleft(index)
        self.stats.running -= len(tail)
        self.reserved_mc[bundle.number] = len(bundle.tasks) * self.options.task_cost_mc_max()

    async def _follow(self, bundle: Bundle, send: Any) -> None:
        """Wait for the bundle's job to end on the node; fetch and check its results."""
        try:
            async for event in self.client.events(bundle.job_id):
                bundle.mark(str(event.get("phase", "")))
            bundle.mark("ended")
            summary = await self.client.job(bundle.job_id)
        except HearthError as exc:
            if "no job published" not in str(exc):
                raise
            await send.send(BundleEnd(bundle, None, problem="the node does not know it"))
            return
        if summary["state"] != "accepted" or summary.get("error_kind"):
            await send.send(BundleEnd(bundle, summary, problem=summary.get("reason", "")))
            return
        try:
            data = await self._result_blob(summary["result_hash"])
            results = bundles.decode_results(data, len(bundle.tasks))
        except (HearthError, bundles.BundleError) as exc:
            await send.send(BundleEnd(bundle, summary, problem=str(exc)))
            return
        bundle.mark("fetched")
        # Emitted (the CLI writes the output files) here, in the bundle's own task, so that a
        # bundle's outputs are written while others are still settling, not after them all.
        outcomes = [
            TaskOutcome(
                index,
                self.source.name(index),
                result.ok,
                result.output,
                result.error_kind,
                result.exit_code,
                result.fuel_used,
            )
            for index, result in zip(bundle.tasks, results.results, strict=True)
        ]
        await _maybe_await(self.emit(outcomes))  # outputs written before the journal says so
        bundle.mark("written")
        await send.send(BundleEnd(bundle, summary, results, outcomes=outcomes))

    async def _result_blob(self, digest: str) -> bytes:
        """The accepted output: a large one arrives from a worker just after the job is paid, so
        the node is asked to answer as soon as it has stored it (a long poll, not a retry)."""
        return await self.client.blob(digest, wait_s=RESULT_FETCH_S_MAX)

    # Results

    async def _finish(self, end: BundleEnd) -> None:
        bundle = end.bundle
        self.in_flight.pop(bundle.number, None)
        self.reserved_mc.pop(bundle.number, None)
        self.stats.running -= len(bundle.tasks)
        paid_mc = 0 if end.summary is None else int(end.summary.get("paid_mc", 0))
        self.stats.spent_mc += paid_mc
        self.stats.bundles += 1
        if end.results is None:
            await self._failed_bundle(bundle, end, paid_mc)
            return
        verified = [o.index for o in end.outcomes if o.ok]
        failed = [o.index for o in end.outcomes if not o.ok]
        digests = [output_digest(o.output) for o in end.outcomes if o.ok]
        record = {"kind": "done", "no": bundle.number, "paid_mc": paid_mc}
        self.journal.append(record | {"verified": verified, "failed": failed, "digests": digests})
        bundle.mark("journaled")
        for index in verified:
            self.state[index] = VERIFIED
        for index in failed:
            self.state[index] = FAILED
        self.stats.verified += len(verified)
        self.stats.failed += len(failed)
        self.stats.traces.append(bundle.trace)
        assert end.summary is not None
        self._tally(end.summary, len(bundle.tasks))
        if self._verified_quickly(bundle, int(end.summary.get("fuel_used", 0))):
            self.size = min(self.options.bundle_tasks_max, self.size * self.options.bundle_growth)

    def _verified_quickly(self, bundle: Bundle, fuel_used: int) -> bool:
        """Grow while a bundle verifies well within its deadline and a bigger one would still
        run (at its fuel, on a host of our rate) in a quarter of it: the fixed cost of a bundle
        is then worth spreading over more tasks."""
        elapsed_s = time.monotonic() - bundle.started_s
        run_s = self.options.bundle_growth * fuel_used / max(1, self.options.fuel_per_s)
        return elapsed_s < self.options.deadline_s / 2 and run_s < self.options.deadline_s / 4

    async def _failed_bundle(self, bundle: Bundle, end: BundleEnd, paid_mc: int) -> None:
        self.stats.bundles_failed += 1
        self.journal.append({"kind": "done", "no": bundle.number, "paid_mc": paid_mc})
        if end.summary is not None:
            self._tally(end.summary, 0)
        cancelled = end.problem == "cancelled" or (
            end.summary is not None and end.summary.get("cause") == "cancelled"
        )
        self.cancelled = self.cancelled or cancelled  # `hearth job cancel` stopped the batch
        self.size = max(1, self.size // 2)
        cause = "" if end.summary is None else str(end.summary.get("cause", ""))
        # Busy or absent hosts may free up: such a failure costs a task less of its attempts.
        transient = cause in {c.value for c in TRANSIENT_CAUSES} or end.summary is None
        attempts_max = self.options.attempts_max * (TRANSIENT_ATTEMPTS_FACTOR if transient else 1)
        given_up = []
        for index in bundle.tasks:
            self.attempts[index] += 0 if cancelled else 1
            if self.attempts[index] >= attempts_max:
                self.state[index] = FAILED
                given_up.append(index)
            else:
                self.state[index] = QUEUED
                self.queue.append(index)
        if given_up:
            self.stats.failed += len(given_up)
            reason = end.problem or "its bundles kept failing"
            await _maybe_await(
                self.emit(
                    [
                        TaskOutcome(i, self.source.name(i), False, b"", "not-run", -1, 0, reason)
                        for i in given_up
                    ]
                )
            )

    def _tally(self, summary: dict[str, Any], tasks: int) -> None:
        for replica in summary.get("replicas_detail", []):
            tally = self.stats.hosts.setdefault(str(replica["worker"]), HostTally())
            if replica.get("verdict") == "match":
                tally.tasks += tasks
                tally.fuel += int(replica.get("fuel_used", 0))
                tally.paid_mc += int(replica.get("paid_mc", 0))
            elif replica.get("verdict") == "mismatch":
                tally.mismatches += 1


def bundles_in_flight_for(offers: Sequence[dict[str, Any]], replicas: int) -> int:
    """Bundles to keep in flight: every core the market's hosts offer runs one bundle's replica
    (a bundle's tasks run in series in one warm worker), and as many again wait in the hosts'
    backlogs, so that the next bundle's auction and fetch overlap the run before it."""
    cores = sum(max(1, int(offer.get("cores_offered", 1))) for offer in offers)
    return max(1, PIPELINE_DEPTH * cores // max(1, replicas))


def runner_for(
    client: AsyncClient, module: Path, source: TaskSource, options: dict[str, Any], emit: Emit
) -> BatchRunner:
    """A runner for ``Client.map``: no journal (the caller holds the inputs), a fresh id."""
    try:
        chosen = BatchOptions(**options)
    except TypeError as exc:
        raise BatchError(f"batch options: {exc}") from None
    return BatchRunner(
        client,
        module,
        source,
        chosen,
        batch_id=secrets.token_hex(8),
        journal=Journal(None),
        emit=emit,
    )


def calibrated_fuel_per_s(home: Path) -> int:
    """The fuel rate this node measured at its first start, or the fallback."""
    try:
        value = json.loads((home / "calibration.json").read_text())["fuel_per_s"]
    except (OSError, ValueError, KeyError, TypeError):
        return FUEL_PER_S_FALLBACK
    return value if isinstance(value, int) and value > 0 else FUEL_PER_S_FALLBACK


def bundles_fuel_cap() -> int:
    from hearth.protocol import limits

    return limits.JOB_FUEL_MAX


async def _maybe_await(value: Any) -> None:
    if hasattr(value, "__await__"):
        await value


def iterate_in_thread(run: Callable[[Emit], Any]) -> Iterator[TaskOutcome]:
    """Run an async batch in a worker thread and yield its outcomes here as they arrive."""
    import queue
    import threading

    items: queue.Queue[Any] = queue.Queue()
    end = object()
    failure: list[BaseException] = []

    def worker() -> None:
        try:
            anyio.run(run, lambda outcomes: items.put(outcomes))
        except BaseException as exc:  # handed to the caller's thread below
            failure.append(exc)
        finally:
            items.put(end)

    thread = threading.Thread(target=worker, name="hearth-batch", daemon=True)
    thread.start()
    while True:
        got = items.get()
        if got is end:
            break
        yield from got
    thread.join()
    if failure:
        raise failure[0]
