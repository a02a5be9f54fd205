"""Checking signatures on threads accepts and refuses exactly what one pass does."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearth.ledger import errors
from hearth.ledger.chain import ChainVerifier, verify_chain
from hearth.ledger.entry import (
    CountersignedReceipt,
    HalfSignedReceipt,
    Kind,
    half_bytes,
    parse_entry,
    parse_entry_deferred,
    parse_header,
)
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.parallel import verify_chain_parallel
from hearth.protocol.codec import encode
from tests.ledger.conftest import exchange, identity
from tests.ledger.test_tamper import CORPUS

A, B = identity(1), identity(2)


def long_chains(receipts: int) -> tuple[list[bytes], list[bytes]]:
    payer, payee = MemoryLedger(A), MemoryLedger(B)
    for i in range(receipts):
        exchange(payer, payee, f"job-{i}".encode(), 1 + i % 50, now_ms=1_000 + i)
    return payer.entry_wires(), payee.entry_wires()


PAYER, PAYEE = long_chains(40)  # 81 and 41 entries, built once: signing is the slow part


def outcome(verify: object, wires: list[bytes], **kw: object) -> object:
    try:
        state = verify(wires, **kw)  # type: ignore[operator]
    except errors.ChainError as exc:
        return (type(exc), exc.index, exc.seq, str(exc))
    return (state.head, state.balance_mc, state.reserved_mc, dict(state.earns))


@pytest.mark.parametrize("wires", [PAYER, PAYEE], ids=["payer", "payee"])
def test_an_untouched_chain_verifies_the_same_on_threads(wires: list[bytes]) -> None:
    head = parse_entry(wires[-1])
    serial = outcome(verify_chain, wires, head=(head.seq, head.hash))
    for window in (1, 3, 16, 1000):
        parallel = outcome(
            verify_chain_parallel, wires, threads=2, window_entries=window,
            head=(head.seq, head.hash),
        )  # fmt: skip
        assert parallel == serial
    assert not isinstance(serial[0], type)  # it verified


@pytest.mark.parametrize(("spoil", "error", "index"), CORPUS, ids=[c[0].__name__ for c in CORPUS])
def test_the_tamper_corpus_gets_the_same_first_error_on_threads(
    spoil: object, error: type[errors.ChainError], index: int
) -> None:
    payer, payee = MemoryLedger(A), MemoryLedger(B)
    for i in range(3):
        exchange(payer, payee, f"job-{i}".encode(), 100 + i)
    wires = payer.entry_wires()
    head = parse_entry(wires[-1])
    spoiled = spoil(wires)  # type: ignore[operator]
    for window in (1, 2, 5):
        got = outcome(
            verify_chain_parallel, spoiled, threads=3, window_entries=window,
            head=(head.seq, head.hash),
        )  # fmt: skip
        assert got == outcome(verify_chain, spoiled, head=(head.seq, head.hash))
        assert got[:2] == (error, index)  # type: ignore[index]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.sampled_from(["payer", "payee"]),
    data=st.data(),
    window=st.integers(1, 20),
    threads=st.integers(2, 4),
)
def test_any_flipped_bit_gets_the_same_verdict_on_threads(
    which: str, data: st.DataObject, window: int, threads: int
) -> None:
    wires = list(PAYER if which == "payer" else PAYEE)
    index = data.draw(st.integers(0, len(wires) - 1), label="entry")
    at = data.draw(st.integers(0, len(wires[index]) - 1), label="byte")
    bit = data.draw(st.integers(0, 7), label="bit")
    wire = wires[index]
    wires[index] = wire[:at] + bytes([wire[at] ^ (1 << bit)]) + wire[at + 1 :]
    serial = outcome(verify_chain, wires)
    parallel = outcome(verify_chain_parallel, wires, threads=threads, window_entries=window)
    assert parallel == serial
    assert isinstance(serial[0], type), "a flipped bit must never verify"


def test_windows_fold_in_order_and_results_must_match_the_claims() -> None:
    verifier = ChainVerifier(PAYER)
    first, second = verifier.parse(0, 10), verifier.parse(10, 20)
    with pytest.raises(AssertionError):
        verifier.fold(second)
    with pytest.raises(ValueError):  # a result per claim, or none
        verifier.fold(first, [True])


def test_a_failed_claim_fails_the_entry_that_carries_it() -> None:
    """The fold goes by the results it is given: the settle at seq 2 carries claims 2 (its own
    signature) and 3 (the payee's countersignature); failing claim 3 fails that entry's rule."""
    verifier = ChainVerifier(PAYER)
    window = verifier.parse(0, len(PAYER))
    results = [True] * len(window.claims)
    results[3] = False
    with pytest.raises(errors.CountersignatureError) as caught:
        verifier.fold(window, results)
    assert (caught.value.index, caught.value.seq) == (2, 2)


def test_every_receipt_entry_claims_its_inner_signature() -> None:
    window = ChainVerifier(PAYER).parse(0, len(PAYER))
    settles = sum(parse_header(w).kind is Kind.SETTLE for w in PAYER)
    assert len(window.claims) == len(PAYER) + settles
    window = ChainVerifier(PAYEE).parse(0, len(PAYEE))
    assert len(window.claims) == 2 * len(PAYEE) - 1  # every entry but genesis is an EARN


def test_half_bytes_are_the_codec_bytes() -> None:
    settle = next(parse_entry(w) for w in PAYER if parse_header(w).kind is Kind.SETTLE)
    body: CountersignedReceipt = settle.body
    expected = encode(HalfSignedReceipt(body.receipt, body.payer_signature))
    assert body.half_bytes == expected == half_bytes(body.receipt, body.payer_signature)


def test_a_body_that_does_not_parse_waits_behind_the_header() -> None:
    body = parse_header(PAYER[2]).body
    assert body[:2] == bytes([0x95, 104])  # [CountersignedReceipt, 1, ...]
    broken = PAYER[2].replace(body, body[:1] + bytes([103]) + body[2:])  # a HalfSignedReceipt?
    entry, error = parse_entry_deferred(broken)
    assert isinstance(entry.body, bytes) and isinstance(error, errors.MalformedEntryError)
    assert entry.seq == 2 and entry.kind is Kind.SETTLE
    with pytest.raises(errors.TamperedEntryError):  # the signature speaks first, not the body
        verify_chain([*PAYER[:2], broken, *PAYER[3:]])
