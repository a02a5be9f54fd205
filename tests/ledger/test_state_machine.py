"""A hypothesis state machine over two real SQLite ledgers exchanging receipts.

Rules: pay, countersign (in time or late), settle (countersignatures may be held back: lost
messages), tick the clock, cancel what expired, crash before a commit, reopen, and after every
step verify both chains and the model's balances, including conservation once nothing is in flight.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hearth.ledger import errors
from hearth.ledger.chain import PayStatus, verify_chain
from hearth.ledger.entry import CountersignedReceipt, HalfSignedReceipt
from hearth.ledger.receipts import check_receipt, receipt_hash
from hearth.ledger.store import SqliteLedger
from tests.ledger.conftest import identity

PAYER, PAYEE = identity(1), identity(2)


class LedgerPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="hearth-ledger-sm-"))
        self.now_ms = 1_000
        self.payer = SqliteLedger.open(self.dir / "payer.sqlite", PAYER, now_ms=self.now_ms)
        self.payee = SqliteLedger.open(self.dir / "payee.sqlite", PAYEE, now_ms=self.now_ms)
        self.halves: list[HalfSignedReceipt] = []
        self.in_flight: list[CountersignedReceipt] = []  # earned, not yet settled
        self.earned_mc = 0
        self.settled_mc = 0
        self.jobs = 0

    def teardown(self) -> None:
        self.payer.close()
        self.payee.close()
        shutil.rmtree(self.dir)

    @rule(amount_mc=st.integers(1, 400_000), ttl_ms=st.integers(1, 500))
    def pay(self, amount_mc: int, ttl_ms: int) -> None:
        self.jobs += 1
        try:
            half = self.payer.append_pay_pending(
                job_id=f"job-{self.jobs}".encode(), payee=PAYEE.public_key, amount_mc=amount_mc,
                now_ms=self.now_ms, ttl_ms=ttl_ms,
            )  # fmt: skip
        except errors.CreditLimitError:
            assert self.payer.available_mc() < amount_mc
            return
        self.halves.append(half)

    @precondition(lambda self: self.halves)
    @rule(data=st.data(), delay_ms=st.integers(0, 300))
    def countersign(self, data: st.DataObject, delay_ms: int) -> None:
        half = data.draw(st.sampled_from(self.halves))
        # The chain's created_ms never goes backwards, so the earn is stamped no earlier than the
        # payee's head: that stamp, not the caller's clock, is what expiry is judged against.
        now_ms = max(self.now_ms + delay_ms, self.payee.head().created_ms)
        expires_ms = check_receipt_half_expiry(half)
        already = receipt_hash(half.receipt) in {receipt_hash(c.receipt) for c in self.in_flight}
        try:
            countersigned = self.payee.append_earn(half, now_ms=now_ms)
        except errors.ExpiredReceiptError:
            assert now_ms > expires_ms
            return
        assert now_ms <= expires_ms or already or self._settled(countersigned)
        if not already and not self._settled(countersigned) and countersigned not in self.in_flight:
            self.in_flight.append(countersigned)
            self.earned_mc += check_receipt(countersigned).amount_mc

    def _settled(self, countersigned: CountersignedReceipt) -> bool:
        record = self.payer.state.pays.get(receipt_hash(countersigned.receipt))
        return record is not None and record.status is PayStatus.SETTLED

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data())
    def settle(self, data: st.DataObject) -> None:
        countersigned = data.draw(st.sampled_from(self.in_flight))
        self.payer.settle(countersigned, now_ms=self.now_ms)
        self.in_flight.remove(countersigned)
        self.settled_mc += check_receipt(countersigned).amount_mc

    @rule(ms=st.integers(1, 400))
    def tick(self, ms: int) -> None:
        self.now_ms += ms

    @rule()
    def cancel_expired(self) -> None:
        for pending in self.payer.expired_pays(self.now_ms):
            self.payer.cancel(pending.receipt_hash, now_ms=self.now_ms)

    @rule(amount_mc=st.integers(1, 100))
    def crash_before_commit(self, amount_mc: int) -> None:
        head = self.payer.head()
        try:
            with self.payer.group() as group:
                ticket = group.append_pay_pending(
                    job_id=b"never", payee=PAYEE.public_key, amount_mc=amount_mc,
                    now_ms=self.now_ms, ttl_ms=100,
                )  # fmt: skip
                raise KeyboardInterrupt  # the process dies before COMMIT
        except KeyboardInterrupt:
            pass
        try:
            _ = ticket.value
            raise AssertionError("a signature escaped an uncommitted group")
        except errors.NotCommittedError:
            pass
        assert self.payer.head() == head
        self.reopen()
        assert self.payer.head() == head

    @rule()
    def reopen(self) -> None:
        before = (self.payer.head(), self.payer.balance_mc(), self.payee.head())
        self.payer.close()
        self.payee.close()
        self.payer = SqliteLedger.open(self.dir / "payer.sqlite", PAYER, now_ms=0)
        self.payee = SqliteLedger.open(self.dir / "payee.sqlite", PAYEE, now_ms=0)
        assert (self.payer.head(), self.payer.balance_mc(), self.payee.head()) == before

    @invariant()
    def chains_verify_and_credits_are_conserved(self) -> None:
        payer = verify_chain(self.payer.entry_wires())
        payee = verify_chain(self.payee.entry_wires())
        assert payee.balance_mc == self.earned_mc == self.payee.balance_mc()
        assert payer.balance_mc == -self.settled_mc == self.payer.balance_mc()
        in_flight_mc = sum(check_receipt(c).amount_mc for c in self.in_flight)
        assert payer.balance_mc + payee.balance_mc == in_flight_mc


def check_receipt_half_expiry(half: HalfSignedReceipt) -> int:
    from hearth.ledger.entry import parse_receipt

    return parse_receipt(half.receipt).expires_ms


LedgerPair.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestLedgerPair = LedgerPair.TestCase
