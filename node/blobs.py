"""Content-addressed blobs (modules, inputs, outputs) on disk, bounded, and their transfer.

A blob is named by the sha256 of its bytes. It is written to a temporary file, synced and renamed,
so a crash never leaves a half blob under a valid name; it is hash-checked on the way in, whatever
its source. Transfers over /hearth/blob/1 go in chunks, each a request/response pair with a
timeout, streamed to a temporary file and checked against the hash before it is stored.

Theory of operation (ADR 0015)
------------------------------
The store counts every blob it holds: its size (read from disk when the node starts), when it
was last used, and its *owner*, the peer whose job made us fetch or write it ("" for the blobs
of this node's own user). Two bounds hold at all times, bytes still being downloaded included:

- all blobs together stay within ``bytes_max``;
- the blobs held for one peer stay within ``peer_bytes_max``.

Room is made by evicting blobs that no running or pending work needs, least recently used first
(the owner's own blobs first when it is the owner's quota that is short). The engine says which
blobs its work needs (``in_use``), so the store keeps no copy of the protocol's state. A blob in
use is never evicted: when room cannot be made, the fetch or the write fails with its reason
before a byte is downloaded. A blob neither in use nor retained (the results of jobs the user
published) is deleted by ``sweep`` once it has gone unused for ``unused_grace_ms``.

A blob is served only to a peer the engine says is entitled to it (``may_fetch``); others get a
refusal (``BLOB_TOTAL_REFUSED``, never the bytes) and a penalty, as do malformed requests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Final

import trio

from hearth.node.clock import Clock, SystemClock
from hearth.node.files import write_atomically
from hearth.node.logs import log
from hearth.p2p.transport import Inbound, Transport, TransportError
from hearth.protocol import limits
from hearth.protocol.codec import decode_as, encode
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.messages import (
    BLOB_TOTAL_MISSING,
    BLOB_TOTAL_REFUSED,
    PROTOCOL_BLOB,
    BlobChunk,
    BlobRequest,
)

HASH_BYTES: Final = 32
BLOB_STORE_PEER_BYTES_MAX: Final = 512 * 1024 * 1024  # >= five jobs' worth of typical blobs
BLOB_UNUSED_GRACE_MS: Final = 10 * 60 * 1000  # an unneeded blob is kept this long after its use
PARTIAL_PREFIX: Final = ".partial-"
MALFORMED_PENALTY_POINTS: Final = 10  # as a malformed ledger-range request costs
UNENTITLED_PENALTY_POINTS: Final = 5  # an honest worker dropped mid-fetch asks once or twice

Penalise = Callable[[str, int, str], None]  # (peer, points, reason)
MayFetch = Callable[[str, bytes], bool]  # (peer, blob hash) -> entitled


class BlobError(Exception):
    """A blob could not be stored, read or fetched; the message says why."""


class BlobRangeError(BlobError):
    """A request named a range outside the blob: the requester's fault, not ours."""


class BlobCorrupt(BlobError):
    """A peer sent bytes that break the protocol or the hash: it is at fault (ADR 0024)."""


class BlobMissing(BlobError):
    """A peer does not hold the blob or will not serve it to us: ask someone else."""


class BlobRefused(BlobMissing):
    """A peer will not serve the blob to us at all (ADR 0015): do not ask it again."""


class BlobUnreachable(BlobError):
    """A peer did not answer in time, or the connection broke mid-transfer."""


def blob_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclasses.dataclass(frozen=True)
class BlobStoreConfig:
    bytes_max: int = limits.BLOB_STORE_BYTES_MAX
    peer_bytes_max: int = BLOB_STORE_PEER_BYTES_MAX
    unused_grace_ms: int = BLOB_UNUSED_GRACE_MS


@dataclasses.dataclass(frozen=True)
class BlobUse:
    """What the node's work needs: ``pinned`` blobs are never evicted; ``retained`` ones (the
    results the user asked for) are evicted last and never swept."""

    pinned: frozenset[bytes] = frozenset()
    retained: frozenset[bytes] = frozenset()


@dataclasses.dataclass(slots=True)
class _Entry:
    size_bytes: int
    used_ms: int
    owner: str


class BlobStore:
    def __init__(
        self, root: Path, config: BlobStoreConfig | None = None, clock: Clock | None = None
    ) -> None:
        self.root = root
        self.config = config or BlobStoreConfig()
        self.clock = clock or SystemClock()
        self.in_use: Callable[[], BlobUse] = BlobUse  # the job service tells us what work needs
        self._entries: dict[bytes, _Entry] = {}
        self._reserved: dict[str, int] = {}  # owner -> bytes being downloaded for it
        self.bytes_held = 0
        root.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        """Count what is on disk; drop what a crash left half-written."""
        for partial in [
            *self.root.glob(f"{PARTIAL_PREFIX}*"),
            *self.root.glob(f"*/{PARTIAL_PREFIX}*"),
        ]:
            partial.unlink(missing_ok=True)
        for path in sorted(self.root.glob("??/*")):
            digest = _digest_of_name(path)
            if digest is None:
                continue  # not ours: neither counted nor touched
            stat = path.stat()
            self._entries[digest] = _Entry(stat.st_size, stat.st_mtime_ns // 1_000_000, "")
            self.bytes_held += stat.st_size

    # Reading

    def path(self, digest: bytes) -> Path:
        if len(digest) != HASH_BYTES:
            raise BlobError(f"a blob hash is {HASH_BYTES} bytes, not {len(digest)}")
        text = digest.hex()
        return self.root / text[:2] / text

    def has(self, digest: bytes) -> bool:
        if self.path(digest).exists():
            return True
        self._forget(digest)  # removed behind our back: stop counting it
        return False

    def get(self, digest: bytes) -> bytes | None:
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            self._forget(digest)
            return None
        self.touch(digest)
        return data

    def size(self, digest: bytes) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return -1

    def touch(self, digest: bytes) -> None:
        entry = self._entries.get(digest)
        if entry is not None:
            entry.used_ms = self.clock.now_ms()

    def read_chunk(self, digest: bytes, offset: int, length: int) -> tuple[bytes, int]:
        """(bytes from ``offset``, total size), or (b"", -1) if we do not hold the blob.

        A range outside the blob raises BlobRangeError before the file is positioned: a seek far
        past the end (2^44 and up) fails with EINVAL, and nothing a peer names may reach it.
        """
        if length < 1:
            raise BlobRangeError(f"length {length} is not positive")
        try:
            with self.path(digest).open("rb") as handle:
                total = os.fstat(handle.fileno()).st_size
                if not 0 <= offset <= total:
                    raise BlobRangeError(f"offset {offset} is outside a blob of {total} bytes")
                handle.seek(offset)
                return handle.read(min(length, limits.BLOB_CHUNK_BYTES_MAX)), total
        except FileNotFoundError:
            return b"", BLOB_TOTAL_MISSING
        except OSError as exc:
            raise BlobError(f"reading blob {digest.hex()[:16]}: {exc}") from None

    # Writing

    def put(self, data: bytes, expected: bytes | None = None, owner: str = "") -> bytes:
        """Store ``data`` for ``owner``; refuse it if ``expected`` is given and the hash differs,
        or if the store cannot make room for it."""
        digest = blob_hash(data)
        if expected is not None and digest != expected:
            raise BlobError(f"blob hash mismatch: expected {expected.hex()[:16]}")
        if self.has(digest):
            self.touch(digest)
            return digest
        with self.reservation(len(data), owner):
            target = self.path(digest)
            target.parent.mkdir(exist_ok=True)
            write_atomically(target, data)
            self._add(digest, len(data), owner)
        return digest

    @contextlib.contextmanager
    def reservation(self, size_bytes: int, owner: str) -> Iterator[None]:
        """Hold room for ``size_bytes`` for ``owner`` while they are written; BlobError if the
        room cannot be made without evicting a blob in use."""
        self._make_room(size_bytes, owner)
        self._reserved[owner] = self._reserved.get(owner, 0) + size_bytes
        try:
            yield
        finally:
            # Two fetches for one owner, one of them an empty blob: the other may have cleared
            # the entry already (an empty input is an ordinary job's input).
            left = self._reserved.get(owner, 0) - size_bytes
            if left > 0:
                self._reserved[owner] = left
            else:
                self._reserved.pop(owner, None)

    @contextlib.contextmanager
    def partial_file(self) -> Iterator[tuple[Path, BinaryIO]]:
        """A temporary file in the store to download into; removed unless ``commit`` took it."""
        fd, name = tempfile.mkstemp(dir=self.root, prefix=PARTIAL_PREFIX)
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as handle:
                yield path, handle
        finally:
            path.unlink(missing_ok=True)

    def commit(self, partial: Path, digest: bytes, owner: str) -> None:
        """Move a downloaded, hash-checked, synced file under its name (inside a reservation)."""
        target = self.path(digest)
        target.parent.mkdir(exist_ok=True)
        os.replace(partial, target)
        self._add(digest, target.stat().st_size, owner)

    def _add(self, digest: bytes, size_bytes: int, owner: str) -> None:
        self._forget(digest)
        self._entries[digest] = _Entry(size_bytes, self.clock.now_ms(), owner)
        self.bytes_held += size_bytes

    def _forget(self, digest: bytes) -> None:
        entry = self._entries.pop(digest, None)
        if entry is not None:
            self.bytes_held -= entry.size_bytes

    def _remove(self, digest: bytes) -> None:
        try:
            self.path(digest).unlink(missing_ok=True)
        except OSError as exc:
            log("warning", "blob-not-removed", blob=digest.hex()[:16], error=str(exc))
            return
        self._forget(digest)

    # Bounds

    def owner_bytes(self, owner: str) -> int:
        """Bytes held and being downloaded for ``owner``."""
        held = sum(e.size_bytes for e in self._entries.values() if e.owner == owner)
        return held + self._reserved.get(owner, 0)

    def statistics(self) -> dict[str, int]:
        return {
            "blobs": len(self._entries),
            "bytes_held": self.bytes_held,
            "bytes_reserved": sum(self._reserved.values()),
            "bytes_max": self.config.bytes_max,
            "peer_bytes_max": self.config.peer_bytes_max,
        }

    def _make_room(self, size_bytes: int, owner: str) -> None:
        if not 0 <= size_bytes <= limits.BLOB_BYTES_MAX:
            raise BlobError(f"a blob of {size_bytes} bytes is out of bounds")
        use = self.in_use()
        if owner:
            over = self.owner_bytes(owner) + size_bytes - self.config.peer_bytes_max
            if over > 0:
                self._evict(over, use, owner, f"quota of {self.config.peer_bytes_max} bytes")
        reserved = sum(self._reserved.values())
        over = self.bytes_held + reserved + size_bytes - self.config.bytes_max
        if over > 0:
            self._evict(over, use, None, f"store of {self.config.bytes_max} bytes full")

    def _evict(self, bytes_needed: int, use: BlobUse, owner: str | None, why: str) -> None:
        """Free ``bytes_needed`` by evicting unpinned blobs (of ``owner`` only, if given), least
        recently used first and retained ones last; evict nothing if that cannot suffice."""
        candidates = sorted(
            (digest in use.retained, entry.used_ms, digest)
            for digest, entry in self._entries.items()
            if digest not in use.pinned and (owner is None or entry.owner == owner)
        )
        sizes = [self._entries[digest].size_bytes for _, _, digest in candidates]
        if sum(sizes) < bytes_needed:
            raise BlobError(f"{why}: {bytes_needed} more bytes needed, the rest is in use")
        freed = 0
        for (_, _, digest), size_bytes in zip(candidates, sizes, strict=True):
            if freed >= bytes_needed:
                break
            self._remove(digest)
            freed += size_bytes
        log("info", "blobs-evicted", bytes=freed, why=why)

    def sweep(self) -> int:
        """Delete blobs neither in use nor retained that went unused for the grace period."""
        now_ms = self.clock.now_ms()
        use = self.in_use()
        stale = [
            digest
            for digest, entry in sorted(self._entries.items())
            if digest not in use.pinned
            and digest not in use.retained
            and now_ms - entry.used_ms >= self.config.unused_grace_ms
        ]
        freed = 0
        for digest in stale:
            freed += self._entries[digest].size_bytes
            self._remove(digest)
        return freed

    def digests(self) -> frozenset[bytes]:
        return frozenset(self._entries)


def _digest_of_name(path: Path) -> bytes | None:
    name = path.name
    if len(name) != 2 * HASH_BYTES or path.parent.name != name[:2]:
        return None
    try:
        return bytes.fromhex(name)
    except ValueError:
        return None


# Serving


def request_problem(request: BlobRequest) -> str:
    """What is wrong with a request whatever blob it names ("" if nothing)."""
    if len(request.blob_hash) != HASH_BYTES:
        return "bad-hash"
    if not 0 <= request.offset <= limits.BLOB_BYTES_MAX:
        return "bad-offset"
    if request.length < 1:
        return "bad-length"
    return ""


def _nobody(peer: str, digest: bytes) -> bool:
    return False


def _no_penalty(peer: str, points: int, reason: str) -> None:
    return None


async def serve_blob_request(
    store: BlobStore,
    item: Inbound,
    may_fetch: MayFetch = _nobody,
    penalise: Penalise = _no_penalty,
) -> None:
    """Answer one /hearth/blob/1 request: a chunk to a peer entitled to the blob, else a refusal.

    Nothing in a request can raise out of here: its fields are checked against absolute bounds,
    then against the peer's entitlement, then against the blob itself. Without ``may_fetch``
    nobody is entitled; the node passes the engine's answer (node/runtime.py).
    """
    if item.reply is None:
        return
    try:
        request = decode_as(item.data, BlobRequest)
    except RemoteProtocolError as exc:
        penalise(item.peer_id, MALFORMED_PENALTY_POINTS, "malformed")
        log("info", "blob-request-refused", peer=item.peer_id, reason=exc.reason)
        return
    problem = request_problem(request)
    points = MALFORMED_PENALTY_POINTS
    if not problem and not may_fetch(item.peer_id, request.blob_hash):
        problem, points = "not-entitled", UNENTITLED_PENALTY_POINTS
    data, total = b"", BLOB_TOTAL_REFUSED
    if not problem:
        try:
            data, total = store.read_chunk(request.blob_hash, request.offset, request.length)
        except BlobRangeError:
            problem = "bad-range"
        except BlobError as exc:  # our disk, not the peer: say we lack it
            log("warning", "blob-unreadable", error=str(exc))
            total = BLOB_TOTAL_MISSING
    if problem:
        penalise(item.peer_id, points, problem)
        log("info", "blob-request-refused", peer=item.peer_id, reason=problem)
        data, total = b"", BLOB_TOTAL_REFUSED
    else:
        store.touch(request.blob_hash)
    await item.reply(encode(BlobChunk(request.blob_hash, request.offset, data, total)))


# Fetching


async def fetch_blob(
    transport: Transport,
    store: BlobStore,
    peer: str,
    digest: bytes,
    size_bytes: int,
    owner: str | None = None,
) -> None:
    """Fetch a whole blob from ``peer`` into ``store``, counted against ``owner``'s quota (the
    peer's, unless given); raise BlobError saying why not. The size the peer claimed is checked
    before a byte is asked for."""
    owner = peer if owner is None else owner
    if store.has(digest):
        store.touch(digest)
        return
    if not 0 <= size_bytes <= limits.BLOB_BYTES_MAX:
        raise BlobError(f"blob size {size_bytes} is out of bounds")
    with store.reservation(size_bytes, owner), store.partial_file() as (path, handle):
        hasher = hashlib.sha256()
        offset = 0
        while True:
            data = await _fetch_chunk(transport, peer, digest, offset, size_bytes)
            try:
                handle.write(data)
            except OSError as exc:
                raise BlobError(f"writing blob {digest.hex()[:16]}: {exc}") from None
            hasher.update(data)
            offset += len(data)
            if offset == size_bytes:
                break
        if hasher.digest() != digest:
            raise BlobCorrupt(f"{peer} sent bytes that do not hash to {digest.hex()[:16]}")
        try:
            handle.flush()
            os.fsync(handle.fileno())
            store.commit(path, digest, owner)
        except OSError as exc:
            raise BlobError(f"storing blob {digest.hex()[:16]}: {exc}") from None


async def _fetch_chunk(
    transport: Transport, peer: str, digest: bytes, offset: int, size_bytes: int
) -> bytes:
    request = BlobRequest(digest, offset, limits.BLOB_CHUNK_BYTES_MAX)
    try:
        reply = await transport.request(
            peer, PROTOCOL_BLOB, encode(request), limits.BLOB_REQUEST_TIMEOUT_MS
        )
        chunk = decode_as(reply, BlobChunk, bytes_max=limits.FRAME_BYTES_MAX)
    except (TransportError, RemoteProtocolError, trio.TooSlowError) as exc:
        raise BlobUnreachable(f"fetching {digest.hex()[:16]} from {peer}: {exc}") from None
    if chunk.total_bytes == BLOB_TOTAL_REFUSED:
        raise BlobRefused(f"{peer} refused blob {digest.hex()[:16]}")
    if chunk.total_bytes < 0:
        raise BlobMissing(f"{peer} does not hold blob {digest.hex()[:16]}")
    if chunk.blob_hash != digest or chunk.offset != offset or chunk.total_bytes != size_bytes:
        raise BlobCorrupt(f"{peer} answered for another blob or range")
    if len(chunk.data) > min(size_bytes - offset, limits.BLOB_CHUNK_BYTES_MAX):
        raise BlobCorrupt(f"{peer} sent more than was asked for")
    if not chunk.data and offset < size_bytes:
        raise BlobCorrupt(f"{peer} sent an empty chunk mid-blob")
    return chunk.data
