"""A job's files on this node: which chunks a bundle or tree needs, who may fetch them, their
transfer, and the folders a sandbox run sees (ADR 0024).

The engine knows blobs by the hashes in its messages: a job's input bundle and a result's
output tree. Their chunks are the node's business. ``ChunkIndex`` maps each manifest the node's
work uses to its chunks, so that the store pins them with it and the blob service can answer
for them: a chunk goes to a peer entitled to a manifest that lists it, or to anyone who names
it while a manifest that lists it is in use here (a chunk's hash is learnt only from its
manifest, which is guarded; this lets the workers of one job fetch from each other).
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

import trio

from hearth.node import chunks
from hearth.node.blobs import BlobError, BlobStore, MayFetch, Penalise, fetch_blob
from hearth.node.chunkfetch import FetchPlan, TransferCounters, fetch_chunks
from hearth.node.logs import log
from hearth.p2p.transport import Transport

MANIFESTS_INDEXED_MAX: Final = 4096
MAGIC_PROBE_BYTES: Final = 32
PEER_SOURCES_MAX: Final = 8  # besides the publisher, peers asked for the chunks of one input


@dataclasses.dataclass(frozen=True)
class TransferLimits:
    input_bytes_max: int = 2048 << 20
    output_bytes_max: int = 1024 << 20
    parallel: int = 8


class ChunkIndex:
    """Manifest -> its chunks, for the manifests this node's work uses."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self._children: dict[bytes, tuple[bytes, ...]] = {}  # () for a plain blob

    def note(self, digest: bytes, data: bytes) -> tuple[bytes, ...]:
        kind = chunks.kind_of(data)
        children: tuple[bytes, ...] = ()
        try:
            if kind == "bundle":
                children = tuple(d for d, _ in chunks.chunk_list(chunks.decode_bundle(data).refs()))
            elif kind == "tree":
                children = tuple(d for d, _ in chunks.chunk_list(chunks.decode_tree(data).refs()))
        except chunks.ManifestError:
            children = ()
        if len(self._children) >= MANIFESTS_INDEXED_MAX:
            self._children.clear()  # rebuilt from the store as it is asked
        self._children[digest] = children
        return children

    def children(self, digest: bytes) -> tuple[bytes, ...]:
        known = self._children.get(digest)
        if known is not None:
            return known
        try:
            with self.store.path(digest).open("rb") as handle:
                head = handle.read(MAGIC_PROBE_BYTES)
                if not chunks.kind_of(head) or self.store.size(digest) > chunks.MANIFEST_BYTES_MAX:
                    self._children[digest] = ()
                    return ()
        except (OSError, BlobError):
            return ()  # not here (yet): ask again once it is
        data = self.store.get(digest)
        return () if data is None else self.note(digest, data)

    def expand(self, digests: Iterable[bytes]) -> frozenset[bytes]:
        out = set(digests)
        for digest in list(out):
            out.update(self.children(digest))
        return frozenset(out)

    def may_fetch(
        self, peer: str, digest: bytes, in_use: frozenset[bytes], entitled: MayFetch
    ) -> bool:
        """A chunk of a manifest ``peer`` is entitled to, or of one in use here."""
        for manifest in sorted(in_use | {m for m, c in self._children.items() if c}):
            if digest in self.children(manifest) and (
                manifest in in_use or entitled(peer, manifest)
            ):
                return True
        return False


@dataclasses.dataclass
class OutputStatus:
    """The publisher's download of an accepted output tree's chunks, for the API."""

    tree: str
    total_bytes: int
    done_bytes: int = 0
    state: str = "fetching"  # fetching, done, failed
    error: str = ""
    changed: trio.Event = dataclasses.field(default_factory=trio.Event)

    def update(self, **fields: object) -> None:
        for key, value in fields.items():
            setattr(self, key, value)
        self.changed.set()
        self.changed = trio.Event()

    def as_json(self) -> dict[str, object]:
        return {
            "tree": self.tree,
            "state": self.state,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "error": self.error,
        }


class JobFiles:
    """Fetching a manifest's chunks and staging a run's folders, for the job service."""

    def __init__(self, home: Path, store: BlobStore, transport: Transport) -> None:
        self.store = store
        self.transport = transport
        self.index = ChunkIndex(store)
        self.limits = TransferLimits()
        self.counters = TransferCounters()
        self.penalise: Penalise = lambda peer, points, reason: None
        self.work_dir = home / "work"
        shutil.rmtree(self.work_dir, ignore_errors=True)  # a crash's leftovers: no run needs them
        self.outputs: dict[bytes, OutputStatus] = {}  # job id -> the download of its output tree

    def sources(self, first: str) -> tuple[str, ...]:
        """``first`` (the blob's owner), then connected peers that may hold its chunks too."""
        others = sorted(p.peer_id for p in self.transport.peers() if p.connected)
        return (first, *[p for p in others if p != first][:PEER_SOURCES_MAX])

    async def fetch(
        self,
        peer: str,
        digest: bytes,
        size_bytes: int,
        owner: str,
        progress: Callable[[int, int], None] = lambda done, total: None,
    ) -> None:
        """Fetch a blob from ``peer`` and, if it is a bundle, every chunk it lists (from ``peer``
        and any peer that has them); BlobError says why not. An input over this host's limit
        is refused before a chunk is asked for."""
        await fetch_blob(self.transport, self.store, peer, digest, size_bytes, owner)
        data = self.store.get(digest)
        if data is None or chunks.kind_of(data) != "bundle":
            return
        bundle = chunks.decode_bundle(data)
        self.index.note(digest, data)
        limit = min(self.limits.input_bytes_max, self.store.config.peer_bytes_max)
        if bundle.input_bytes > limit:
            raise BlobError(f"input of {bundle.input_bytes} bytes is over this host's {limit}")
        if bundle.output_bytes_max > self.limits.output_bytes_max:
            raise BlobError(
                f"an output of up to {bundle.output_bytes_max} bytes is over this host's "
                f"{self.limits.output_bytes_max}"
            )
        plan = FetchPlan(self.sources(peer), owner, self.limits.parallel)
        wanted = chunks.chunk_list(bundle.refs())
        started = trio.current_time()
        before = dict(self.counters.by_peer)
        await fetch_chunks(
            self.transport,
            self.store,
            wanted,
            plan,
            counters=self.counters,
            penalise=self.penalise,
            progress=progress,
        )
        sources = {p: n - before.get(p, 0) for p, n in self.counters.by_peer.items()}
        log(
            "info",
            "input-fetched",
            bundle=digest.hex()[:16],
            bytes=bundle.input_bytes,
            ms=round((trio.current_time() - started) * 1000),
            sources={p[-8:]: n for p, n in sorted(sources.items()) if n},
        )

    async def fetch_output(self, job_id: bytes, tree_data: bytes, workers: list[str]) -> None:
        """Download an accepted output tree's chunks from the workers that agreed on it."""
        tree = chunks.decode_tree(tree_data)
        status = OutputStatus(hashlib.sha256(tree_data).hexdigest(), tree.total_bytes)
        self.outputs[job_id] = status
        if not workers:
            status.update(state="failed", error="no worker holds the output")
            return
        plan = FetchPlan(tuple(workers), "", self.limits.parallel)
        try:
            await fetch_chunks(
                self.transport,
                self.store,
                chunks.chunk_list(tree.refs()),
                plan,
                counters=self.counters,
                penalise=self.penalise,
                progress=lambda done, total: status.update(done_bytes=done),
            )
        except BlobError as exc:
            log("warning", "output-not-fetched", job=job_id.hex()[:16], error=str(exc))
            status.update(state="failed", error=str(exc))
            return
        status.update(state="done", done_bytes=status.total_bytes)

    def stage(self, job_id: bytes, bundle: chunks.Bundle) -> tuple[Path, Path]:
        """The run's /input (the bundle's files, rebuilt from their chunks) and empty /output."""
        root = self.work_dir / job_id.hex()
        shutil.rmtree(root, ignore_errors=True)
        input_dir, output_dir = root / "input", root / "output"
        input_dir.mkdir(parents=True)
        output_dir.mkdir()
        chunks.materialise_inputs(self.store, bundle, input_dir)
        return input_dir, output_dir

    def unstage(self, job_id: bytes) -> None:
        shutil.rmtree(self.work_dir / job_id.hex(), ignore_errors=True)
