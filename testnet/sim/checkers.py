"""Invariant checkers the simulator runs after every step, and once more when the run ends.

I/O: none. Each check is O(1) per step unless a ledger grew or a job moved, so they can run on
every step of an 80,000-node run.

Safety (any moment): no wrong result accepted (a PAID job's digest is the honest one); no payment
to a worker that did not return the honest result; at most one pay and one earn per (job, worker);
no worker holds two awards of one job (beyond awards it declined as busy) and no job is paid
twice; credits are conserved, which mid-flight means: the sum of all balances equals what payees
have earned and payers have not yet settled (pending pays count toward no balance).
A message refused as expired must really be stale by the rules of ``protocol.envelope`` read on
the receiver's own clock (``check_refusal``): the protocol promises that clocks up to
``CLOCK_SKEW_MS_MAX`` apart cost no fresh message. The simulator itself checks that no node acts
twice in one life on a message the network duplicated (``duplicate-accepted``, cluster.py), and
no receipt signature leaves a node before its ledger entry is committed
(``signature-before-commit``).
Liveness (at the end, faults healed): every job is paid or failed, no pay is pending, nothing is
earned but unsettled (so the sum of all balances is 0), and every fork was detected by an honest
node.
"""

from __future__ import annotations

import array
from collections.abc import Callable

from hearth.ledger.entry import CountersignedReceipt, Entry, HalfSignedReceipt, Kind, parse_receipt
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.receipts import receipt_hash
from hearth.protocol import limits
from hearth.protocol.codec import decode, decode_as
from hearth.protocol.envelope import EnvelopeWire, SignedWire
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.payments import ReceiptCountersigned, ReceiptOffer
from hearth.protocol.publisher import BUSY_DECLINE_VERDICT
from hearth.protocol.publisher_state import PublisherJob

ResultOf = Callable[[bytes, bytes], bool | None]  # (job id, worker key) -> honest? None: never ran


class InvariantViolation(Exception):
    """An invariant failed; ``name`` is a stable code, ``detail`` what exactly, ``at_ms`` when."""

    def __init__(self, name: str, detail: str, at_ms: int) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail
        self.at_ms = at_ms


def check_refusal(data: bytes, local_ms: int) -> str | None:
    """Why refusing ``data`` as expired at a receiver's clock ``local_ms`` is wrong, or None if
    the envelope rules allow it (expired, created too far ahead, or a lifetime out of bounds)."""
    try:
        signed = decode_as(decode_as(data, EnvelopeWire).signed, SignedWire)
    except RemoteProtocolError:
        return None  # not an envelope at all: any refusal is right
    lifetime_ms = signed.expires_ms - signed.created_ms
    if (
        signed.expires_ms <= local_ms
        or signed.created_ms > local_ms + limits.CLOCK_SKEW_MS_MAX
        or not 0 < lifetime_ms <= limits.ENVELOPE_TTL_MS_MAX
    ):
        return None
    if signed.created_ms > local_ms:
        created = f"was created {signed.created_ms - local_ms} ms ahead of"
    else:
        created = f"was created {local_ms - signed.created_ms} ms before"
    return f"{created} and expires {signed.expires_ms - local_ms} ms after the receiver's clock"


class Checker:
    def __init__(self, nodes: int, result_of: ResultOf, *, solo_may_err: bool = False) -> None:
        """``solo_may_err``: jobs run under ``verify="adaptive"``, whose solo runs may accept a
        wrong result within the stated bound (ADR 0034): counted, not a violation. Every job
        that was compared with another replica must still be right."""
        self._result_of = result_of
        self._solo_may_err = solo_may_err
        self._solo_jobs: set[bytes] = set()
        self.paid_for_wrong_mc = 0
        self._seq = array.array("q", [0]) * nodes  # last ledger seq looked at, per node
        self._balance = array.array("q", [0]) * nodes
        self.balance_sum_mc = 0
        self.unsettled_mc = 0  # earned by payees, not yet settled by payers
        self._unsettled: dict[bytes, int] = {}  # receipt hash -> amount
        self._pending: set[bytes] = set()  # receipt hashes of PAY entries not settled/cancelled
        self._pay_keys: set[tuple[bytes, bytes, bytes]] = set()
        self._earn_keys: set[tuple[bytes, bytes, bytes]] = set()
        self._paid_jobs: set[bytes] = set()
        self.wrong_results_accepted = 0
        self.forks_injected: dict[bytes, int] = {}  # author -> when
        self.forks_detected: dict[bytes, int] = {}  # author -> when first refused
        self.earned_mc_by_node = array.array("q", [0]) * nodes

    @property
    def pending_pays(self) -> int:
        return len(self._pending)

    # Ledgers

    def on_ledger(self, node: int, ledger: MemoryLedger, now_ms: int) -> None:
        """Look at the entries ``node`` committed since the last call (cheap when none)."""
        seq = ledger.committed_seq
        if seq == self._seq[node]:
            return
        for entry in ledger.entries(self._seq[node] + 1):
            self._on_entry(node, entry, now_ms)
        self._seq[node] = seq
        balance = ledger.balance_mc()
        self.balance_sum_mc += balance - self._balance[node]
        self._balance[node] = balance
        if self.balance_sum_mc != self.unsettled_mc:
            raise InvariantViolation(
                "credits-not-conserved",
                f"sum of balances {self.balance_sum_mc} mc != earned-unsettled "
                f"{self.unsettled_mc} mc after node {node} wrote seq {seq}",
                now_ms,
            )

    def _on_entry(self, node: int, entry: Entry, now_ms: int) -> None:
        if entry.kind is Kind.PAY:
            self._on_pay(entry.body, now_ms)
        elif entry.kind is Kind.EARN:
            self._on_earn(node, entry.body, now_ms)
        elif entry.kind is Kind.SETTLE:
            digest = receipt_hash(entry.body.receipt)
            self._pending.discard(digest)
            amount = self._unsettled.pop(digest, None)
            if amount is None:
                raise InvariantViolation(
                    "settle-without-earn", f"node {node} settled an unearned receipt", now_ms
                )
            self.unsettled_mc -= amount
        elif entry.kind is Kind.CANCEL:
            self._pending.discard(entry.body.receipt_hash)

    def _on_pay(self, half: HalfSignedReceipt, now_ms: int) -> None:
        receipt = parse_receipt(half.receipt)
        key = receipt.credit_key
        if key in self._pay_keys:
            raise InvariantViolation(
                "double-pay", f"job {receipt.job_id.hex()} paid twice to one worker", now_ms
            )
        self._pay_keys.add(key)
        self._pending.add(receipt_hash(half.receipt))
        honest = self._result_of(receipt.job_id, receipt.payee)
        if honest is False and receipt.job_id in self._solo_jobs:
            self.paid_for_wrong_mc += receipt.amount_mc  # a solo run's error, within the bound
            return
        if honest is not True:
            what = "never ran it" if honest is None else "returned a wrong result"
            raise InvariantViolation(
                "paid-wrong-worker",
                f"job {receipt.job_id.hex()} paid {receipt.amount_mc} mc to worker "
                f"{receipt.payee.hex()[:16]}, which {what}",
                now_ms,
            )

    def _on_earn(self, node: int, countersigned: CountersignedReceipt, now_ms: int) -> None:
        receipt = parse_receipt(countersigned.receipt)
        key = receipt.credit_key
        if key in self._earn_keys:
            raise InvariantViolation(
                "double-earn", f"job {receipt.job_id.hex()} credited twice to node {node}", now_ms
            )
        self._earn_keys.add(key)
        self._unsettled[receipt_hash(countersigned.receipt)] = receipt.amount_mc
        self.unsettled_mc += receipt.amount_mc
        self.earned_mc_by_node[node] += receipt.amount_mc

    def on_receipt_sent(self, node: int, ledger: MemoryLedger, data: bytes, now_ms: int) -> None:
        """A signature leaves a node only after its entry is committed: an offered receipt must
        be a pay, a countersignature an earn, in the sender's committed chain (ADR 0008)."""
        body = decode(decode_as(decode_as(data, EnvelopeWire).signed, SignedWire).body)
        if isinstance(body, ReceiptOffer):
            committed = receipt_hash(body.half.receipt) in ledger.state.pays
        elif isinstance(body, ReceiptCountersigned):
            receipt = parse_receipt(body.countersigned.receipt)
            committed = (receipt.payer, receipt.job_id) in ledger.state.earns
        else:
            return
        if not committed:
            raise InvariantViolation(
                "signature-before-commit",
                f"node {node} sent a {type(body).__name__} whose ledger entry is not committed",
                now_ms,
            )

    # Jobs

    def on_job(self, job: PublisherJob, honest_digest: bytes, now_ms: int) -> None:
        """A publisher reported progress on ``job``: check its awards, and its verdict if paid."""
        # A worker that declined as busy may bid and win again in a later round (the publisher's
        # ``_barred``); any other award it held or lost bars it from the job.
        workers = [slot.worker for slot in job.slots if slot.verdict != BUSY_DECLINE_VERDICT]
        if len(set(workers)) != len(workers):
            raise InvariantViolation(
                "double-award", f"job {job.job_id.hex()} awarded twice to one worker", now_ms
            )
        if self._solo_may_err and job.verified_by == "solo":
            self._solo_jobs.add(job.job_id)
        else:
            self._solo_jobs.discard(job.job_id)
        if job.phase.value != "paid" or job.job_id in self._paid_jobs:
            return
        self._paid_jobs.add(job.job_id)
        if job.accepted_digest != honest_digest:
            self.wrong_results_accepted += 1
            if job.job_id in self._solo_jobs:
                return
            raise InvariantViolation(
                "wrong-result-accepted",
                f"job {job.job_id.hex()} accepted digest {job.accepted_digest.hex()[:16]}, "
                f"honest is {honest_digest.hex()[:16]}",
                now_ms,
            )

    def on_paid_again(self, job_id: bytes, now_ms: int) -> None:
        raise InvariantViolation("double-settle", f"job {job_id.hex()} moved to PAID twice", now_ms)

    # Forks

    def on_fork_injected(self, author: bytes, now_ms: int) -> None:
        self.forks_injected.setdefault(author, now_ms)

    def on_fork_detected(self, author: bytes, now_ms: int) -> None:
        self.forks_detected.setdefault(author, now_ms)

    # The end of the liveness phase

    def final(self, unsettled_jobs: list[bytes], now_ms: int) -> None:
        if unsettled_jobs:
            shown = ", ".join(job.hex()[:16] for job in unsettled_jobs[:5])
            raise InvariantViolation(
                "jobs-unsettled",
                f"{len(unsettled_jobs)} jobs neither paid nor failed: {shown}",
                now_ms,
            )
        if self._pending:
            raise InvariantViolation(
                "pays-pending", f"{len(self._pending)} pays neither settled nor cancelled", now_ms
            )
        if self.balance_sum_mc != 0 or self.unsettled_mc != 0:
            raise InvariantViolation(
                "credits-not-conserved",
                f"sum of balances {self.balance_sum_mc} mc, "
                f"earned-unsettled {self.unsettled_mc} mc",
                now_ms,
            )
        missed = sorted(set(self.forks_injected) - set(self.forks_detected))
        if missed:
            raise InvariantViolation(
                "fork-undetected",
                f"{len(missed)} forks never detected: {missed[0].hex()[:16]}",
                now_ms,
            )
