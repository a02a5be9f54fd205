"""Fetch many chunks at once from every host that has them, resumably (ADR 0024).

Theory of operation
-------------------
The chunks to fetch are the distinct ones not already in the store: what an earlier,
interrupted transfer committed is never asked for again. Each host takes them in an order of
its own (hashed with its peer id). ``parallel`` tasks take chunks from one
queue; each asks the sources in turn, starting at a different one per chunk so the load spreads
over every host that holds the data. A source that answers "missing" is skipped for that chunk
only (it may be fetching the same data itself). A source that sends bytes that break the hash
or the protocol is penalised and never asked again in this transfer; one that fails to answer
(it stopped mid-transfer, or timed out) is dropped too. A chunk that no source could deliver
fails the whole transfer with every source's reason, after the tasks in flight stop. Each chunk
is streamed to a temporary file and hash-checked before it takes its name (node/blobs.py), so at
most ``parallel`` chunks are ever in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable

import trio

from hearth.node.blobs import (
    BlobCorrupt,
    BlobError,
    BlobMissing,
    BlobRefused,
    BlobStore,
    BlobUnreachable,
    Penalise,
    fetch_blob,
)
from hearth.p2p.transport import Transport

CORRUPT_PENALTY_POINTS = 50  # a host that sends bad bytes wastes everyone's bandwidth
PARALLEL_FETCHES_DEFAULT = 8

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclasses.dataclass
class TransferCounters:
    """What this node downloaded, for the API and the benchmarks."""

    chunks: int = 0
    bytes: int = 0
    by_peer: dict[str, int] = dataclasses.field(default_factory=dict)
    bad_peers: set[str] = dataclasses.field(default_factory=set)

    def as_json(self) -> dict[str, object]:
        return {
            "chunks": self.chunks,
            "bytes": self.bytes,
            "by_peer": dict(sorted(self.by_peer.items())),
            "bad_peers": sorted(self.bad_peers),
        }


@dataclasses.dataclass
class _Transfer:
    sources: list[str]
    owner: str
    penalise: Penalise
    counters: TransferCounters
    progress: Progress
    total_bytes: int
    done_bytes: int = 0
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # peer -> why


def _no_penalty(peer: str, points: int, reason: str) -> None:
    return None


def _no_progress(done: int, total: int) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class FetchPlan:
    """Where to fetch from and how: ``sources`` in order of preference (never empty)."""

    sources: tuple[str, ...]
    owner: str
    parallel: int = PARALLEL_FETCHES_DEFAULT


async def fetch_chunks(
    transport: Transport,
    store: BlobStore,
    chunks: list[tuple[bytes, int]],
    plan: FetchPlan,
    *,
    counters: TransferCounters | None = None,
    penalise: Penalise = _no_penalty,
    progress: Progress = _no_progress,
) -> None:
    """Fetch every chunk of ``chunks`` ((hash, size) pairs) not in ``store``; BlobError if one
    cannot be had from any source, saying why each source failed."""
    assert plan.sources and plan.parallel >= 1
    total = sum(size for _, size in chunks)
    todo = [(digest, size) for digest, size in chunks if not store.has(digest)]
    # Each host takes the chunks in its own order, so that two workers fetching at once soon
    # hold chunks the other still lacks, and can serve them to each other.
    salt = transport.peer_id.encode()
    todo.sort(key=lambda item: hashlib.sha256(salt + item[0]).digest())
    transfer = _Transfer(
        list(plan.sources), plan.owner, penalise, counters or TransferCounters(), progress, total
    )
    transfer.done_bytes = total - sum(size for _, size in todo)
    progress(transfer.done_bytes, total)
    send, receive = trio.open_memory_channel[tuple[int, bytes, int]](len(todo))
    for index, (digest, size) in enumerate(todo):
        send.send_nowait((index, digest, size))
    send.close()
    try:
        async with trio.open_nursery() as nursery:
            for _ in range(min(plan.parallel, len(todo))):
                nursery.start_soon(_fetch_loop, transport, store, receive.clone(), transfer)
    except BaseExceptionGroup as group:  # one line for the caller: the first chunk that failed
        matched, _ = group.split(BlobError)
        if matched is None:
            raise
        raise _first(matched) from None
    finally:
        receive.close()


def _first(group: BaseExceptionGroup[BlobError]) -> BlobError:
    error = group.exceptions[0]
    return _first(error) if isinstance(error, BaseExceptionGroup) else error


async def _fetch_loop(
    transport: Transport,
    store: BlobStore,
    queue: trio.MemoryReceiveChannel[tuple[int, bytes, int]],
    transfer: _Transfer,
) -> None:
    async with queue:
        async for index, digest, size in queue:
            await _fetch_one(transport, store, index, digest, size, transfer)
            transfer.done_bytes += size
            transfer.progress(transfer.done_bytes, transfer.total_bytes)


async def _fetch_one(
    transport: Transport,
    store: BlobStore,
    index: int,
    digest: bytes,
    size: int,
    transfer: _Transfer,
) -> None:
    reasons: list[str] = []
    count = len(transfer.sources)
    for step in range(count):
        peer = transfer.sources[(index + step) % count]
        if peer in transfer.dropped:
            reasons.append(transfer.dropped[peer])
            continue
        try:
            await fetch_blob(transport, store, peer, digest, size, transfer.owner)
        except BlobRefused as exc:
            transfer.dropped[peer] = str(exc)  # one refusal, not one per chunk
            reasons.append(str(exc))
            continue
        except BlobMissing as exc:
            reasons.append(str(exc))
            continue
        except BlobCorrupt as exc:
            transfer.dropped[peer] = str(exc)
            transfer.counters.bad_peers.add(peer)
            transfer.penalise(peer, CORRUPT_PENALTY_POINTS, "corrupt-chunk")
            reasons.append(str(exc))
            continue
        except BlobUnreachable as exc:
            transfer.dropped[peer] = str(exc)
            reasons.append(str(exc))
            continue
        transfer.counters.chunks += 1
        transfer.counters.bytes += size
        transfer.counters.by_peer[peer] = transfer.counters.by_peer.get(peer, 0) + size
        return
    raise BlobError(f"no host could send chunk {digest.hex()[:16]}: {'; '.join(reasons)}")
