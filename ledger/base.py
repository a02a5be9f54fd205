"""The ledger operations every store shares: stage, group-commit, then release signatures.

I/O: none here; a subclass's ``_write`` makes a group durable. Time: ``now_ms`` arguments.

Theory of operation. Every operation signs an entry, checks it against the ``ChainState`` and
folds it in, inside a ``Group``. Results come back as ``Ticket``s whose ``value`` raises until
the group's ``_write`` has returned: that is the durability rule (a signature leaves the node only
after its entry is committed) expressed in the API. If the body of the ``with`` raises, or the write
fails, every staged entry is reverted from the state and no ticket ever yields. A failed write
also sets ``unable_reason`` (disk full, I/O error) until a later write succeeds, so the node can
stop bidding and say why. The one-shot methods (``append_earn`` ...) are groups of one.
"""

from __future__ import annotations

import abc
import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any, Generic, TypeVar

from hearth.ledger.chain import ChainState, Head, PayStatus, Undo
from hearth.ledger.entry import (
    GENESIS_PREV_HASH,
    LEDGER_FORMAT_VERSION,
    CancelBody,
    CountersignedReceipt,
    Entry,
    ForkProof,
    GenesisBody,
    HalfSignedReceipt,
    Kind,
    MismatchBody,
    parse_entry,
    sign_entry,
)
from hearth.ledger.errors import DoubleClaimError, LedgerUnavailableError, NotCommittedError
from hearth.ledger.proofs import RefusedAuthors, verify_fork_proof
from hearth.ledger.receipts import (
    check_countersignature,
    check_half_signed,
    make_receipt,
    receipt_hash,
)
from hearth.ledger.view import ChainView, PendingPay, pending_pays
from hearth.protocol import limits
from hearth.protocol.codec import encode
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.identity import Identity

T = TypeVar("T")


class Ticket(Generic[T]):
    """A result held back until its group is durable."""

    __slots__ = ("_committed", "_value")

    def __init__(self, value: T, *, committed: bool = False) -> None:
        self._value = value
        self._committed = committed

    @property
    def committed(self) -> bool:
        return self._committed

    @property
    def value(self) -> T:
        if not self._committed:
            raise NotCommittedError("this entry is not durably committed; its signature stays")
        return self._value


class Group:
    """Entries staged for one commit. Obtain from ``LedgerBase.group()``."""

    def __init__(self, ledger: LedgerBase) -> None:
        self._ledger = ledger
        self.entries: list[Entry] = []
        self.undos: list[Undo] = []
        self.tickets: list[Ticket[Any]] = []

    def _stage(self, kind: Kind, body: object, now_ms: int) -> Entry:
        if len(self.entries) >= limits.LEDGER_GROUP_ENTRIES_MAX:
            raise LocalProtocolError("group commit is full; commit and start another")
        state = self._ledger.state
        entry = sign_entry(
            self._ledger.identity,
            seq=state.head.seq + 1,
            prev_hash=state.head.hash,
            kind=kind,
            body=body,
            created_ms=max(now_ms, state.head.created_ms),
        )
        self.undos.append(state.append(entry, signatures=False))
        self.entries.append(entry)
        return entry

    def _ticket(self, value: T, seq: int) -> Ticket[T]:
        if seq <= self._ledger.committed_seq:
            return Ticket(value, committed=True)
        ticket = Ticket(value)
        self.tickets.append(ticket)
        return ticket

    def append_pay_pending(
        self, *, job_id: bytes, payee: bytes, amount_mc: int, now_ms: int, ttl_ms: int
    ) -> Ticket[HalfSignedReceipt]:
        """Promise ``amount_mc`` to ``payee`` for ``job_id``; send the half once committed."""
        self._ledger.refused.check(payee)
        now_ms = max(now_ms, self._ledger.state.head.created_ms)
        half = make_receipt(
            self._ledger.identity,
            job_id=job_id,
            payee=payee,
            amount_mc=amount_mc,
            now_ms=now_ms,
            ttl_ms=ttl_ms,
        )
        entry = self._stage(Kind.PAY, half, now_ms)
        return self._ticket(half, entry.seq)

    def append_earn(self, half: HalfSignedReceipt, *, now_ms: int) -> Ticket[CountersignedReceipt]:
        """Countersign a payer's receipt; a repeat of the same receipt gets the same answer."""
        ledger = self._ledger
        receipt = check_half_signed(half, payee=ledger.identity.public_key, now_ms=now_ms)
        ledger.refused.check(receipt.payer)
        earlier_seq = ledger.state.earns.get((receipt.payer, receipt.job_id))
        if earlier_seq is not None:
            earlier = ledger.entry_at(earlier_seq)
            if earlier.body.half == half:
                return self._ticket(earlier.body, earlier_seq)
            error = DoubleClaimError(f"job already credited at seq {earlier_seq}")
            error.first_seq, error.existing_entry = earlier_seq, earlier.wire
            raise error
        payee_signature = ledger.identity.sign(encode(half))
        countersigned = CountersignedReceipt(half.receipt, half.payer_signature, payee_signature)
        entry = self._stage(Kind.EARN, countersigned, now_ms)
        return self._ticket(countersigned, entry.seq)

    def settle(self, countersigned: CountersignedReceipt, *, now_ms: int) -> Ticket[Entry]:
        """Record the payee's countersignature (also after a cancel); repeats are no-ops."""
        check_countersignature(countersigned)
        record = self._ledger.state.pays.get(receipt_hash(countersigned.receipt))
        if record is not None and record.status is PayStatus.SETTLED:
            earlier = self._ledger.entry_at(record.seq)
            if earlier.body == countersigned:
                return self._ticket(earlier, record.seq)
        entry = self._stage(Kind.SETTLE, countersigned, now_ms)
        return self._ticket(entry, entry.seq)

    def cancel(self, receipt_hash_: bytes, *, now_ms: int) -> Ticket[Entry]:
        """Give up on a pending pay whose receipt expired without a countersignature."""
        entry = self._stage(Kind.CANCEL, CancelBody(receipt_hash_), now_ms)
        return self._ticket(entry, entry.seq)

    def append_mismatch(
        self, *, job_id: bytes, worker: bytes, evidence_hashes: Sequence[bytes], now_ms: int
    ) -> Ticket[Entry]:
        body = MismatchBody(job_id, worker, tuple(evidence_hashes))
        entry = self._stage(Kind.MISMATCH, body, now_ms)
        return self._ticket(entry, entry.seq)

    def record_fork(self, proof: ForkProof, *, now_ms: int) -> Ticket[Entry] | None:
        """Refuse the proof's author now; record the proof (None if it already is)."""
        accused = verify_fork_proof(proof)
        self._ledger.refused.add(proof)
        if accused in self._ledger.state.refused:
            return None
        entry = self._stage(Kind.FORK_EVIDENCE, proof, now_ms)
        return self._ticket(entry, entry.seq)


class LedgerBase(abc.ABC):
    """One node's ledger: its identity, the verified state, and the operations on both."""

    def __init__(self, identity: Identity, state: ChainState) -> None:
        assert state.author == identity.public_key, "a ledger is written by its author only"
        self.identity = identity
        self.state = state
        self.committed_seq = state.head.seq
        self.unable_reason: str | None = None
        self.refused = RefusedAuthors()
        self._group: Group | None = None

    @staticmethod
    def genesis(identity: Identity, *, now_ms: int) -> Entry:
        body = GenesisBody(LEDGER_FORMAT_VERSION, limits.CREDIT_LIMIT_MC)
        return sign_entry(
            identity, seq=0, prev_hash=GENESIS_PREV_HASH, kind=Kind.GENESIS, body=body,
            created_ms=now_ms,
        )  # fmt: skip

    def _load_refused(self) -> None:
        for seq in sorted(self.state.refused.values()):
            self.refused.add(self.entry_at(seq).body)

    @abc.abstractmethod
    def _write(self, entries: Sequence[Entry]) -> None:
        """Make ``entries`` durable in one commit, or raise ``LedgerUnavailableError``."""

    @abc.abstractmethod
    def entry_wires(self, from_seq: int = 0, count: int | None = None) -> list[bytes]:
        """Committed entries' bytes, in seq order."""

    @contextlib.contextmanager
    def group(self) -> Iterator[Group]:
        """Stage several operations and commit them together (group commit)."""
        if self._group is not None:
            raise LocalProtocolError("ledger groups do not nest")
        group = self._group = Group(self)
        try:
            yield group
            if group.entries:  # before the write: exactly the entries staged past the commit
                assert group.entries[0].seq == self.committed_seq + 1, "unstaged entries"
                assert group.entries[-1].seq == self.state.head.seq, "unstaged entries"
                self._write(group.entries)
        except BaseException as exc:
            for undo in reversed(group.undos):
                self.state.revert(undo)
            if isinstance(exc, LedgerUnavailableError):
                self.unable_reason = exc.reason
            raise
        finally:
            self._group = None
        if group.entries:
            self.unable_reason = None
        self.committed_seq = self.state.head.seq
        for ticket in group.tickets:
            ticket._committed = True

    def append_many(self, entries: Sequence[Entry]) -> None:
        """Commit entries the engine signed (``CommitEntries``, ADR 0019) in one transaction.

        Each is checked against the chain rules first, signature included: the store refuses a
        chain-breaking entry (``ChainError``) whatever its caller believed. On a failed write the
        state is as before and ``unable_reason`` says why.
        """
        if self._group is not None:
            raise LocalProtocolError("append_many inside a group")
        if len(entries) > limits.LEDGER_GROUP_ENTRIES_MAX:
            raise LocalProtocolError("group commit is too large")
        undos: list[Undo] = []
        try:
            for entry in entries:
                undos.append(self.state.append(entry))
            if entries:
                self._write(entries)
        except BaseException as exc:
            for undo in reversed(undos):
                self.state.revert(undo)
            if isinstance(exc, LedgerUnavailableError):
                self.unable_reason = exc.reason
            raise
        for entry in entries:
            if entry.kind is Kind.FORK_EVIDENCE:
                self.refused.add(entry.body)
        self.unable_reason = None
        self.committed_seq = self.state.head.seq

    def view(self) -> ChainView:
        """A copy of the committed chain for an engine to fold its own entries into."""
        state = copy.deepcopy(self.state)
        return ChainView(self.identity, state, self.entry_wires())

    @property
    def writable(self) -> bool:
        """False after a failed write (``unable_reason`` says why) until a write succeeds."""
        return self.unable_reason is None

    def append_pay_pending(
        self, *, job_id: bytes, payee: bytes, amount_mc: int, now_ms: int, ttl_ms: int
    ) -> HalfSignedReceipt:
        with self.group() as group:
            ticket = group.append_pay_pending(
                job_id=job_id, payee=payee, amount_mc=amount_mc, now_ms=now_ms, ttl_ms=ttl_ms
            )
        return ticket.value

    def append_earn(self, half: HalfSignedReceipt, *, now_ms: int) -> CountersignedReceipt:
        with self.group() as group:
            ticket = group.append_earn(half, now_ms=now_ms)
        return ticket.value

    def settle(self, countersigned: CountersignedReceipt, *, now_ms: int) -> Entry:
        with self.group() as group:
            ticket = group.settle(countersigned, now_ms=now_ms)
        return ticket.value

    def cancel(self, receipt_hash_: bytes, *, now_ms: int) -> Entry:
        with self.group() as group:
            ticket = group.cancel(receipt_hash_, now_ms=now_ms)
        return ticket.value

    def append_mismatch(
        self, *, job_id: bytes, worker: bytes, evidence_hashes: Sequence[bytes], now_ms: int
    ) -> Entry:
        with self.group() as group:
            ticket = group.append_mismatch(
                job_id=job_id, worker=worker, evidence_hashes=evidence_hashes, now_ms=now_ms
            )
        return ticket.value

    def record_fork(self, proof: ForkProof, *, now_ms: int) -> Entry | None:
        with self.group() as group:
            ticket = group.record_fork(proof, now_ms=now_ms)
        return None if ticket is None else ticket.value

    def head(self) -> Head:
        return self.state.head

    def balance_mc(self) -> int:
        """Settled earnings minus settled payments; pending pays never count."""
        return self.state.balance_mc

    def available_mc(self) -> int:
        """What a new pay may still promise: balance + credit limit - pending pays."""
        return self.state.available_mc

    def pending_pays(self) -> list[PendingPay]:
        return pending_pays(self.state)

    def expired_pays(self, now_ms: int) -> list[PendingPay]:
        """Pending pays the node should now ``cancel``."""
        return [p for p in self.pending_pays() if p.expires_ms < now_ms]

    def entries(self, from_seq: int = 0, count: int | None = None) -> list[Entry]:
        return [parse_entry(w) for w in self.entry_wires(from_seq, count)]

    def entry_at(self, seq: int) -> Entry:
        """One entry, committed or staged in the open group."""
        if seq > self.committed_seq:
            assert self._group is not None
            return self._group.entries[seq - self.committed_seq - 1]
        (wire,) = self.entry_wires(seq, 1)
        return parse_entry(wire)
