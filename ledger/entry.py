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
import hashlib
from typing import Any, Final, TypeVar

import msgpack

from ledger.errors import MalformedEntryError, NonCanonicalEntryError
from protocol import limits
from protocol.codec import decode_as, encode, message
from protocol.errors import DecodeError, NonCanonicalError, RemoteProtocolError
from protocol.identity import PUBLIC_KEY_BYTES, SIGNATURE_BYTES, Identity, PublicKey

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
    """Two entries by one author with one seq; ``entry_a`` has the smaller hash."""

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

# The flat messages a chain holds by the thousand, as (type code, field types). Parsing them
# through ``_fast_decode`` accepts exactly what ``codec.decode_as`` accepts (the canonical bytes of
# that shape) at a fraction of the cost; anything else falls back to the codec for its error.
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


def _fast_decode(data: bytes, cls: type[M]) -> M:
    shape = _FLAT.get(cls)
    if shape is not None and len(data) <= limits.LEDGER_ENTRY_BYTES_MAX:
        try:
            raw = msgpack.unpackb(data, raw=False, use_list=True, max_map_len=0, max_ext_len=0)
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            raw = None
        if (
            type(raw) is list
            and len(raw) == 2 + len(shape)
            and raw[0] == cls.TYPE  # type: ignore[attr-defined]
            and raw[1] == cls.VERSION  # type: ignore[attr-defined]
            and type(raw[0]) is int
            and type(raw[1]) is int
            and all(type(v) is t for v, t in zip(raw[2:], shape, strict=True))
            and all(limits.INT_MIN <= v <= limits.INT_MAX for v in raw[2:] if type(v) is int)
            and msgpack.packb(raw, use_bin_type=True) == data
        ):
            return cls(*raw[2:])
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
    """Parse everything but the body (``body`` is None): a chain checks the signature first."""
    if len(wire) > limits.LEDGER_ENTRY_BYTES_MAX:
        raise MalformedEntryError(f"entry of {len(wire)} bytes exceeds the limit")
    try:
        outer = _fast_decode(wire, EntryWire)
        signed = _fast_decode(outer.signed, EntrySigned)
    except NonCanonicalError as exc:
        raise NonCanonicalEntryError(str(exc)) from exc
    except RemoteProtocolError as exc:
        raise MalformedEntryError(f"{exc.reason}: {exc}") from exc
    seq = signed.seq
    if len(signed.author) != PUBLIC_KEY_BYTES or len(outer.signature) != SIGNATURE_BYTES:
        raise MalformedEntryError("author key or signature has the wrong length", seq=seq)
    if seq < 0 or len(signed.prev_hash) != HASH_BYTES:
        raise MalformedEntryError("negative seq or prev_hash of the wrong length", seq=seq)
    try:
        kind = Kind(signed.kind)
    except ValueError:
        raise MalformedEntryError(f"unknown entry kind {signed.kind}", seq=seq) from None
    return Entry(
        PublicKey(signed.author), seq, signed.prev_hash, kind, signed.body, signed.created_ms,
        outer.signed, outer.signature, wire, sha256(outer.signed),
    )  # fmt: skip


def parse_body(header: Entry) -> Entry:
    """Decode the body bytes ``parse_header`` left in ``body`` into its kind's message."""
    try:
        body = _fast_decode(header.body, BODY_TYPES[header.kind])
    except NonCanonicalError as exc:
        raise NonCanonicalEntryError(f"body: {exc}", seq=header.seq) from exc
    except RemoteProtocolError as exc:
        raise MalformedEntryError(f"body: {exc.reason}: {exc}", seq=header.seq) from exc
    h = header
    return Entry(
        h.author, h.seq, h.prev_hash, h.kind, body, h.created_ms, h.signed, h.signature, h.wire,
        h.hash,
    )  # fmt: skip


def parse_receipt(data: bytes) -> Receipt:
    """Parse a receipt's bytes and check the shape every receipt must have."""
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
