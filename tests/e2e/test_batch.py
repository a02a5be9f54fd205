"""Batches across real node processes (ADR 0033): `hearth job map`, a publisher killed with
SIGKILL halfway and restarted, `Client.map`, and bad input refused in one line."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, overload

import anyio
import pytest

from hearth import AsyncClient, Client
from hearth.testnet import launch
from tests.e2e.network import (
    ECHO,
    LOOP,
    assert_books_balance,
    config,
    hearth,
    settled,
    start,
    wait_before_killing_the_hub,
)

TASKS = 150


def map_command(home: Path, inputs: Path, outputs: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hearth.node", "job", "map", str(ECHO), "--inputs", str(inputs),
        "--outputs", str(outputs), "--json", *extra,
    ]  # fmt: skip


def _journal_of(batch_home: Path, module: Path) -> bool:
    args = batch_home / "args.json"
    return args.is_file() and json.loads(args.read_text())["module"] == str(module)


def journal_records(home: Path, module: Path = ECHO) -> list[dict[str, Any]]:
    """The journal of the batch of ``module`` published from ``home`` (one per test)."""
    root = home / "batches"
    found = (
        [p / "journal.jsonl" for p in root.iterdir() if _journal_of(p, module)]
        if root.is_dir()
        else []
    )
    if not found or not found[0].exists():
        return []
    return [json.loads(line) for line in found[0].read_text().splitlines() if line.strip()]


def verified_in(records: list[dict[str, Any]]) -> list[int]:
    return [i for r in records if r["kind"] == "done" for i in r.get("verified", [])]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_map_refuses_bad_input_in_one_line_before_sending_anything(tmp_path: Path) -> None:
    home, inputs, outputs = tmp_path / "home", tmp_path / "in", tmp_path / "out"
    home.mkdir()
    inputs.mkdir()
    empty = hearth(
        home, "job", "map", str(ECHO), "--inputs", str(inputs), "--outputs", str(outputs)
    )
    assert "no input files" in one_line_error(empty)
    (inputs / "a").write_bytes(b"x")
    poor = hearth(
        home, "job", "map", str(ECHO), "--inputs", str(inputs), "--outputs", str(outputs),
        "--budget", "0.001",
    )  # fmt: skip
    assert "less than one task can cost" in one_line_error(poor)
    no_module = hearth(
        home, "job", "map", str(tmp_path / "nope.wat"), "--inputs", str(inputs),
        "--outputs", str(outputs),
    )  # fmt: skip
    assert "no module" in one_line_error(no_module)
    nothing = hearth(home, "job", "map", str(ECHO), "--inputs", str(tmp_path / "*.none"),
                     "--outputs", str(outputs))  # fmt: skip
    assert "no input files" in one_line_error(nothing)
    no_node = hearth(home, "job", "map", str(ECHO), "--inputs", str(inputs), "--outputs",
                     str(outputs))  # fmt: skip
    assert "node" in one_line_error(no_node)
    assert not outputs.exists() or not any(outputs.iterdir())


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[launch.LaunchedNode]]:
    nodes = start(tmp_path_factory.mktemp("net"), [config(60 + 10 * i) for i in range(4)])
    try:
        yield nodes
    finally:
        launch.stop(nodes)


def prepared_batch(
    publisher: launch.LaunchedNode, tmp_path: Path, input_bytes: int
) -> tuple[Path, Path, dict[str, str], list[str]]:
    """TASKS distinct inputs, the outputs folder, the publisher's environment and its `hearth
    job map` command, with small first bundles so that a kill lands between bundles."""
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    for i in range(TASKS):
        (inputs / f"task-{i:04d}").write_bytes(os.urandom(input_bytes) + i.to_bytes(2, "big"))
    env = {**os.environ, "HEARTH_HOME": str(publisher.home)}
    command = map_command(publisher.home, inputs, outputs, "--bundle-tasks", "16")
    return inputs, outputs, env, command


@pytest.mark.integration
def test_a_batch_survives_its_publisher_killed_halfway(
    four: list[launch.LaunchedNode], tmp_path: Path
) -> None:
    nodes = four
    publisher = nodes[0]
    wait_before_killing_the_hub(nodes)  # the other tests of the module use these nodes after
    inputs, outputs, env, command = prepared_batch(publisher, tmp_path, 1024)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        launch.wait_for(
            lambda: len(verified_in(journal_records(publisher.home))) > 0, 120,
            "a first bundle to be verified",
        )  # fmt: skip
        os.kill(publisher.pid, signal.SIGKILL)
        launch.wait_for(lambda: not launch.is_running(publisher.pid), 10, "the publisher")
        _, stderr = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    done_before = len(set(verified_in(journal_records(publisher.home))))
    assert 0 < done_before < TASKS, "the kill did not land halfway"
    assert first.returncode != 0 and b"Traceback" not in stderr
    (publisher.home / "node.json").unlink(missing_ok=True)
    bootstrap = nodes[1].info["multiaddrs"][0]
    process = launch.start_process(
        publisher.home, publisher.host, bootstrap, publisher.home / "node.out"
    )
    publisher.pid = process.pid
    launch.wait_until_listening(publisher.home, process, 60)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["verified"] == TASKS and summary["failed"] == 0
    for path in inputs.iterdir():
        assert (outputs / path.name).read_bytes() == path.read_bytes()
    records = journal_records(publisher.home)
    counts = Counter(verified_in(records))
    assert set(counts) == set(range(TASKS)) and set(counts.values()) == {1}
    paid_tasks: Counter[int] = Counter()
    with Client(publisher.home) as client:
        jobs = {job["job_id"]: job for job in client.jobs()}
    bundles = {r["job"]: r["tasks"] for r in records if r["kind"] == "bundle"}
    for job_id, tasks in bundles.items():
        job = jobs.get(str(job_id))
        if job is None:
            continue  # never reached the node: nothing was paid for it
        paid = [r["worker"] for r in job["replicas_detail"] if r["paid_mc"] > 0]
        assert len(paid) == len(set(paid)), "a worker paid twice for one bundle"
        if paid:
            paid_tasks.update(tasks)  # type: ignore[arg-type]
    assert set(paid_tasks.values()) == {1}, "a task paid in two bundles"
    assert_books_balance(nodes)
    (outputs / "task-0007").unlink()  # a verified task whose output went missing runs again
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "1 verified outputs are missing" in rerun.stderr
    assert (outputs / "task-0007").read_bytes() == (inputs / "task-0007").read_bytes()
    with Client(publisher.home) as client:
        outcomes = list(client.map(ECHO, [b"map %d" % i for i in range(20)]))
    assert sorted(o.index for o in outcomes) == list(range(20))
    assert all(o.ok and o.output == b"map %d" % o.index for o in outcomes)

    async def map_async() -> list[bytes]:
        async with AsyncClient(publisher.home) as client:
            return [o.output async for o in client.map(ECHO, [b"x", b"y"])]

    assert sorted(anyio.run(map_async)) == [b"x", b"y"]


def journal_of_outputs(home: Path, outputs: Path) -> list[dict[str, Any]]:
    """The journal of the batch that writes to ``outputs`` (several batches share a module)."""
    for batch_home in (home / "batches").iterdir() if (home / "batches").is_dir() else []:
        args = batch_home / "args.json"
        journal = batch_home / "journal.jsonl"
        if args.is_file() and json.loads(args.read_text())["outputs"] == str(outputs):
            lines = journal.read_text().splitlines() if journal.exists() else []
            return [json.loads(line) for line in lines if line.strip()]
    return []


@pytest.mark.integration
def test_a_batch_resumes_after_its_runner_is_killed_between_writes(
    four: list[launch.LaunchedNode], tmp_path: Path
) -> None:
    """The runner (`hearth job map`) killed with SIGKILL while bundles are written and settled:
    the same command again ends with every output whole, every task verified once, and no
    half-written file left (outputs are renamed into place, then journaled with their digests)."""
    publisher = four[0]
    inputs, outputs, env, command = prepared_batch(publisher, tmp_path, 2048)
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        launch.wait_for(
            lambda: len(verified_in(journal_of_outputs(publisher.home, outputs))) > 0, 120,
            "a first bundle to be verified",
        )  # fmt: skip
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    done_before = len(set(verified_in(journal_of_outputs(publisher.home, outputs))))
    assert 0 < done_before < TASKS, "the kill did not land halfway"
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["verified"] == TASKS and summary["failed"] == 0
    assert sorted(p.name for p in outputs.iterdir()) == sorted(p.name for p in inputs.iterdir())
    for path in inputs.iterdir():
        assert (outputs / path.name).read_bytes() == path.read_bytes()
    counts = Counter(verified_in(journal_of_outputs(publisher.home, outputs)))
    assert set(counts) == set(range(TASKS)) and set(counts.values()) == {1}
    launch.wait_for(lambda: settled(four), 30, "every receipt to settle")
    assert_books_balance(four)


class LazyInputs(Sequence[bytes]):
    """100,000 inputs made on demand, counting how many the runner read."""

    def __init__(self, count: int) -> None:
        self.count, self.read = count, 0

    def __len__(self) -> int:
        return self.count

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        assert isinstance(index, int)
        self.read += 1
        return b"task %d" % index


@pytest.mark.integration
def test_a_batch_of_100000_tasks_is_streamed_and_stops_at_its_budget(
    four: list[launch.LaunchedNode],
) -> None:
    inputs = LazyInputs(100_000)
    # Each task may cost at most 3 replicas x 1 mc (rounded up) at this price and fuel limit;
    # a budget of 10 mc covers a few small bundles, then the batch stops, paid within it.
    options: dict[str, Any] = {"max_price_mc_per_tfuel": 400, "fuel_max": 200_000}
    budget_mc = 10
    with Client(four[0].home) as client:
        before = client.balance_mc()
        outcomes = list(client.map(ECHO, inputs, budget_mc=budget_mc, **options))
        launch.wait_for(lambda: settled(four), 30, "every receipt to settle")
        spent = before - client.balance_mc()
    assert 0 < len(outcomes) < 100 and all(o.ok for o in outcomes)
    assert inputs.read < 200, "inputs are read as bundles are made, not all at once"
    assert 0 < spent <= budget_mc


TASKS_CANCELLED = 192


@pytest.mark.integration
def test_a_cancelled_batch_pays_only_for_verified_bundles(
    four: list[launch.LaunchedNode], tmp_path: Path
) -> None:
    publisher = four[0]
    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    # Each task loops ~0.5 s, two replicas on three single-core hosts: a minute of work, so the
    # batch is still running when cancelled however many bundles it keeps in flight.
    for i in range(TASKS_CANCELLED):
        (inputs / f"loop-{i:03d}").write_bytes(struct.pack("<Q", 10_000_000 + i))
    env = {**os.environ, "HEARTH_HOME": str(publisher.home)}
    command = map_command(publisher.home, inputs, outputs, "--fuel", str(5 * 10**8))
    command[command.index(str(ECHO))] = str(LOOP)
    with Client(publisher.home) as client:
        before = client.balance_mc()
    running = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        launch.wait_for(
            lambda: any(r["kind"] == "bundle" for r in journal_records(publisher.home, LOOP)), 60,
            "a first bundle to be published",
        )  # fmt: skip
        batch_home = next(p for p in (publisher.home / "batches").iterdir() if _journal_of(p, LOOP))
        cancel = hearth(publisher.home, "job", "cancel", batch_home.name, "--json")
        assert cancel.returncode == 0, cancel.stderr
        _, stderr = running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()
    assert running.returncode != 0 and b"cancelled" in stderr
    records = journal_records(publisher.home, LOOP)
    verified = verified_in(records)
    assert len(verified) < TASKS_CANCELLED
    paid_in_journal = sum(int(r.get("paid_mc", 0)) for r in records if r["kind"] == "done")
    launch.wait_for(lambda: settled(four), 30, "every receipt to settle")
    with Client(publisher.home) as client:
        spent = before - client.balance_mc()
        jobs = {job["job_id"]: job for job in client.jobs()}
    assert spent == paid_in_journal
    for record in records:
        if record["kind"] == "bundle" and str(record["job"]) in jobs:
            job = jobs[str(record["job"])]
            if job["state"] != "accepted":
                assert job["paid_mc"] == 0 and job["cause"] == "cancelled", job
    assert_books_balance(four)
