"""The batch runner's bookkeeping (hearth/batch.py, ADR 0033): journal replay, bundle sizes,
the budget, and inputs named in a stable order. The network half is in tests/e2e/test_batch.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, cast

import anyio
import pytest

from hearth.batch import (
    QUEUED,
    RUNNING,
    VERIFIED,
    BatchError,
    BatchOptions,
    BatchRunner,
    FileTasks,
    Journal,
    MemoryTasks,
    check_budget,
    output_digest,
)
from hearth.client import AsyncClient
from hearth.node.commands import job_batch


def runner(tasks: int, journal: Journal, **options: Any) -> BatchRunner:
    return BatchRunner(
        cast(AsyncClient, None),
        Path("echo.wat"),
        MemoryTasks([b"%d" % i for i in range(tasks)]),
        BatchOptions(bundles_in_flight=2, fuel_per_s=10**9, **options),
        batch_id="test",
        journal=journal,
        emit=lambda outcomes: None,
    )


def test_a_replayed_journal_keeps_verified_tasks_and_follows_open_bundles(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.append({"kind": "bundle", "no": 0, "job": "aa" * 16, "tasks": [0, 1, 2]})
    journal.append({"kind": "done", "no": 0, "paid_mc": 7, "verified": [0, 2], "failed": [1]})
    journal.append({"kind": "bundle", "no": 1, "job": "bb" * 16, "tasks": [3, 4]})
    journal.append({"kind": "bundle", "no": 2, "job": "cc" * 16, "tasks": [5]})
    journal.append({"kind": "done", "no": 2, "paid_mc": 0})  # failed unpaid: run it again
    with path.open("a") as file:
        file.write('{"kind": "bund')  # torn by a crash
    again = runner(8, Journal(path))
    recovered = again._replay()
    assert [(b.number, b.job_id, b.tasks) for b in recovered] == [(1, "bb" * 16, [3, 4])]
    assert again.state[0] == again.state[2] == VERIFIED and again.stats.failed == 1
    assert list(again.queue) == [5, 6, 7]  # 3 and 4 wait for their bundle on the node
    assert again.stats.spent_mc == 7
    assert again._next_bundle() is not None and again._numbers == 4  # numbers never reused


def test_a_lost_output_is_queued_again(tmp_path: Path) -> None:
    journal = Journal(None)
    journal.append({"kind": "bundle", "no": 0, "job": "aa" * 16, "tasks": [0, 1]})
    journal.append({"kind": "done", "no": 0, "paid_mc": 2, "verified": [0, 1], "failed": []})
    journal.append({"kind": "lost", "tasks": [1]})
    again = runner(2, journal)
    again._replay()
    assert again.state[1] == QUEUED and list(again.queue) == [1]


def test_bundles_start_at_the_first_size_and_spread_the_work_left_over_every_slot() -> None:
    first = runner(1000, Journal(None), fuel_max=10**6)
    first._replay()
    bundle = first._next_bundle()
    assert bundle is not None and len(bundle.tasks) == 256
    first._start(bundle)
    assert first.state[0] == RUNNING and first.stats.running == 256
    first.size = 4096
    # The work left (744 queued, 256 running) over two slots: 500 each, not all 744.
    assert len(first._next_bundle().tasks) == 500  # type: ignore[union-attr]
    even = runner(1000, Journal(None), fuel_max=10**6, bundle_tasks_first=1024)
    even.options = BatchOptions(bundles_in_flight=4, fuel_per_s=10**9, fuel_max=10**6)
    even.size = 1024
    even._replay()
    wave: list[int] = []
    while (made := even._next_bundle()) is not None and len(wave) < 4:
        even._start(made)
        wave.append(len(made.tasks))
    assert wave == [250, 250, 250, 250], "the first wave is spread evenly over every slot"
    tail = runner(40, Journal(None), fuel_max=10**6)
    tail._replay()
    assert len(tail._next_bundle().tasks) == 20  # type: ignore[union-attr]  # shared, not 40
    options = BatchOptions(fuel_max=10**9)  # worst case: 3 replicas x 100 mc per task
    poor = runner(1000, Journal(None), budget_mc=3 * options.task_cost_mc_max())
    poor._replay()
    bundle = poor._next_bundle()
    assert bundle is not None and len(bundle.tasks) == 3
    poor._start(bundle)
    assert poor._next_bundle() is None  # the rest waits until spending is known


def test_a_bundle_holds_no_more_fuel_than_hosts_can_run_in_time() -> None:
    options = BatchOptions(fuel_max=10**9, deadline_s=120, fuel_per_s=10**9)
    assert options.tasks_by_fuel_max() == 30


def test_a_budget_below_one_task_is_refused_with_the_fix() -> None:
    with pytest.raises(BatchError, match="raise --budget or lower --max-price or --fuel"):
        check_budget(BatchOptions(budget_mc=1))
    check_budget(BatchOptions(budget_mc=None))


def test_file_tasks_are_sorted_and_refuse_colliding_names(tmp_path: Path) -> None:
    for name in ("b", "a", "c"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "sub").mkdir()
    tasks = FileTasks(str(tmp_path))
    assert [tasks.name(i) for i in range(len(tasks))] == ["a", "b", "c"]
    assert tasks.read(1) == b"b"
    (tmp_path / "sub" / "a").write_bytes(b"again")
    with pytest.raises(BatchError, match="same name"):
        FileTasks(str(tmp_path / "**" / "*"))
    with pytest.raises(BatchError, match="no input files"):
        FileTasks(str(tmp_path / "*.none"))


def test_a_bundles_outputs_are_written_whole_under_their_names(tmp_path: Path) -> None:
    (tmp_path / "b").write_bytes(b"an older output")
    files = [("a", b"one"), ("b", b"two" * 100_000), ("c", b"")]
    job_batch.write_outputs(tmp_path, files)
    assert {name: (tmp_path / name).read_bytes() for name, _ in files} == dict(files)
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c"], "no partial file is left"
    with pytest.raises(OSError):
        job_batch.write_outputs(tmp_path / "gone", [("a", b"x")])


def test_a_resumed_batch_reruns_outputs_lost_or_changed_since_they_were_verified(
    tmp_path: Path,
) -> None:
    """Outputs are not synced per bundle: the journal's digests tell a resumed batch which
    verified outputs a crash (or a person) lost or changed, and only those run again."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    names = ["a", "b", "c", "d", "e"]
    for name in names:
        (inputs / name).write_bytes(name.encode())
        (outputs / name).write_bytes(b"out-" + name.encode())
    journal = Journal(None)
    verified = [0, 1, 2, 3]  # "e" (4) was never verified: not the check's business
    digests = [output_digest(b"out-" + names[i].encode()) for i in verified]
    journal.append({"kind": "done", "no": 0, "verified": verified, "digests": digests})
    source = FileTasks(str(inputs))
    assert job_batch._missing_outputs(journal, source, outputs) == []
    (outputs / "a").unlink()  # lost
    (outputs / "b").write_bytes(b"")  # a write a power cut left empty
    (outputs / "c").write_bytes(b"out-C")  # changed
    assert job_batch._missing_outputs(journal, source, outputs) == [0, 1, 2]
    journal.append({"kind": "lost", "tasks": [0, 1, 2]})
    assert job_batch._missing_outputs(journal, source, outputs) == []
    # A journal from before digests were kept: only a missing file is seen.
    old = Journal(None)
    old.append({"kind": "done", "no": 0, "verified": verified})
    assert job_batch._missing_outputs(old, source, outputs) == [0]


def test_scratch_files_made_ahead_become_the_outputs_and_the_rest_are_removed(
    tmp_path: Path,
) -> None:
    """A bundle's scratch files are made while it runs: writing it then allocates no inode (the
    costly part of a small file), and what was made for tasks never written is removed."""
    (tmp_path / ".c.part").write_bytes(b"left by a killed run")
    outputs = job_batch._Outputs(tmp_path)
    outputs.make_scratch(["a", "b", "c"])
    inodes = {name: (tmp_path / f".{name}.part").stat().st_ino for name in "abc"}
    assert (tmp_path / ".c.part").read_bytes() == b"left by a killed run", "made, not emptied"
    outputs.write([("a", b"one"), ("c", b"three")])
    assert (tmp_path / "a").stat().st_ino == inodes["a"], "the scratch file became the output"
    assert (tmp_path / "c").read_bytes() == b"three"
    outputs.make_scratch(["a", "d"])  # "a" is written: not made again
    assert not (tmp_path / ".a.part").exists()
    outputs.remove_scratch()
    assert sorted(os.listdir(tmp_path)) == ["a", "c"], "no scratch file is left"
    job_batch._Outputs(tmp_path / "gone").make_scratch(["a"])  # only a head start: no error


def test_the_runner_names_a_bundles_tasks_as_the_bundle_starts() -> None:
    prepared: list[list[str]] = []
    batch = BatchRunner(
        cast(AsyncClient, None),
        Path("echo.wat"),
        MemoryTasks([b"%d" % i for i in range(40)]),
        BatchOptions(bundles_in_flight=2, fuel_per_s=10**9),
        batch_id="test",
        journal=Journal(None),
        emit=lambda outcomes: None,
        prepare=prepared.append,
    )
    batch._replay()
    bundle = batch._next_bundle()
    assert bundle is not None
    batch._start(bundle)

    async def start() -> None:
        async with anyio.create_task_group() as group:
            batch._prepare(bundle, group)

    anyio.run(start)
    assert prepared == [[str(i) for i in bundle.tasks]]
