"""Content-addressed blobs (modules, inputs, outputs) on disk, and their transfer between peers.

A blob is named by the sha256 of its bytes. It is written to a temporary file, synced and renamed,
so a crash never leaves a half blob under a valid name; it is hash-checked on the way in, whatever
its source. Transfers over /hearth/blob/1 go in chunks, each a request/response pair with a
timeout, and the assembled blob is checked against its hash before it is stored.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from node.files import write_atomically
from p2p.transport import Inbound, Transport, TransportError
from protocol import limits
from protocol.codec import decode_as, encode
from protocol.errors import RemoteProtocolError
from protocol.messages import PROTOCOL_BLOB, BlobChunk, BlobRequest

HASH_BYTES = 32


class BlobError(Exception):
    """A blob could not be stored or fetched; the message says why."""


def blob_hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class BlobStore:
    def __init__(self, root: Path, bytes_max: int = limits.BLOB_STORE_BYTES_MAX) -> None:
        self.root = root
        self.bytes_max = bytes_max
        root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: bytes) -> Path:
        if len(digest) != HASH_BYTES:
            raise BlobError(f"a blob hash is {HASH_BYTES} bytes, not {len(digest)}")
        text = digest.hex()
        return self.root / text[:2] / text

    def has(self, digest: bytes) -> bool:
        return self.path(digest).exists()

    def get(self, digest: bytes) -> bytes | None:
        try:
            return self.path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def size(self, digest: bytes) -> int:
        try:
            return self.path(digest).stat().st_size
        except FileNotFoundError:
            return -1

    def put(self, data: bytes, expected: bytes | None = None) -> bytes:
        """Store ``data``; refuse it if ``expected`` is given and the hash differs."""
        digest = blob_hash(data)
        if expected is not None and digest != expected:
            raise BlobError(f"blob hash mismatch: expected {expected.hex()[:16]}")
        if len(data) > limits.BLOB_BYTES_MAX:
            raise BlobError(f"blob of {len(data)} bytes exceeds {limits.BLOB_BYTES_MAX}")
        target = self.path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(exist_ok=True)
        write_atomically(target, data)
        return digest

    def read_chunk(self, digest: bytes, offset: int, length: int) -> tuple[bytes, int]:
        """(bytes from ``offset``, total size), or (b"", -1) if we do not hold the blob."""
        path = self.path(digest)
        try:
            with path.open("rb") as handle:
                total = os.fstat(handle.fileno()).st_size
                handle.seek(offset)
                return handle.read(min(length, limits.BLOB_CHUNK_BYTES_MAX)), total
        except FileNotFoundError:
            return b"", -1


async def serve_blob_request(store: BlobStore, item: Inbound) -> None:
    """Answer one /hearth/blob/1 request; malformed requests get no answer."""
    if item.reply is None:
        return
    try:
        request = decode_as(item.data, BlobRequest)
        store.path(request.blob_hash)
    except (RemoteProtocolError, BlobError):
        return
    if request.offset < 0 or request.length <= 0:
        return
    data, total = store.read_chunk(request.blob_hash, request.offset, request.length)
    await item.reply(encode(BlobChunk(request.blob_hash, request.offset, data, total)))


async def fetch_blob(
    transport: Transport, store: BlobStore, peer: str, digest: bytes, size_bytes: int
) -> None:
    """Fetch a whole blob from ``peer`` into ``store``; raise BlobError saying why not."""
    if store.has(digest):
        return
    if not 0 <= size_bytes <= limits.BLOB_BYTES_MAX:
        raise BlobError(f"blob size {size_bytes} is out of bounds")
    parts: list[bytes] = []
    offset = 0
    while offset < size_bytes or (size_bytes == 0 and not parts):
        request = BlobRequest(digest, offset, limits.BLOB_CHUNK_BYTES_MAX)
        try:
            reply = await transport.request(
                peer, PROTOCOL_BLOB, encode(request), limits.BLOB_REQUEST_TIMEOUT_MS
            )
            chunk = decode_as(reply, BlobChunk, bytes_max=limits.FRAME_BYTES_MAX)
        except (TransportError, RemoteProtocolError, trio.TooSlowError) as exc:
            raise BlobError(f"fetching {digest.hex()[:16]} from {peer}: {exc}") from None
        if chunk.total_bytes < 0:
            raise BlobError(f"{peer} does not hold blob {digest.hex()[:16]}")
        if chunk.blob_hash != digest or chunk.offset != offset or chunk.total_bytes != size_bytes:
            raise BlobError(f"{peer} answered for another blob or range")
        if not chunk.data and offset < size_bytes:
            raise BlobError(f"{peer} sent an empty chunk mid-blob")
        parts.append(chunk.data)
        offset += len(chunk.data)
        if size_bytes == 0:
            break
    store.put(b"".join(parts), expected=digest)
