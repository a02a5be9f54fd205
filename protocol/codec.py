"""Canonical msgpack arrays: every message is ``[type, version, field, field, ...]``.

I/O: none. Field order is the dataclass's declaration order, never a dict, so one message has
exactly one encoding. ``decode`` checks the length before it parses, checks every field's type,
and re-encodes what it parsed: bytes that are not the canonical encoding are refused, which is
what lets a signature cover the exact bytes sent (ADR 0002).

A message class is a frozen dataclass registered with ``@message(TYPE, VERSION)``. Its fields may
be ``int``, ``bool``, ``str``, ``bytes``, another registered message (nested as its own array), or
``tuple[X, ...]`` of any of those. No floats and no maps: signed data holds integers only.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar, Final, Protocol, TypeVar

import msgpack

from hearth.protocol import limits
from hearth.protocol.errors import (
    DecodeError,
    LocalProtocolError,
    NonCanonicalError,
    OversizeError,
    UnknownTypeError,
    UnsupportedVersionError,
)


class Message(Protocol):
    TYPE: ClassVar[int]
    VERSION: ClassVar[int]


M = TypeVar("M")
_ToWire = Callable[[Any], Any]
_FromWire = Callable[[Any, str], Any]


@dataclasses.dataclass(frozen=True)
class _Schema:
    cls: type
    type_code: int
    version: int
    names: tuple[str, ...]
    to_wire: tuple[_ToWire, ...]
    from_wire: tuple[_FromWire, ...]


_BY_TYPE: Final[dict[int, _Schema]] = {}
_BY_CLASS: Final[dict[type, _Schema]] = {}


def message(type_code: int, version: int = 1) -> Callable[[type[M]], type[M]]:
    """Register a frozen dataclass as wire message ``type_code`` at ``version``."""

    def register(cls: type[M]) -> type[M]:
        if not dataclasses.is_dataclass(cls):
            raise LocalProtocolError(f"{cls.__name__} must be a dataclass")
        if type_code in _BY_TYPE:
            raise LocalProtocolError(f"message type {type_code} registered twice")
        cls.TYPE = type_code  # type: ignore[attr-defined]
        cls.VERSION = version  # type: ignore[attr-defined]
        hints = typing.get_type_hints(cls)
        fields = dataclasses.fields(cls)
        schema = _Schema(
            cls=cls,
            type_code=type_code,
            version=version,
            names=tuple(f.name for f in fields),
            to_wire=tuple(_to_wire_for(hints[f.name]) for f in fields),
            from_wire=tuple(
                _from_wire_for(hints[f.name], f"{cls.__name__}.{f.name}") for f in fields
            ),
        )
        _BY_TYPE[type_code] = schema
        _BY_CLASS[cls] = schema
        return cls

    return register


def registered_types() -> dict[int, type]:
    """Type code -> class for every registered message (tests walk this)."""
    return {code: schema.cls for code, schema in sorted(_BY_TYPE.items())}


def _to_array(msg: object) -> list[Any]:
    schema = _BY_CLASS.get(type(msg))
    if schema is None:
        raise LocalProtocolError(f"{type(msg).__name__} is not a registered message")
    values = [getattr(msg, name) for name in schema.names]
    wire = (convert(value) for convert, value in zip(schema.to_wire, values, strict=True))
    return [schema.type_code, schema.version, *wire]


def encode(msg: object) -> bytes:
    """The canonical bytes of ``msg``."""
    data: bytes = msgpack.packb(_to_array(msg), use_bin_type=True)
    return data


def decode(data: bytes, *, bytes_max: int = limits.MESSAGE_BYTES_MAX) -> Any:
    """Parse canonical bytes into a registered message, or raise a ``RemoteProtocolError``."""
    if len(data) > bytes_max:
        raise OversizeError(f"message of {len(data)} bytes exceeds {bytes_max}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=limits.STRING_BYTES_MAX,
            max_bin_len=bytes_max,
            max_array_len=limits.ARRAY_ITEMS_MAX,
            max_map_len=0,
            max_ext_len=0,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise DecodeError(f"not a msgpack value: {exc}") from exc
    msg = _from_array(raw, "message")
    if encode(msg) != data:
        raise NonCanonicalError(f"{type(msg).__name__} is not in canonical encoding")
    return msg


def decode_as(data: bytes, cls: type[M], *, bytes_max: int = limits.MESSAGE_BYTES_MAX) -> M:
    """``decode`` and insist on one message class."""
    msg = decode(data, bytes_max=bytes_max)
    if not isinstance(msg, cls):
        raise UnknownTypeError(f"expected {cls.__name__}, got {type(msg).__name__}")
    return msg


def _from_array(raw: Any, where: str) -> Any:
    if not isinstance(raw, list) or len(raw) < 2:
        raise DecodeError(f"{where}: expected an array [type, version, ...]")
    type_code, version = raw[0], raw[1]
    if type(type_code) is not int or type(version) is not int:
        raise DecodeError(f"{where}: type and version must be integers")
    schema = _BY_TYPE.get(type_code)
    if schema is None:
        raise UnknownTypeError(f"{where}: unknown message type {type_code}")
    if version != schema.version:
        raise UnsupportedVersionError(
            f"{schema.cls.__name__} version {version} (this node speaks {schema.version})"
        )
    if len(raw) != 2 + len(schema.names):
        raise DecodeError(
            f"{schema.cls.__name__}: {len(raw) - 2} fields, expected {len(schema.names)}"
        )
    values = [
        convert(value, f"{schema.cls.__name__}.{name}")
        for convert, value, name in zip(schema.from_wire, raw[2:], schema.names, strict=True)
    ]
    return schema.cls(*values)


def _is_message_class(tp: Any) -> bool:
    return isinstance(tp, type) and tp in _BY_CLASS


def _to_wire_for(tp: Any) -> _ToWire:
    if tp in (int, bool, str, bytes):
        return _identity
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) != 2 or args[1] is not Ellipsis:
            raise LocalProtocolError(f"only tuple[X, ...] is supported, not {tp}")
        inner = _to_wire_for(args[0])
        return lambda value: [inner(item) for item in value]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _to_array
    raise LocalProtocolError(f"field type {tp!r} cannot go on the wire")


def _identity(value: Any) -> Any:
    return value


def _from_wire_for(tp: Any, where: str) -> _FromWire:
    if tp is bool:
        return _check_bool
    if tp is int:
        return _check_int
    if tp is str:
        return _check_str
    if tp is bytes:
        return _check_bytes
    origin = typing.get_origin(tp)
    if origin is tuple:
        inner = _from_wire_for(typing.get_args(tp)[0], where)

        def convert_tuple(value: Any, where: str) -> tuple[Any, ...]:
            if not isinstance(value, list):
                raise DecodeError(f"{where}: expected an array")
            return tuple(inner(item, f"{where}[{i}]") for i, item in enumerate(value))

        return convert_tuple
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):

        def convert_nested(value: Any, where: str) -> Any:
            msg = _from_array(value, where)
            if type(msg) is not tp:
                raise DecodeError(f"{where}: expected {tp.__name__}, got {type(msg).__name__}")
            return msg

        return convert_nested
    if isinstance(tp, types.UnionType):
        raise LocalProtocolError(f"{where}: optional fields are not supported; use a sentinel")
    raise LocalProtocolError(f"{where}: field type {tp!r} cannot come off the wire")


def _check_bool(value: Any, where: str) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"{where}: expected a boolean")
    return value


def _check_int(value: Any, where: str) -> int:
    if type(value) is not int:
        raise DecodeError(f"{where}: expected an integer")
    if not limits.INT_MIN <= value <= limits.INT_MAX:
        raise DecodeError(f"{where}: integer out of the signed 64-bit range")
    return value


def _check_str(value: Any, where: str) -> str:
    if type(value) is not str:
        raise DecodeError(f"{where}: expected a string")
    return value


def _check_bytes(value: Any, where: str) -> bytes:
    if type(value) is not bytes:
        raise DecodeError(f"{where}: expected bytes")
    return value
