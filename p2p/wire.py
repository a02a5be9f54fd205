"""One long-lived stream per peer for one-way messages (`/hearth/wire/1`, ADR 0038).

Opening a libp2p stream costs a yamux SYN, a multistream-select round and, under bursts, a
place in the peer's stream cap: about 22 ms per message on loopback, and bursts of them failed.
Here every one-way `send` to a peer goes on one outbound stream, opened when first needed and
kept until the peer disconnects or the stream sits unused for `limits.WIRE_IDLE_MS`.

Wire: the stream carries frames as `p2p.streams` writes them (varint length, then the body); a
body is one byte L (1 to `limits.WIRE_PROTOCOL_ID_BYTES_MAX`), L bytes of protocol id in ASCII,
then the message, at most `limits.FRAME_BYTES_MAX` bytes, exactly as the per-message stream of
that protocol would carry it. Nothing is ever written back on the stream.

Sender (`WireSender`): sends to one peer wait on a FIFO lock, so frames leave in call order and
never interleave; the send holding the lock writes every frame pending by then in one write. At
most `limits.WIRE_QUEUE_MESSAGES_MAX` sends holding at most `limits.WIRE_QUEUE_BYTES_MAX` bytes
may wait; beyond that a send is dropped, counted and raised as `SendQueueFullError`. A write that
fails is tried once more on a fresh stream. A write cut short (timeout, cancellation) resets the
stream, so no peer ever sees half a frame followed by another. A peer that does not speak the
protocol (an older release) gets a stream per message, as before, and is asked again after
`LEGACY_RECHECK_S`.

Receiver (`WireServer`): reads frames in a loop. Between frames a stream may idle (up to twice
the sender's idle time); once a frame has begun it must finish within the read timeout. A frame
that is oversize, malformed or stalls is penalised exactly as on a per-message stream and ends
the stream; a frame for a protocol we do not serve, or that the edge check refuses, is dropped
and the stream read on, as a per-message stream would have been refused alone. A peer's frames
over its rate (`limits.WIRE_PEER_FRAMES_BURST`, then one per `WIRE_PEER_FRAME_INTERVAL_MS`) are
read later, not dropped: the yamux window pushes back on the sender, whose queue bound applies.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import INetStream
from libp2p.protocol_muxer.exceptions import MultiselectClientError

from hearth.p2p.dialing import TokenBuckets
from hearth.p2p.peers import PENALTY_BAD_FRAME, PENALTY_STALL, PeerReputation
from hearth.p2p.streams import (
    ByteStream,
    _CleanEOF,
    _close_quietly,
    _read_exactly,
    _write,
    encode_frame,
    read_frame,
)
from hearth.p2p.transport import (
    EdgeCheck,
    Inbound,
    PeerUnreachableError,
    RequestTimeoutError,
    SendQueueFullError,
    TransportError,
    TransportStatistics,
)
from hearth.protocol import limits
from hearth.protocol.errors import DecodeError, LocalProtocolError, OversizeError
from hearth.protocol.inbound import Verdict

logger = logging.getLogger(__name__)

WIRE_PROTOCOL: Final = "/hearth/wire/1"
# A wire frame's body: the protocol id's length byte and id, then a whole per-message frame.
WIRE_FRAME_BYTES_MAX: Final = 1 + limits.WIRE_PROTOCOL_ID_BYTES_MAX + limits.FRAME_BYTES_MAX
# An older peer is asked again for the wire protocol after this long (it may have upgraded).
LEGACY_RECHECK_S: Final = 600.0
READ_CHUNK_BYTES: Final = 64 * 1024  # what the receiver asks its stream for at a time

OpenStream = Callable[[str, str], Awaitable[ByteStream]]  # (peer id, protocol id) -> stream
LegacySend = Callable[[str, str, bytes], Awaitable[None]]  # one stream for one message


def encode_wire_frame(protocol_id: str, data: bytes) -> bytes:
    """The bytes one message occupies on the wire stream; our mistakes raise before any I/O."""
    if len(data) > limits.FRAME_BYTES_MAX:
        raise LocalProtocolError(f"frame of {len(data)} bytes exceeds {limits.FRAME_BYTES_MAX}")
    try:
        name = protocol_id.encode("ascii")
    except UnicodeEncodeError:
        raise LocalProtocolError(f"protocol id {protocol_id!r} is not ASCII") from None
    if not 1 <= len(name) <= limits.WIRE_PROTOCOL_ID_BYTES_MAX:
        raise LocalProtocolError(f"protocol id of {len(name)} bytes cannot go on the wire stream")
    return encode_frame(bytes([len(name)]) + name + data, WIRE_FRAME_BYTES_MAX)


def decode_wire_body(body: bytes) -> tuple[str, bytes]:
    """(protocol id, message) of one frame's body; `DecodeError` if the peer broke the format."""
    if not body:
        raise DecodeError("empty wire frame")
    length = body[0]
    if not 1 <= length <= limits.WIRE_PROTOCOL_ID_BYTES_MAX or len(body) < 1 + length:
        raise DecodeError(f"wire frame names a protocol id of {length} bytes")
    try:
        protocol_id = body[1 : 1 + length].decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("wire frame protocol id is not ASCII") from None
    data = body[1 + length :]
    if len(data) > limits.FRAME_BYTES_MAX:
        raise OversizeError(
            f"wire frame carries {len(data)} bytes; cap is {limits.FRAME_BYTES_MAX}"
        )
    return protocol_id, data


@dataclass(eq=False)
class _Outgoing:
    """One send waiting for its peer's stream; whoever writes it records the outcome here."""

    protocol_id: str
    data: bytes
    frame: bytes
    taken: bool = False  # a writer took it into its batch
    wrote: bool = False  # its own send wrote the batch it is in
    error: TransportError | None = None


@dataclass
class _Line:
    """What we hold for sending to one peer."""

    lock: trio.Lock = field(default_factory=trio.Lock)  # FIFO: batches leave in call order
    pending: list[_Outgoing] = field(default_factory=list)  # in call order, not yet taken
    stream: ByteStream | None = None
    waiting: int = 0  # sends pending or being written
    waiting_bytes: int = 0
    used_s: float = 0.0  # when a frame last went out on the stream
    legacy_until_s: float = 0.0  # until then the peer gets a stream per message
    write_cut: bool = False  # a write was cancelled halfway (not a dial or open that was slow)


class WireSender:
    """Sends one-way messages on one long-lived stream per peer.

    The send that gets the peer's lock writes every frame pending by then in one write (a burst
    of sends costs one yamux frame and one Noise message, not one each); the sends it carried
    find their outcome when they get the lock in turn.
    """

    def __init__(
        self,
        open_stream: OpenStream,
        legacy_send: LegacySend,
        stats: TransportStatistics,
        timeout_s: float,
        penalise: Callable[[str, int], object],
        idle_s: float = limits.WIRE_IDLE_MS / 1000,
    ) -> None:
        self._open_stream = open_stream
        self._legacy_send = legacy_send
        self._penalise = penalise  # (peer id, points)
        self._stats = stats
        self._timeout_s = timeout_s
        self._idle_s = idle_s
        self._lines: dict[str, _Line] = {}

    def lines(self) -> int:
        """Peers we hold send state for (a stream, or sends waiting)."""
        return len(self._lines)

    def queued(self, peer_id: str) -> tuple[int, int]:
        """(sends, bytes) waiting for the peer's stream or being written to it."""
        line = self._lines.get(peer_id)
        return (0, 0) if line is None else (line.waiting, line.waiting_bytes)

    def sends_legacy(self, peer_id: str) -> bool:
        """Whether the peer refused the wire protocol lately (it gets a stream per message)."""
        line = self._lines.get(peer_id)
        return line is not None and line.legacy_until_s > trio.current_time()

    @staticmethod
    def _forgettable(line: _Line) -> bool:
        """Nothing in it worth keeping: no stream, no send waiting, no refusal to remember."""
        return (
            line.waiting == 0 and line.stream is None and line.legacy_until_s <= trio.current_time()
        )

    def has_stream(self, peer_id: str) -> bool:
        line = self._lines.get(peer_id)
        return line is not None and line.stream is not None

    async def send(self, peer_id: str, protocol_id: str, data: bytes) -> None:
        frame = encode_wire_frame(protocol_id, data)
        line = self._lines.setdefault(peer_id, _Line())
        if (
            line.waiting >= limits.WIRE_QUEUE_MESSAGES_MAX
            or line.waiting_bytes + len(frame) > limits.WIRE_QUEUE_BYTES_MAX
        ):
            self._stats.wire_sends_dropped += 1
            raise SendQueueFullError(
                f"send queue to {peer_id} full ({line.waiting} messages, "
                f"{line.waiting_bytes} bytes); {protocol_id} message dropped"
            )
        item = _Outgoing(protocol_id, data, frame)
        line.pending.append(item)
        line.waiting += 1
        line.waiting_bytes += len(frame)
        try:
            with trio.fail_after(self._timeout_s):
                async with line.lock:
                    if not item.taken:
                        await self._write_pending(line, peer_id, item)
        except trio.TooSlowError:
            if not item.taken:
                line.pending.remove(item)
            if item.wrote and line.write_cut:  # our deadline hit mid-write: the peer stalls us
                line.write_cut = False
                self._stats.wire_write_stalls += 1
                self._penalise(peer_id, PENALTY_STALL)
                logger.info("peer %s stopped reading its wire stream; stream reset", peer_id)
            raise RequestTimeoutError(
                f"{protocol_id} message to {peer_id} not sent within {self._timeout_s} s"
            ) from None
        finally:
            line.waiting -= 1
            line.waiting_bytes -= len(frame)
            if self._forgettable(line) and self._lines.get(peer_id) is line:
                del self._lines[peer_id]
        if item.error is not None:
            raise item.error

    async def _write_pending(self, line: _Line, peer_id: str, own: _Outgoing) -> None:
        """Take every pending send and write them; record each one's outcome (lock held)."""
        batch, line.pending = line.pending, []
        for item in batch:
            item.taken = True
        own.wrote = True
        try:
            await self._send_batch(line, peer_id, batch)
        except TransportError as error:
            for item in batch:
                item.error = error
        except BaseException:
            cut = TransportError("the write carrying this message was cut short")
            for item in batch:
                item.error = cut
            raise

    async def _send_batch(self, line: _Line, peer_id: str, batch: list[_Outgoing]) -> None:
        if line.legacy_until_s > trio.current_time():
            await self._send_legacy(peer_id, batch)
            return
        frames = b"".join(item.frame for item in batch)
        for attempt in range(2):
            if line.stream is None:
                try:
                    line.stream = await self._open_stream(peer_id, WIRE_PROTOCOL)
                except PeerUnreachableError as error:
                    # An older peer, or no stream right now: the old path may still work.
                    await self._send_legacy(peer_id, batch)
                    if _refused_protocol(error):
                        line.legacy_until_s = trio.current_time() + LEGACY_RECHECK_S
                        logger.info("%s has no %s; a stream per message", peer_id, WIRE_PROTOCOL)
                    return
                self._stats.wire_streams_opened += 1
            try:
                await self._write(line, frames)
                return
            except TransportError as error:
                if attempt:
                    raise
                self._stats.wire_reopens += 1
                logger.debug("wire stream to %s failed (%r); opening another", peer_id, error)

    async def _send_legacy(self, peer_id: str, batch: list[_Outgoing]) -> None:
        """One stream per message, for peers of an older release. Raises if the first fails."""
        for index, item in enumerate(batch):
            try:
                await self._legacy_send(peer_id, item.protocol_id, item.data)
            except TransportError as error:
                if index == 0:
                    raise
                item.error = error
                continue
            self._stats.wire_legacy_sends += 1

    async def _write(self, line: _Line, frames: bytes) -> None:
        stream = line.stream
        assert stream is not None
        ok = False
        try:
            await _write(stream, frames)
            ok = True
        except trio.Cancelled:
            line.write_cut = True  # the peer held its window shut past our deadline
            raise
        except Exception as error:
            if not isinstance(error, TransportError):
                raise TransportError(f"stream failed: {error!r}") from error
            raise
        finally:
            # A write cut short may have left half a frame: the stream cannot carry another.
            if not ok:
                line.stream = None
                await _close_quietly(stream, reset=True)
        line.used_s = trio.current_time()

    def peer_gone(self, peer_id: str) -> None:
        """The peer's last connection closed: its stream died with it."""
        line = self._lines.get(peer_id)
        if line is None:
            return
        line.stream = None
        line.legacy_until_s = 0.0
        if line.waiting == 0:
            del self._lines[peer_id]

    async def close_idle(self) -> int:
        """Close the streams unused for the idle time and not being written; return how many."""
        now_s = trio.current_time()
        closed = 0
        for peer_id, line in list(self._lines.items()):
            if self._forgettable(line):  # e.g. a refusal of the protocol that has expired
                del self._lines[peer_id]
            if line.stream is None or now_s - line.used_s < self._idle_s:
                continue
            try:
                line.lock.acquire_nowait()
            except trio.WouldBlock:
                continue
            try:
                stream, line.stream = line.stream, None
                await _close_quietly(stream, reset=False)
                closed += 1
            finally:
                line.lock.release()
            if self._forgettable(line):
                self._lines.pop(peer_id, None)
        return closed

    async def run_idle_closer(self) -> None:
        while True:
            await trio.sleep(self._idle_s / 4)
            await self.close_idle()


class _Buffered:
    """Reads a stream in large pieces and hands them out as asked: frames are read a byte of
    length at a time, and each read of a yamux stream costs a lock and a checkpoint."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buffer = b""

    async def read(self, n: int | None = None) -> bytes:
        if not self._buffer:
            self._buffer = await self._stream.read(READ_CHUNK_BYTES)
        take = len(self._buffer) if n is None else n
        out, self._buffer = self._buffer[:take], self._buffer[take:]
        return out

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close(self) -> None:
        await self._stream.close()

    async def reset(self) -> None:
        await self._stream.reset()


class WireServer:
    """Reads the frames a peer sends on its long-lived stream and queues them for the node."""

    def __init__(
        self,
        deliver: Callable[[Inbound], bool],
        reputation: PeerReputation,
        stats: TransportStatistics,
        protocols: frozenset[str],
        read_timeout_s: float,
        check: EdgeCheck | None = None,
        idle_s: float = 2 * limits.WIRE_IDLE_MS / 1000,
        pace: tuple[int, int] = (limits.WIRE_PEER_FRAMES_BURST, limits.WIRE_PEER_FRAME_INTERVAL_MS),
    ) -> None:
        self._deliver = deliver  # non-blocking: False when the inbound queue is full
        self._reputation = reputation
        self._stats = stats
        self._protocols = protocols
        self._read_timeout_s = read_timeout_s
        self._check = check
        self._idle_s = idle_s
        self._frame_interval_s = pace[1] / 1000
        self._buckets = TokenBuckets(*pace)  # per peer, over all its wire streams

    async def handle(self, stream: ByteStream, peer_id: str, remote_ip: str = "") -> None:
        """Never raises (but for cancellation): a bad peer must not disturb the connection."""
        try:
            reset = await self._read_frames(_Buffered(stream), peer_id, remote_ip)
        except Exception as error:
            logger.debug("wire stream from %s failed: %r", peer_id, error)
            reset = True
        await _close_quietly(stream, reset=reset)

    async def _read_frames(self, stream: ByteStream, peer_id: str, remote_ip: str) -> bool:
        """Read until the stream ends; True if it must be reset (a fault), False if it ended."""
        while True:
            if self._reputation.is_banned(peer_id):
                self._stats.requests_refused += 1
                return True
            await self._wait_turn(peer_id)
            body = await self._next_frame(stream, peer_id)
            if body is None:
                return False
            try:
                protocol_id, data = decode_wire_body(body)
            except (DecodeError, OversizeError) as error:
                self._refuse_frame(peer_id, error)
                return True
            self._stats.wire_frames += 1
            self._take(peer_id, protocol_id, data, remote_ip)

    async def _next_frame(self, stream: ByteStream, peer_id: str) -> bytes | None:
        """The next frame's body; None once the stream ended or idled out. Raises on a fault."""
        first: int | None = None
        with trio.move_on_after(self._idle_s):
            try:
                first = (await _read_exactly(stream, 1))[0]
            except _CleanEOF:
                return None
        if first is None:
            logger.debug("wire stream from %s idle for %.0f s; closed", peer_id, self._idle_s)
            return None
        try:
            with trio.fail_after(self._read_timeout_s):
                return await read_frame(stream, WIRE_FRAME_BYTES_MAX, first)
        except trio.TooSlowError:
            self._stats.read_timeouts += 1
            self._reputation.adjust(peer_id, PENALTY_STALL)
            logger.info("peer %s stalled mid-frame on its wire stream; stream reset", peer_id)
            raise TransportError("stalled mid-frame") from None
        except (OversizeError, DecodeError) as error:
            self._refuse_frame(peer_id, error)
            raise TransportError(str(error)) from None
        except _CleanEOF:
            return None

    async def _wait_turn(self, peer_id: str) -> None:
        """Hold the next read until the peer is within its frame rate: pacing, not dropping."""
        if not self._buckets.available(peer_id, _now_ms()):
            self._stats.wire_frames_paced += 1
            # A bucket refills with time alone: there is no event to wait for.
            while not self._buckets.available(peer_id, _now_ms()):  # noqa: ASYNC110
                await trio.sleep(self._frame_interval_s)
        self._buckets.take(peer_id, _now_ms())

    def _refuse_frame(self, peer_id: str, error: Exception) -> None:
        self._stats.frames_refused += 1
        self._reputation.adjust(peer_id, PENALTY_BAD_FRAME)
        logger.info("refused wire frame from %s: %s", peer_id, error)

    def _take(self, peer_id: str, protocol_id: str, data: bytes, remote_ip: str) -> None:
        if protocol_id not in self._protocols:
            self._stats.requests_refused += 1
            return
        verified = self._check is not None
        if self._check is not None and (
            self._check(peer_id, protocol_id, data, gossip=False) is not Verdict.ACCEPT
        ):
            self._stats.edge_refused += 1
            return
        if not self._deliver(
            Inbound(peer_id, protocol_id, data, _nobody_waits, remote_ip, verified)
        ):
            self._stats.inbound_dropped += 1


def _refused_protocol(error: BaseException) -> bool:
    """Did the peer answer "na" to the protocol (multistream-select), rather than fail to talk?"""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, MultiselectClientError) and "not supported" in str(cause):
            return True
        cause = cause.__cause__
    return False


def _now_ms() -> int:
    return int(trio.current_time() * 1000)


async def _nobody_waits(data: bytes) -> None:
    """The reply of a one-way message: nobody reads it, as on a closed per-message stream."""
    await trio.lowlevel.checkpoint()


def wire_handler(
    server: WireServer, conn_ip: Callable[[Any], str]
) -> Callable[[INetStream], Awaitable[None]]:
    """The host's stream handler for `WIRE_PROTOCOL`."""

    async def handle(stream: INetStream) -> None:
        peer_id = str(stream.muxed_conn.peer_id.to_base58())
        await server.handle(stream, peer_id, conn_ip(stream.muxed_conn))

    return handle
