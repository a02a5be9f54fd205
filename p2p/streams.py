"""Request/response on direct streams: one length-prefixed frame each way, every read timed.

Wire: a frame is an unsigned LEB128 varint length (the libp2p/multiformats convention, as
`it-length-prefixed` and go-msgio's varint mode write it) followed by that many bytes. A request
stream carries one frame from the requester and at most one reply frame; a one-way `send` writes
its frame and closes. The length is checked against the cap before a byte of the body is read,
and the whole frame must arrive within the read timeout, so a peer that lies about a length,
trickles bytes or stalls costs us one bounded wait and some reputation, never a wedged task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final, Protocol

import trio
from libp2p.io.exceptions import IOException
from libp2p.network.stream.exceptions import StreamEOF

from hearth.p2p.peers import PENALTY_BAD_FRAME, PENALTY_STALL, PeerReputation
from hearth.p2p.transport import (
    EdgeCheck,
    Inbound,
    RequestTimeoutError,
    TransportError,
    TransportStatistics,
)
from hearth.protocol import limits
from hearth.protocol.errors import DecodeError, LocalProtocolError, OversizeError
from hearth.protocol.inbound import Verdict

logger = logging.getLogger(__name__)

# 5 varint bytes carry 35 bits, far above any cap; a longer prefix is malformed by definition.
VARINT_BYTES_MAX: Final = 5


class ByteStream(Protocol):
    """The part of a libp2p `INetStream` we use; tests may pass anything shaped like it."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None: ...


def encode_varint(value: int) -> bytes:
    assert value >= 0
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def check_frame(data: bytes, frame_bytes_max: int = limits.FRAME_BYTES_MAX) -> None:
    """Refuse, before any I/O, a frame we must not send: the caller's mistake."""
    if len(data) > frame_bytes_max:
        raise LocalProtocolError(f"frame of {len(data)} bytes exceeds {frame_bytes_max}")


def encode_frame(data: bytes, frame_bytes_max: int = limits.FRAME_BYTES_MAX) -> bytes:
    check_frame(data, frame_bytes_max)
    return encode_varint(len(data)) + data


class _CleanEOF(Exception):
    """The stream ended before the first byte of a frame: a close, not a fault."""


async def _read_exactly(stream: ByteStream, count: int) -> bytes:
    buffer = bytearray()
    while len(buffer) < count:
        try:
            chunk = await stream.read(count - len(buffer))
        except StreamEOF:
            chunk = b""
        except IOException as error:
            raise TransportError(f"stream failed: {error!r}") from error
        if not chunk:
            raise _CleanEOF
        buffer += chunk
    return bytes(buffer)


async def _read_length(stream: ByteStream, first: int | None = None) -> int:
    value = 0
    for index in range(VARINT_BYTES_MAX):
        try:
            byte = (
                first if index == 0 and first is not None else (await _read_exactly(stream, 1))[0]
            )
        except _CleanEOF:
            if index == 0:
                raise
            raise DecodeError("stream ended inside a frame length", reason="truncated") from None
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value
    raise DecodeError("frame length varint longer than 5 bytes")


async def read_frame(
    stream: ByteStream, frame_bytes_max: int = limits.FRAME_BYTES_MAX, first: int | None = None
) -> bytes:
    """Read one frame. The caller bounds the time (`trio.fail_after`): streams have no deadline.

    ``first`` is the frame's first byte when the caller has already read it (a long-lived stream
    waits for it without the read timeout). Raises `OversizeError` before reading the body of a
    frame over the cap, `DecodeError` for a truncated frame, `_CleanEOF` if the stream ended
    before the frame began, `TransportError` if the stream broke.
    """
    length = await _read_length(stream, first)
    if length > frame_bytes_max:
        raise OversizeError(f"peer announced a {length}-byte frame; cap is {frame_bytes_max}")
    try:
        return await _read_exactly(stream, length)
    except _CleanEOF:
        raise DecodeError("stream ended inside a frame", reason="truncated") from None


async def _close_quietly(stream: ByteStream, *, reset: bool) -> None:
    # Closing a stream whose connection already died raises; there is nothing left to do then.
    with trio.move_on_after(1) as scope:
        scope.shield = True
        try:
            await (stream.reset() if reset else stream.close())
        except Exception as error:
            logger.debug("closing stream failed: %r", error)


async def request_on(stream: ByteStream, data: bytes, timeout_s: float) -> bytes:
    """Write one frame and read the one reply frame on an already-negotiated stream."""
    ok = False
    try:
        with trio.fail_after(timeout_s):
            await _write(stream, encode_frame(data))
            reply = await read_frame(stream)
        ok = True
        return reply
    except trio.TooSlowError:
        raise RequestTimeoutError(f"no reply within {timeout_s:.3f} s") from None
    except _CleanEOF:
        raise TransportError("peer closed the stream without replying") from None
    finally:
        await _close_quietly(stream, reset=not ok)


async def send_on(stream: ByteStream, data: bytes, timeout_s: float) -> None:
    """Write one frame and close: a one-way message; delivery is not confirmed."""
    ok = False
    try:
        with trio.fail_after(timeout_s):
            await _write(stream, encode_frame(data))
        ok = True
    except trio.TooSlowError:
        raise RequestTimeoutError(f"write not finished within {timeout_s:.3f} s") from None
    finally:
        await _close_quietly(stream, reset=not ok)


async def _write(stream: ByteStream, frame: bytes) -> None:
    try:
        await stream.write(frame)
    except IOException as error:
        raise TransportError(f"stream failed: {error!r}") from error


class _Exchange:
    """The reply slot of one inbound request: filled at most once by the node."""

    def __init__(self) -> None:
        self._answer: bytes | None = None
        self._answered = trio.Event()
        self.requester_gone = False

    async def reply(self, data: bytes) -> None:
        if len(data) > limits.FRAME_BYTES_MAX:
            raise LocalProtocolError(f"reply of {len(data)} bytes exceeds the frame cap")
        if self._answered.is_set():
            raise LocalProtocolError("a request can be answered only once")
        self._answer = data
        self._answered.set()
        await trio.lowlevel.checkpoint()

    async def wait_answer(self, stream: ByteStream, timeout_s: float) -> bytes | None:
        """The node's answer, or None if it timed out or the requester left (e.g. `send`)."""
        with trio.move_on_after(timeout_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_requester, stream, nursery.cancel_scope)
                await self._answered.wait()
                nursery.cancel_scope.cancel()
        if self.requester_gone:
            return None
        return self._answer

    async def _watch_requester(self, stream: ByteStream, scope: trio.CancelScope) -> None:
        # A requester sends nothing after its frame: any outcome of this read (EOF from a one-way
        # send, a reset from a timed-out request, or stray bytes) means nobody awaits a reply.
        try:
            await stream.read(1)
        except Exception as error:
            logger.debug("requester left: %r", error)
        self.requester_gone = True
        scope.cancel()


class StreamServer:
    """Serves inbound streams: reads one frame, checks it at the edge, hands it to the node,
    writes its reply. A frame the edge check refuses never takes a place in the inbound queue."""

    def __init__(
        self,
        deliver: Callable[[Inbound], bool],
        reputation: PeerReputation,
        stats: TransportStatistics,
        read_timeout_s: float,
        check: EdgeCheck | None = None,
    ) -> None:
        self._deliver = deliver  # non-blocking: False when the inbound queue is full
        self._reputation = reputation
        self._stats = stats
        self._read_timeout_s = read_timeout_s
        self._check = check

    async def handle(
        self, stream: ByteStream, peer_id: str, protocol_id: str, remote_ip: str = ""
    ) -> None:
        """Never raises (but for cancellation): a bad peer must not disturb the connection."""
        try:
            await self._handle(stream, peer_id, protocol_id, remote_ip)
        except Exception as error:
            logger.debug("stream from %s on %s failed: %r", peer_id, protocol_id, error)
            await _close_quietly(stream, reset=True)

    async def _handle(
        self, stream: ByteStream, peer_id: str, protocol_id: str, remote_ip: str
    ) -> None:
        if self._reputation.is_banned(peer_id):
            self._stats.requests_refused += 1
            await _close_quietly(stream, reset=True)
            return
        data = await self._read_request(stream, peer_id)
        if data is None:
            return
        verified = self._check is not None
        if not self._checked(peer_id, protocol_id, data):
            self._stats.edge_refused += 1
            await _close_quietly(stream, reset=True)
            return
        exchange = _Exchange()
        item = Inbound(peer_id, protocol_id, data, exchange.reply, remote_ip, verified)
        if not self._deliver(item):
            self._stats.inbound_dropped += 1
            await _close_quietly(stream, reset=True)
            return
        # The node has as long to answer as a requester waits by default for a reply.
        answer = await exchange.wait_answer(stream, self._read_timeout_s)
        if answer is not None:
            with trio.move_on_after(self._read_timeout_s):
                await _write(stream, encode_frame(answer))
        await _close_quietly(stream, reset=False)

    def _checked(self, peer_id: str, protocol_id: str, data: bytes) -> bool:
        if self._check is None:
            return True
        return self._check(peer_id, protocol_id, data, gossip=False) is Verdict.ACCEPT

    async def _read_request(self, stream: ByteStream, peer_id: str) -> bytes | None:
        try:
            with trio.fail_after(self._read_timeout_s):
                return await read_frame(stream)
        except trio.TooSlowError:
            self._stats.read_timeouts += 1
            self._reputation.adjust(peer_id, PENALTY_STALL)
            logger.info("peer %s stalled mid-request; stream reset", peer_id)
        except (OversizeError, DecodeError) as error:
            self._stats.frames_refused += 1
            self._reputation.adjust(peer_id, PENALTY_BAD_FRAME)
            logger.info("refused frame from %s: %s", peer_id, error)
        except _CleanEOF:
            await _close_quietly(stream, reset=False)
            return None
        await _close_quietly(stream, reset=True)
        return None
