"""Ledger entries and their wire messages: canonical bytes, hashes, signing and parsing.

I/O: none. Time: ``created_ms`` is given by the caller.

An entry is ``EntryWire = [101, 1, signed, signature]`` where ``signed`` is the canonical bytes of
``EntrySigned = [100, 1, author, seq, prev_hash, kind, body, created_ms]`` and ``body`` is the
canonical bytes of the message its ``kind`` names. The entry's hash is ``sha256(signed)``: the
exact bytes the author signed, never a re-serialisation. Message types 100-149 belong to the
ledger (ADR 0004).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
from typing import Any, Final, TypeVar

import msgpack

from hearth.ledger.errors import ChainError, MalformedEntryError, NonCanonicalEntryError
from hearth.protocol import limits
from hearth.protocol.codec import decode_as, encode, message
from hearth.protocol.errors import DecodeError, NonCanonicalError, RemoteProtocolError
from hearth.protocol.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, PublicKey

HASH_BYTES: Final = 32
GENESIS_PREV_HASH: Final = bytes(HASH_BYTES)
LEDGER_FORMAT_VERSION: Final = 1


class Kind(enum.IntEnum):
    GENESIS = 0
    PAY = 1  # the payer's half-signed receipt: reserves credit, never counts toward a balance
    EARN = 2  # the payee's countersigned receipt: +amount
    SETTLE = 3  # the payer records the payee's countersignature: -amount
    CANCEL = 4  # the payer gives up on a pending pay after it expired
    MISMATCH = 5  # a worker's result lost the vote
    FORK_EVIDENCE = 6  # another author signed two entries with one seq


@message(100)
@dataclasses.dataclass(frozen=True)
class EntrySigned:
    author: bytes
    seq: int
    prev_hash: bytes
    kind: int
    body: bytes
    created_ms: int


@message(101)
@dataclasses.dataclass(frozen=True)
class EntryWire:
    signed: bytes
    signature: bytes


@message(102)
@dataclasses.dataclass(frozen=True)
class Receipt:
    job_id: bytes
    payer: bytes
    payee: bytes
    amount_mc: int
    created_ms: int
    expires_ms: int

    @property
    def credit_key(self) -> tuple[bytes, bytes, bytes]:
        """(payer, job_id, payee): at most one credit each. A job id is the publisher's to
        choose, so it names a job only together with the payer (ADR 0011)."""
        return (self.payer, self.job_id, self.payee)


@message(103)
@dataclasses.dataclass(frozen=True)
class HalfSignedReceipt:
    """The payer's promise. The payee's countersignature covers these exact bytes."""

    receipt: bytes
    payer_signature: bytes


@message(104)
@dataclasses.dataclass(frozen=True)
class CountersignedReceipt:
    receipt: bytes
    payer_signature: bytes
    payee_signature: bytes

    @property
    def half(self) -> HalfSignedReceipt:
        return HalfSignedReceipt(self.receipt, self.payer_signature)

    @property
    def half_bytes(self) -> bytes:
        """``encode(self.half)``, the bytes the payee countersigned, without the detour."""
        return half_bytes(self.receipt, self.payer_signature)


def half_bytes(receipt: bytes, payer_signature: bytes) -> bytes:
    """The canonical bytes of ``HalfSignedReceipt(receipt, payer_signature)``: a chain hashes
    and checks these by the thousand, so they are packed directly (a test holds them equal)."""
    fields = [HalfSignedReceipt.TYPE, HalfSignedReceipt.VERSION, receipt, payer_signature]  # type: ignore[attr-defined]
    data: bytes = msgpack.packb(fields, use_bin_type=True)
    return data


@message(110)
@dataclasses.dataclass(frozen=True)
class GenesisBody:
    format_version: int
    credit_limit_mc: int


@message(111)
@dataclasses.dataclass(frozen=True)
class CancelBody:
    receipt_hash: bytes


@message(112)
@dataclasses.dataclass(frozen=True)
class MismatchBody:
    job_id: bytes
    worker: bytes
    evidence_hashes: tuple[bytes, ...]


@message(113)
@dataclasses.dataclass(frozen=True)
class ForkProof:
    """Two entries by one author: one seq (``entry_a`` has the smaller hash), or seqs N and N+1
    where the second does not link to the first (ADR 0030)."""

    entry_a: bytes
    entry_b: bytes


@message(114)
@dataclasses.dataclass(frozen=True)
class DoubleClaimProof:
    """Two credit entries by one payee for one job (the earlier one first)."""

    entry_a: bytes
    entry_b: bytes


BODY_TYPES: Final[dict[Kind, type[Any]]] = {
    Kind.GENESIS: GenesisBody,
    Kind.PAY: HalfSignedReceipt,
    Kind.EARN: CountersignedReceipt,
    Kind.SETTLE: CountersignedReceipt,
    Kind.CANCEL: CancelBody,
    Kind.MISMATCH: MismatchBody,
    Kind.FORK_EVIDENCE: ForkProof,
}


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """A parsed entry. ``wire`` is what is stored and sent; ``hash`` is ``sha256(signed)``.

    ``body`` is the decoded body message, except straight out of ``parse_header`` (raw bytes).
    """

    author: PublicKey
    seq: int
    prev_hash: bytes
    kind: Kind
    body: Any
    created_ms: int
    signed: bytes
    signature: bytes
    wire: bytes
    hash: bytes


M = TypeVar("M")

# The flat messages a chain holds by the thousand, and their field types. Parsing them through
# ``_fast_decode`` accepts exactly what ``codec.decode_as`` accepts (the canonical bytes of that
# shape) at a fraction of the cost; anything else falls back to the codec for its error.
_FLAT: Final[dict[type[Any], tuple[type[Any], ...]]] = {
    EntryWire: (bytes, bytes),
    EntrySigned: (bytes, int, bytes, int, bytes, int),
    Receipt: (bytes, bytes, bytes, int, int, int),
    HalfSignedReceipt: (bytes, bytes),
    CountersignedReceipt: (bytes, bytes, bytes),
    CancelBody: (bytes,),
    GenesisBody: (int, int),
    ForkProof: (bytes, bytes),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Shape:
    head: list[int]  # [TYPE, VERSION]
    types: list[type[Any]]  # the type of every array item, the head's included
    int_items: tuple[int, ...]  # where the int fields sit in the array


_SHAPES: Final = {
    cls: _Shape(
        [cls.TYPE, cls.VERSION],
        [int, int, *fields],
        tuple(2 + i for i, t in enumerate(fields) if t is int),
    )
    for cls, fields in _FLAT.items()
}


def _fast_fields(data: bytes, cls: type[Any]) -> list[Any] | None:
    """The fields of ``data`` if it is the canonical encoding of a flat ``cls``, else None."""
    shape = _SHAPES[cls]
    if len(data) > limits.LEDGER_ENTRY_BYTES_MAX:
        return None
    try:
        raw = msgpack.unpackb(data, raw=False, use_list=True, max_map_len=0, max_ext_len=0)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
    # Only a uint64 can leave the int range (an int64 cannot), so one bound is enough; the
    # re-encoding then proves the bytes were the canonical ones.
    if (
        type(raw) is list
        and list(map(type, raw)) == shape.types
        and raw[:2] == shape.head
        and (not shape.int_items or max([raw[i] for i in shape.int_items]) <= limits.INT_MAX)
        and msgpack.packb(raw, use_bin_type=True) == data
    ):
        return raw[2:]
    return None


def _fast_decode(data: bytes, cls: type[M]) -> M:
    if cls in _SHAPES:
        fields = _fast_fields(data, cls)
        if fields is not None:
            return cls(*fields)
    return decode_as(data, cls, bytes_max=limits.LEDGER_ENTRY_BYTES_MAX)


def sign_entry(
    identity: Identity, *, seq: int, prev_hash: bytes, kind: Kind, body: object, created_ms: int
) -> Entry:
    """Build and sign an entry. It is not yet durable: only a store may release it."""
    assert isinstance(body, BODY_TYPES[kind]), f"{kind.name} takes {BODY_TYPES[kind].__name__}"
    assert seq >= 0 and len(prev_hash) == HASH_BYTES
    body_bytes = encode(body)
    signed = encode(
        EntrySigned(identity.public_key, seq, prev_hash, int(kind), body_bytes, created_ms)
    )
    signature = identity.sign(signed)
    wire = encode(EntryWire(signed, signature))
    return Entry(
        identity.public_key, seq, prev_hash, kind, body, created_ms, signed, signature, wire,
        sha256(signed),
    )  # fmt: skip


def parse_entry(wire: bytes) -> Entry:
    """Parse an entry's bytes (canonical form and field shapes only, no signature check)."""
    return parse_body(parse_header(wire))


def parse_header(wire: bytes) -> Entry:
    """Parse everything but the body (``body`` is its bytes): a chain checks the signature first."""
    return Entry(*_header_fields(wire))


def parse_body(header: Entry) -> Entry:
    """Decode the body bytes ``parse_header`` left in ``body`` into its kind's message."""
    h = header
    body = _body(h.kind, h.body, h.seq)
    return Entry(
        h.author, h.seq, h.prev_hash, h.kind, body, h.created_ms, h.signed, h.signature, h.wire,
        h.hash,
    )  # fmt: skip


def parse_entry_deferred(wire: bytes) -> tuple[Entry, ChainError | None]:
    """Parse a whole entry, but hand back a body that does not parse with its error instead of
    raising it, so that a chain can first report a fault in the header or the signature.
    A header that does not parse raises."""
    fields = _header_fields(wire)
    try:
        fields[4] = _body(fields[3], fields[4], fields[1])
    except ChainError as exc:
        return Entry(*fields), exc
    return Entry(*fields), None


_KINDS: Final = tuple(Kind)
assert all(kind == i for i, kind in enumerate(_KINDS)), "kinds number 0, 1, 2..."


def _header_fields(wire: bytes) -> list[Any]:
    """``Entry``'s fields in order, ``body`` still bytes; raises a ``ChainError``."""
    if len(wire) > limits.LEDGER_ENTRY_BYTES_MAX:
        raise MalformedEntryError(f"entry of {len(wire)} bytes exceeds the limit")
    outer = _fast_fields(wire, EntryWire)
    inner = None if outer is None else _fast_fields(outer[0], EntrySigned)
    if outer is None or inner is None:  # not the usual shape: the codec decides, and names faults
        try:
            slow = decode_as(wire, EntryWire, bytes_max=limits.LEDGER_ENTRY_BYTES_MAX)
            slow_signed = decode_as(
                slow.signed, EntrySigned, bytes_max=limits.LEDGER_ENTRY_BYTES_MAX
            )
        except NonCanonicalError as exc:
            raise NonCanonicalEntryError(str(exc)) from exc
        except RemoteProtocolError as exc:
            raise MalformedEntryError(f"{exc.reason}: {exc}") from exc
        outer = [slow.signed, slow.signature]
        inner = [getattr(slow_signed, f.name) for f in dataclasses.fields(EntrySigned)]
    signed, signature = outer
    author, seq, prev_hash, kind, body, created_ms = inner
    if len(author) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise MalformedEntryError("author key or signature has the wrong length", seq=seq)
    if seq < 0 or len(prev_hash) != HASH_BYTES:
        raise MalformedEntryError("negative seq or prev_hash of the wrong length", seq=seq)
    if not 0 <= kind < len(_KINDS):
        raise MalformedEntryError(f"unknown entry kind {kind}", seq=seq)
    return [
        PublicKey(author), seq, prev_hash, _KINDS[kind], body, created_ms, signed, signature, wire,
        sha256(signed),
    ]  # fmt: skip


def _body(kind: Kind, data: bytes, seq: int) -> Any:
    try:
        return _fast_decode(data, BODY_TYPES[kind])
    except NonCanonicalError as exc:
        raise NonCanonicalEntryError(f"body: {exc}", seq=seq) from exc
    except RemoteProtocolError as exc:
        raise MalformedEntryError(f"body: {exc.reason}: {exc}", seq=seq) from exc


@functools.lru_cache(maxsize=4096)  # a verify meets each receipt twice: its claim, its rule
def parse_receipt(data: bytes) -> Receipt:
    """Parse a receipt's bytes and check the shape every receipt must have (immutable result)."""
    receipt = _fast_decode(data, Receipt)
    if not 0 < len(receipt.job_id) <= limits.JOB_ID_BYTES_MAX:
        raise DecodeError("job_id must be 1..JOB_ID_BYTES_MAX bytes")
    if len(receipt.payer) != PUBLIC_KEY_BYTES or len(receipt.payee) != PUBLIC_KEY_BYTES:
        raise DecodeError("payer and payee must be Ed25519 public keys")
    if receipt.payer == receipt.payee:
        raise DecodeError("payer and payee are the same key")
    if receipt.amount_mc <= 0 or receipt.amount_mc > limits.CREDIT_LIMIT_MC:
        raise DecodeError(f"amount_mc {receipt.amount_mc} outside (0, CREDIT_LIMIT_MC]")
    if not 0 < receipt.expires_ms - receipt.created_ms <= limits.RECEIPT_TTL_MS_MAX:
        raise DecodeError("receipt lifetime outside (0, RECEIPT_TTL_MS_MAX]")
    return receipt


def to_json(entry: Entry) -> dict[str, Any]:
    """A readable view of an entry for `hearth ledger show/export` (bytes as hex)."""

    def plain(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return value

    body = plain(entry.body)
    if isinstance(entry.body, HalfSignedReceipt | CountersignedReceipt):
        body["receipt"] = plain(decode_as(entry.body.receipt, Receipt))
    return {
        "seq": entry.seq,
        "kind": entry.kind.name.lower(),
        "created_ms": entry.created_ms,
        "author": entry.author.hex(),
        "prev_hash": entry.prev_hash.hex(),
        "hash": entry.hash.hex(),
        "body": body,
        "signature": entry.signature.hex(),
        "wire": entry.wire.hex(),
    }
