"""One long-lived stream per peer for one-way sends (ADR 0038), on real hosts over loopback."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamError
from libp2p.peer.id import ID

from hearth.p2p.host import Libp2pTransport, open_transport
from hearth.p2p.peers import PENALTY_BAD_FRAME, PENALTY_STALL, PeerReputation
from hearth.p2p.streams import encode_frame, encode_varint
from hearth.p2p.transport import Inbound, SendQueueFullError, TransportError, TransportStatistics
from hearth.p2p.wire import (
    WIRE_FRAME_BYTES_MAX,
    WIRE_PROTOCOL,
    WireServer,
    decode_wire_body,
    encode_wire_frame,
)
from hearth.protocol import limits
from hearth.protocol.errors import DecodeError, LocalProtocolError
from tests.p2p.helpers import ECHO, SILENT, config, connected_ids, wait_until
from tests.p2p.test_streams import pipe


async def collect(transport: Libp2pTransport, seen: list[Inbound]) -> None:
    async for item in transport.inbound:
        seen.append(item)


async def wire_stream(client: Libp2pTransport, server: Libp2pTransport) -> INetStream:
    """A raw /hearth/wire/1 stream, for writing what an honest sender never would."""
    return await client.host.new_stream(ID.from_base58(server.peer_id), [TProtocol(WIRE_PROTOCOL)])


@asynccontextmanager
async def linked(
    server_overrides: dict[str, object] | None = None,
) -> AsyncIterator[tuple[Libp2pTransport, Libp2pTransport, list[Inbound]]]:
    """A server on 127.0.0.2 collecting what it receives, and a client on 127.0.0.3 dialled in."""
    seen: list[Inbound] = []
    async with (
        open_transport(config("srv", "127.0.0.2", **(server_overrides or {}))) as server,
        open_transport(config("cli", "127.0.0.3")) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(collect, server, seen)
        await client.connect(server.listen_addrs[0])
        yield server, client, seen
        nursery.cancel_scope.cancel()


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def test_wire_frame_round_trip_and_refusals() -> None:
    frame = encode_wire_frame(SILENT, b"bid")
    assert frame == encode_varint(len(frame) - 1) + bytes([len(SILENT)]) + SILENT.encode() + b"bid"
    assert decode_wire_body(frame[1:]) == (SILENT, b"bid")
    big = bytes(limits.FRAME_BYTES_MAX)
    assert decode_wire_body(encode_wire_frame(SILENT, big)[3:]) == (SILENT, big)
    with pytest.raises(LocalProtocolError):
        encode_wire_frame(SILENT, big + b"x")
    with pytest.raises(LocalProtocolError):
        encode_wire_frame("/" * (limits.WIRE_PROTOCOL_ID_BYTES_MAX + 1), b"")
    for body in (b"", b"\x00abc", b"\x09/short", b"\x02\xff\xfe"):
        with pytest.raises(DecodeError):
            decode_wire_body(body)


async def test_many_messages_arrive_in_order_on_one_stream() -> None:
    async with linked() as (server, client, seen):
        sent = [b"message %d" % index for index in range(2000)]
        for data in sent:
            await client.send(server.peer_id, SILENT, data)
        await wait_until(lambda: len(seen) == len(sent))
        assert [item.data for item in seen] == sent
        assert {(item.peer_id, item.channel) for item in seen} == {(client.peer_id, SILENT)}
        assert all(item.reply is not None and item.remote_ip == "127.0.0.3" for item in seen)
        stats = client.statistics()
        assert (stats.wire_streams_opened, stats.wire_reopens, stats.wire_legacy_sends) == (1, 0, 0)
        assert server.statistics().wire_frames == len(sent)
        assert client._wire.queued(server.peer_id) == (0, 0)


async def test_concurrent_senders_keep_each_senders_order() -> None:
    senders, each = 40, 50
    async with linked() as (server, client, seen):

        async def sender(name: int) -> None:
            for index in range(each):
                await client.send(server.peer_id, SILENT, b"%d:%d" % (name, index))

        async with trio.open_nursery() as burst:
            for name in range(senders):
                burst.start_soon(sender, name)
        await wait_until(lambda: len(seen) == senders * each)
        by_sender: dict[int, list[int]] = {}
        for item in seen:
            name, index = map(int, item.data.split(b":"))
            by_sender.setdefault(name, []).append(index)
        assert by_sender == {name: list(range(each)) for name in range(senders)}
        assert client.statistics().wire_streams_opened == 1


async def test_garbage_and_oversize_frames_are_penalised_and_end_only_that_stream() -> None:
    seen: list[Inbound] = []
    async with (
        open_transport(config("srv", "127.0.0.2")) as server,
        open_transport(config("bad", "127.0.0.3")) as bad,
        open_transport(config("good", "127.0.0.4")) as good,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(collect, server, seen)
        await bad.connect(server.listen_addrs[0])
        await good.connect(server.listen_addrs[0])
        hostile_writes = (
            b"\xff" * 6,  # a length varint longer than 5 bytes
            encode_varint(WIRE_FRAME_BYTES_MAX + 1),  # refused before any body byte is read
            encode_frame(b"\x00" + b"data"),  # a protocol id of no bytes
        )
        for count, garbage in enumerate(hostile_writes, start=1):
            stream = await wire_stream(bad, server)
            await stream.write(garbage)
            await wait_until(lambda: server.statistics().frames_refused == count)  # noqa: B023
            with trio.fail_after(5), pytest.raises(StreamError):  # the server ended it
                await stream.read(1)
        assert server.reputation.score(bad.peer_id) == 3 * PENALTY_BAD_FRAME

        # A frame for a protocol we do not serve is dropped alone: the stream reads on.
        stream = await wire_stream(bad, server)
        await stream.write(encode_wire_frame("/hearth/unknown/1", b"?"))
        await stream.write(encode_wire_frame(SILENT, b"after the unknown one"))
        await good.send(server.peer_id, SILENT, b"from the good peer")
        await wait_until(lambda: len(seen) == 2)
        assert {(item.peer_id, item.data) for item in seen} == {
            (bad.peer_id, b"after the unknown one"),
            (good.peer_id, b"from the good peer"),
        }
        assert server.statistics().requests_refused == 1
        assert server.reputation.score(good.peer_id) == 0
        nursery.cancel_scope.cancel()


async def test_a_frame_that_stalls_midway_is_timed_out_but_idle_streams_are_not() -> None:
    async with linked({"stream_read_timeout_ms": 300}) as (server, client, seen):
        idle = await wire_stream(client, server)
        stalled = await wire_stream(client, server)
        frame = encode_wire_frame(SILENT, b"late but whole")
        await stalled.write(frame[:5])
        await wait_until(lambda: server.statistics().read_timeouts == 1)
        assert server.reputation.score(client.peer_id) == PENALTY_STALL
        # The idle stream outlived the read timeout between frames and still carries one.
        await idle.write(frame)
        await wait_until(lambda: len(seen) == 1)
        assert seen[0].data == b"late but whole"


async def never_read(stream: INetStream) -> None:
    await trio.sleep_forever()


async def test_a_peer_that_never_reads_costs_bounded_memory_and_blocks_no_one() -> None:
    seen: list[Inbound] = []
    data = bytes(64 * 1024)
    fits = limits.WIRE_QUEUE_BYTES_MAX // len(encode_wire_frame(SILENT, data))
    async with (
        open_transport(config("sink", "127.0.0.2")) as sink,
        open_transport(config("good", "127.0.0.3")) as good,
        open_transport(config("cli", "127.0.0.4", stream_read_timeout_ms=4000)) as client,
        trio.open_nursery() as nursery,
    ):
        sink.host.set_stream_handler(TProtocol(WIRE_PROTOCOL), never_read)
        nursery.start_soon(collect, good, seen)
        await client.connect(sink.listen_addrs[0])
        await client.connect(good.listen_addrs[0])
        outcomes: list[str] = []

        async def flood() -> None:
            try:
                await client.send(sink.peer_id, SILENT, data)
                outcomes.append("sent")
            except SendQueueFullError:
                outcomes.append("full")
            except TransportError:
                outcomes.append("timeout")

        async with trio.open_nursery() as floods:
            for _ in range(fits + 20):
                floods.start_soon(flood)
            await wait_until(lambda: outcomes.count("full") == 20)
            assert client._wire.queued(sink.peer_id)[1] <= limits.WIRE_QUEUE_BYTES_MAX
            await client.send(good.peer_id, SILENT, b"not held up")
            await wait_until(lambda: len(seen) == 1)
            assert client._wire.queued(sink.peer_id)[0] > 0  # the flood still waits meanwhile
        stats = client.statistics()
        assert stats.wire_sends_dropped == 20
        # The stream's window took a few frames; the rest waited and timed out with the write.
        assert outcomes.count("timeout") > fits // 2
        assert stats.wire_write_stalls >= 1
        assert client.reputation.score(sink.peer_id) <= PENALTY_STALL
        assert client._wire.queued(sink.peer_id) == (0, 0)
        assert not client._wire.has_stream(sink.peer_id)  # reset, not left half-written
        nursery.cancel_scope.cancel()


async def test_a_broken_stream_is_reopened_once_and_a_restarted_peer_reached_again() -> None:
    seen: list[Inbound] = []
    port = free_port("127.0.0.2")
    async with (
        open_transport(config("cli", "127.0.0.3")) as client,
        trio.open_nursery() as nursery,
    ):
        async with open_transport(config("srv", "127.0.0.2", port=port)) as server:
            nursery.start_soon(collect, server, seen)
            peer = server.peer_id
            await client.connect(server.listen_addrs[0])
            await client.send(peer, SILENT, b"first")
            await wait_until(lambda: len(seen) == 1)
            # Break the stream under the sender: the next send finds out and reopens once.
            stream = client._wire._lines[peer].stream
            assert stream is not None
            await stream.reset()
            await client.send(peer, SILENT, b"second")
            await wait_until(lambda: len(seen) == 2)
            assert client.statistics().wire_reopens == 1
            nursery.cancel_scope.cancel()
        await wait_until(lambda: peer not in connected_ids(client))
        assert not client._wire.has_stream(peer)

        async with (
            open_transport(config("srv", "127.0.0.2", port=port)) as restarted,
            trio.open_nursery() as again,
        ):
            again.start_soon(collect, restarted, seen)
            await client.send(peer, SILENT, b"after the restart")
            await wait_until(lambda: len(seen) == 3)
            assert [item.data for item in seen] == [b"first", b"second", b"after the restart"]
            assert client.statistics().wire_streams_opened == 3
            again.cancel_scope.cancel()


async def test_an_older_peer_gets_a_stream_per_message() -> None:
    async with linked() as (old, client, seen):
        old.host.remove_stream_handler(TProtocol(WIRE_PROTOCOL))  # as a release before ADR 0038
        for index in range(3):
            await client.send(old.peer_id, SILENT, b"old %d" % index)
        await wait_until(lambda: len(seen) == 3)
        assert [item.data for item in seen] == [b"old 0", b"old 1", b"old 2"]
        stats = client.statistics()
        assert (stats.wire_legacy_sends, stats.wire_streams_opened) == (3, 0)
        assert client._wire.sends_legacy(old.peer_id)  # asked once, remembered
        assert old.statistics().wire_frames == 0


async def test_an_idle_stream_is_closed_and_the_next_send_opens_another() -> None:
    async with linked() as (server, client, seen):
        await client.send(server.peer_id, SILENT, b"before")
        await wait_until(lambda: len(seen) == 1)
        assert await client._wire.close_idle() == 0  # used just now
        client._wire._idle_s = 0.0
        assert await client._wire.close_idle() == 1
        assert client._wire.lines() == 0
        await client.send(server.peer_id, ECHO, b"after")
        await wait_until(lambda: len(seen) == 2)
        assert (seen[1].channel, seen[1].data) == (ECHO, b"after")
        assert client.statistics().wire_streams_opened == 2


async def test_a_peer_over_its_frame_rate_is_read_later_not_dropped(
    autojump_clock: trio.abc.Clock,
) -> None:
    delivered: list[Inbound] = []
    stats = TransportStatistics()
    server = WireServer(
        lambda item: delivered.append(item) is None,
        PeerReputation(),
        stats,
        frozenset({SILENT}),
        read_timeout_s=10,
        pace=(3, 100),  # a burst of 3 frames, then one per 100 ms
    )
    ours, theirs = pipe()
    for index in range(10):
        await theirs.write(encode_wire_frame(SILENT, b"%d" % index))
    await theirs.close()
    started_s = trio.current_time()
    await server.handle(ours, "flooder")
    assert [item.data for item in delivered] == [b"%d" % index for index in range(10)]
    assert trio.current_time() - started_s >= 0.7  # 7 frames past the burst, 100 ms apart
    # Seven frames waited their turn, and so did the read that found the end of the stream.
    assert (stats.wire_frames, stats.wire_frames_paced) == (10, 8)
    assert not ours.reset_called  # a clean end of the stream, nothing held against the peer
