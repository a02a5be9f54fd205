"""`hearth job map`, `resume` and `cancel`: batches of tasks in verified bundles (ADR 0033).

A batch's record lives in the node's home (``batches/<id>/``): the arguments it was started with
(``args.json``, for `hearth job resume ID`) and its journal (hearth.batch). The same arguments
name the same batch, so running `hearth job map` again after a crash or a restart goes on where
it stopped and pays for no task twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import anyio
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from hearth.batch import (
    JOURNAL_NAME,
    MC_PER_CREDIT,
    BatchError,
    BatchOptions,
    BatchRunner,
    BatchStats,
    FileTasks,
    Journal,
    TaskOutcome,
    batch_id_for,
    check_budget,
    output_digest,
)
from hearth.client import AsyncClient, HearthError, module_bytes
from hearth.node import paths
from hearth.node.commands.common import CommandError, print_json

ARGS_NAME = "args.json"
FAILED_SHOWN_MAX = 5
PARTIAL_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
SCRATCH_FLAGS = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
SCRATCH_FILES_PER_CALL = 64  # a bundle's results wait behind at most this many files made ahead


def batches_dir() -> Path:
    return paths.data_dir() / "batches"


@dataclasses.dataclass(frozen=True)
class MapArgs:
    module: str
    inputs: str
    outputs: str
    options: dict[str, Any]


def _options(args: MapArgs) -> BatchOptions:
    try:
        options = BatchOptions(**args.options)
    except TypeError as exc:
        raise CommandError(f"batch options: {exc}") from None
    if not 1 <= options.replicas <= options.replicas_max:
        raise CommandError("--replicas must be at least 1 and at most --replicas-max")
    if options.max_price_mc_per_tfuel < 0 or options.fuel_max <= 0:
        raise CommandError("--max-price must be 0 or more and --fuel more than 0")
    if options.budget_mc is not None and options.budget_mc <= 0:
        raise CommandError("--budget must be more than 0 credits")
    if not 1 <= options.bundle_tasks_first <= options.bundle_tasks_max:
        raise CommandError(f"--bundle-tasks must be from 1 to {options.bundle_tasks_max}")
    return options


def _read_module(path: Path) -> bytes:
    if not path.is_file():
        raise CommandError(f"no module at {path}")
    try:
        return module_bytes(path)
    except (HearthError, OSError) as exc:
        raise CommandError(str(exc)) from None


def start(args: MapArgs, json_output: bool) -> None:
    """Check everything that can be checked here, then run (or resume) the batch."""
    options = _options(args)
    try:
        check_budget(options)
        source = FileTasks(args.inputs)
    except BatchError as exc:
        raise CommandError(str(exc)) from None
    outputs = Path(args.outputs).resolve()
    if outputs.exists() and not outputs.is_dir():
        raise CommandError(f"--outputs {args.outputs} is a file; give a folder")
    module = _read_module(Path(args.module))
    batch_id = batch_id_for(module, source.fingerprint(), str(outputs), options)
    home = batches_dir() / batch_id
    try:
        outputs.mkdir(parents=True, exist_ok=True)
        home.mkdir(parents=True, exist_ok=True)
        (home / ARGS_NAME).write_text(json.dumps(dataclasses.asdict(args)))
    except OSError as exc:
        raise CommandError(f"cannot prepare the batch: {exc}") from None
    journal = Journal(home / JOURNAL_NAME)
    missing = _missing_outputs(journal, source, outputs)
    if missing:
        journal.append({"kind": "lost", "tasks": missing})
        Console(stderr=True).print(f"{len(missing)} verified outputs are missing: re-running them")
    stats = anyio.run(_run, args, options, source, outputs, batch_id, journal, json_output)
    _report(stats, json_output)


def write_outputs(folder: Path, files: list[tuple[str, bytes]]) -> None:
    """Write a bundle's output files, each whole under its name or not at all (ADR 0033,
    amendments of 2026-12-03).

    A file is written beside its name and renamed into place, so a reader (or a runner killed
    mid-write) never finds half an output. Nothing is synced here: the journal keeps each
    verified output's digest, and a resumed batch re-runs every task whose file is missing or
    differs from it (``_missing_outputs``). A killed runner loses nothing (the page cache
    outlives the process); a power cut may lose the last outputs, which the next run finds and
    runs again. A sync per bundle cost 0.3-0.7 s at the end of a 1,000-task batch here, as long
    as the tasks' own run, because it waits for everything the disk holds unwritten. Names are
    resolved against the folder's descriptor, so each file costs no path walk.
    """
    if not files:
        return
    folder_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name, data in files:
            partial = _scratch_name(name)
            fd = os.open(partial, PARTIAL_FLAGS, 0o644, dir_fd=folder_fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(partial, name, src_dir_fd=folder_fd, dst_dir_fd=folder_fd)
    finally:
        os.close(folder_fd)


class _Outputs:
    """The batch's output folder: each task's scratch file made ahead while its bundle runs,
    then written and renamed into place when its bundle is verified (``write_outputs``).

    Making a file is the costly part of writing a small output: its inode is allocated with
    the folder locked, and on ext4 without a journal each allocation probes every inode of the
    group deleted in the last minutes (0.03-0.6 ms a file on this machine, from one minute to
    the next). Made ahead, those costs fall while the bundle runs on the hosts, instead of all
    at once after the last bundle is verified, when nothing else is left to do. The scratch
    files are empty and hidden (``.NAME.part``); the ones left when the batch ends (its task
    failed, or the batch stopped) are removed, and a run killed before that leaves them for
    the same command to use again. Called from one thread at a time.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: set[str] = set()
        self.written: set[str] = set()

    def make_scratch(self, names: list[str]) -> None:
        try:
            folder_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            return  # only a head start: writing the outputs reports what is wrong
        try:
            for name in names:
                if name in self.written or name in self.made:
                    continue
                try:
                    os.close(os.open(_scratch_name(name), SCRATCH_FLAGS, 0o644, dir_fd=folder_fd))
                except OSError:
                    return
                self.made.add(name)
        finally:
            os.close(folder_fd)

    def write(self, files: list[tuple[str, bytes]]) -> None:
        write_outputs(self.folder, files)
        for name, _ in files:
            self.written.add(name)
            self.made.discard(name)

    def remove_scratch(self) -> None:
        for name in sorted(self.made):
            with contextlib.suppress(OSError):
                os.unlink(self.folder / _scratch_name(name))
        self.made.clear()


def _scratch_name(name: str) -> str:
    return f".{name}.part"


def _missing_outputs(journal: Journal, source: FileTasks, outputs: Path) -> list[int]:
    """Tasks the journal calls verified whose output file is gone or is not the output that
    was verified (deleted, edited, or a write lost to a power cut): they run again."""
    verified: dict[int, str] = {}
    for record in journal.records:
        if record.get("kind") == "done":
            indexes = record.get("verified", [])
            digests = record.get("digests") or [""] * len(indexes)  # older journals: none
            verified.update(zip(indexes, digests, strict=False))
        elif record.get("kind") == "lost":
            for index in record.get("tasks", []):
                verified.pop(index, None)
    return sorted(
        i for i, digest in verified.items() if not _output_holds(outputs / source.name(i), digest)
    )


def _output_holds(path: Path, digest: str) -> bool:
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return False
    return not digest or output_digest(data) == digest


async def _run(
    args: MapArgs,
    options: BatchOptions,
    source: FileTasks,
    outputs: Path,
    batch_id: str,
    journal: Journal,
    json_output: bool,
) -> BatchStats:
    failed: list[TaskOutcome] = []

    outputs_out = _Outputs(outputs)

    def write(outcomes: list[TaskOutcome]) -> None:
        try:
            outputs_out.write([(o.name, o.output) for o in outcomes if o.ok])
        except OSError as exc:  # the bundle is not journaled done: a rerun writes it again
            raise BatchError(f"cannot write the outputs in {outputs}: {exc}") from None
        for outcome in outcomes:
            if not outcome.ok and len(failed) < FAILED_SHOWN_MAX:
                failed.append(outcome)

    # One thread at a time writes in the folder: every file created there takes the folder's
    # lock for its inode allocation, so four writers at once spin on it (ext4: a third of
    # their kernel time) and burn the core that the other bundles and this event loop need.
    writer = anyio.CapacityLimiter(1)

    async def emit(outcomes: list[TaskOutcome]) -> None:
        # A bundle's files are written on a thread, while the other bundles settle; the runner
        # writes the journal's `done` only after this returns.
        await anyio.to_thread.run_sync(write, outcomes, limiter=writer)

    async def prepare(names: list[str]) -> None:
        # A bundle's scratch files are made while it runs, a few at a time, so that a bundle
        # whose results arrive meanwhile is written without waiting for all of them.
        for start in range(0, len(names), SCRATCH_FILES_PER_CALL):
            chunk = names[start : start + SCRATCH_FILES_PER_CALL]
            await anyio.to_thread.run_sync(outputs_out.make_scratch, chunk, limiter=writer)

    bar = _Bar(enabled=not json_output and sys.stderr.isatty(), tasks=len(source))
    try:
        async with AsyncClient() as client:
            runner = BatchRunner(
                client,
                Path(args.module),
                source,
                options,
                batch_id=batch_id,
                journal=journal,
                emit=emit,
                on_progress=bar.update,
                prepare=prepare,
            )
            with bar.progress:
                stats = await runner.run()
    except HearthError as exc:
        raise CommandError(
            f"batch {batch_id}: {exc}; run the same command again to go on"
        ) from None
    finally:
        outputs_out.remove_scratch()
    for outcome in failed:
        Console(stderr=True).print(
            f"task {outcome.name} failed: {outcome.error_kind} (exit code {outcome.exit_code})"
            + (f": {outcome.reason}" if outcome.reason else "")
        )
    return stats


class _Bar:
    """Done / running / queued, tasks per second and credits spent against the budget."""

    def __init__(self, enabled: bool, tasks: int) -> None:
        self.progress = Progress(
            TextColumn("batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.description}"),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.task = self.progress.add_task("", total=tasks)

    def update(self, stats: BatchStats) -> None:
        budget = "" if stats.budget_mc is None else f" of {stats.budget_mc / MC_PER_CREDIT:g}"
        text = (
            f"done {stats.verified + stats.failed} · running {stats.running} · queued "
            f"{stats.queued} · {stats.tasks_per_s:.0f} tasks/s · "
            f"{stats.spent_mc / MC_PER_CREDIT:g}{budget} credits"
        )
        self.progress.update(self.task, completed=stats.verified + stats.failed, description=text)


def _report(stats: BatchStats, json_output: bool) -> None:
    summary = stats.summary()
    if json_output:
        print_json(summary)
    else:
        table = Table(title=f"batch {stats.batch_id}")
        for column in ("host", "tasks", "fuel", "credits", "mismatches"):
            table.add_column(column)
        for peer, tally in sorted(stats.hosts.items()):
            table.add_row(
                peer[:16],
                str(tally.tasks),
                str(tally.fuel),
                f"{tally.paid_mc / MC_PER_CREDIT:g}",
                str(tally.mismatches),
            )
        Console().print(table)
        typer.echo(
            f"{stats.verified} verified, {stats.failed} failed of {stats.tasks} tasks; "
            f"{stats.spent_mc / MC_PER_CREDIT:g} credits; {summary['tasks_per_s']} tasks/s"
        )
    if stats.stopped == "cancelled":
        raise CommandError(f"batch {stats.batch_id} was cancelled")
    if stats.stopped:
        raise CommandError(
            f"batch {stats.batch_id} stopped ({stats.stopped}) with "
            f"{summary['not_done']} tasks not done"
        )
    if stats.failed:
        raise CommandError(f"{stats.failed} tasks failed", exit_code=10)


def _find_batch(batch_id: str) -> Path | None:
    root = batches_dir()
    if not batch_id or not all(c in "0123456789abcdef" for c in batch_id.lower()):
        return None
    found = sorted(root.glob(f"{batch_id.lower()}*")) if root.is_dir() else []
    return found[0] if len(found) == 1 else None


def resume(batch_id: str, json_output: bool) -> None:
    home = _find_batch(batch_id)
    if home is None:
        raise CommandError(f"no batch {batch_id} in {batches_dir()}")
    try:
        args = MapArgs(**json.loads((home / ARGS_NAME).read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise CommandError(f"batch {batch_id}: its record is unreadable ({exc})") from None
    start(args, json_output)


def cancel(given_id: str, json_output: bool) -> None:
    """Cancel a batch (every open bundle, and no new ones), or a single job, with signed
    messages: nothing is paid for work not done."""
    home = _find_batch(given_id)
    if home is None:
        result = anyio.run(_cancel_jobs, [given_id], False)
        report: dict[str, Any] = {"job_id": given_id, "cancelled": result}
    else:
        journal = Journal(home / JOURNAL_NAME)
        journal.mark_cancelled()
        result = anyio.run(_cancel_jobs, _open_jobs(journal), True)
        report = {"batch_id": home.name, "bundles_cancelled": result}
    if json_output:
        print_json(report)
    else:
        typer.echo(f"cancelled {given_id}")


def _open_jobs(journal: Journal) -> list[str]:
    jobs: dict[int, str] = {}
    for record in journal.records:
        if record.get("kind") == "bundle":
            jobs[int(record["no"])] = str(record["job"])
        elif record.get("kind") == "done":
            jobs.pop(int(record["no"]), None)
    return list(jobs.values())


async def _cancel_jobs(job_ids: list[str], of_batch: bool) -> list[str]:
    cancelled = []
    try:
        async with AsyncClient() as client:
            for job_id in job_ids:
                try:
                    await client.cancel(job_id)
                except HearthError as exc:
                    if "no job published" in str(exc) and of_batch:
                        continue  # a bundle the node never took: nothing to stop
                    raise
                cancelled.append(job_id)
    except HearthError as exc:
        raise CommandError(str(exc)) from None
    return cancelled


InputsOpt = Annotated[str, typer.Option("--inputs", help="A folder of input files, or a glob.")]
OutputsOpt = Annotated[Path, typer.Option("--outputs", help="Folder for the tasks' outputs.")]


def register(app: typer.Typer, json_option: Any) -> None:
    @app.command("map")
    def map_command(
        module: Path,
        inputs: InputsOpt,
        outputs: OutputsOpt,
        replicas: int = typer.Option(2, "--replicas", help="Results that must agree."),
        replicas_max: int = typer.Option(3, "--replicas-max", help="Replicas on disagreement."),
        budget: float = typer.Option(0.0, "--budget", help="Credits the batch may spend."),
        max_price: int = typer.Option(
            BatchOptions.max_price_mc_per_tfuel, "--max-price", help="mc per 10^12 fuel."
        ),
        fuel: int = typer.Option(BatchOptions.fuel_max, "--fuel", help="Fuel per task."),
        memory_mb: int = typer.Option(BatchOptions.memory_mb_max, "--memory-mb"),
        deadline_s: int = typer.Option(BatchOptions.deadline_s, "--deadline-s"),
        bid_window_ms: int = typer.Option(BatchOptions.bid_window_ms, "--bid-window-ms"),
        runtime: str | None = typer.Option(None, "--runtime", help="wasm or python."),
        bundle_tasks: int = typer.Option(
            BatchOptions.bundle_tasks_first,
            "--bundle-tasks",
            help="Tasks in each first bundle (later ones grow while they verify quickly).",
        ),
        json_output: bool = json_option,
    ) -> None:
        """Run MODULE on every file of --inputs, in verified bundles; outputs to --outputs.

        Running the same command again resumes the batch (`hearth job resume ID` too).
        """
        options: dict[str, Any] = {
            "replicas": replicas,
            "replicas_max": max(replicas, replicas_max),
            "max_price_mc_per_tfuel": max_price,
            "fuel_max": fuel,
            "memory_mb_max": memory_mb,
            "deadline_s": deadline_s,
            "bid_window_ms": bid_window_ms,
            "runtime": runtime,
            "bundle_tasks_first": bundle_tasks,
            "budget_mc": round(budget * MC_PER_CREDIT) if budget else None,
        }
        if budget < 0:
            raise CommandError("--budget must be more than 0 credits")
        start(MapArgs(str(module), inputs, str(outputs), options), json_output)

    @app.command("resume")
    def resume_command(batch_id: str, json_output: bool = json_option) -> None:
        """Go on with a batch that stopped (its publisher restarted): no task is paid twice."""
        resume(batch_id, json_output)

    @app.command("cancel")
    def cancel_command(job_id: str, json_output: bool = json_option) -> None:
        """Stop a job or a batch with signed cancels; only verified work is paid."""
        cancel(job_id, json_output)
