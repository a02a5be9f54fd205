"""The engine's own view of its chain: the fold, the entries' bytes, and entries not yet durable.

I/O: none. Time: ``now_ms`` arguments.

Theory of operation (ADR 0019). The engine signs its ledger entries itself and folds them into
this view at once, so that the rest of the step sees them (a pay's credit is reserved, a job is
paid once). Such entries are *staged*: ``take_staged`` hands them to the step's
``CommitEntries`` effect, whose sends leave only after the shell made them durable. The shell
answers ``EntriesCommitted`` (``committed``: they can no longer be taken back) or ``CommitFailed``
(``rollback``: every staged entry from that seq on is reverted, newest first, and the view is
unwritable until a later commit succeeds). The store checks every entry against the chain rules
again before it writes (``LedgerBase.append_many``), so a bug here cannot break a chain on disk.

The view keeps every entry's bytes in memory (``entry_at`` serves the payment and heads
components without a read): a node's chain is small next to its memory, and the simulator's
``MemoryLedger`` does the same.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hearth.ledger.chain import ChainState, Head, PayStatus, Undo
from hearth.ledger.entry import (
    CancelBody,
    CountersignedReceipt,
    Entry,
    ForkProof,
    HalfSignedReceipt,
    Kind,
    MismatchBody,
    parse_entry,
    sign_entry,
)
from hearth.ledger.errors import DoubleClaimError
from hearth.ledger.proofs import RefusedAuthors, verify_fork_proof
from hearth.ledger.receipts import (
    check_countersignature,
    check_half_signed,
    make_receipt,
    receipt_hash,
)
from hearth.protocol import limits
from hearth.protocol.codec import encode
from hearth.protocol.identity import Identity, PublicKey


@dataclasses.dataclass(frozen=True, slots=True)
class PendingPay:
    receipt_hash: bytes
    job_id: bytes
    payee: PublicKey
    amount_mc: int
    expires_ms: int


def pending_pays(state: ChainState) -> list[PendingPay]:
    """The pays a chain state still holds open, for the engine's view and the stores alike."""
    return [
        PendingPay(rh, r.job_id, PublicKey(r.payee), r.amount_mc, r.expires_ms)
        for rh, r in state.pays.items()
        if r.status is PayStatus.PENDING
    ]


class ChainView:
    """One author's chain as the engine sees it: committed entries, then staged ones."""

    def __init__(self, identity: Identity, state: ChainState, wires: Sequence[bytes]) -> None:
        assert state.author == identity.public_key, "a ledger is written by its author only"
        assert len(wires) == state.head.seq + 1, "one wire per folded entry"
        self.identity = identity
        self.state = state
        self._wires = list(wires)
        self.committed_seq = state.head.seq
        self.unable_reason: str | None = None  # why the last commit failed, until one succeeds
        self.refused = RefusedAuthors()
        for seq in sorted(state.refused.values()):
            self.refused.add(self.entry_at(seq).body)
        self._staged: list[tuple[Entry, Undo]] = []  # seq order, all after committed_seq
        self._taken_seq = self.committed_seq  # staged entries up to here are in a CommitEntries

    # The shell's answers

    def take_staged(self) -> list[Entry]:
        """Entries staged since the last call: the next ``CommitEntries``, in seq order."""
        entries = [entry for entry, _ in self._staged if entry.seq > self._taken_seq]
        assert len(entries) <= limits.LEDGER_GROUP_ENTRIES_MAX, "one step, one group commit"
        self._taken_seq = self.state.head.seq
        return entries

    def committed(self, last_seq: int) -> None:
        """Entries up to ``last_seq`` are durable."""
        assert self.committed_seq < last_seq <= self._taken_seq, (self.committed_seq, last_seq)
        self._staged = [(e, u) for e, u in self._staged if e.seq > last_seq]
        self.committed_seq = last_seq
        self.unable_reason = None

    def rollback(self, first_seq: int, reason: str) -> int:
        """Revert every staged entry from ``first_seq`` on; return how many."""
        assert first_seq > self.committed_seq, "a durable entry is never taken back"
        reverted = 0
        while self._staged and self._staged[-1][0].seq >= first_seq:
            _, undo = self._staged.pop()
            self.state.revert(undo)
            self._wires.pop()
            reverted += 1
        self._taken_seq = min(self._taken_seq, self.state.head.seq)
        self.unable_reason = reason
        assert len(self._wires) == self.state.head.seq + 1
        return reverted

    @property
    def writable(self) -> bool:
        return self.unable_reason is None

    # Operations: each signs one entry, checks it against the chain rules and folds it in

    def _stage(self, kind: Kind, body: object, now_ms: int) -> Entry:
        head = self.state.head
        entry = sign_entry(
            self.identity,
            seq=head.seq + 1,
            prev_hash=head.hash,
            kind=kind,
            body=body,
            created_ms=max(now_ms, head.created_ms),
        )
        undo = self.state.append(entry, signatures=False)
        self._staged.append((entry, undo))
        self._wires.append(entry.wire)
        return entry

    def append_pay_pending(
        self, *, job_id: bytes, payee: bytes, amount_mc: int, now_ms: int, ttl_ms: int
    ) -> HalfSignedReceipt:
        """Promise ``amount_mc`` to ``payee`` for ``job_id``."""
        self.refused.check(payee)
        now_ms = max(now_ms, self.state.head.created_ms)
        half = make_receipt(
            self.identity, job_id=job_id, payee=payee, amount_mc=amount_mc, now_ms=now_ms,
            ttl_ms=ttl_ms,
        )  # fmt: skip
        self._stage(Kind.PAY, half, now_ms)
        return half

    def append_earn(
        self, half: HalfSignedReceipt, *, now_ms: int
    ) -> tuple[CountersignedReceipt, bool]:
        """Countersign a payer's receipt; a repeat gets the same answer. True if newly staged."""
        receipt = check_half_signed(half, payee=self.identity.public_key, now_ms=now_ms)
        self.refused.check(receipt.payer)
        earlier_seq = self.state.earns.get((receipt.payer, receipt.job_id))
        if earlier_seq is not None:
            earlier = self.entry_at(earlier_seq)
            if earlier.body.half == half:
                return earlier.body, False
            error = DoubleClaimError(f"job already credited at seq {earlier_seq}")
            error.first_seq, error.existing_entry = earlier_seq, earlier.wire
            raise error
        payee_signature = self.identity.sign(encode(half))
        countersigned = CountersignedReceipt(half.receipt, half.payer_signature, payee_signature)
        self._stage(Kind.EARN, countersigned, now_ms)
        return countersigned, True

    def settle(self, countersigned: CountersignedReceipt, *, now_ms: int) -> bool:
        """Record the payee's countersignature (also after a cancel); False for a repeat."""
        check_countersignature(countersigned)
        record = self.state.pays.get(receipt_hash(countersigned.receipt))
        if (
            record is not None
            and record.status is PayStatus.SETTLED
            and self.entry_at(record.seq).body == countersigned
        ):
            return False
        self._stage(Kind.SETTLE, countersigned, now_ms)
        return True

    def cancel(self, receipt_hash_: bytes, *, now_ms: int) -> None:
        """Give up on a pending pay whose receipt expired without a countersignature."""
        self._stage(Kind.CANCEL, CancelBody(receipt_hash_), now_ms)

    def append_mismatch(
        self, *, job_id: bytes, worker: bytes, evidence_hashes: Sequence[bytes], now_ms: int
    ) -> None:
        self._stage(Kind.MISMATCH, MismatchBody(job_id, worker, tuple(evidence_hashes)), now_ms)

    def record_fork(self, proof: ForkProof, *, now_ms: int) -> bool:
        """Refuse the proof's author now; stage the proof (False if it is already recorded)."""
        accused = verify_fork_proof(proof)
        self.refused.add(proof)
        if accused in self.state.refused:
            return False
        self._stage(Kind.FORK_EVIDENCE, proof, now_ms)
        return True

    # Reads

    def head(self) -> Head:
        return self.state.head

    def balance_mc(self) -> int:
        return self.state.balance_mc

    def available_mc(self) -> int:
        return self.state.available_mc

    def pending_pays(self) -> list[PendingPay]:
        return pending_pays(self.state)

    def entry_at(self, seq: int) -> Entry:
        """One entry, committed or staged."""
        return parse_entry(self._wires[seq])

    def entries(self, from_seq: int = 0) -> list[Entry]:
        return [parse_entry(w) for w in self._wires[from_seq:]]
