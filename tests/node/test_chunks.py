"""Chunked inputs and outputs: manifests checked field by field, chunks fetched from every host
that has them, once each, resumably, and a host that sends bad bytes dropped and penalised."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio

from hearth.node import chunks
from hearth.node.blobs import BlobError, BlobStore, BlobStoreConfig, serve_blob_request
from hearth.node.chunkfetch import FetchPlan, TransferCounters, fetch_chunks
from hearth.p2p.memory import MemoryNetwork
from hearth.p2p.transport import Transport
from hearth.protocol.codec import decode_as, encode
from hearth.protocol.messages import PROTOCOL_BLOB, BlobChunk, BlobRequest
from tests.p2p.helpers import config

MIB = 1024 * 1024


def store_at(root: Path) -> BlobStore:
    return BlobStore(root, BlobStoreConfig(bytes_max=1 << 30, peer_bytes_max=1 << 30))


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


# Formats


def test_a_bundle_round_trips_and_names_its_chunks(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s")
    big = random_file(tmp_path / "big", 3 * MIB + 5)
    ref = chunks.store_file(store, big)
    assert ref.size_bytes == 3 * MIB + 5 and len(ref.chunks) == 4
    bundle = chunks.Bundle(
        args=("-n", "3"),
        env=(("A", "1"), ("B", "x=y")),
        stdin=chunks.put_bytes(store, b"hello"),
        files=(("data/big", ref),),
        output_bytes_max=MIB,
        output_files_max=10,
    )
    data = bundle.encode()
    assert chunks.kind_of(data) == "bundle" and chunks.kind_of(b"plain stdin") == ""
    assert chunks.decode_bundle(data) == bundle
    assert bundle.input_bytes == 3 * MIB + 10
    target = tmp_path / "in"
    chunks.materialise_inputs(store, bundle, target)
    assert (target / "data" / "big").read_bytes() == big.read_bytes()


@pytest.mark.parametrize(
    "mutate",
    [
        lambda f: f.__setitem__(5, [["../etc/passwd", 0, []]]),
        lambda f: f.__setitem__(5, [["/abs", 0, []]]),
        lambda f: f.__setitem__(5, [["b", 0, []], ["a", 0, []]]),  # unsorted
        lambda f: f.__setitem__(5, [["a", 0, []], ["a/b", 0, []]]),  # a file inside a file
        lambda f: f.__setitem__(5, [["a", 5, []]]),  # chunk count wrong for the size
        lambda f: f.__setitem__(5, [["a", 5, [b"short"]]]),
        lambda f: f.__setitem__(3, [["B", "1"], ["A", "2"]]),  # env unsorted
        lambda f: f.__setitem__(3, [["A=B", "1"]]),
        lambda f: f.__setitem__(1, 12345),  # another chunk size
        lambda f: f.__setitem__(7, -1),
        lambda f: f.pop(),
    ],
)
def test_a_malformed_bundle_is_refused_with_its_reason(mutate) -> None:  # type: ignore[no-untyped-def]
    fields = msgpack.unpackb(chunks.Bundle().encode(), raw=False)
    mutate(fields)
    with pytest.raises(chunks.ManifestError, match="bad manifest"):
        chunks.decode_bundle(msgpack.packb(fields, use_bin_type=True))


def test_garbage_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(chunks.ManifestError):
        chunks.decode_bundle(chunks.Bundle().encode()[:-3])


def test_the_output_tree_is_canonical_and_bounded(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s")
    out = tmp_path / "out"
    (out / "b").mkdir(parents=True)
    (out / "b" / "x").write_bytes(b"x" * 10)
    (out / "a").write_bytes(b"a")
    found = chunks.collect_output(out, 100, 10)
    assert isinstance(found, list) and [p for p, _ in found] == ["a", "b/x"]
    tree = chunks.build_tree(store, b"stdout", found)
    again = chunks.build_tree(store, b"stdout", found)
    assert tree.encode() == again.encode() and chunks.decode_tree(tree.encode()) == tree
    assert chunks.collect_output(out, 10, 10) == "output passed 10 bytes"
    assert chunks.collect_output(out, 100, 1) == "output has more than 1 files"
    (out / "link").symlink_to("/etc/passwd")
    assert "not a plain file" in str(chunks.collect_output(out, 100, 10))


# Fetching from several hosts


class Server:
    """A host serving its store on /hearth/blob/1; ``corrupt`` flips a byte of every chunk."""

    def __init__(self, store: BlobStore, *, corrupt: bool = False, stall: bool = False) -> None:
        self.store, self.corrupt, self.stall = store, corrupt, stall

    async def serve(self, transport: Transport) -> None:
        async for item in transport.inbound:
            if self.stall:
                continue  # stopped mid-transfer: never answers
            if self.corrupt and item.reply is not None:
                request = decode_as(item.data, BlobRequest)
                data, total = self.store.read_chunk(request.blob_hash, request.offset, 512 * 1024)
                bad = bytes([data[0] ^ 1]) + data[1:] if data else data
                await item.reply(encode(BlobChunk(request.blob_hash, request.offset, bad, total)))
                continue
            await serve_blob_request(self.store, item, lambda peer, digest: True)


@asynccontextmanager
async def network(
    servers: dict[str, Server],
) -> AsyncIterator[tuple[Transport, dict[str, str]]]:
    """A client connected to one transport per server; yields it and each server's peer id."""
    net = MemoryNetwork()
    async with trio.open_nursery() as nursery:
        transports = []
        for index, (name, server) in enumerate(sorted(servers.items())):
            ctx = net.open_transport(
                config(name, f"127.0.0.{index + 2}", protocols=(PROTOCOL_BLOB,))
            )
            transport = await ctx.__aenter__()
            transports.append((ctx, transport))
            nursery.start_soon(server.serve, transport)
        addrs = tuple(addr for _, t in transports for addr in t.listen_addrs)
        client_config = config("client", "127.0.0.9", protocols=(PROTOCOL_BLOB,), bootstrap=addrs)
        async with net.open_transport(client_config) as client:
            yield (
                client,
                {name: t.peer_id for name, (_, t) in zip(sorted(servers), transports, strict=True)},
            )
        nursery.cancel_scope.cancel()
        for ctx, _ in reversed(transports):
            await ctx.__aexit__(None, None, None)


def seeded(tmp_path: Path, name: str, source: Path) -> tuple[BlobStore, chunks.FileRef]:
    store = store_at(tmp_path / name)
    return store, chunks.store_file(store, source)


async def test_chunks_come_from_every_host_once_each_and_resume_after_an_interruption(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source = random_file(tmp_path / "input", 12 * MIB + 123)
    store_a, ref = seeded(tmp_path, "a", source)
    store_b, _ = seeded(tmp_path, "b", source)
    servers = {"host-a": Server(store_a), "host-b": Server(store_b)}
    mine = store_at(tmp_path / "mine")
    wanted = chunks.chunk_list([ref])
    for digest, _ in wanted[:3]:  # an earlier transfer got these before it was interrupted
        data = store_a.get(digest)
        assert data is not None
        mine.put(data)
    counters = TransferCounters()
    seen: list[tuple[int, int]] = []
    async with network(servers) as (client, ids):
        plan = FetchPlan((ids["host-a"], ids["host-b"]), owner="host-a", parallel=4)
        await fetch_chunks(
            client, mine, wanted, plan, counters=counters, progress=lambda d, t: seen.append((d, t))
        )
    assert counters.chunks == len(wanted) - 3  # nothing fetched twice, nothing already held
    assert counters.bytes == ref.size_bytes - 3 * MIB
    assert set(counters.by_peer) == {ids["host-a"], ids["host-b"]}  # both hosts served their share
    assert seen[0] == (3 * MIB, ref.size_bytes) and seen[-1] == (ref.size_bytes, ref.size_bytes)
    target = tmp_path / "rebuilt"
    chunks.write_file(mine, ref, target)
    assert (
        hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(source.read_bytes()).digest()
    )


async def test_a_host_sending_bad_chunks_is_penalised_and_not_asked_again(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source = random_file(tmp_path / "input", 6 * MIB)
    store_a, ref = seeded(tmp_path, "a", source)
    store_bad, _ = seeded(tmp_path, "bad", source)
    bad = Server(store_bad, corrupt=True)
    penalties: list[tuple[str, int, str]] = []
    counters = TransferCounters()
    mine = store_at(tmp_path / "mine")
    async with network({"host-a": Server(store_a), "liar": bad}) as (client, ids):
        plan = FetchPlan((ids["liar"], ids["host-a"]), owner="host-a", parallel=1)
        await fetch_chunks(
            client,
            mine,
            chunks.chunk_list([ref]),
            plan,
            counters=counters,
            penalise=lambda *p: penalties.append(p),
        )
    assert [(p, r) for p, _, r in penalties] == [(ids["liar"], "corrupt-chunk")]
    assert counters.bad_peers == {ids["liar"]} and set(counters.by_peer) == {ids["host-a"]}
    assert all(mine.has(digest) for digest in ref.chunks)


async def test_a_host_that_stops_answering_is_dropped_and_the_others_finish(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source = random_file(tmp_path / "input", 4 * MIB)
    store_a, ref = seeded(tmp_path, "a", source)
    store_b, _ = seeded(tmp_path, "b", source)
    counters = TransferCounters()
    mine = store_at(tmp_path / "mine")
    async with network({"host-a": Server(store_a), "host-b": Server(store_b, stall=True)}) as (
        c,
        ids,
    ):
        plan = FetchPlan((ids["host-b"], ids["host-a"]), owner="host-a", parallel=2)
        await fetch_chunks(c, mine, chunks.chunk_list([ref]), plan, counters=counters)
    assert set(counters.by_peer) == {ids["host-a"]} and counters.chunks == 4


async def test_when_no_host_has_a_chunk_the_transfer_fails_saying_why_and_keeps_the_rest(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    source = random_file(tmp_path / "input", 3 * MIB)
    store_a, ref = seeded(tmp_path, "a", source)
    lost = store_a.get(ref.chunks[2])
    assert lost is not None
    store_a._remove(ref.chunks[2])  # the host lost the last chunk
    mine = store_at(tmp_path / "mine")
    counters = TransferCounters()
    async with network({"host-a": Server(store_a)}) as (client, ids):
        plan = FetchPlan((ids["host-a"],), owner="host-a", parallel=1)
        with pytest.raises(BlobError, match=r"no host could send chunk .*does not hold"):
            await fetch_chunks(client, mine, chunks.chunk_list([ref]), plan, counters=counters)
        held = [d for d in ref.chunks if mine.has(d)]
        assert len(held) == counters.chunks and ref.chunks[2] not in held  # kept, not refetched
        store_a.put(lost)
        await fetch_chunks(client, mine, chunks.chunk_list([ref]), plan, counters=counters)
    assert counters.chunks == 3 and all(mine.has(d) for d in ref.chunks)


# Bad input: one clear reason, nothing downloaded


async def test_an_input_over_the_hosts_limit_is_refused_before_any_chunk_is_fetched(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    from hearth.node.jobio import JobFiles, TransferLimits

    source = random_file(tmp_path / "input", 3 * MIB)
    store_a, ref = seeded(tmp_path, "a", source)
    bundle = chunks.Bundle(files=(("data", ref),)).encode()
    digest = store_a.put(bundle)
    mine = store_at(tmp_path / "mine")
    async with network({"host-a": Server(store_a)}) as (client, ids):
        files = JobFiles(tmp_path / "home", mine, client)
        files.limits = TransferLimits(input_bytes_max=2 * MIB)
        with pytest.raises(BlobError, match=r"input of 3145728 bytes is over this host's 2097152"):
            await files.fetch(ids["host-a"], digest, len(bundle), "host-a")
        assert files.counters.chunks == 0 and not any(mine.has(d) for d in ref.chunks)
        files.limits = TransferLimits()
        await files.fetch(ids["host-a"], digest, len(bundle), "host-a")
    assert files.counters.chunks == 3


def test_the_publisher_refuses_a_bundle_over_its_limits_or_missing_chunks(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from hearth.node.jobio import TransferLimits
    from hearth.node.routes_files import missing_input

    store = store_at(tmp_path / "s")
    ref = chunks.store_file(store, random_file(tmp_path / "input", 2 * MIB))
    files = SimpleNamespace(limits=TransferLimits(input_bytes_max=MIB), index=SimpleNamespace())
    files.index.note = lambda digest, data: ()
    node: Any = SimpleNamespace(jobs=SimpleNamespace(blobs=store, files=files))
    bundle = chunks.Bundle(files=(("data", ref),), output_bytes_max=MIB, output_files_max=1)
    digest = store.put(bundle.encode())
    refused = missing_input(node, digest)
    assert "over this node's limit of 1048576 ([limits] input_mb_max)" in refused
    files.limits = TransferLimits()
    assert missing_input(node, digest) == ""
    store._remove(ref.chunks[1])
    assert missing_input(node, digest).startswith("upload the input's 1 missing chunks first")
    assert missing_input(node, store.put(b"plain stdin")) == ""


def test_an_output_file_cut_off_the_loop_is_filed_with_the_same_tree(tmp_path: Path) -> None:
    store = store_at(tmp_path / "s")
    source = random_file(tmp_path / "out.bin", 2 * MIB + 7)
    ref, pieces = chunks.split_file(store.root, source)
    assert store.bytes_held == 0  # nothing counted until filed
    chunks.commit_pieces(store, pieces, "publisher")
    assert ref == chunks.ref_of(source)[0] and all(store.has(d) for d in ref.chunks)
    assert store.owner_bytes("publisher") == 2 * MIB + 7
    assert not list(store.root.glob(".partial-*"))
