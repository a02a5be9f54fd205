"""Length-prefixed msgpack frames between the pool and its worker processes (a private pipe)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any, BinaryIO, Final, cast

import msgpack

from hearth.protocol import limits

if TYPE_CHECKING:  # the worker process reads frames without trio; only the pool needs it
    import trio

HEADER: Final = struct.Struct(">I")
# The largest frame is a request carrying a whole module and input, or a result carrying output.
FRAME_BYTES_MAX: Final = limits.JOB_MODULE_BYTES_MAX + limits.JOB_INPUT_BYTES_MAX + 64 * 1024


class FrameError(Exception):
    """The other end sent something that is not a frame, or closed mid-frame."""


def encode(message: dict[str, Any]) -> bytes:
    body = cast(bytes, msgpack.packb(message, use_bin_type=True))
    assert len(body) <= FRAME_BYTES_MAX, "a frame larger than any job allows"
    return HEADER.pack(len(body)) + body


def _decode(body: bytes) -> dict[str, Any]:
    message = msgpack.unpackb(body, raw=False, strict_map_key=True)
    if not isinstance(message, dict):
        raise FrameError("frame is not a map")
    return message


def read_frame(stream: BinaryIO) -> dict[str, Any] | None:
    """The next frame, or None when the stream ends cleanly between frames."""
    header = stream.read(HEADER.size)
    if not header:
        return None
    if len(header) != HEADER.size:
        raise FrameError("stream ended inside a frame header")
    (size,) = HEADER.unpack(header)
    if size > FRAME_BYTES_MAX:
        raise FrameError(f"frame of {size} bytes is too large")
    body = stream.read(size)
    if len(body) != size:
        raise FrameError("stream ended inside a frame")
    return _decode(body)


def write_frame(stream: BinaryIO, message: dict[str, Any]) -> None:
    stream.write(encode(message))
    stream.flush()


class FrameReader:
    """Reads frames from a trio stream; None when it ends (the worker died or exited)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    async def receive(self) -> dict[str, Any] | None:
        if not await self._fill(HEADER.size):
            return None
        (size,) = HEADER.unpack_from(self.buffer)
        if size > FRAME_BYTES_MAX:
            raise FrameError(f"frame of {size} bytes is too large")
        if not await self._fill(HEADER.size + size):
            return None
        body = bytes(self.buffer[HEADER.size : HEADER.size + size])
        del self.buffer[: HEADER.size + size]
        return _decode(body)

    async def _fill(self, size: int) -> bool:
        while len(self.buffer) < size:
            chunk = await self.stream.receive_some(max(65536, size - len(self.buffer)))
            if not chunk:
                return False
            self.buffer += chunk
        return True
