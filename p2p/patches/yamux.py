"""Yamux with its receive window enforced and a cap on the streams one peer may hold open.

Upstream defects fixed here (py-libp2p 0.8.1, `libp2p/stream_muxer/yamux/yamux.py`):

- `Yamux.handle_incoming` appends a DATA frame that overruns the stream's receive window to the
  stream's buffer and only logs "peer exceeded receive window", so a peer that ignores the
  window makes us buffer without limit (issue 12 item 5: 130 -> 335 MB in 7 s). go-yamux ends
  the session with `ErrRecvWindowExceeded`; we do the same, before the frame's body is read,
  and penalise the peer.
- Inbound streams are unlimited: each is ACKed and handed on with a 256 KiB window.
- A stream reset while data sits in its buffer keeps that data for up to 90 s (the stale-stream
  sweeper's interval plus grace), so open-send-reset cycles pile up memory.
- A stream's window auto-tunes up to `MAX_WINDOW_SIZE` = 16 MiB; we cap it (module constant,
  see `apply_window_cap`).
- Every connection sends a PING every 30 s to measure its round trip for the window auto-tuning
  (`RTT_MEASURE_INTERVAL`); we measure every `YAMUX_RTT_MEASURE_INTERVAL_S` (module constant,
  see `apply_window_cap`).
- `MuxerMultistream.new_conn` builds `Yamux` by name for /yamux/1.0.0 whatever class was given
  in `muxer_opt`, so a subclass needs `BoundedMuxerMultistream` to be used at all.

Docs: docs/adr/0014-resource-bounds-below-libp2p.md.
"""

from __future__ import annotations

import logging
import struct
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from libp2p.abc import IMuxedConn, IMuxedStream, ISecureConn
from libp2p.custom_types import TProtocol
from libp2p.io.exceptions import IOException
from libp2p.peer.id import ID
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux import yamux as upstream
from libp2p.stream_muxer.yamux.yamux import (
    DEFAULT_WINDOW_SIZE,
    FLAG_SYN,
    HEADER_SIZE,
    PROTOCOL_ID,
    TYPE_DATA,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)

logger = logging.getLogger(__name__)

# The most a stream's receive window may grow to: one whole frame (limits.FRAME_BYTES_MAX) in
# flight. Upstream's 16 MiB would let one stream of a peer hold 16 MiB of our memory.
YAMUX_WINDOW_BYTES_MAX: Final = 1024 * 1024
# What one stream may hold unread. The window alone bounds it at the window plus one read's
# worth of credit given early (upstream's "partial slack"); this is the check of that invariant.
YAMUX_STREAM_BUFFER_BYTES_MAX: Final = 2 * YAMUX_WINDOW_BYTES_MAX
# A peer that overruns a window is refused at once: no honest yamux does it.
PENALTY_WINDOW_EXCEEDED: Final = -500
PENALTY_STREAMS_OVER_CAP: Final = -10
STREAM_RESET_TIMEOUT_S: Final = 1.0
GUARD_PEERS_PRUNE_AT: Final = 1024
# How often a connection measures its round trip (upstream: 30 s). The round trip only tunes
# how fast a stream's window grows, and a home link's changes slowly; at 50 idle nodes with ~20
# connections each, upstream's PING and its answer were about one frame in ten a node sent, each
# a Noise message and a send (issue 14). The first measurement, 0.5 s after the connection
# opens, is upstream's.
YAMUX_RTT_MEASURE_INTERVAL_S: Final = 120


def apply_window_cap() -> None:
    """Cap upstream's window auto-tuning and set how often it measures the round trip (module
    constants read at each use). Idempotent."""
    upstream.MAX_WINDOW_SIZE = YAMUX_WINDOW_BYTES_MAX
    upstream.RTT_MEASURE_INTERVAL = YAMUX_RTT_MEASURE_INTERVAL_S


class WindowExceededError(IOException):
    """The peer sent DATA past the receive window we granted: the connection is closed."""


@dataclass
class MuxerGuard:
    """What the yamux connections of one host share: limits, the penalty hook, live muxers."""

    streams_per_peer_max: int
    penalise: Callable[[str, int], object]  # (peer id, points): lowers the peer's reputation
    windows_exceeded: int = 0
    streams_refused: int = 0
    muxers: dict[ID, weakref.WeakSet[BoundedYamux]] = field(default_factory=dict)

    def inbound_streams(self, peer: ID) -> int:
        return sum(m.inbound_streams_held() for m in self.muxers.get(peer, ()))

    def register(self, muxer: BoundedYamux) -> None:
        if len(self.muxers) >= GUARD_PEERS_PRUNE_AT:  # muxers that never started left sets
            for peer in [peer for peer, held in self.muxers.items() if not held]:
                del self.muxers[peer]
        self.muxers.setdefault(muxer.peer_id, weakref.WeakSet()).add(muxer)

    def forget(self, muxer: BoundedYamux) -> None:
        held = self.muxers.get(muxer.peer_id)
        if held is not None:
            held.discard(muxer)
            if not held:
                del self.muxers[muxer.peer_id]


class _InboundFrames:
    """Sits between a Yamux and its secured connection and sees every inbound frame header.

    `Yamux.handle_incoming` reads a 12-byte header, then a DATA frame's body, strictly in turn;
    frames are handled one at a time, so when a header completes here the previous frame has
    been applied and the muxer's window state is exact. Everything else passes through.
    """

    def __init__(self, conn: ISecureConn, muxer: BoundedYamux) -> None:
        self._conn = conn
        self._muxer = muxer
        self._header = bytearray()
        self._body_left = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    async def read(self, n: int | None = None) -> bytes:
        data = await self._conn.read(n)
        self._scan(data)
        return data

    async def write(self, data: bytes) -> None:
        await self._conn.write(data)

    async def close(self) -> None:
        await self._conn.close()

    def _scan(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            if self._body_left:
                step = min(self._body_left, len(data) - offset)
                self._body_left -= step
                offset += step
                continue
            take = min(HEADER_SIZE - len(self._header), len(data) - offset)
            self._header += data[offset : offset + take]
            offset += take
            if len(self._header) == HEADER_SIZE:
                _, kind, flags, stream_id, length = struct.unpack(YAMUX_HEADER_FORMAT, self._header)
                self._header.clear()
                if kind == TYPE_DATA:
                    self._muxer.check_data_frame(stream_id, flags, length)
                    self._body_left = length


class BoundedYamux(Yamux):
    """`Yamux` that closes the connection on a window overrun and resets streams over the cap.

    Made per host by `bounded_yamux(guard)`, which sets `guard`.
    """

    guard: MuxerGuard

    def __init__(
        self,
        secured_conn: ISecureConn,
        peer_id: ID,
        is_initiator: bool | None = None,
        on_close: Any = None,
    ) -> None:
        frames = _InboundFrames(secured_conn, self)
        super().__init__(frames, peer_id, is_initiator, on_close)  # type: ignore[arg-type]
        self.guard.register(self)

    async def start(self) -> None:
        try:
            await super().start()
        finally:
            self.guard.forget(self)

    def check_data_frame(self, stream_id: int, flags: int, length: int) -> None:
        """Raise `WindowExceededError` for a DATA frame the window or buffer cap does not allow."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            allowed = stream.recv_window
            buffered = len(self.stream_buffers.get(stream_id) or b"")
        elif flags & FLAG_SYN:
            allowed, buffered = DEFAULT_WINDOW_SIZE, 0
        else:  # a stream already gone: upstream reads and drops the body
            allowed, buffered = YAMUX_WINDOW_BYTES_MAX, 0
        if length <= allowed and buffered + length <= YAMUX_STREAM_BUFFER_BYTES_MAX:
            return
        self.guard.windows_exceeded += 1
        peer = self.peer_id.to_base58()
        self.guard.penalise(peer, PENALTY_WINDOW_EXCEEDED)
        logger.warning(
            "peer %s sent a %d-byte frame on stream %d past its %d-byte window; connection closed",
            peer,
            length,
            stream_id,
            allowed,
        )
        raise WindowExceededError(f"receive window exceeded on stream {stream_id}")

    def inbound_streams_held(self) -> int:
        """Streams the peer opened that are still open or still hold unread data."""
        theirs = 0 if self.is_initiator_value else 1  # initiators use odd stream ids
        return sum(
            1
            for stream_id, stream in list(self.streams.items())
            if stream_id % 2 == theirs and (not stream.closed or self.stream_buffers.get(stream_id))
        )

    async def accept_stream(self) -> IMuxedStream:
        while True:
            stream = await super().accept_stream()
            if self.guard.inbound_streams(self.peer_id) <= self.guard.streams_per_peer_max:
                return stream
            self.guard.streams_refused += 1
            self.guard.penalise(self.peer_id.to_base58(), PENALTY_STREAMS_OVER_CAP)
            logger.info("peer %s is over its stream cap; stream reset", self.peer_id)
            with trio.move_on_after(STREAM_RESET_TIMEOUT_S):
                await stream.reset()

    def _finalize_stream_locked(self, stream: YamuxStream, *, fully_closed: bool) -> None:
        # A reset (either side) ends the stream: drop what it buffered now, not 90 s later.
        if fully_closed and stream.reset_received:
            buffer = self.stream_buffers.get(stream.stream_id)
            if buffer:
                buffer.clear()
        super()._finalize_stream_locked(stream, fully_closed=fully_closed)


def bounded_yamux(guard: MuxerGuard) -> type[BoundedYamux]:
    """A `BoundedYamux` class bound to one host's guard."""
    return type("HostYamux", (BoundedYamux,), {"guard": guard})


class BoundedMuxerMultistream(MuxerMultistream):
    """Negotiates /yamux/1.0.0 and builds the given class (upstream builds `Yamux` by name)."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        protocol, muxer_class = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        muxed = muxer_class(conn, peer_id, is_initiator=conn.is_initiator)  # type: ignore[call-arg]
        return self._annotate_connection(muxed, conn, protocol)


def install(network: Any, muxer_class: type[Yamux]) -> None:
    """Make ``network``'s upgrader build ``muxer_class`` for every connection, both directions."""
    apply_window_cap()
    old: MuxerMultistream = network.upgrader.muxer_multistream
    network.upgrader.muxer_multistream = BoundedMuxerMultistream(
        {TProtocol(PROTOCOL_ID): muxer_class}, old.negotiate_timeout
    )
