"""The content-addressed blob store: hash-checked, never half-written, bounded, served with care."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from hearth.node.blobs import (
    MALFORMED_PENALTY_POINTS,
    UNENTITLED_PENALTY_POINTS,
    BlobError,
    BlobRangeError,
    BlobStore,
    BlobStoreConfig,
    BlobUse,
    fetch_blob,
    serve_blob_request,
)
from hearth.p2p.memory import MemoryNetwork
from hearth.p2p.peers import PeerReputation
from hearth.p2p.transport import Inbound, Transport
from hearth.protocol import limits
from hearth.protocol.codec import decode_as, encode
from hearth.protocol.messages import (
    BLOB_TOTAL_MISSING,
    BLOB_TOTAL_REFUSED,
    PROTOCOL_BLOB,
    BlobChunk,
    BlobRequest,
)
from tests.p2p.helpers import config

KIB = 1024
PEER_A, PEER_B = "peer-a", "peer-b"


class FakeClock:
    def __init__(self) -> None:
        self.ms = 1_000_000

    def now_ms(self) -> int:
        return self.ms


def make_store(
    tmp_path: Path, clock: FakeClock | None = None, **config: int
) -> tuple[BlobStore, FakeClock]:
    clock = clock or FakeClock()
    return BlobStore(tmp_path / "blobs", BlobStoreConfig(**config), clock), clock


def blob(n: int, size: int) -> bytes:
    return hashlib.sha256(str(n).encode()).digest() * (size // 32)


def disk_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


# The store


def test_a_blob_is_stored_under_its_hash_and_read_back_in_chunks(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    data = bytes(range(256)) * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).digest()
    assert store.get(digest) == data and store.size(digest) == len(data)
    assert store.read_chunk(digest, 100, 50) == (data[100:150], len(data))
    assert store.read_chunk(digest, len(data), 50) == (b"", len(data))  # the end: empty, valid
    assert store.put(data) == digest  # storing it again changes nothing
    assert store.bytes_held == len(data)


def test_a_blob_that_does_not_match_its_expected_hash_is_refused(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    wrong = hashlib.sha256(b"something else").digest()
    with pytest.raises(BlobError, match="mismatch"):
        store.put(b"the real bytes", expected=wrong)
    assert not store.has(wrong)
    assert not list((tmp_path / "blobs").rglob(".partial-*"))


def test_unknown_and_malformed_hashes(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    assert store.get(b"\0" * 32) is None and store.size(b"\0" * 32) == -1
    assert store.read_chunk(b"\0" * 32, 0, 10) == (b"", BLOB_TOTAL_MISSING)
    with pytest.raises(BlobError):
        store.get(b"short")


@pytest.mark.parametrize("offset", [2**44, 2**63 - 1, 10_001, -1, -(2**63)])
def test_read_chunk_refuses_an_offset_outside_the_blob_without_seeking(
    tmp_path: Path, offset: int
) -> None:
    store, _ = make_store(tmp_path)
    digest = store.put(b"x" * 10_000)
    with pytest.raises(BlobRangeError):
        store.read_chunk(digest, offset, 1024)


@pytest.mark.parametrize("length", [0, -1, -(2**63)])
def test_read_chunk_refuses_a_length_that_is_not_positive(tmp_path: Path, length: int) -> None:
    store, _ = make_store(tmp_path)
    digest = store.put(b"x" * 10_000)
    with pytest.raises(BlobRangeError):
        store.read_chunk(digest, 0, length)


def test_read_chunk_caps_a_huge_length_at_one_chunk(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    data = blob(1, 2 * limits.BLOB_CHUNK_BYTES_MAX)
    digest = store.put(data)
    chunk, total = store.read_chunk(digest, 0, 2**63 - 1)
    assert chunk == data[: limits.BLOB_CHUNK_BYTES_MAX] and total == len(data)


# Quotas, eviction and sweeping


def test_a_peer_over_its_quota_loses_its_own_oldest_unused_blobs_first(tmp_path: Path) -> None:
    store, clock = make_store(tmp_path, peer_bytes_max=100 * KIB)
    first = store.put(blob(1, 40 * KIB), owner=PEER_A)
    clock.ms += 1
    second = store.put(blob(2, 40 * KIB), owner=PEER_A)
    clock.ms += 1
    other = store.put(blob(3, 40 * KIB), owner=PEER_B)
    clock.ms += 1
    store.touch(first)  # now the first is the more recently used
    third = store.put(blob(4, 40 * KIB), owner=PEER_A)
    assert store.has(first) and store.has(third) and not store.has(second)
    assert store.has(other)  # another peer's blobs are not spent on A's quota
    assert store.owner_bytes(PEER_A) == 80 * KIB <= 100 * KIB


def test_a_blob_in_use_is_never_evicted_and_the_write_fails_instead(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, peer_bytes_max=100 * KIB)
    kept = [store.put(blob(i, 40 * KIB), owner=PEER_A) for i in range(2)]
    store.in_use = lambda: BlobUse(pinned=frozenset(kept))
    with pytest.raises(BlobError, match="quota"):
        store.put(blob(9, 40 * KIB), owner=PEER_A)
    assert all(store.has(d) for d in kept)
    assert store.owner_bytes(PEER_A) == 80 * KIB
    assert not list((tmp_path / "blobs").rglob(".partial-*"))


def test_a_blob_larger_than_the_quota_is_refused_before_anything_is_evicted(
    tmp_path: Path,
) -> None:
    store, _ = make_store(tmp_path, peer_bytes_max=100 * KIB)
    held = store.put(blob(1, 40 * KIB), owner=PEER_A)
    with pytest.raises(BlobError, match="quota"):
        store.put(blob(2, 120 * KIB), owner=PEER_A)
    assert store.has(held)


def test_the_total_bound_evicts_least_recently_used_and_results_last(tmp_path: Path) -> None:
    store, clock = make_store(tmp_path, bytes_max=100 * KIB)
    digests = []
    for i in range(3):
        digests.append(store.put(blob(i, 30 * KIB), owner=f"peer-{i}"))
        clock.ms += 1
    result, oldest, middle = digests
    store.in_use = lambda: BlobUse(retained=frozenset({result}))
    store.put(blob(7, 30 * KIB))  # the user's own upload: needs 20 KiB freed
    assert store.has(result) and not store.has(oldest) and store.has(middle)
    store.put(blob(8, 80 * KIB))  # now the retained result goes too, the last resort
    assert not store.has(result)
    assert store.bytes_held <= 100 * KIB
    assert disk_bytes(tmp_path / "blobs") == store.bytes_held


def test_the_sweep_deletes_unneeded_blobs_after_the_grace_period_only(tmp_path: Path) -> None:
    store, clock = make_store(tmp_path, unused_grace_ms=60_000)
    pinned, result, stale, recent = (store.put(blob(i, 1 * KIB)) for i in range(4))
    clock.ms += 60_000
    store.touch(recent)
    store.in_use = lambda: BlobUse(pinned=frozenset({pinned}), retained=frozenset({result}))
    assert store.sweep() == 1 * KIB
    assert [store.has(d) for d in (pinned, result, stale, recent)] == [True, True, False, True]


def test_a_restarted_store_counts_what_is_on_disk_and_drops_partial_files(
    tmp_path: Path,
) -> None:
    store, clock = make_store(tmp_path)
    digests = [store.put(blob(i, 10 * KIB)) for i in range(3)]
    (tmp_path / "blobs" / ".partial-crashed").write_bytes(b"half")
    (tmp_path / "blobs" / digests[0].hex()[:2] / ".partial-crashed").write_bytes(b"half")
    again, _ = make_store(tmp_path, clock)
    assert again.bytes_held == 30 * KIB and again.digests() == frozenset(digests)
    assert not list((tmp_path / "blobs").rglob(".partial-*"))
    assert disk_bytes(tmp_path / "blobs") == 30 * KIB


# Serving


class Requests:
    """Drive serve_blob_request with real Inbound items, collecting replies and penalties."""

    def __init__(self, store: BlobStore, may_fetch: Callable[[str, bytes], bool]) -> None:
        self.store = store
        self.may_fetch = may_fetch
        self.reputation = PeerReputation()
        self.reasons: list[str] = []

    def penalise(self, peer: str, points: int, reason: str) -> None:
        self.reputation.adjust(peer, -points)
        self.reasons.append(reason)

    async def ask(self, peer: str, data: bytes) -> BlobChunk | None:
        replies: list[bytes] = []

        async def reply(frame: bytes) -> None:
            replies.append(frame)

        await serve_blob_request(
            self.store, Inbound(peer, PROTOCOL_BLOB, data, reply), self.may_fetch, self.penalise
        )
        return (
            decode_as(replies[0], BlobChunk, bytes_max=limits.FRAME_BYTES_MAX) if replies else None
        )


ABSURD_REQUESTS = [
    (2**44, 1024, "bad-offset"),
    (2**63 - 1, 1024, "bad-offset"),
    (-1, 1024, "bad-offset"),
    (-(2**63), 1024, "bad-offset"),
    (5000, 1024, "bad-range"),  # within the absolute bound, past this blob's end
    (0, 0, "bad-length"),
    (0, -(2**63), "bad-length"),
]


@pytest.mark.parametrize(("offset", "length", "reason"), ABSURD_REQUESTS)
async def test_an_absurd_request_is_refused_and_penalised_never_raised(
    tmp_path: Path, offset: int, length: int, reason: str
) -> None:
    store, _ = make_store(tmp_path)
    digest = store.put(b"y" * 4000)
    requests = Requests(store, lambda peer, h: True)
    chunk = await requests.ask(PEER_A, encode(BlobRequest(digest, offset, length)))
    assert chunk is not None and chunk.total_bytes == BLOB_TOTAL_REFUSED and chunk.data == b""
    assert requests.reasons == [reason]
    assert requests.reputation.score(PEER_A) == -MALFORMED_PENALTY_POINTS


async def test_a_huge_length_gets_one_chunk_and_garbage_gets_no_answer(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    data = blob(5, 3 * limits.BLOB_CHUNK_BYTES_MAX // 2)
    digest = store.put(data)
    requests = Requests(store, lambda peer, h: True)
    chunk = await requests.ask(PEER_A, encode(BlobRequest(digest, 0, 2**63 - 1)))
    assert chunk is not None and chunk.data == data[: limits.BLOB_CHUNK_BYTES_MAX]
    assert await requests.ask(PEER_A, encode(BlobRequest(b"short", 0, 10))) is not None
    assert await requests.ask(PEER_A, b"\x93\xff\x00garbage") is None
    assert requests.reasons == ["bad-hash", "malformed"]


async def test_a_peer_not_entitled_gets_a_refusal_not_the_bytes_and_repeats_cost_it(
    tmp_path: Path,
) -> None:
    store, _ = make_store(tmp_path)
    digest = store.put(b"the job's secret input")
    requests = Requests(store, lambda peer, h: peer == PEER_A)
    chunk = await requests.ask(PEER_A, encode(BlobRequest(digest, 0, 1024)))
    assert chunk is not None and chunk.data == b"the job's secret input"
    for _ in range(3):
        chunk = await requests.ask(PEER_B, encode(BlobRequest(digest, 0, 1024)))
        assert chunk is not None and chunk.total_bytes == BLOB_TOTAL_REFUSED and not chunk.data
    # A blob we do not hold is refused alike: a stranger learns nothing of what we hold.
    chunk = await requests.ask(PEER_B, encode(BlobRequest(b"\1" * 32, 0, 1024)))
    assert chunk is not None and chunk.total_bytes == BLOB_TOTAL_REFUSED
    assert requests.reputation.score(PEER_B) == -4 * UNENTITLED_PENALTY_POINTS
    assert requests.reputation.score(PEER_A) == 0


# Fetching, over an in-memory transport


@asynccontextmanager
async def two_peers(
    store: BlobStore, may_fetch: Callable[[str, bytes], bool]
) -> AsyncIterator[tuple[Transport, Transport, list[BlobRequest]]]:
    """A server holding ``store`` and a client; yields (server, client, requests served)."""
    net = MemoryNetwork()
    seen: list[BlobRequest] = []
    requests = Requests(store, may_fetch)
    server_config = config("server", "127.0.0.2", protocols=(PROTOCOL_BLOB,))
    async with net.open_transport(server_config) as server:
        client_config = config(
            "client", "127.0.0.3", protocols=(PROTOCOL_BLOB,), bootstrap=server.listen_addrs
        )
        async with net.open_transport(client_config) as client, trio.open_nursery() as nursery:

            async def serve() -> None:
                async for item in server.inbound:
                    seen.append(decode_as(item.data, BlobRequest))
                    await serve_blob_request(store, item, requests.may_fetch, requests.penalise)

            nursery.start_soon(serve)
            yield server, client, seen
            nursery.cancel_scope.cancel()


async def test_a_blob_is_fetched_in_chunks_and_counted_against_its_peer(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make_store(tmp_path / "source")
    data = blob(6, 2 * limits.BLOB_CHUNK_BYTES_MAX + 100)
    digest = source.put(data)
    target, _ = make_store(tmp_path / "target")
    async with two_peers(source, lambda peer, h: True) as (server, client, seen):
        await fetch_blob(client, target, server.peer_id, digest, len(data))
    assert target.get(digest) == data and len(seen) == 3
    assert target.owner_bytes(server.peer_id) == len(data)
    assert not list((tmp_path / "target").rglob(".partial-*"))


async def test_a_claimed_size_over_the_quota_fails_before_a_byte_is_asked_for(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make_store(tmp_path / "source")
    digest = source.put(blob(7, 200 * KIB))
    target, _ = make_store(tmp_path / "target", peer_bytes_max=100 * KIB)
    async with two_peers(source, lambda peer, h: True) as (server, client, seen):
        with pytest.raises(BlobError, match="quota"):
            await fetch_blob(client, target, server.peer_id, digest, 200 * KIB)
    assert seen == [] and target.bytes_held == 0


async def test_a_refused_fetch_and_a_lying_size_fail_cleanly(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make_store(tmp_path / "source")
    digest = source.put(blob(8, 10 * KIB))
    target, _ = make_store(tmp_path / "target")
    async with two_peers(source, lambda peer, h: False) as (server, client, _seen):
        with pytest.raises(BlobError, match="refused"):
            await fetch_blob(client, target, server.peer_id, digest, 10 * KIB)
    async with two_peers(source, lambda peer, h: True) as (server, client, _seen):
        with pytest.raises(BlobError, match="another blob or range"):
            await fetch_blob(client, target, server.peer_id, digest, 5 * KIB)
    assert target.bytes_held == 0 and disk_bytes(tmp_path / "target") == 0


async def test_without_an_entitlement_rule_nobody_is_served(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    digest = store.put(b"held, and still not served")
    replies: list[bytes] = []

    async def reply(frame: bytes) -> None:
        replies.append(frame)

    request = encode(BlobRequest(digest, 0, 1024))
    await serve_blob_request(store, Inbound(PEER_A, PROTOCOL_BLOB, request, reply))
    chunk = decode_as(replies[0], BlobChunk)
    assert chunk.total_bytes == BLOB_TOTAL_REFUSED and chunk.data == b""


async def test_our_own_result_is_fetched_for_us_not_against_the_workers_quota(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source, _ = make_store(tmp_path / "source")
    digest = source.put(blob(9, 200 * KIB))
    target, _ = make_store(tmp_path / "target", peer_bytes_max=100 * KIB)
    async with two_peers(source, lambda peer, h: True) as (server, client, _seen):
        await fetch_blob(client, target, server.peer_id, digest, 200 * KIB, owner="")
    assert target.has(digest) and target.owner_bytes(server.peer_id) == 0
    assert target.owner_bytes("") == 200 * KIB
