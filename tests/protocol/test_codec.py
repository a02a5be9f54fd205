"""Codec: every message round-trips, and hostile bytes are refused with the right error."""

from __future__ import annotations

import contextlib
import dataclasses
import random

import msgpack
import pytest
from hypothesis import given

# Importing the engine registers every message type the node speaks.
import hearth.protocol.engine  # noqa: F401
from hearth.protocol import limits
from hearth.protocol.codec import decode, encode, message, registered_types
from hearth.protocol.errors import (
    DecodeError,
    LocalProtocolError,
    NonCanonicalError,
    OversizeError,
    UnknownTypeError,
    UnsupportedVersionError,
)
from hearth.protocol.messages import CapacityAd
from tests.protocol.strategies import any_message


@given(any_message())
def test_decode_inverts_encode_for_every_message(msg: object) -> None:
    data = encode(msg)
    assert decode(data) == msg
    assert encode(decode(data)) == data


def test_every_registered_type_has_a_strategy() -> None:
    assert CapacityAd in registered_types().values()


def ad() -> CapacityAd:
    return CapacityAd(2, 2048, 10**9, ("wasm",), 2**24 - 1, True, "solar", 5, (5,) * 24, 0, "op")


def test_truncated_bytes_are_malformed() -> None:
    data = encode(ad())
    for cut in (1, len(data) // 2, len(data) - 1):
        with pytest.raises(DecodeError):
            decode(data[:cut])


def test_oversized_input_is_refused_before_parsing() -> None:
    with pytest.raises(OversizeError):
        decode(b"\x90" * (limits.MESSAGE_BYTES_MAX + 1))


def test_unknown_type_and_version() -> None:
    with pytest.raises(UnknownTypeError):
        decode(msgpack.packb([9999, 1]))
    raw = msgpack.unpackb(encode(ad()))
    raw[1] = 2
    with pytest.raises(UnsupportedVersionError):
        decode(msgpack.packb(raw))


def test_wrong_field_count_and_types() -> None:
    raw = msgpack.unpackb(encode(ad()))
    with pytest.raises(DecodeError, match="fields"):
        decode(msgpack.packb(raw[:-1]))
    bad = list(raw)
    bad[2] = True  # a boolean where an integer belongs
    with pytest.raises(DecodeError, match="integer"):
        decode(msgpack.packb(bad))
    bad = list(raw)
    bad[5] = "wasm"  # a string where an array belongs
    with pytest.raises(DecodeError, match="array"):
        decode(msgpack.packb(bad))


def test_maps_and_floats_are_refused() -> None:
    with pytest.raises(DecodeError):
        decode(msgpack.packb({"type": 10}))
    raw = msgpack.unpackb(encode(ad()))
    raw[2] = 2.0
    with pytest.raises(DecodeError):
        decode(msgpack.packb(raw))


def test_non_canonical_encoding_of_a_valid_message_is_refused() -> None:
    data = encode(ad())
    # 2 fits in a positive fixint; the same value as a uint32 is valid msgpack but not canonical.
    assert data[3:4] == b"\x02"
    wide = data[:3] + b"\xce\x00\x00\x00\x02" + data[4:]
    assert msgpack.unpackb(wide) == msgpack.unpackb(data)
    with pytest.raises(NonCanonicalError):
        decode(wide)


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(DecodeError):
        decode(encode(ad()) + b"\x00")


def test_random_garbage_never_escapes_as_another_exception() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        blob = rng.randbytes(rng.randrange(0, 64))
        with contextlib.suppress(
            DecodeError, UnknownTypeError, UnsupportedVersionError, NonCanonicalError
        ):
            decode(blob)


def test_registering_a_float_field_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):

        @message(9_999_999)
        @dataclasses.dataclass(frozen=True)
        class Bad:
            x: float
