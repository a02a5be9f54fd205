"""Chain and receipt rules: balances, credit limit, expiry, cancel, double claims, forks, audit."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest

from hearth.ledger import errors
from hearth.ledger.audit import (
    LedgerRangeRequest,
    LedgerRangeResponse,
    audit_range,
    missing_receipts,
    serve_range,
)
from hearth.ledger.chain import verify_chain
from hearth.ledger.entry import (
    CountersignedReceipt,
    DoubleClaimProof,
    Entry,
    ForkProof,
    Kind,
    MismatchBody,
    sign_entry,
)
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.proofs import (
    ForkWatch,
    RefusedAuthors,
    make_fork_proof,
    verify_double_claim_proof,
    verify_fork_proof,
)
from hearth.ledger.receipts import check_receipt, countersign, make_receipt, receipt_hash
from hearth.protocol import limits
from hearth.protocol.codec import decode, encode
from hearth.protocol.errors import OversizeError
from tests.ledger.conftest import exchange, identity

ROOT = Path(__file__).resolve().parents[2]
PURE = ["entry.py", "chain.py", "receipts.py", "memory.py", "base.py", "proofs.py", "audit.py"]
PURE += ["errors.py"]
FORBIDDEN = {"trio", "libp2p", "sqlite3", "sqlite_utils", "socket", "time", "os", "subprocess"}


@pytest.mark.parametrize("name", PURE)
def test_the_chain_rules_do_no_io(name: str) -> None:
    tree = ast.parse((ROOT / "ledger" / name).read_text())
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        assert not {n.split(".")[0] for n in names} & FORBIDDEN, f"{name} imports {names}"
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            assert not (node.value.id == "random" and node.attr != "Random"), name


def test_the_ledger_message_types_stay_in_their_range() -> None:
    from hearth.protocol.codec import registered_types

    ours = [
        c for c, cls in registered_types().items() if cls.__module__.startswith("hearth.ledger.")
    ]
    assert ours and all(100 <= c <= 149 for c in ours)


def test_a_payment_moves_credit_and_either_ledger_proves_it(
    pair: tuple[MemoryLedger, MemoryLedger],
) -> None:
    payer, payee = pair
    countersigned = exchange(payer, payee, b"job", 250)
    assert (payer.balance_mc(), payee.balance_mc()) == (-250, 250)
    assert check_receipt(countersigned).amount_mc == 250
    for ledger in (payer, payee):
        last = ledger.entries()[-1]
        assert last.kind in (Kind.SETTLE, Kind.EARN)
        assert check_receipt(last.body) == check_receipt(countersigned)
        assert verify_chain(ledger.entry_wires()).balance_mc == ledger.balance_mc()


def test_a_half_signed_receipt_never_counts(pair: tuple[MemoryLedger, MemoryLedger]) -> None:
    payer, payee = pair
    payer.append_pay_pending(
        job_id=b"j", payee=payee.identity.public_key, amount_mc=300, now_ms=0, ttl_ms=100
    )
    assert payer.balance_mc() == 0
    assert payer.available_mc() == limits.CREDIT_LIMIT_MC - 300
    assert [p.amount_mc for p in payer.pending_pays()] == [300]


def test_spending_stops_at_the_credit_limit(pair: tuple[MemoryLedger, MemoryLedger]) -> None:
    payer, payee = pair
    exchange(payer, payee, b"a", limits.CREDIT_LIMIT_MC - 10)
    with pytest.raises(errors.CreditLimitError):
        payer.append_pay_pending(
            job_id=b"b", payee=payee.identity.public_key, amount_mc=11, now_ms=5_000, ttl_ms=10
        )
    assert len(payer.entry_wires()) == 3  # nothing was staged, nothing written
    exchange(payee, payer, b"back", 11, now_ms=6_000)  # earning restores spending room
    exchange(payer, payee, b"b", 21, now_ms=7_000)
    assert payer.balance_mc() == -limits.CREDIT_LIMIT_MC


def test_the_payee_refuses_an_expired_receipt_and_the_payer_cancels(
    pair: tuple[MemoryLedger, MemoryLedger],
) -> None:
    payer, payee = pair
    half = payer.append_pay_pending(
        job_id=b"j", payee=payee.identity.public_key, amount_mc=40, now_ms=0, ttl_ms=100
    )
    with pytest.raises(errors.ExpiredReceiptError):
        payee.append_earn(half, now_ms=101)
    (pending,) = payer.pending_pays()
    assert payer.expired_pays(100) == [] and payer.expired_pays(101) == [pending]
    with pytest.raises(errors.ReceiptStateError):
        payer.cancel(pending.receipt_hash, now_ms=100)  # not before it expired
    payer.cancel(pending.receipt_hash, now_ms=101)
    assert payer.available_mc() == limits.CREDIT_LIMIT_MC and payer.pending_pays() == []
    assert payer.balance_mc() + payee.balance_mc() == 0


def test_a_late_countersignature_still_settles_after_a_cancel(
    pair: tuple[MemoryLedger, MemoryLedger],
) -> None:
    payer, payee = pair
    half = payer.append_pay_pending(
        job_id=b"j", payee=payee.identity.public_key, amount_mc=40, now_ms=0, ttl_ms=100
    )
    countersigned = payee.append_earn(half, now_ms=100)  # in time; the answer is lost
    payer.cancel(receipt_hash(half.receipt), now_ms=500)
    assert payer.balance_mc() + payee.balance_mc() == 40  # not yet conserved: a message is out
    payer.settle(countersigned, now_ms=900)
    payer.settle(countersigned, now_ms=901)  # a repeat is a no-op
    assert payer.balance_mc() + payee.balance_mc() == 0
    verify_chain(payer.entry_wires())


def test_an_earn_after_expiry_does_not_verify() -> None:
    payer, payee = identity(1), identity(2)
    half = make_receipt(
        payer, job_id=b"j", payee=payee.public_key, amount_mc=5, now_ms=0, ttl_ms=10
    )
    ledger = MemoryLedger(payee)
    countersigned = countersign(payee, half, now_ms=10)
    late = sign_entry(
        payee, seq=1, prev_hash=ledger.head().hash, kind=Kind.EARN, body=countersigned,
        created_ms=11,
    )  # fmt: skip
    with pytest.raises(errors.ExpiredReceiptError):
        verify_chain([*ledger.entry_wires(), late.wire])


def test_a_double_claim_is_refused_with_proof(pair: tuple[MemoryLedger, MemoryLedger]) -> None:
    payer, payee = pair
    half = payer.append_pay_pending(
        job_id=b"j", payee=payee.identity.public_key, amount_mc=9, now_ms=0, ttl_ms=100
    )
    first = payee.append_earn(half, now_ms=1)
    assert payee.append_earn(half, now_ms=2) == first  # the same receipt again: same answer
    other = make_receipt(
        payer.identity, job_id=b"j", payee=payee.identity.public_key, amount_mc=9, now_ms=3,
        ttl_ms=100,
    )  # fmt: skip
    with pytest.raises(errors.DoubleClaimError) as caught:
        payee.append_earn(other, now_ms=4)
    assert caught.value.existing_entry == payee.entry_wires()[1]
    assert payee.balance_mc() == 9
    # A chain that claims twice does not verify, and the error carries a standalone proof.
    second = countersign(payee.identity, other, now_ms=4)
    forged = sign_entry(
        payee.identity, seq=2, prev_hash=payee.head().hash, kind=Kind.EARN, body=second,
        created_ms=4,
    )  # fmt: skip
    with pytest.raises(errors.DoubleClaimError) as caught:
        verify_chain([*payee.entry_wires(), forged.wire])
    proof = caught.value.proof
    assert isinstance(proof, DoubleClaimProof)
    assert verify_double_claim_proof(decode(encode(proof))) == payee.identity.public_key
    with pytest.raises(errors.DoubleClaimProofError):
        verify_double_claim_proof(DoubleClaimProof(proof.entry_b, proof.entry_a))


def test_a_fork_proof_verifies_alone_and_its_author_is_refused() -> None:
    forker = MemoryLedger(identity(5))
    head = forker.head()
    a = sign_entry(
        forker.identity, seq=1, prev_hash=head.hash, kind=Kind.MISMATCH,
        body=MismatchBody(b"j", identity(6).public_key, ()), created_ms=1,
    )  # fmt: skip
    b = sign_entry(
        forker.identity, seq=1, prev_hash=head.hash, kind=Kind.MISMATCH,
        body=MismatchBody(b"k", identity(6).public_key, ()), created_ms=1,
    )  # fmt: skip
    watch = ForkWatch()
    assert watch.observe(a) is None and watch.observe(a) is None
    proof = watch.observe(b)
    assert proof == make_fork_proof(b.wire, a.wire)
    assert verify_fork_proof(decode(encode(proof))) == forker.identity.public_key
    refused = RefusedAuthors()
    refused.add_bytes(encode(proof))
    with pytest.raises(errors.RefusedAuthorError):
        refused.check(forker.identity.public_key)
    with pytest.raises(errors.ForkProofError):
        verify_fork_proof(type(proof)(proof.entry_a, proof.entry_a))
    # A node records the proof in its own chain, refuses the author, and still does after restart.
    honest = MemoryLedger(identity(7))
    honest.record_fork(proof, now_ms=2)
    assert honest.record_fork(proof, now_ms=3) is None
    for ledger in (honest, honest.reopen()):
        with pytest.raises(errors.RefusedAuthorError):
            ledger.append_pay_pending(
                job_id=b"x", payee=forker.identity.public_key, amount_mc=1, now_ms=4, ttl_ms=9
            )


def test_a_next_entry_that_links_to_a_twin_is_a_fork_proof_from_either_side() -> None:
    """The twin's holder never sees the real entry at its seq, only the next head (ADR 0030)."""
    forker = MemoryLedger(identity(5))
    genesis = forker.entry_at(0)

    def mismatch(seq: int, prev_hash: bytes, job: bytes) -> Entry:
        return sign_entry(
            forker.identity, seq=seq, prev_hash=prev_hash, kind=Kind.MISMATCH,
            body=MismatchBody(job, identity(6).public_key, ()), created_ms=1,
        )  # fmt: skip

    real, twin = mismatch(1, genesis.hash, b"j"), mismatch(1, genesis.hash, b"k")
    following = mismatch(2, real.hash, b"l")
    for first, then in ((twin, following), (following, twin)):
        watch = ForkWatch()
        assert watch.observe(first) is None
        proof = watch.observe(then)
        assert proof == ForkProof(twin.wire, following.wire)
        assert verify_fork_proof(decode(encode(proof))) == forker.identity.public_key
    honest = ForkWatch()  # an honest chain seen head after head, in any order, convicts no one
    for entry in (following, real, following, real):
        assert honest.observe(entry) is None
    with pytest.raises(errors.ForkProofError, match="links"):
        verify_fork_proof(ForkProof(real.wire, following.wire))
    with pytest.raises(errors.ForkProofError, match="follow one another"):
        verify_fork_proof(ForkProof(genesis.wire, following.wire))
    with pytest.raises(errors.ForkProofError, match="follow one another"):
        verify_fork_proof(ForkProof(following.wire, twin.wire))
    recorder = MemoryLedger(identity(7))  # the chain rules accept it as fork evidence
    recorder.record_fork(ForkProof(twin.wire, following.wire), now_ms=2)
    assert forker.identity.public_key in recorder.reopen().state.refused


def test_credits_are_conserved_across_honest_ledgers_with_lost_messages() -> None:
    rng = random.Random(7)
    nodes = [MemoryLedger(identity(10 + i)) for i in range(8)]
    in_flight: list[tuple[MemoryLedger, CountersignedReceipt]] = []
    now_ms = 0
    for job in range(300):
        now_ms += 10
        payer, payee = rng.sample(nodes, 2)
        try:
            half = payer.append_pay_pending(
                job_id=f"job-{job}".encode(), payee=payee.identity.public_key,
                amount_mc=rng.randrange(1, 50_000), now_ms=now_ms, ttl_ms=50,
            )  # fmt: skip
        except errors.CreditLimitError:
            continue
        if rng.random() < 0.2:
            continue  # the half is lost: the payer cancels after expiry
        countersigned = payee.append_earn(half, now_ms=now_ms + rng.randrange(0, 50))
        if rng.random() < 0.3:
            in_flight.append((payer, countersigned))  # the countersignature is delayed
        else:
            payer.settle(countersigned, now_ms=now_ms)
        for node in nodes:
            for pending in node.expired_pays(now_ms):
                node.cancel(pending.receipt_hash, now_ms=now_ms)
    unsettled = sum(check_receipt(c).amount_mc for _, c in in_flight)
    assert sum(n.balance_mc() for n in nodes) == unsettled
    for payer, countersigned in in_flight:  # the payee keeps re-sending until it lands
        payer.settle(countersigned, now_ms=now_ms + 1_000)
    assert sum(n.balance_mc() for n in nodes) == 0
    for node in nodes:
        assert verify_chain(node.entry_wires()).balance_mc == node.balance_mc()
        assert node.balance_mc() >= -limits.CREDIT_LIMIT_MC - unsettled


def test_an_audit_checks_ranges_against_held_receipts(
    pair: tuple[MemoryLedger, MemoryLedger],
) -> None:
    payer, payee = pair
    held = {}
    for i in range(5):
        c = exchange(payer, payee, f"j{i}".encode(), 10 + i, now_ms=100 * i)
        held[receipt_hash(c.receipt)] = c
    author = payer.identity.public_key
    seen: set[bytes] = set()
    prev_hash = None
    for start in range(0, 11, 4):
        request = LedgerRangeRequest(author, start, 4)
        response = decode(encode(serve_range(payer, request)))
        report = audit_range(response, request=request, prev_hash=prev_hash, held=held)
        seen |= report.receipts_seen
        prev_hash = report.last_hash
    assert report.last_seq == response.head_seq == 10
    assert missing_receipts(held, seen) == []
    # A payer who hides a payment is caught: the auditor holds the countersigned receipt.
    hidden = exchange(payee, payer, b"elsewhere", 1)
    held[receipt_hash(hidden.receipt)] = hidden
    assert missing_receipts(held, seen) == [receipt_hash(hidden.receipt)]
    request = LedgerRangeRequest(author, 2, 3)
    good = serve_range(payer, request)
    spoiled = LedgerRangeResponse(author, 2, good.head_seq, (good.entries[1], good.entries[0]))
    with pytest.raises(errors.AuditError):
        audit_range(spoiled, request=request, prev_hash=None, held=held)
    with pytest.raises(OversizeError):
        serve_range(payer, LedgerRangeRequest(author, 0, limits.LEDGER_RANGE_ENTRIES_MAX + 1))


def test_tickets_hold_signatures_until_the_group_commits(
    pair: tuple[MemoryLedger, MemoryLedger],
) -> None:
    payer, payee = pair
    with payer.group() as group:
        ticket = group.append_pay_pending(
            job_id=b"j", payee=payee.identity.public_key, amount_mc=1, now_ms=0, ttl_ms=9
        )
        with pytest.raises(errors.NotCommittedError):
            _ = ticket.value
    assert ticket.value.receipt
    with pytest.raises(RuntimeError), payer.group() as group:  # a crash before the commit
        lost = group.append_pay_pending(
            job_id=b"k", payee=payee.identity.public_key, amount_mc=1, now_ms=0, ttl_ms=9
        )
        raise RuntimeError("crash")
    with pytest.raises(errors.NotCommittedError):
        _ = lost.value
    assert len(payer.entry_wires()) == 2 and payer.head().seq == 1
    assert payer.available_mc() == limits.CREDIT_LIMIT_MC - 1


def test_a_job_id_names_a_job_only_with_its_payer() -> None:
    """A publisher chooses its job ids, so another can reuse one: paying a worker first under a
    victim's job id must not cost the worker the victim's payment (one credit per payer)."""
    victim, griefer, worker = (
        MemoryLedger(identity(1)),
        MemoryLedger(identity(3)),
        MemoryLedger(identity(2)),
    )
    exchange(griefer, worker, b"job-7", 1)
    exchange(victim, worker, b"job-7", 250, now_ms=2_000)
    assert worker.balance_mc() == 251
    assert verify_chain(worker.entry_wires()).balance_mc == 251
    with pytest.raises(errors.DoubleClaimError):  # the same payer twice is still refused
        exchange(victim, worker, b"job-7", 5, now_ms=3_000)
