"""The content-addressed blob store: hash-checked on the way in, never half-written."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from node.blobs import BlobError, BlobStore


def test_a_blob_is_stored_under_its_hash_and_read_back_in_chunks(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    data = bytes(range(256)) * 100
    digest = store.put(data)
    assert digest == hashlib.sha256(data).digest()
    assert store.get(digest) == data and store.size(digest) == len(data)
    assert store.read_chunk(digest, 100, 50) == (data[100:150], len(data))
    assert store.put(data) == digest  # storing it again changes nothing


def test_a_blob_that_does_not_match_its_expected_hash_is_refused(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    wrong = hashlib.sha256(b"something else").digest()
    with pytest.raises(BlobError, match="mismatch"):
        store.put(b"the real bytes", expected=wrong)
    assert not store.has(wrong)
    assert not list((tmp_path / "blobs").rglob(".partial-*"))


def test_unknown_and_malformed_hashes(tmp_path: Path) -> None:
    store = BlobStore(tmp_path / "blobs")
    assert store.get(b"\0" * 32) is None and store.size(b"\0" * 32) == -1
    assert store.read_chunk(b"\0" * 32, 0, 10) == (b"", -1)
    with pytest.raises(BlobError):
        store.get(b"short")
