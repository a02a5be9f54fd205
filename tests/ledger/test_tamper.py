"""The tamper corpus: every way of spoiling a valid chain is refused with its own error."""

from __future__ import annotations

import pytest

from hearth.ledger import errors
from hearth.ledger.chain import verify_chain
from hearth.ledger.entry import (
    CountersignedReceipt,
    Entry,
    Kind,
    MismatchBody,
    parse_entry,
    parse_header,
    sign_entry,
)
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.proofs import verify_fork_proof
from hearth.protocol.codec import encode
from tests.ledger.conftest import exchange, identity

A, B, C = identity(1), identity(2), identity(3)


@pytest.fixture
def chain() -> list[bytes]:
    payer, payee = MemoryLedger(A), MemoryLedger(B)
    for i in range(3):
        exchange(payer, payee, f"job-{i}".encode(), 100 + i)
    wires = payer.entry_wires()
    assert len(wires) == 7
    verify_chain(wires)
    return wires


def resign(entry: Entry, **changes: object) -> bytes:
    fields = dict(
        seq=entry.seq, prev_hash=entry.prev_hash, kind=entry.kind, body=entry.body,
        created_ms=entry.created_ms,
    )  # fmt: skip
    fields.update(changes)
    return sign_entry(A, **fields).wire  # type: ignore[arg-type]


def bit_flip_in_body(wires: list[bytes]) -> list[bytes]:
    wire = wires[3]
    body = parse_header(wire).body
    at = wire.index(body) + len(body) // 2
    return [*wires[:3], wire[:at] + bytes([wire[at] ^ 0x01]) + wire[at + 1 :], *wires[4:]]


def bad_prev_hash(wires: list[bytes]) -> list[bytes]:
    return [*wires[:3], resign(parse_entry(wires[3]), prev_hash=bytes(32)), *wires[4:]]


def seq_gap(wires: list[bytes]) -> list[bytes]:
    return [*wires[:3], *wires[4:]]


def repeated_seq(wires: list[bytes]) -> list[bytes]:
    e = parse_entry(wires[3])
    other = resign(e, kind=Kind.MISMATCH, body=MismatchBody(b"j", B.public_key, ()))
    return [*wires[:4], other, *wires[4:]]


def truncated_tail(wires: list[bytes]) -> list[bytes]:
    return wires[:-2]


def reordered(wires: list[bytes]) -> list[bytes]:
    return [*wires[:3], wires[4], wires[3], *wires[5:]]


def signature_by_another_key(wires: list[bytes]) -> list[bytes]:
    e = parse_entry(wires[3])
    forged = encode_wire(e.signed, C.sign(e.signed))
    return [*wires[:3], forged, *wires[4:]]


def encode_wire(signed: bytes, signature: bytes) -> bytes:
    from hearth.ledger.entry import EntryWire

    return encode(EntryWire(signed, signature))


def non_canonical(wires: list[bytes]) -> list[bytes]:
    wire = wires[3]
    assert wire[0] == 0x94  # fixarray of 4: the canonical header
    return [*wires[:3], b"\xdc\x00\x04" + wire[1:], *wires[4:]]


def countersignature_from_non_party(wires: list[bytes]) -> list[bytes]:
    settle = parse_entry(wires[2])
    assert settle.kind is Kind.SETTLE
    body: CountersignedReceipt = settle.body
    forged = CountersignedReceipt(body.receipt, body.payer_signature, C.sign(encode(body.half)))
    return [*wires[:2], resign(settle, body=forged), *wires[3:]]


def replayed_old_entry(wires: list[bytes]) -> list[bytes]:
    return [*wires, wires[2]]


CORPUS = [
    (bit_flip_in_body, errors.TamperedEntryError, 3),
    (bad_prev_hash, errors.PrevHashError, 3),
    (seq_gap, errors.SeqGapError, 3),
    (repeated_seq, errors.RepeatedSeqError, 4),
    (truncated_tail, errors.TruncatedChainError, 5),
    (reordered, errors.ReorderedError, 3),
    (signature_by_another_key, errors.EntrySignatureError, 3),
    (non_canonical, errors.NonCanonicalEntryError, 3),
    (countersignature_from_non_party, errors.CountersignatureError, 2),
    (replayed_old_entry, errors.ReplayedEntryError, 7),
]


@pytest.mark.parametrize(("spoil", "error", "index"), CORPUS, ids=[c[0].__name__ for c in CORPUS])
def test_each_tamper_is_refused_with_its_own_error(
    chain: list[bytes], spoil: object, error: type[errors.ChainError], index: int
) -> None:
    head = parse_entry(chain[-1])
    spoiled = spoil(chain)  # type: ignore[operator]
    with pytest.raises(errors.ChainError) as caught:
        verify_chain(spoiled, head=(head.seq, head.hash))
    assert type(caught.value) is error, caught.value.describe()
    assert caught.value.index == index
    assert caught.value.describe().startswith(("seq ", "entry #"))


def test_the_corpus_errors_are_all_distinct() -> None:
    assert len({e for _, e, _ in CORPUS}) == len(CORPUS)
    assert len({e.reason for _, e, _ in CORPUS}) == len(CORPUS)


def test_a_repeated_seq_carries_a_standalone_fork_proof(chain: list[bytes]) -> None:
    with pytest.raises(errors.RepeatedSeqError) as caught:
        verify_chain(repeated_seq(chain))
    assert verify_fork_proof(caught.value.proof) == A.public_key  # type: ignore[arg-type]


def test_a_flip_in_the_last_body_is_caught_through_the_recorded_head(chain: list[bytes]) -> None:
    head = parse_entry(chain[-1])
    wire = chain[-1]
    body = parse_header(wire).body
    at = wire.index(body) + 3
    spoiled = [*chain[:-1], wire[:at] + bytes([wire[at] ^ 0x80]) + wire[at + 1 :]]
    with pytest.raises(errors.TamperedEntryError):
        verify_chain(spoiled, head=(head.seq, head.hash))
    with pytest.raises(errors.EntrySignatureError):  # without a head nothing recorded the hash
        verify_chain(spoiled)


def test_an_untouched_chain_verifies(chain: list[bytes]) -> None:
    head = parse_entry(chain[-1])
    state = verify_chain(chain, head=(head.seq, head.hash))
    assert state.balance_mc == -(100 + 101 + 102)
