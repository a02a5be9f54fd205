"""Framing and the stream server, over an in-memory byte stream (no libp2p connection)."""

from __future__ import annotations

import pytest
import trio

from hearth.p2p.peers import PeerReputation
from hearth.p2p.streams import StreamServer, encode_frame, encode_varint, read_frame, request_on
from hearth.p2p.transport import Inbound, RequestTimeoutError, TransportStatistics
from hearth.protocol import limits
from hearth.protocol.errors import DecodeError, LocalProtocolError, OversizeError


class PipeEnd:
    """One end of a byte pipe shaped like a libp2p stream; ``chunk_bytes`` forces short reads."""

    def __init__(
        self,
        inbox: trio.MemoryReceiveChannel[bytes],
        outbox: trio.MemorySendChannel[bytes],
        chunk_bytes: int = 1 << 30,
    ) -> None:
        self._inbox, self._outbox, self._chunk_bytes = inbox, outbox, chunk_bytes
        self._buffer = b""
        self.reset_called = False

    async def read(self, n: int | None = None) -> bytes:
        if not self._buffer:
            try:
                self._buffer = await self._inbox.receive()
            except trio.EndOfChannel:
                return b""
        size = min(n or len(self._buffer), self._chunk_bytes)
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    async def write(self, data: bytes) -> None:
        await self._outbox.send(data)

    async def close(self) -> None:
        await self._outbox.aclose()

    async def reset(self) -> None:
        self.reset_called = True
        await self._outbox.aclose()


def pipe(chunk_bytes: int = 1 << 30) -> tuple[PipeEnd, PipeEnd]:
    a_send, b_receive = trio.open_memory_channel[bytes](100)
    b_send, a_receive = trio.open_memory_channel[bytes](100)
    return PipeEnd(a_receive, a_send, chunk_bytes), PipeEnd(b_receive, b_send, chunk_bytes)


@pytest.mark.parametrize("size", [0, 1, 127, 128, 300, 70_000])
async def test_frame_round_trip_with_one_byte_reads(size: int) -> None:
    left, right = pipe(chunk_bytes=1)
    data = bytes(i % 251 for i in range(size))
    await left.write(encode_frame(data))
    assert await read_frame(right) == data


def test_varint_matches_the_multiformats_examples() -> None:
    assert encode_varint(1) == b"\x01"
    assert encode_varint(127) == b"\x7f"
    assert encode_varint(128) == b"\x80\x01"
    assert encode_varint(300) == b"\xac\x02"
    assert encode_varint(16384) == b"\x80\x80\x01"


async def test_oversize_announced_length_is_refused_before_the_body() -> None:
    left, right = pipe()
    await left.write(encode_varint(limits.FRAME_BYTES_MAX + 1))
    with pytest.raises(OversizeError):
        await read_frame(right)
    with pytest.raises(LocalProtocolError):
        encode_frame(bytes(limits.FRAME_BYTES_MAX + 1))


@pytest.mark.parametrize("wire", [b"\x05abc", b"\x80", b"\xff" * 6])
async def test_truncated_or_endless_frames_are_malformed(wire: bytes) -> None:
    left, right = pipe()
    await left.write(wire)
    await left.close()
    with pytest.raises(DecodeError):
        await read_frame(right)


async def test_server_answers_and_counts_a_stall(autojump_clock: trio.abc.Clock) -> None:
    queue_send, queue_receive = trio.open_memory_channel[Inbound](1)
    stats, reputation = TransportStatistics(), PeerReputation()

    def deliver(item: Inbound) -> bool:
        try:
            queue_send.send_nowait(item)
        except trio.WouldBlock:
            return False
        return True

    server = StreamServer(deliver, reputation, stats, read_timeout_s=5)
    async with trio.open_nursery() as nursery:
        client, server_end = pipe()
        nursery.start_soon(server.handle, server_end, "peer-1", "/p/1")

        async def answer() -> None:
            item = await queue_receive.receive()
            assert item.reply is not None
            await item.reply(item.data[::-1])

        nursery.start_soon(answer)
        assert await request_on(client, b"abc", timeout_s=5) == b"cba"

        stalled, stalled_server_end = pipe()
        nursery.start_soon(server.handle, stalled_server_end, "peer-2", "/p/1")
        await stalled.write(b"\x0aab")
        await trio.sleep(6)
        assert stats.read_timeouts == 1
        assert stalled_server_end.reset_called
        assert reputation.score("peer-2") < 0 == reputation.score("peer-1")

        silent, silent_server_end = pipe()
        nursery.start_soon(server.handle, silent_server_end, "peer-3", "/p/1")
        with pytest.raises(RequestTimeoutError):
            await request_on(silent, b"nobody answers", timeout_s=1)
