"""A full disk degrades the node (no bids, the reason in its status); it heals when space returns.

The disk is real: a small tmpfs filled with a file until the kernel says ENOSPC.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from hearth.ledger.store import SqliteLedger
from hearth.node import logs
from hearth.node.blobs import BlobStore, blob_hash
from hearth.node.driver import Driver
from hearth.node.files import write_atomically
from hearth.node.health import Health
from hearth.node.jobs import JobService
from hearth.node.logs import LOGGER_NAME, JsonFormatter, NodeLogFile
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.pool import SandboxPool
from hearth.p2p.memory import MemoryNetwork
from hearth.protocol.effects import SaveJob
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import JobId
from tests.diskfull import fill, free, small_disk
from tests.node.test_driver_boundary import TrioClock
from tests.p2p.helpers import config, seed
from tests.protocol.harness import make_profile

JOB = JobId(b"j" * 16)


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    with small_disk(tmp_path / "home", size_mb=4) as home:
        yield home


@pytest.fixture
def node_log(disk: Path) -> Iterator[NodeLogFile]:
    handler = NodeLogFile(disk / "node.log", bytes_max=1 << 20)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        handler.close()


@asynccontextmanager
async def node_on(home: Path) -> AsyncIterator[tuple[Health, JobService]]:
    identity = Identity(seed("node"))
    ledger = SqliteLedger.open(home / "ledger.sqlite", identity, now_ms=TrioClock().now_ms())
    net = MemoryNetwork()
    try:
        async with net.open_transport(config("node", "127.0.0.2")) as transport:
            engine = Engine(
                EngineConfig(identity, make_profile(0)), random.Random(0), ledger.view()
            )
            driver = Driver(engine, transport, TrioClock())
            driver.commit_entries = ledger.append_many
            pool = SandboxPool(SandboxConfig(home=home, workers=1))  # never entered: no jobs run
            jobs = JobService(home, driver, BlobStore(home / "blobs"), pool)
            health = Health(driver, ledger, jobs)
            async with trio.open_nursery() as nursery:
                await nursery.start(driver.run)
                nursery.start_soon(health.watch)
                yield health, jobs
                nursery.cancel_scope.cancel()
    finally:
        ledger.close()


async def test_a_full_disk_degrades_the_node_and_it_heals_when_space_returns(
    autojump_clock: trio.abc.Clock, disk: Path, node_log: NodeLogFile
) -> None:
    async with node_on(disk) as (health, jobs):
        jobs.driver.execute_all([SaveJob(JOB, b"state 1")])
        await jobs.flush_saves()  # written behind, off the event loop (ADR 0031)
        assert (jobs.jobs_dir / f"{JOB.hex()}.state").read_bytes() == b"state 1"
        assert health.reasons() == []

        filler = fill(disk)
        output = os.urandom(300_000)
        jobs.driver.execute_all([SaveJob(JOB, b"state 2"), SaveJob(JOB, b"state 3")])
        digest = blob_hash(output)
        assert jobs._keep_blob(output)  # a worker's output, held in memory while the disk is full
        logs.log("info", "a-line-the-disk-refuses", padding="x" * 8192)
        await trio.sleep(2)
        reasons = health.reasons()
        assert any(r.startswith("jobs: job state: [Errno 28]") for r in reasons), reasons
        assert any(r.startswith("log: node.log: [Errno 28]") for r in reasons), reasons
        assert jobs.driver.engine.degraded.keys() == {"jobs", "log"}
        assert jobs.unsaved == {JOB: b"state 3"}  # the latest state, kept in memory
        assert jobs.blob(digest) == output and not jobs.blobs.has(digest)
        assert (jobs.jobs_dir / f"{JOB.hex()}.state").read_bytes() == b"state 1"
        assert not list(jobs.jobs_dir.glob(".partial-*"))

        free(filler)
        await trio.sleep(2)
        assert health.reasons() == []
        assert jobs.driver.engine.degraded == {}
        assert (jobs.jobs_dir / f"{JOB.hex()}.state").read_bytes() == b"state 3"
        assert jobs.blobs.get(digest) == output and jobs.unsaved_blobs == {}
    lines = [json.loads(line) for line in (disk / "node.log").read_text().splitlines()]
    [recovered] = [line for line in lines if line["event"] == "node-recovered"]
    assert any("[Errno 28]" in reason for reason in recovered["was"])
    assert blob_hash(output) == digest


async def test_a_blob_the_disk_refused_keeps_the_node_degraded_until_there_is_room(
    autojump_clock: trio.abc.Clock, disk: Path
) -> None:
    async with node_on(disk) as (health, jobs):
        filler = fill(disk)
        with pytest.raises(OSError) as refused:
            jobs.blobs.put(os.urandom(100_000))  # a fetched blob or an upload: nothing to retry
        jobs.note_failed_write("blob", refused.value)
        await trio.sleep(3)
        assert health.reasons() and health.reasons()[0].startswith("jobs: disk: [Errno 28]")
        free(filler)
        await trio.sleep(2)
        assert health.reasons() == []


async def test_a_full_ledger_is_probed_back_to_writable(
    autojump_clock: trio.abc.Clock, disk: Path
) -> None:
    async with node_on(disk) as (health, _jobs):
        ledger = health.ledger
        filler = fill(disk)
        assert not ledger.probe_writable()
        await trio.sleep(2)
        assert health.reasons()[0].startswith("ledger-unwritable: disk full")
        free(filler)
        await trio.sleep(2)
        assert ledger.writable and health.reasons() == []


def test_write_atomically_syncs_the_folder_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[tuple[bool, bool]] = []  # (a folder?, the file already renamed into place?)
    target = tmp_path / "state"
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append((os.path.isdir(f"/proc/self/fd/{fd}"), target.exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_atomically(target, b"durable")
    assert synced == [(False, False), (True, True)]
    assert target.read_bytes() == b"durable"
