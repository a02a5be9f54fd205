"""Nothing a peer sends ends a node, and a full disk degrades a node instead of killing it.

Real node processes on 127.0.0.x; the publisher's data directory is a small tmpfs that the disk
test fills with a file until the kernel says ENOSPC, then frees.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from hearth import Client, JobOptions
from hearth.client import module_bytes
from hearth.node.blobs import blob_hash
from hearth.p2p.transport import TransportError
from hearth.protocol.codec import encode
from hearth.protocol.messages import PROTOCOL_BLOB, BlobRequest
from hearth.testnet import launch
from tests.diskfull import fill, free, mount_small_disk, unmount
from tests.e2e.hostile import hostile_peer
from tests.e2e.network import ECHO, LOOP, assert_books_balance, config, hearth, start

pytestmark = pytest.mark.integration

DISK_MB = 32
CYCLES = 20
HITS_MIN = 15  # three fill points in four always precede a write; the fourth may come too late
DEGRADED_WAIT_S = 15.0
BID_WINDOW_MS = 800  # three workers on loopback all bid within it
ABSURD_OFFSETS = (2**44, 2**44 + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63))
ABSURD_LENGTHS = (0, -1, 2**63 - 1, 2**64 - 1)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[Any], str | None]]:
    """Four nodes; node0, the publisher, keeps its data on a small disk of its own."""
    root = tmp_path_factory.mktemp("boundary")
    with ExitStack() as stack:
        why_not = mount_small_disk(root / "node0", DISK_MB)
        if why_not is None:
            stack.callback(unmount, root / "node0")
            stack.callback(keep_logs, root / "node0", root / "node0-logs")
        nodes = start(root, [config(60 + 10 * i) for i in range(4)])
        stack.callback(launch.stop, nodes)
        yield nodes, why_not


def keep_logs(home: Path, into: Path) -> None:
    """Copy the publisher's logs off its small disk before it is unmounted, for a post-mortem."""
    into.mkdir(exist_ok=True)
    for path in [*home.glob("node.log*"), home / "node.out"]:
        if path.exists():
            shutil.copy(path, into / path.name)


def status(node: launch.LaunchedNode) -> dict[str, Any]:
    with Client(node.home) as client:
        result: dict[str, Any] = client._call("GET", "/v1/status")
        return result


def all_alive(nodes: list[launch.LaunchedNode]) -> bool:
    return all(launch.is_running(node.pid) for node in nodes)


async def send_absurd_blob_requests(target: launch.LaunchedNode, digest: bytes) -> int:
    """From a fresh hostile peer joined through ``target``, ask it for absurd ranges of a blob
    it holds; return how many requests it answered (the rest it may drop)."""
    requests = [BlobRequest(digest, offset, 65_536) for offset in ABSURD_OFFSETS]
    requests += [BlobRequest(digest, 0, length) for length in ABSURD_LENGTHS]
    requests += [BlobRequest(digest[:31], 0, 10), BlobRequest(b"\xff" * 32, 2**44, 10)]
    answered = 0
    async with hostile_peer(target) as hostile:

        async def ask(request: BlobRequest) -> None:
            nonlocal answered
            try:
                data = encode(request)
                await hostile.transport.request(target.info["peer_id"], PROTOCOL_BLOB, data, 3_000)
                answered += 1
            except (TransportError, trio.TooSlowError):
                pass  # no answer: fine, as long as the node lives

        async with trio.open_nursery() as nursery:
            for request in requests:
                nursery.start_soon(ask, request)
    return answered


def test_absurd_blob_requests_leave_every_node_alive_and_working(network) -> None:  # type: ignore[no-untyped-def]
    nodes, _ = network
    publisher = nodes[0]
    with Client(publisher.home) as client:
        first = client.run(ECHO, b"before the attack", replicas=2)
    assert first.ok, first.reason
    digest = blob_hash(module_bytes(ECHO))  # the module every worker fetched, named in the call
    workers = {r["worker"] for r in first.summary["replicas_detail"] if r["paid_mc"] > 0}
    targets = [n for n in nodes if n.info["peer_id"] in workers] + [publisher]
    assert len(targets) == 3
    for target in targets:
        trio.run(send_absurd_blob_requests, target, digest)
        assert all_alive(nodes)
    with Client(publisher.home) as client:
        after = client.run(ECHO, b"after the attack", replicas=2)
    assert after.ok and after.output == b"after the attack" and after.paid_mc > 0
    failed = [
        json.loads(line)
        for node in nodes
        for line in (node.home / "node.log").read_text().splitlines()
        if '"handler-failed"' in line
    ]
    # Whether read_chunk raises (contained here, with its traceback) or refuses, nothing is lost.
    assert all(f["what"] == f"request:{PROTOCOL_BLOB}" and f["traceback"] for f in failed)


def test_a_full_disk_mid_job_twenty_times_never_ends_the_publisher(network) -> None:  # type: ignore[no-untyped-def]
    nodes, why_not = network
    if why_not:
        pytest.skip(why_not)
    publisher = nodes[0]
    disk = publisher.home
    hits = 0
    started_s = time.monotonic()
    with Client(publisher.home) as client:
        module = client.put_blob(module_bytes(ECHO))
        loop = client.put_blob(module_bytes(LOOP))
        for cycle in range(CYCLES):
            hits += run_one_cycle(client, publisher, disk, cycle, module, loop)
            assert all_alive(nodes), f"a node died in cycle {cycle}"
    assert hits >= HITS_MIN, f"the disk filled before a write in only {hits} of {CYCLES} cycles"
    assert not list((disk / "jobs").glob(".partial-*"))
    log_text = "".join(p.read_text() for p in sorted(disk.glob("node.log*")))
    recovered = [json.loads(x) for x in log_text.splitlines() if '"node-recovered"' in x]
    assert len(recovered) >= hits  # each outage ends in a line that names all its reasons
    sources = Counter(reason.split(":")[0] for line in recovered for reason in line["was"])
    assert sources["jobs"] >= hits * 3 // 4, sources  # the state of a job (SaveJob), most hits
    assert sources["ledger-unwritable"] >= 1, sources  # a pay or a settle
    assert "No space left on device" in log_text  # ENOSPC was really met, not just the filler
    assert_books_balance(nodes)
    elapsed_s = time.monotonic() - started_s
    print(
        f"{CYCLES} full-disk cycles, {hits} hit a write, {elapsed_s:.1f} s; healed from {sources}"
    )


def run_one_cycle(
    client: Client, publisher: launch.LaunchedNode, disk: Path, cycle: int, module: str, loop: str
) -> bool:
    """Publish a job, fill the disk at one of four points, free it, see the job end and the
    node heal. 0: before publishing; 1: just after; 2: once it runs (a longer job);
    3: just after, and kept full until the job is paid (the pay meets the full ledger)."""
    when = cycle % 4
    data = f"cycle {cycle}".encode()
    options = JobOptions(deadline_s=60, bid_window_ms=BID_WINDOW_MS)
    if when == 2:
        data = struct.pack("<Q", 300_000_000)
        options = dataclasses.replace(options, fuel_max=50_000_000_000)
    body = options.body(loop if when == 2 else module, client.put_blob(data), "wasm")
    filler = fill(disk) if when == 0 else None
    try:
        job_id = str(client._call("POST", "/v1/jobs", json=body)["job_id"])
        if when in (1, 3):
            filler = fill(disk)
        elif when == 2:
            for event in client.events(job_id):
                if event["phase"] in ("running", "paid", "failed"):
                    break
            filler = fill(disk)
        hit = wait_degraded_or_done(client, publisher, job_id)
        if hit and cycle == 0:
            shown = hearth(publisher.home, "node", "status")
            assert "degraded, taking no work" in shown.stdout, shown.stdout + shown.stderr
            assert "No space left on device" in shown.stdout
        if when == 3 and hit:  # not when the job was paid before the disk filled
            for _ in client.events(job_id):
                pass  # the whole job runs on a full disk, in memory
            reasons = status(publisher)["degraded"]
            assert any(r.startswith("ledger-unwritable: disk full") for r in reasons), reasons
    finally:
        if filler is not None:
            free(filler)
    result = client.wait(job_id)
    assert result.ok or result.reason, result.summary  # completed, or failed saying why
    if result.ok and when != 2:
        assert result.output == data
    launch.wait_for(lambda: status(publisher)["degraded"] == [], 15, "the publisher to heal")
    return hit


def wait_degraded_or_done(client: Client, publisher: launch.LaunchedNode, job_id: str) -> bool:
    """True once the publisher says it is degraded; False if the job ended first."""
    deadline = time.monotonic() + DEGRADED_WAIT_S
    while time.monotonic() < deadline:
        if any("No space left" in r or "disk full" in r for r in status(publisher)["degraded"]):
            return True
        if client.job(job_id)["state"] in ("accepted", "failed"):
            return False
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} neither hit the full disk nor ended")
