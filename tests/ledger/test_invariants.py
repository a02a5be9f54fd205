"""The chain's own invariants fire when our code breaks them: each is broken here through a seam.

These are assertions, not rule checks: a peer's bad entry raises a ``ChainError`` in ``check``;
an assertion fires only when our code applies a plan it should not have (twice, or altered),
reverts out of order, writes entries it did not stage, or folds a state that no longer adds up.
"""

from __future__ import annotations

import dataclasses

import pytest

import hearth.ledger.chain
from hearth.ledger.chain import ChainState, _Change, verify_chain
from hearth.ledger.entry import Entry, Kind, MismatchBody, sign_entry
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.identity import verify_signature
from tests.ledger.conftest import identity

JOB = b"job-1"


def staged(ledger: MemoryLedger, kind: Kind, body: object, now_ms: int) -> tuple[Entry, _Change]:
    """The next entry of ``ledger`` and the plan ``check`` makes for it, not yet applied."""
    head = ledger.state.head
    entry = sign_entry(ledger.identity, seq=head.seq + 1, prev_hash=head.hash, kind=kind,
                       body=body, created_ms=now_ms)  # fmt: skip
    return entry, ledger.state._plan(entry, signatures=True, verify=verify_signature)


def applied_twice(ledger: MemoryLedger, kind: Kind, body: object, change: _Change) -> None:
    """Apply ``change`` again, to the next entry of the same body (a plan replayed by our bug)."""
    head = ledger.state.head
    entry = sign_entry(ledger.identity, seq=head.seq + 1, prev_hash=head.hash, kind=kind,
                       body=body, created_ms=head.created_ms)  # fmt: skip
    ledger.state.apply(entry, change)


def test_a_pay_plan_applied_twice_fires_paid_twice() -> None:
    payer, payee = MemoryLedger(identity(1)), MemoryLedger(identity(2))
    half = payer.append_pay_pending(
        job_id=JOB, payee=payee.identity.public_key, amount_mc=10, now_ms=1_000, ttl_ms=10_000
    )
    replay = MemoryLedger(identity(1), wires=payer.entry_wires()[:1])
    entry, change = staged(replay, Kind.PAY, half, 1_000)
    replay.state.apply(entry, change)
    with pytest.raises(AssertionError, match="paid twice"):
        applied_twice(replay, Kind.PAY, half, change)


def test_a_settle_plan_applied_twice_fires_settled_twice() -> None:
    payer, payee = MemoryLedger(identity(1)), MemoryLedger(identity(2))
    half = payer.append_pay_pending(
        job_id=JOB, payee=payee.identity.public_key, amount_mc=10, now_ms=1_000, ttl_ms=10_000
    )
    countersigned = payee.append_earn(half, now_ms=1_001)
    entry, change = staged(payer, Kind.SETTLE, countersigned, 1_002)
    payer.state.apply(entry, change)
    with pytest.raises(AssertionError, match="settled twice"):
        applied_twice(payer, Kind.SETTLE, countersigned, change)


def test_a_settle_that_moves_another_amount_fires() -> None:
    payer, payee = MemoryLedger(identity(1)), MemoryLedger(identity(2))
    half = payer.append_pay_pending(
        job_id=JOB, payee=payee.identity.public_key, amount_mc=10, now_ms=1_000, ttl_ms=10_000
    )
    countersigned = payee.append_earn(half, now_ms=1_001)
    entry, change = staged(payer, Kind.SETTLE, countersigned, 1_002)
    wrong = dataclasses.replace(change, balance_delta_mc=change.balance_delta_mc + 1)
    with pytest.raises(AssertionError, match="settle != pay amount"):
        payer.state.apply(entry, wrong)
    assert payer.state.head.seq == entry.seq - 1, "nothing was applied"


def test_an_earn_plan_applied_twice_fires_earned_twice() -> None:
    payer, payee = MemoryLedger(identity(1)), MemoryLedger(identity(2))
    half = payer.append_pay_pending(
        job_id=JOB, payee=payee.identity.public_key, amount_mc=10, now_ms=1_000, ttl_ms=10_000
    )
    countersigned = payee.append_earn(half, now_ms=1_001)
    replay = MemoryLedger(identity(2), wires=payee.entry_wires()[:1])
    entry, change = staged(replay, Kind.EARN, countersigned, 1_001)
    replay.state.apply(entry, change)
    with pytest.raises(AssertionError, match="earned twice"):
        applied_twice(replay, Kind.EARN, countersigned, change)


def test_undos_taken_back_oldest_first_fire() -> None:
    ledger = MemoryLedger(identity(1))
    with pytest.raises(AssertionError, match="newest first"), ledger.group() as group:
        group.append_mismatch(job_id=JOB, worker=identity(2).public_key, evidence_hashes=(),
                              now_ms=1_000)  # fmt: skip
        group.append_mismatch(job_id=JOB, worker=identity(3).public_key, evidence_hashes=(),
                              now_ms=1_000)  # fmt: skip
        ledger.state.revert(group.undos[0])


def test_a_group_that_writes_entries_it_did_not_stage_fires_before_the_write() -> None:
    ledger = MemoryLedger(identity(1))
    stray, change = staged(ledger, Kind.MISMATCH, MismatchBody(JOB, identity(2).public_key, ()), 1)
    with pytest.raises(AssertionError, match="unstaged entries"), ledger.group() as group:
        ledger.state.apply(stray, change)  # folded in beside the group: our bug
        group.append_mismatch(job_id=JOB, worker=identity(3).public_key, evidence_hashes=(),
                              now_ms=1_000)  # fmt: skip
    assert len(ledger.entry_wires()) == 1, "nothing was written"


def test_a_fold_that_loses_a_flow_fires_after_the_read(monkeypatch: pytest.MonkeyPatch) -> None:
    payer, payee = MemoryLedger(identity(1)), MemoryLedger(identity(2))
    half = payer.append_pay_pending(
        job_id=JOB, payee=payee.identity.public_key, amount_mc=10, now_ms=1_000, ttl_ms=10_000
    )
    payer.settle(payee.append_earn(half, now_ms=1_001), now_ms=1_002)
    verify_chain(payer.entry_wires()).assert_conserved()
    # the seam: a lost flow
    monkeypatch.setattr(hearth.ledger.chain, "_add_flow", lambda *args: None)
    with pytest.raises(AssertionError, match="balance != earned - settled pays"):
        verify_chain(payer.entry_wires())


@pytest.mark.parametrize(
    ("field", "message"),
    [("balance_mc", "balance != earned"), ("reserved_mc", "reserve != pending pays")],
)
def test_a_state_that_no_longer_adds_up_fires(field: str, message: str) -> None:
    payer, payee = MemoryLedger(identity(1)), MemoryLedger(identity(2))
    payer.append_pay_pending(
        job_id=JOB, payee=payee.identity.public_key, amount_mc=10, now_ms=1_000, ttl_ms=10_000
    )
    state: ChainState = payer.state
    state.assert_conserved()
    setattr(state, field, getattr(state, field) + 1)
    with pytest.raises(AssertionError, match=message):
        state.assert_conserved()
