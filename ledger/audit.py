"""Audit over ``/hearth/ledger/1``: fetch a range of a peer's chain and check it against receipts.

I/O: none; the node moves the bytes. A request names (author, from_seq, count <= the limit); the
answer carries the entries and the server's head seq so the auditor knows when it has it all.
``audit_range`` checks one page (signatures, seq and hash continuity, author, receipts that
contradict ours); the auditor chains pages by passing the last page's hash, and once it has reached
the head ``missing_receipts`` names every receipt it holds that the author left out.
``hearth/heads/1`` carries ``HeadGossip`` (a head entry) and ``ForkProof`` messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from hearth.ledger.entry import (
    GENESIS_PREV_HASH,
    CountersignedReceipt,
    Entry,
    HalfSignedReceipt,
    Kind,
    parse_entry,
    parse_receipt,
)
from hearth.ledger.errors import AuditError, ChainError
from hearth.ledger.receipts import receipt_hash
from hearth.protocol import limits
from hearth.protocol.codec import message
from hearth.protocol.errors import DecodeError, OversizeError
from hearth.protocol.identity import PUBLIC_KEY_BYTES, verify_signature

if TYPE_CHECKING:  # a store is served here, never imported: protocol/ loads this module
    from hearth.ledger.base import LedgerBase


@message(120)
@dataclasses.dataclass(frozen=True)
class LedgerRangeRequest:
    author: bytes
    from_seq: int
    count: int


@message(121)
@dataclasses.dataclass(frozen=True)
class LedgerRangeResponse:
    author: bytes
    from_seq: int
    head_seq: int
    entries: tuple[bytes, ...]


@message(122)
@dataclasses.dataclass(frozen=True)
class HeadGossip:
    """A ledger's latest entry, gossiped so that two heads with one seq expose a fork."""

    entry: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class AuditReport:
    last_seq: int
    last_hash: bytes
    receipts_seen: frozenset[bytes]  # hashes of receipts the range records (pay, earn, settle)


def check_range_request(request: LedgerRangeRequest) -> None:
    """Refuse a request a server need not answer (raises a ``RemoteProtocolError``)."""
    if len(request.author) != PUBLIC_KEY_BYTES or request.from_seq < 0:
        raise DecodeError("range request needs a 32-byte author and from_seq >= 0")
    if not 0 < request.count <= limits.LEDGER_RANGE_ENTRIES_MAX:
        raise OversizeError(f"range count {request.count} outside (0, LEDGER_RANGE_ENTRIES_MAX]")


def serve_range(ledger: LedgerBase, request: LedgerRangeRequest) -> LedgerRangeResponse:
    """Answer from our committed chain (never staged entries: they are not durable yet)."""
    check_range_request(request)
    if request.author != ledger.identity.public_key:
        raise DecodeError("this node serves only its own ledger")
    count = max(0, min(request.count, ledger.committed_seq + 1 - request.from_seq))
    wires = ledger.entry_wires(request.from_seq, count) if count else []
    response = LedgerRangeResponse(
        request.author, request.from_seq, ledger.committed_seq, tuple(wires)
    )
    return response


def audit_range(
    response: LedgerRangeResponse,
    *,
    request: LedgerRangeRequest,
    prev_hash: bytes | None,
    held: Mapping[bytes, CountersignedReceipt] | None = None,
) -> AuditReport:
    """Check one page. ``prev_hash`` is the hash before ``from_seq`` (None if unknown);
    ``held`` maps (receipt hash) -> countersigned receipts the auditor holds with this author."""
    if response.author != request.author or response.from_seq != request.from_seq:
        raise AuditError("response is for another range")
    if len(response.entries) > request.count:
        raise AuditError("response holds more entries than asked for")
    if request.from_seq == 0 and prev_hash is None:
        prev_hash = GENESIS_PREV_HASH
    held_keys = {_key(c.receipt): rh for rh, c in (held or {}).items()}
    seen: set[bytes] = set()
    last_seq, last_hash = request.from_seq - 1, prev_hash or b""
    for offset, wire in enumerate(response.entries):
        entry = _checked_entry(wire, request.author, request.from_seq + offset)
        if prev_hash is not None and entry.prev_hash != prev_hash:
            raise AuditError(f"seq {entry.seq}: prev_hash breaks the chain")
        rh = _receipt_in(entry)
        if rh is not None:
            expected = held_keys.get(_key(_receipt_bytes(entry)))
            if expected is not None and expected != rh:
                raise AuditError(f"seq {entry.seq}: records another receipt for a job we hold")
            seen.add(rh)
        prev_hash = last_hash = entry.hash
        last_seq = entry.seq
    if response.entries and last_seq > response.head_seq:
        raise AuditError("entries run past the head the server announced")
    return AuditReport(last_seq, last_hash, frozenset(seen))


def missing_receipts(
    held: Mapping[bytes, CountersignedReceipt], seen: Iterable[bytes]
) -> list[bytes]:
    """Receipt hashes the auditor holds that a fully fetched chain never recorded."""
    recorded = set(seen)
    return sorted(rh for rh in held if rh not in recorded)


def _checked_entry(wire: bytes, author: bytes, seq: int) -> Entry:
    try:
        entry = parse_entry(wire)
    except ChainError as exc:
        raise AuditError(f"seq {seq}: {exc.reason}: {exc}") from exc
    if entry.author != author or entry.seq != seq:
        raise AuditError(f"seq {seq}: wrong author or seq {entry.seq} out of place")
    if not verify_signature(entry.author, entry.signed, entry.signature):
        raise AuditError(f"seq {seq}: entry signature is not its author's")
    return entry


def _receipt_bytes(entry: Entry) -> bytes:
    body: CountersignedReceipt | HalfSignedReceipt = entry.body
    return body.receipt


def _receipt_in(entry: Entry) -> bytes | None:
    if entry.kind in (Kind.PAY, Kind.EARN, Kind.SETTLE):
        return receipt_hash(_receipt_bytes(entry))
    return None


def _key(receipt_bytes: bytes) -> tuple[bytes, bytes, bytes]:
    return parse_receipt(receipt_bytes).credit_key
