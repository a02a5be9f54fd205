"""The node's part of a job: blobs, the sandbox, saved publisher state and progress for the API.

It carries out the job effects the engine returns (FetchBlob, RunJob, AbortJob, JobProgress,
SaveJob) and feeds their outcomes back as events. Publisher state is saved as one file per job
(written to a temporary file, synced, renamed) and handed back to the engine as ``JobRestored``
events when the node starts, so a publisher killed mid-job resumes it or cancels it with signed
messages.

A write the disk refuses (``OSError``: a full disk) never fails the job or the node: a job's
state and an output blob that could not be written stay in memory (``unsaved``,
``unsaved_blobs``), ``disk_failure`` says why (the node is then degraded and takes no work,
node/health.py), and ``save_pending`` writes them once there is room.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from hearth.node import chunks
from hearth.node.blobs import BlobError, BlobStore, BlobUse, blob_hash
from hearth.node.driver import Driver
from hearth.node.files import write_atomically
from hearth.node.jobio import JobFiles
from hearth.node.logs import log
from hearth.node.plugins import NodePlugin
from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime
from hearth.node.sandbox.pool import SandboxPool
from hearth.protocol import bundles, limits
from hearth.protocol.effects import AbortJob, FetchBlob, JobProgress, RunJob, SaveJob
from hearth.protocol.events import BlobFetched, BlobFetchFailed, JobExecuted, JobRestored
from hearth.protocol.job_messages import EXIT_CODE_NONE, HOST_ERROR_KINDS, JobId, stderr_tail

EVENTS_PER_JOB_MAX = 256
BLOB_SWEEP_INTERVAL_S = 60.0
OUTPUT_BYTES_MAX = limits.BLOB_BYTES_MAX
TERMINAL_PHASES = frozenset({"paid", "failed"})
PROBE_FILE_NAME = ".space-probe"
PROBE_BYTES = 1 << 20  # room for this means room for job states and small blobs again
UNSAVED_BLOB_BYTES_MAX = 2 * limits.BLOB_BYTES_MAX  # outputs held in memory while the disk is full


@dataclasses.dataclass
class JobLog:
    """Progress events of one job published here, for `hearth job run` and the SDK."""

    events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    changed: trio.Event = dataclasses.field(default_factory=trio.Event)
    done: bool = False

    def add(self, event: dict[str, Any]) -> None:
        if len(self.events) < EVENTS_PER_JOB_MAX or event["phase"] in TERMINAL_PHASES:
            self.events.append(event)
        self.done = self.done or event["phase"] in TERMINAL_PHASES
        self.changed.set()
        self.changed = trio.Event()


class JobService:
    def __init__(
        self,
        home: Path,
        driver: Driver,
        blobs: BlobStore,
        pool: SandboxPool,
        plugin: NodePlugin | None = None,
    ) -> None:
        self.driver = driver
        self.plugin = plugin  # None on every node but a testnet's adversaries (node/plugins.py)
        self.blobs = blobs
        self.files = JobFiles(home, blobs, driver.transport)  # chunks, /input and /output
        self.pool = pool
        self.jobs_dir = home / "jobs"
        self.jobs_dir.mkdir(exist_ok=True)
        self.logs: dict[bytes, JobLog] = {}
        self._running: dict[bytes, trio.CancelScope] = {}
        self._restored = False  # until saved jobs are back, every blob on disk may be needed
        blobs.in_use = self._blobs_in_use
        self.unsaved: dict[bytes, bytes] = {}  # job id -> its latest state not yet on disk
        self.unsaved_blobs: dict[bytes, bytes] = {}  # hash -> blob not yet on disk
        self.disk_failure: str | None = None
        self.on_disk_change: Callable[[], object] = lambda: None
        driver.interpreter.register(FetchBlob, self._fetch)
        driver.interpreter.register(RunJob, self._run)
        driver.interpreter.register(AbortJob, self._abort)
        driver.interpreter.register(JobProgress, self._progress)
        driver.interpreter.register(SaveJob, self._save)
        driver.flush_saves = self.flush_saves
        self._writing = trio.Lock()
        self._blob_stored = trio.Event()  # set, then replaced, whenever a fetch stores a blob

    def has_saved(self) -> bool:
        return any(self.jobs_dir.glob("*.state"))

    async def restore_saved(self) -> int:
        """Hand every saved publisher job back to the engine (``JobRestored``); return how many
        it took (one it could not, a damaged file, is logged by the driver's boundary).

        Each goes through the driver's queue and is taken before the next is read, so that
        every saved job is back in the engine before blobs are swept by what it needs.
        A paid job replays its pays (the chain skips those it holds); they are committed before
        this returns.
        """
        count = 0
        for path in sorted(self.jobs_dir.glob("*.state")):
            job_id = bytes.fromhex(path.stem)
            self.log_for(job_id)
            count += await self.driver.call(JobRestored(path.read_bytes()))
        await self.driver.carry_out_commits()
        self._restored = True
        return count

    def _blobs_in_use(self) -> BlobUse:
        """What the engine's work needs, asked at the moment the store must choose."""
        if not self._restored:
            return BlobUse(pinned=self.blobs.digests())
        engine = self.driver.engine
        needed, results = engine.publisher.blobs_in_use()
        expand = self.files.index.expand  # a bundle or tree pins its chunks with it
        pinned = expand(needed | engine.worker.blobs_in_use())
        return BlobUse(pinned=pinned, retained=expand(results))

    async def sweep_blobs(self) -> None:
        """Delete blobs no work needs once their grace period is over, for as long as we run."""
        while True:
            await trio.sleep(BLOB_SWEEP_INTERVAL_S)
            freed = self.blobs.sweep()
            if freed:
                fields: dict[str, Any] = {"bytes": freed, **self.blobs.statistics()}
                log("info", "blobs-swept", **fields)

    def log_for(self, job_id: bytes) -> JobLog:
        if job_id not in self.logs and len(self.logs) >= limits.PUBLISHER_JOBS_KEPT_MAX:
            del self.logs[next(iter(self.logs))]  # oldest first, as the engine forgets its jobs
        return self.logs.setdefault(job_id, JobLog())

    def blob(self, digest: bytes) -> bytes | None:
        """A blob from the store, or one held in memory until the disk has room for it."""
        return self.unsaved_blobs.get(digest) or self.blobs.get(digest)

    async def wait_blob(self, digest: bytes, wait_s: float) -> bytes | None:
        """The blob, waiting up to ``wait_s`` for a fetch to store it: a job's large output
        arrives from a worker just after the job is paid, and its publisher's client asks at once.
        """
        with trio.move_on_after(wait_s):
            while (data := self.blob(digest)) is None:
                await self._blob_stored.wait()
            return data
        return None

    def _note_blob_stored(self) -> None:
        self._blob_stored.set()
        self._blob_stored = trio.Event()

    def note_failed_write(self, what: str, exc: OSError) -> None:
        """A write elsewhere (an uploaded blob) met a full disk: degrade until a probe passes."""
        self._failed_write(what, exc)

    def _failed_write(self, what: str, exc: OSError) -> None:
        if self.disk_failure is None:  # one line per outage, not one per write
            log("error", "write-failed", what=what, error=str(exc))
        self.disk_failure = f"{what}: {exc}"
        self.on_disk_change()

    def _keep_blob(self, data: bytes, expected: bytes | None = None, owner: str = "") -> bool:
        """Store ``data``; if the disk refuses it, hold it in memory (bounded) and say why.

        False if it is held nowhere: over a quota, or the disk is full and memory too.
        """
        digest = blob_hash(data)
        try:
            self.blobs.put(data, expected=expected or digest, owner=owner)
        except OSError as exc:
            held = sum(len(b) for b in self.unsaved_blobs.values())
            kept = held + len(data) <= UNSAVED_BLOB_BYTES_MAX and digest == (expected or digest)
            if kept:
                self.unsaved_blobs[digest] = data
            self._failed_write("blob", exc)
            return kept
        except BlobError as exc:
            log("warning", "blob-not-kept", blob=digest.hex()[:16], reason=str(exc))
            return False
        return True

    def save_pending(self) -> bool:
        """Write every job state and blob held in memory; False if the disk still refuses."""
        try:
            for job_id, state in list(self.unsaved.items()):
                write_atomically(self._state_path(job_id), state)
                del self.unsaved[job_id]
            for digest, data in list(self.unsaved_blobs.items()):
                self.blobs.put(data, expected=digest)
                del self.unsaved_blobs[digest]
            if self.disk_failure is not None:  # a fetched blob may have failed: is there room?
                probe = self.jobs_dir / PROBE_FILE_NAME
                write_atomically(probe, bytes(PROBE_BYTES))
                probe.unlink()
        except OSError as exc:
            self._failed_write(_what_failed(self.unsaved, self.unsaved_blobs), exc)
            return False
        if self.disk_failure is not None:
            self.disk_failure = None
            log("info", "writes-saved")
            self.on_disk_change()
        return True

    def _keep_inline(self, effect: FetchBlob, owner: str) -> bool:
        """Store a blob that came inside an award (ADR 0031); False: fetch it instead."""
        if chunks.kind_of(effect.data) == "bundle":
            return False  # its chunks are fetched with it: the fetch path knows how
        try:
            self.blobs.put(effect.data, expected=effect.blob_hash, owner=owner)
        except (BlobError, OSError):
            return False
        return True

    def _state_path(self, job_id: bytes) -> Path:
        return self.jobs_dir / f"{job_id.hex()}.state"

    async def _fetch(self, effect: FetchBlob) -> None:
        # The accepted output of a job we published is our user's result, not the worker's load.
        _, results = self.driver.engine.publisher.blobs_in_use()
        owner = "" if effect.blob_hash in results else effect.peer
        if effect.data and self._keep_inline(effect, owner):
            self._note_blob_stored()
            await self.driver.submit(BlobFetched(effect.blob_hash))
            return
        try:
            await self.files.fetch(effect.peer, effect.blob_hash, effect.size_bytes, owner)
        except BlobError as exc:
            await self.driver.submit(BlobFetchFailed(effect.blob_hash, str(exc)))
            return
        except OSError as exc:  # the blob arrived whole but the disk would not keep it
            self._failed_write("blob", exc)
            await self.driver.submit(BlobFetchFailed(effect.blob_hash, f"not stored: {exc}"))
            return
        self._note_blob_stored()
        await self.driver.submit(BlobFetched(effect.blob_hash))

    async def _run(self, effect: RunJob) -> None:
        if self.plugin is not None and self.plugin.drops_run(effect):
            return  # the award is kept and its lease runs out
        module = self.blobs.get(effect.module_hash)
        data = self.blobs.get(effect.input_hash)
        if module is None or data is None:
            await self.driver.submit(JobExecuted(effect.job_id, False, b"", b"", 0, "crashed"))
            return
        deadline_ms = max(1, effect.deadline_ms - self.driver.clock.now_ms())
        request = JobRequest(
            runtime=Runtime(effect.runtime),
            module=module,
            input=data,
            fuel_max=effect.fuel_max,
            memory_bytes_max=effect.memory_mb_max * 1024 * 1024,
            deadline_ms=deadline_ms,
            output_bytes_max=OUTPUT_BYTES_MAX,
            seed=effect.job_id,
        )
        try:
            with trio.CancelScope() as scope:
                self._running[effect.job_id] = scope
                try:
                    result = await self._run_files(effect, request, data)
                finally:
                    self._running.pop(effect.job_id, None)
        except BlobError as exc:  # a bundle that does not parse, or our disk: not the job's fault
            log("warning", "job-not-staged", job=effect.job_id.hex()[:16], error=str(exc))
            await self.driver.submit(JobExecuted(effect.job_id, False, b"", b"", 0, "crashed"))
            return
        finally:
            self.files.unstage(effect.job_id)
        if scope.cancelled_caught:
            return  # AbortJob: the award was cancelled and no event is expected
        output = result.output if result.ok else b""
        if self.plugin is not None and result.ok:
            output = self.plugin.transform_result(effect, output)
        digest = blob_hash(output)  # a failure reports the hash of no output
        if len(output) > limits.OUTPUT_INLINE_BYTES_MAX and not self._keep_blob(
            output, owner=self._publisher_of(effect.job_id)
        ):  # the publisher would fetch it from us, and we cannot hold it
            await self.driver.submit(JobExecuted(effect.job_id, False, b"", b"", 0, "crashed"))
            return
        log(
            "info",
            "job-executed",
            job=effect.job_id.hex()[:16],
            ok=result.ok,
            fuel_used=result.fuel_used,
            error=str(result.error_kind or ""),
        )
        await self.driver.submit(
            JobExecuted(
                JobId(effect.job_id),
                result.ok,
                digest,
                output,
                result.fuel_used,
                "" if result.error_kind is None else str(result.error_kind),
                EXIT_CODE_NONE if result.exit_code is None else result.exit_code,
                stderr_tail(result.stderr_tail),
            )
        )

    async def _run_files(self, effect: RunJob, request: JobRequest, data: bytes) -> ExecutionResult:
        """Run a plain job as it is; for a bundle, stage /input, run, and return the output tree
        (encoded) as the output when the job asked for one (ADR 0024); for a task bundle, run
        every task and return their results under one Merkle root (ADR 0033)."""
        if bundles.is_task_bundle(data):
            return await self._run_tasks(request, data)
        if chunks.kind_of(data) != "bundle":
            return await self.pool.run(request)
        bundle = chunks.decode_bundle(data)
        bytes_max = bundle.output_bytes_max  # the job's bound, so every replica has the same
        input_dir, output_dir = await trio.to_thread.run_sync(
            self.files.stage, effect.job_id, bundle
        )
        stdin = (
            b""
            if bundle.stdin is None
            else chunks.read_ref(self.blobs, bundle.stdin, limits.JOB_INPUT_BYTES_MAX)
        )
        request = dataclasses.replace(
            request,
            input=stdin,
            args=bundle.args,
            env=bundle.env,
            input_dir=str(input_dir) if bundle.files else "",
            output_dir=str(output_dir) if bundle.wants_tree else "",
            output_dir_bytes_max=bytes_max,
            output_files_max=bundle.output_files_max,
        )
        result = await self.pool.run(request)
        if not bundle.wants_tree or not result.ok:
            return result
        found = chunks.collect_output(output_dir, bytes_max, bundle.output_files_max)
        if isinstance(found, str):
            kind = ErrorKind.OUTPUT_TOO_LARGE
            return ExecutionResult.failure(result.runtime, kind, found, fuel_used=result.fuel_used)
        owner = self._publisher_of(effect.job_id)
        files = []
        for relative, path in found:  # read and hashed in a thread, filed in the store here
            ref, pieces = await trio.to_thread.run_sync(chunks.split_file, self.blobs.root, path)
            chunks.commit_pieces(self.blobs, pieces, owner)
            files.append((relative, ref))
        stdout = chunks.put_bytes(self.blobs, result.output, owner)
        encoded = chunks.Tree(stdout=stdout, files=tuple(files)).encode()
        self.files.index.note(blob_hash(encoded), encoded)
        return dataclasses.replace(result, output=encoded)

    async def _run_tasks(self, request: JobRequest, data: bytes) -> ExecutionResult:
        """Each task of the bundle in turn, in one warm sandbox worker and one call to it; one
        result for all.

        A task that fails by itself (a trap, no fuel, an exit status) is a verified result of
        that task; a host error (deadline, crash) in any task fails the bundle as a host error,
        as it would fail a job, so that no replica votes on the host's luck.
        """
        try:
            tasks = bundles.decode_tasks(data)
        except bundles.BundleError as exc:
            return ExecutionResult.failure(request.runtime, ErrorKind.CRASHED, str(exc))
        series = dataclasses.replace(
            request,
            input=b"",
            fuel_max=tasks.fuel_max,
            output_bytes_max=min(tasks.output_bytes_max, OUTPUT_BYTES_MAX),
        )
        ran = await self.pool.run_series(series, tasks.inputs)
        if isinstance(ran, ExecutionResult):
            return ran
        for result in ran:
            if result.error_kind is not None and str(result.error_kind) in HOST_ERROR_KINDS:
                return result
        results = [
            bundles.TaskResult(
                "" if result.error_kind is None else str(result.error_kind),
                result.output if result.ok else b"",
                result.fuel_used,
                EXIT_CODE_NONE if result.exit_code is None else result.exit_code,
                stderr_tail(result.stderr_tail),
            )
            for result in ran
        ]
        output = bundles.encode_results(results)
        fuel_used = sum(result.fuel_used for result in results)
        elapsed_ms = sum(result.elapsed_ms for result in ran)
        return ExecutionResult(
            request.runtime, output, fuel_used, exit_code=0, elapsed_ms=elapsed_ms
        )

    def _publisher_of(self, job_id: bytes) -> str:
        task = self.driver.engine.worker.tasks.get(JobId(job_id))
        return "" if task is None else str(task.publisher)

    def _abort(self, effect: AbortJob) -> None:
        scope = self._running.get(effect.job_id)
        if scope is not None:
            scope.cancel()

    def _progress(self, effect: JobProgress) -> Awaitable[None] | None:
        fetch = None
        if effect.phase == "paid":
            self._keep_inline_output(effect.job_id)
            fetch = self._output_files(effect.job_id)
        self.log_for(effect.job_id).add(
            {
                "ts_ms": self.driver.clock.now_ms(),
                "phase": effect.phase,
                "detail": effect.detail,
                "results": effect.results,
                "replicas": effect.replicas,
                "cause": effect.cause,
            }
        )
        return fetch

    def _output_files(self, job_id: bytes) -> Awaitable[None] | None:
        """The accepted output's files, if it is a tree: fetched from the workers that agreed."""
        summary = self.driver.engine.publisher.summary(JobId(job_id))
        if summary is None or summary.error_kind:
            return None
        data = summary.output or self.blobs.get(summary.output_hash)
        if data is None or chunks.kind_of(data) != "tree":
            return None
        workers = [str(r.worker) for r in summary.replicas_detail if r.verdict == "match"]
        self.files.index.note(summary.output_hash, data)
        return self.files.fetch_output(job_id, data, workers)

    def _keep_inline_output(self, job_id: bytes) -> None:
        """An accepted output that came inline in a reveal goes into the blob store too."""
        summary = self.driver.engine.publisher.summary(JobId(job_id))
        if summary is not None and summary.output and not self.blobs.has(summary.output_hash):
            self._keep_blob(summary.output, expected=summary.output_hash)

    async def flush_saves(self) -> None:
        """Write the kept job states on a worker thread: the latest of each job, in one batch.

        A state that changed while the batch was written stays kept for the next flush. While
        the disk refuses writes (``disk_failure``) the states stay in memory, as ``_save`` keeps
        them, and ``save_pending`` writes them once there is room.
        """
        async with self._writing:
            batch = dict(self.unsaved)
            if not batch or self.disk_failure is not None:
                return
            try:
                await trio.to_thread.run_sync(_write_states, self.jobs_dir, batch)
            except OSError as exc:
                self._failed_write("job state", exc)
                return
            for job_id, state in batch.items():
                if self.unsaved.get(job_id) is state:
                    del self.unsaved[job_id]

    def _save(self, effect: SaveJob) -> Awaitable[None]:
        """Keep the job's state and write it behind, off the event loop (ADR 0031); what acts on
        it waits in the engine's ``AwaitSaves``. If the disk refuses, the latest stays in memory
        for a retry."""
        self.unsaved[effect.job_id] = effect.state
        return self.flush_saves()


def _write_states(jobs_dir: Path, states: dict[bytes, bytes]) -> None:
    for job_id, state in states.items():
        write_atomically(jobs_dir / f"{job_id.hex()}.state", state)


def _what_failed(unsaved: dict[bytes, bytes], unsaved_blobs: dict[bytes, bytes]) -> str:
    return "job state" if unsaved else "blob" if unsaved_blobs else "disk"
