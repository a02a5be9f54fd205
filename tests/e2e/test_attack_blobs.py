"""Attacks on blobs (issue 12, items 1 and 8) against real node processes and a hostile peer.

A stranger that knows a job's input hash is refused while the job's winners fetch it; a
publisher that publishes big blobs cannot make a host keep more than its quota for it; a
BlobRequest 2^44 bytes into a blob is answered with a refusal and the node lives on.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from hearth import Client, JobOptions
from hearth.client import HearthError, module_bytes
from hearth.node.blobs import UNENTITLED_PENALTY_POINTS
from hearth.p2p.peers import BAN_SCORE
from hearth.p2p.transport import TransportError
from hearth.protocol import limits
from hearth.protocol.codec import decode_as, encode
from hearth.protocol.messages import BLOB_TOTAL_REFUSED, PROTOCOL_BLOB, BlobChunk, BlobRequest
from hearth.testnet import launch
from tests.e2e.hostile import Hostile, hostile_peer
from tests.e2e.network import ECHO, ROOT, config, settled, start

pytestmark = pytest.mark.integration

HELLO = ROOT / "node" / "sandbox" / "modules" / "hello.wat"  # output "hello\n", whatever the input
PEER_QUOTA_MB = 1
QUOTA_BYTES = PEER_QUOTA_MB << 20
INPUT_BYTES = 400 * 1024  # two fit a host's quota, three do not
REQUEST_TIMEOUT_MS = 5_000


def small_quota_config() -> str:
    return config().replace("blob_store_peer_mb = 512", f"blob_store_peer_mb = {PEER_QUOTA_MB}")


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[launch.LaunchedNode]]:
    """Two hosts and a publisher (the last node), every host with a 1 MiB quota per peer."""
    nodes = start(tmp_path_factory.mktemp("blobs"), [small_quota_config() for _ in range(3)])
    try:
        yield nodes
    finally:
        launch.stop(nodes)


async def ask(hostile: Hostile, node: launch.LaunchedNode, request: BlobRequest) -> BlobChunk:
    reply = await hostile.transport.request(
        node.info["peer_id"], PROTOCOL_BLOB, encode(request), REQUEST_TIMEOUT_MS
    )
    return decode_as(reply, BlobChunk, bytes_max=limits.FRAME_BYTES_MAX)


def alive(node: launch.LaunchedNode) -> bool:
    with Client(node.home) as client:
        return bool(client._call("GET", "/v1/status")["peer_id"] == node.info["peer_id"])


def blob_files(node: launch.LaunchedNode) -> dict[str, int]:
    root = node.home / "blobs"
    return {p.name: p.stat().st_size for p in root.glob("??/*") if p.is_file()}


def run_to_the_end(
    node: launch.LaunchedNode, module: Path, data: bytes, **options: int
) -> dict[str, Any]:
    """Publish a job and follow it to paid or failed; the summary, and the output once fetched."""
    with Client(node.home) as client:
        job_id = client.submit(module, data, JobOptions(**options))
        for _ in client.events(job_id):
            pass
        summary = client.job(job_id)
    if summary["state"] == "accepted":
        # A large output is fetched from a worker after the verdict: wait until it is here.
        launch.wait_for(lambda: has_blob(node, summary["result_hash"]), 15, "the output")
    return summary


def books_settle_to_zero(nodes: list[launch.LaunchedNode]) -> None:
    """Every receipt settled and the balances sum to 0 (the CLI's `ledger verify` is slower)."""
    launch.wait_for(lambda: settled(nodes), 30, "every receipt to settle")
    balances = []
    for node in nodes:
        with Client(node.home) as client:
            balances.append(client.balance_mc())
    assert sum(balances) == 0 and balances[-1] < 0, balances


def has_blob(node: launch.LaunchedNode, digest: str) -> bool:
    with Client(node.home) as client:
        try:
            client.blob(digest)
        except HearthError:
            return False
    return True


async def test_a_request_far_past_a_blobs_end_is_refused_and_the_node_lives(three) -> None:  # type: ignore[no-untyped-def]
    publisher = three[2]
    with Client(publisher.home) as client:
        digest = bytes.fromhex(await trio.to_thread.run_sync(client.put_blob, b"x" * 4096))
    async with hostile_peer(publisher, host="127.0.0.61") as hostile:
        for offset, length in ((2**44, 1024), (2**63 - 1, 1024), (-1, 1024), (0, 0), (0, 2**62)):
            chunk = await ask(hostile, publisher, BlobRequest(digest, offset, length))
            assert chunk.total_bytes == BLOB_TOTAL_REFUSED and chunk.data == b""
    assert launch.is_alive(publisher.pid, publisher.home)
    assert await trio.to_thread.run_sync(alive, publisher)


async def test_a_stranger_is_refused_a_jobs_input_while_its_winners_fetch_it(three) -> None:  # type: ignore[no-untyped-def]
    publisher = three[2]
    data = os.urandom(100_000)  # echoed: an output too large to travel inline, fetched as a blob
    digests = [hashlib.sha256(data).digest(), hashlib.sha256(module_bytes(ECHO)).digest()]
    answers: list[BlobChunk] = []
    async with hostile_peer(publisher, host="127.0.0.62") as hostile:
        with trio.fail_after(15):  # peer exchange introduces the stranger to the hosts too
            while not all(hostile.connected(n.info["peer_id"]) for n in three):  # noqa: ASYNC110
                await trio.sleep(0.05)
        async with trio.open_nursery() as nursery:

            async def keep_asking() -> None:
                while True:
                    for node in three:
                        for digest in digests:
                            answers.append(await ask(hostile, node, BlobRequest(digest, 0, 1024)))
                    await trio.sleep(0.1)

            nursery.start_soon(keep_asking)
            summary = await trio.to_thread.run_sync(
                lambda: run_to_the_end(publisher, ECHO, data, replicas=2)
            )
            nursery.cancel_scope.cancel()
        assert summary["state"] == "accepted", summary["reason"]
        with Client(publisher.home) as client:
            assert await trio.to_thread.run_sync(client.blob, summary["result_hash"]) == data
        assert summary["paid_mc"] > 0
        assert len(answers) >= 6
        assert all(a.total_bytes == BLOB_TOTAL_REFUSED and not a.data for a in answers)

        # Asking on and on is penalised until the publisher stops answering this peer at all.
        refusals_to_ban = -BAN_SCORE // UNENTITLED_PENALTY_POINTS
        with pytest.raises(TransportError):
            for _ in range(refusals_to_ban + 1):
                await ask(hostile, publisher, BlobRequest(digests[0], 0, 1024))
    await trio.to_thread.run_sync(books_settle_to_zero, three)


async def test_a_publisher_of_big_blobs_cannot_make_a_host_keep_more_than_its_quota(three) -> None:  # type: ignore[no-untyped-def]
    hosts, publisher = three[:2], three[2]
    before = [blob_files(host) for host in hosts]
    published: set[str] = {hashlib.sha256(module_bytes(HELLO)).hexdigest()}
    for _ in range(4):  # 1.6 MiB of inputs for each host, against a quota of 1 MiB
        data = os.urandom(INPUT_BYTES)
        published.add(hashlib.sha256(data).hexdigest())
        summary = await trio.to_thread.run_sync(
            lambda data=data: run_to_the_end(publisher, HELLO, data, replicas=2)
        )
        assert summary["state"] == "accepted", summary["reason"]
        ran = {r["worker"] for r in summary["replicas_detail"] if r["verdict"] == "match"}
        assert ran == {host.info["peer_id"] for host in hosts}  # each host fetched every input
        for host in hosts:
            held = {name: size for name, size in blob_files(host).items() if name in published}
            assert sum(held.values()) <= QUOTA_BYTES, (host.index, held)
    for host, old in zip(hosts, before, strict=True):
        new = {name for name in blob_files(host) if name not in old}
        assert new <= published and len(new) < len(published)  # some were evicted

    # An input larger than the quota is refused by every host before a byte of it is fetched.
    too_big = os.urandom(QUOTA_BYTES + INPUT_BYTES)
    summary = await trio.to_thread.run_sync(
        lambda: run_to_the_end(publisher, HELLO, too_big, replicas=2, deadline_s=6, fuel_max=10**9)
    )
    assert summary["state"] == "failed"
    verdicts = [r["verdict"] for r in summary["replicas_detail"]]
    assert verdicts and all("quota" in v for v in verdicts), verdicts
    name = hashlib.sha256(too_big).hexdigest()
    for host in hosts:
        assert name not in blob_files(host)
        assert not list((host.home / "blobs").glob(".partial-*"))
        assert launch.is_alive(host.pid, host.home)
