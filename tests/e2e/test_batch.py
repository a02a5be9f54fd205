"""Batches across real node processes (ADR 0033): `hearth job map`, a publisher killed with
SIGKILL halfway and restarted, `Client.map`, and bad input refused in one line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from hearth import Client
from hearth.testnet import launch
from tests.e2e.network import ECHO, assert_books_balance, config, hearth, start

TASKS = 150


def map_command(home: Path, inputs: Path, outputs: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "hearth.node", "job", "map", str(ECHO), "--inputs", str(inputs),
        "--outputs", str(outputs), "--json", *extra,
    ]  # fmt: skip


def journal_records(home: Path) -> list[dict[str, object]]:
    found = list((home / "batches").glob("*/journal.jsonl"))
    if not found:
        return []
    return [json.loads(line) for line in found[0].read_text().splitlines() if line.strip()]


def verified_in(records: list[dict[str, object]]) -> list[int]:
    return [i for r in records if r["kind"] == "done" for i in r.get("verified", [])]  # type: ignore[attr-defined]


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


@pytest.mark.integration
def test_a_batch_survives_its_publisher_killed_halfway(tmp_path: Path) -> None:
    nodes = start(tmp_path / "net", [config(60 + 10 * i) for i in range(4)])
    try:
        publisher = nodes[0]
        inputs, outputs = tmp_path / "in", tmp_path / "out"
        inputs.mkdir()
        for i in range(TASKS):
            (inputs / f"task-{i:04d}").write_bytes(os.urandom(1024) + i.to_bytes(2, "big"))
        env = {**os.environ, "HEARTH_HOME": str(publisher.home)}
        command = map_command(publisher.home, inputs, outputs)
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
        with Client(publisher.home) as client:
            outcomes = list(client.map(ECHO, [b"map %d" % i for i in range(20)]))
        assert sorted(o.index for o in outcomes) == list(range(20))
        assert all(o.ok and o.output == b"map %d" % o.index for o in outcomes)
    finally:
        launch.stop(nodes)
