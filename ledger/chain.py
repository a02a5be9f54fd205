"""The chain rules: what may follow what in one author's ledger, the balance fold, verify_chain.

I/O: none. Time: entries carry their own ``created_ms``; rules compare those, never a clock.

Theory of operation. ``ChainState`` is the fold of a verified prefix: head (seq, hash,
created_ms), balance, credit reserved by pending pays, and the receipt indexes. ``check`` decides
whether one more entry may follow (raising a ``ChainError`` naming the broken rule) without
changing anything; ``apply`` then folds it in and returns what ``revert`` needs to undo it, so a
store can stage a group of entries and take them back if the commit fails. A receipt the author
pays moves PENDING -> SETTLED, or PENDING -> CANCELLED (only after it expired) -> SETTLED (a late
countersignature still counts). Never: a balance below -CREDIT_LIMIT_MC through a PAY, two credits
for one (job, payee), an EARN after its receipt expired, a SETTLE the payee did not countersign.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

from hearth.ledger.entry import (
    GENESIS_PREV_HASH,
    LEDGER_FORMAT_VERSION,
    CancelBody,
    CountersignedReceipt,
    DoubleClaimProof,
    Entry,
    ForkProof,
    GenesisBody,
    HalfSignedReceipt,
    Kind,
    MismatchBody,
    Receipt,
    half_bytes,
    parse_entry_deferred,
    parse_header,
    parse_receipt,
    sha256,
)
from hearth.ledger.errors import (
    BodyError,
    ChainError,
    CountersignatureError,
    CreditLimitError,
    DoubleClaimError,
    EntrySignatureError,
    ExpiredReceiptError,
    ForkProofError,
    GenesisError,
    HeadMismatchError,
    PrevHashError,
    ReceiptSignatureError,
    ReceiptStateError,
    ReorderedError,
    RepeatedSeqError,
    ReplayedEntryError,
    SeqGapError,
    TamperedEntryError,
    TimeTravelError,
    TruncatedChainError,
    UnknownReceiptError,
    WrongAuthorError,
)
from hearth.ledger.proofs import make_fork_proof, verify_fork_proof
from hearth.protocol import limits
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.identity import PUBLIC_KEY_BYTES, PublicKey, verify_signature

WINDOW_ENTRIES: Final = 256  # parsed ahead of the fold: small enough to stay in caches

Claim = tuple[bytes, bytes, bytes]  # (public key, message, signature): one signature to check
Verify = Callable[[bytes, bytes, bytes], bool]


class PayStatus(enum.IntEnum):
    PENDING = 0
    CANCELLED = 1
    SETTLED = 2


@dataclasses.dataclass(slots=True)
class PayRecord:
    """What the payer's chain remembers of one receipt it signed."""

    job_id: bytes
    payee: bytes
    amount_mc: int
    expires_ms: int
    half_hash: bytes  # sha256 of the HalfSignedReceipt the payee must have countersigned
    status: PayStatus
    seq: int  # the entry that last changed ``status``


class Head(NamedTuple):
    seq: int
    hash: bytes
    created_ms: int


@dataclasses.dataclass(slots=True)  # not frozen: a fold builds one per entry (never mutated)
class _Change:
    balance_delta_mc: int = 0
    reserved_delta_mc: int = 0
    new_pay: tuple[bytes, PayRecord] | None = None  # receipt hash, record
    pay_status: tuple[bytes, PayStatus] | None = None
    earn_key: tuple[bytes, bytes] | None = None  # (payer, job_id)
    refused_author: bytes | None = None


@dataclasses.dataclass(slots=True)  # not frozen, for the same reason
class Undo:
    head: Head
    change: _Change
    old_status: tuple[PayStatus, int] | None


_NO_CHANGE: Final = _Change()


class ChainState:
    """The fold of one author's verified chain prefix (see the module docstring)."""

    __slots__ = (
        "author", "balance_mc", "earned_by_payer", "earns", "head", "paid_by_payee", "pay_keys",
        "pays", "refused", "reserved_mc",
    )  # fmt: skip

    def __init__(self, author: bytes) -> None:
        assert len(author) == PUBLIC_KEY_BYTES
        self.author = PublicKey(author)
        self.head = Head(-1, GENESIS_PREV_HASH, limits.INT_MIN)
        self.balance_mc = 0
        self.reserved_mc = 0  # sum of PENDING pays: spendable credit, not balance
        self.pays: dict[bytes, PayRecord] = {}
        self.pay_keys: dict[tuple[bytes, bytes], bytes] = {}  # (job_id, payee) -> receipt hash
        self.earns: dict[tuple[bytes, bytes], int] = {}  # (payer, job_id) -> seq of our EARN
        self.refused: dict[bytes, int] = {}  # author -> seq of our FORK_EVIDENCE entry
        # Per counterparty, for credit lines (ADR 0013): what each payer has credited us, and
        # what each payee has countersigned from us (settled), as [mc, receipts].
        self.earned_by_payer: dict[bytes, list[int]] = {}
        self.paid_by_payee: dict[bytes, list[int]] = {}

    @property
    def available_mc(self) -> int:
        return self.balance_mc - self.reserved_mc + limits.CREDIT_LIMIT_MC

    def assert_conserved(self) -> None:
        """Our fold's whole-state invariants, O(receipts): run after a chain is read back.

        Credits are conserved receipt by receipt: the balance is what payers credited us minus
        what payees countersigned from us; the reserve is the sum of the pending pays; each
        (job, payee) has one pay.
        """
        earned_mc = sum(mc for mc, _ in self.earned_by_payer.values())
        paid_mc = sum(mc for mc, _ in self.paid_by_payee.values())
        assert self.balance_mc == earned_mc - paid_mc, "balance != earned - settled pays"
        settled = sum(1 for r in self.pays.values() if r.status is PayStatus.SETTLED)
        assert settled == sum(n for _, n in self.paid_by_payee.values()), "one settle per pay"
        assert len(self.earns) == sum(n for _, n in self.earned_by_payer.values())
        pending = (r.amount_mc for r in self.pays.values() if r.status is PayStatus.PENDING)
        assert self.reserved_mc == sum(pending), "reserve != pending pays"
        assert len(self.pay_keys) == len(self.pays), "one pay per (job, payee)"

    def check(self, entry: Entry, *, signatures: bool = True, verify: Verify | None = None) -> None:
        """Raise a ``ChainError`` unless ``entry`` (body parsed) may follow the head.

        ``signatures=False`` skips the entry's own signature (the caller checked or made it);
        ``verify`` checks the signatures inside bodies (default: ``verify_signature``)."""
        self._plan(entry, signatures=signatures, verify=verify or verify_signature)

    def append(
        self, entry: Entry, *, signatures: bool = True, verify: Verify | None = None
    ) -> Undo:
        """``check`` then ``apply``."""
        plan = self._plan(entry, signatures=signatures, verify=verify or verify_signature)
        return self.apply(entry, plan)

    def apply(self, entry: Entry, change: _Change) -> Undo:
        """Fold in ``entry`` with the ``change`` that ``check`` planned for it on this state.

        Our invariants are asserted before the write (a plan made for another state, or applied
        twice, is our bug): one pay per (author, job, payee), one earn per (payer, job), one
        settle per pay, and a settle moves exactly the amount its pay reserved.
        """
        assert entry.seq == self.head.seq + 1 and entry.prev_hash == self.head.hash
        if change.new_pay is not None:
            receipt_hash, record = change.new_pay
            assert (record.job_id, record.payee) not in self.pay_keys, "paid twice for one job"
            assert receipt_hash not in self.pays and change.reserved_delta_mc == record.amount_mc
        if change.pay_status is not None:
            record = self.pays[change.pay_status[0]]
            assert record.status is not PayStatus.SETTLED, "settled twice"
            if change.pay_status[1] is PayStatus.SETTLED:
                assert change.balance_delta_mc == -record.amount_mc, "settle != pay amount"
            held = record.amount_mc if record.status is PayStatus.PENDING else 0
            assert change.reserved_delta_mc == -held, "a receipt releases what it reserved"
        if change.earn_key is not None:
            assert change.earn_key not in self.earns, "earned twice for one job"
            assert change.balance_delta_mc > 0
        old_status = None
        undo_head = self.head
        self.head = Head(entry.seq, entry.hash, entry.created_ms)
        self.balance_mc += change.balance_delta_mc
        self.reserved_mc += change.reserved_delta_mc
        if change.new_pay is not None:
            receipt_hash, record = change.new_pay
            self.pays[receipt_hash] = record
            self.pay_keys[(record.job_id, record.payee)] = receipt_hash
        if change.pay_status is not None:
            record = self.pays[change.pay_status[0]]
            old_status = (record.status, record.seq)
            record.status, record.seq = change.pay_status[1], entry.seq
            if record.status is PayStatus.SETTLED:
                _add_flow(self.paid_by_payee, record.payee, record.amount_mc, 1)
        if change.earn_key is not None:
            self.earns[change.earn_key] = entry.seq
            _add_flow(self.earned_by_payer, change.earn_key[0], change.balance_delta_mc, 1)
        if change.refused_author is not None:
            self.refused[change.refused_author] = entry.seq
        assert self.reserved_mc >= 0
        return Undo(undo_head, change, old_status)

    def revert(self, undo: Undo) -> None:
        """Take back the last applied entry (undos are reverted newest first)."""
        assert undo.head.seq == self.head.seq - 1, "undos are reverted newest first"
        change = undo.change
        self.head = undo.head
        self.balance_mc -= change.balance_delta_mc
        self.reserved_mc -= change.reserved_delta_mc
        if change.new_pay is not None:
            receipt_hash, record = change.new_pay
            del self.pays[receipt_hash]
            del self.pay_keys[(record.job_id, record.payee)]
        if change.pay_status is not None:
            assert undo.old_status is not None
            record = self.pays[change.pay_status[0]]
            if record.status is PayStatus.SETTLED:
                _add_flow(self.paid_by_payee, record.payee, -record.amount_mc, -1)
            record.status, record.seq = undo.old_status
        if change.earn_key is not None:
            del self.earns[change.earn_key]
            _add_flow(self.earned_by_payer, change.earn_key[0], -change.balance_delta_mc, -1)
        if change.refused_author is not None:
            del self.refused[change.refused_author]

    def _plan(self, entry: Entry, *, signatures: bool, verify: Verify) -> _Change:
        if entry.author != self.author:
            raise WrongAuthorError("entry is signed in another author's name")
        if signatures and not verify_signature(entry.author, entry.signed, entry.signature):
            raise EntrySignatureError("entry signature is not its author's")
        if entry.seq != self.head.seq + 1:
            raise SeqGapError(f"seq {entry.seq} does not follow {self.head.seq}")
        if entry.prev_hash != self.head.hash:
            raise PrevHashError("prev_hash is not the hash of the previous entry")
        if entry.created_ms < self.head.created_ms:
            raise TimeTravelError("created_ms runs backwards")
        if (entry.seq == 0) != (entry.kind is Kind.GENESIS):
            raise GenesisError("a chain starts with exactly one genesis entry, at seq 0")
        try:
            return _PLANNERS[entry.kind](self, entry, verify)
        except ChainError:
            raise
        except RemoteProtocolError as exc:  # a receipt or proof inside the body does not parse
            raise BodyError(f"{entry.kind.name.lower()} body: {exc.reason}: {exc}") from exc

    def _plan_genesis(self, entry: Entry, verify: Verify) -> _Change:
        body: GenesisBody = entry.body
        if body.format_version != LEDGER_FORMAT_VERSION:
            raise GenesisError(f"ledger format {body.format_version} is not supported")
        if body.credit_limit_mc != limits.CREDIT_LIMIT_MC:
            raise GenesisError("genesis names another network's credit limit")
        return _NO_CHANGE

    def _plan_pay(self, entry: Entry, verify: Verify) -> _Change:
        half: HalfSignedReceipt = entry.body
        receipt = parse_receipt(half.receipt)
        if receipt.payer != self.author:
            raise BodyError("a pay entry must be for a receipt its author pays")
        if not receipt.created_ms <= entry.created_ms <= receipt.expires_ms:
            raise BodyError("a pay entry must be written while its receipt is live")
        if (receipt.job_id, receipt.payee) in self.pay_keys:
            raise _double_claim(self.pays[self.pay_keys[(receipt.job_id, receipt.payee)]].seq)
        if self.available_mc < receipt.amount_mc:
            raise CreditLimitError(f"pay of {receipt.amount_mc} mc exceeds available credit")
        record = PayRecord(
            receipt.job_id, receipt.payee, receipt.amount_mc, receipt.expires_ms,
            sha256(half_bytes(half.receipt, half.payer_signature)), PayStatus.PENDING, entry.seq,
        )  # fmt: skip
        return _Change(reserved_delta_mc=receipt.amount_mc, new_pay=(sha256(half.receipt), record))

    def _plan_earn(self, entry: Entry, verify: Verify) -> _Change:
        body: CountersignedReceipt = entry.body
        receipt = parse_receipt(body.receipt)
        if receipt.payee != self.author:
            raise BodyError("an earn entry must be for a receipt its author is paid")
        if entry.created_ms > receipt.expires_ms:
            raise ExpiredReceiptError("earned after the receipt expired")
        earn_key = (receipt.payer, receipt.job_id)
        if earn_key in self.earns:
            raise _double_claim(self.earns[earn_key])
        if not verify(*_receipt_claim(entry)):
            raise ReceiptSignatureError("receipt is not signed by its payer")
        return _Change(balance_delta_mc=receipt.amount_mc, earn_key=earn_key)

    def _plan_settle(self, entry: Entry, verify: Verify) -> _Change:
        body: CountersignedReceipt = entry.body
        receipt, record = self._paid(body.receipt)
        if record.status is PayStatus.SETTLED:
            raise ReceiptStateError("receipt is already settled")
        if sha256(body.half_bytes) != record.half_hash:
            raise BodyError("settle names a receipt signature other than the pay entry's")
        if not verify(*_receipt_claim(entry)):
            raise CountersignatureError("countersignature is not the payee's")
        reserved = -receipt.amount_mc if record.status is PayStatus.PENDING else 0
        return _Change(
            balance_delta_mc=-receipt.amount_mc,
            reserved_delta_mc=reserved,
            pay_status=(sha256(body.receipt), PayStatus.SETTLED),
        )

    def _plan_cancel(self, entry: Entry, verify: Verify) -> _Change:
        body: CancelBody = entry.body
        record = self.pays.get(body.receipt_hash)
        if record is None:
            raise UnknownReceiptError("cancel of a receipt this chain never paid")
        if record.status is not PayStatus.PENDING:
            raise ReceiptStateError(f"cancel of a {record.status.name.lower()} receipt")
        if entry.created_ms <= record.expires_ms:
            raise ReceiptStateError("cancel before the receipt expired")
        return _Change(
            reserved_delta_mc=-record.amount_mc,
            pay_status=(body.receipt_hash, PayStatus.CANCELLED),
        )

    def _plan_mismatch(self, entry: Entry, verify: Verify) -> _Change:
        body: MismatchBody = entry.body
        if not 0 < len(body.job_id) <= limits.JOB_ID_BYTES_MAX:
            raise BodyError("mismatch job_id has a bad length")
        if len(body.worker) != PUBLIC_KEY_BYTES or body.worker == self.author:
            raise BodyError("mismatch must name another worker's key")
        if len(body.evidence_hashes) > limits.MISMATCH_EVIDENCE_HASHES_MAX or any(
            len(h) != 32 for h in body.evidence_hashes
        ):
            raise BodyError("mismatch evidence must be at most the limit of 32-byte hashes")
        return _NO_CHANGE

    def _plan_fork_evidence(self, entry: Entry, verify: Verify) -> _Change:
        proof: ForkProof = entry.body
        if max(len(proof.entry_a), len(proof.entry_b)) > limits.LEDGER_PROOF_ENTRY_BYTES_MAX:
            raise BodyError("forked entries too large to record")
        try:
            accused = verify_fork_proof(proof)
        except ForkProofError as exc:
            raise BodyError(f"fork evidence is no proof: {exc}") from exc
        if accused == self.author or accused in self.refused:
            raise BodyError("fork evidence against ourselves or recorded twice")
        return _Change(refused_author=bytes(accused))

    def _paid(self, receipt_bytes: bytes) -> tuple[Receipt, PayRecord]:
        receipt = parse_receipt(receipt_bytes)
        record = self.pays.get(sha256(receipt_bytes))
        if receipt.payer != self.author or record is None:
            raise UnknownReceiptError("settle of a receipt this chain never paid")
        return receipt, record


def _add_flow(flows: dict[bytes, list[int]], party: bytes, amount_mc: int, receipts: int) -> None:
    flow = flows.setdefault(party, [0, 0])
    flow[0] += amount_mc
    flow[1] += receipts
    if flow[1] == 0:
        del flows[party]


def _double_claim(first_seq: int) -> DoubleClaimError:
    error = DoubleClaimError(f"one (job, payee) is already credited at seq {first_seq}")
    error.first_seq = first_seq
    return error


_PLANNERS: Final = {
    Kind.GENESIS: ChainState._plan_genesis,
    Kind.PAY: ChainState._plan_pay,
    Kind.EARN: ChainState._plan_earn,
    Kind.SETTLE: ChainState._plan_settle,
    Kind.CANCEL: ChainState._plan_cancel,
    Kind.MISMATCH: ChainState._plan_mismatch,
    Kind.FORK_EVIDENCE: ChainState._plan_fork_evidence,
}


def receipt_claim(entry: Entry) -> Claim | None:
    """The signature inside an entry's body that the chain must check: the payer's on an EARN,
    the payee's countersignature on a SETTLE. Raises ``RemoteProtocolError`` if the receipt
    does not parse."""
    if entry.kind is Kind.EARN:
        body: CountersignedReceipt = entry.body
        return parse_receipt(body.receipt).payer, body.receipt, body.payer_signature
    if entry.kind is Kind.SETTLE:
        body = entry.body
        return parse_receipt(body.receipt).payee, body.half_bytes, body.payee_signature
    return None


def _receipt_claim(entry: Entry) -> Claim:
    claim = receipt_claim(entry)
    assert claim is not None, "only earns and settles carry a receipt signature"
    return claim


@dataclasses.dataclass(slots=True)
class Window:
    """Entries ``start..`` parsed ahead of their fold, with the signatures they will need.

    Nothing here is trusted yet: a header that does not parse ends the window (``error``), a body
    that does not parse waits in ``body_errors`` for its turn, because an earlier entry may be at
    fault first and the chain reports only the first bad entry.
    """

    start: int
    entries: list[Entry]
    body_errors: dict[int, ChainError]
    error: ChainError | None
    claims: list[Claim]


class ChainVerifier:
    """``verify_chain`` in steps, so that its signature checks can run anywhere (sans-IO).

    ``parse`` turns a window of wires into entries and the signature ``claims`` they carry;
    whoever drives the verifier checks those claims (inline, or on other threads while it parses
    the next window) and hands the results to ``fold``, windows in order. ``fold`` applies the
    chain rules exactly as a one-pass verify would, raising the first ``ChainError``, located.
    Results are taken as given, so only a driver that really checked the claims may pass them
    (``ledger.parallel``); a claim without a result is checked inline.
    """

    def __init__(
        self,
        wires: Sequence[bytes],
        *,
        author: bytes | None = None,
        head: tuple[int, bytes] | None = None,
        recorded_hashes: Sequence[bytes] | None = None,
    ) -> None:
        if not wires:
            raise TruncatedChainError("empty chain: no genesis", index=0, seq=0)
        self._wires = wires
        self._author = author
        self._head = head
        self._recorded_hashes = recorded_hashes
        self._entries: list[Entry] = []  # folded so far: index == seq
        self._state: ChainState | None = None
        self._checked: dict[Claim, bool] = {}

    def parse(self, start: int, stop: int) -> Window:
        """Parse ``wires[start:stop]`` (never raises: faults wait for ``fold``)."""
        window = Window(start, [], {}, None, [])
        claims = window.claims
        for index in range(start, min(stop, len(self._wires))):
            try:
                entry, body_error = parse_entry_deferred(self._wires[index])
            except ChainError as exc:
                window.error = exc.located(index, exc.seq)
                break
            window.entries.append(entry)
            claims.append((entry.author, entry.signed, entry.signature))
            if body_error is not None:
                window.body_errors[index] = body_error
                continue
            with contextlib.suppress(RemoteProtocolError):  # the fold raises it in its turn
                claim = receipt_claim(entry)
                if claim is not None:
                    claims.append(claim)
        return window

    def fold(self, window: Window, results: Sequence[bool] = ()) -> None:
        """Apply a parsed window; ``results`` are its claims' outcomes in order, or empty."""
        assert window.start == len(self._entries), "windows fold in order"
        checked = self._checked
        checked.clear()
        if results:
            checked.update(zip(window.claims, results, strict=True))
        for offset, entry in enumerate(window.entries):
            index = window.start + offset
            try:
                if self._state is None:
                    self._state = ChainState(entry.author if self._author is None else self._author)
                self._entries.append(entry)
                self._fold_one(self._state, index, window.body_errors.get(index))
            except ChainError as exc:
                raise exc.located(index, entry.seq) from None  # rules raise unlocated
        if window.error is not None:
            raise window.error

    def finish(self) -> ChainState:
        """The verified chain's state, once every window has folded."""
        state = self._state
        assert state is not None and len(self._entries) == len(self._wires), "fold every window"
        head = self._head
        if head is not None:
            if state.head.seq < head[0]:
                raise TruncatedChainError(
                    f"chain ends at seq {state.head.seq}, its head is {head[0]}",
                    index=len(self._wires),
                    seq=state.head.seq + 1,
                )
            if state.head.seq != head[0] or state.head.hash != head[1]:
                raise HeadMismatchError(
                    "the last entry is not the recorded head",
                    index=len(self._wires) - 1,
                    seq=head[0],
                )
        state.assert_conserved()  # after the read
        return state

    def _verify(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        known = self._checked.get((public_key, message, signature))
        if known is None:
            return verify_signature(public_key, message, signature)
        return known

    def _fold_one(self, state: ChainState, index: int, body_error: ChainError | None) -> None:
        entries, wires = self._entries, self._wires
        entry = entries[index]
        if entry.author != state.author:
            raise WrongAuthorError("entry is signed in another author's name", seq=entry.seq)
        if not self._verify(entry.author, entry.signed, entry.signature):
            recorded = _recorded_hash(index, wires, self._recorded_hashes, self._head, entry.seq)
            if recorded is not None and recorded != entry.hash:
                raise TamperedEntryError(
                    "entry bytes changed after they were chained", seq=entry.seq
                )
            raise EntrySignatureError("entry signature is not its author's", seq=entry.seq)
        expected = state.head.seq + 1
        if entry.seq < expected:
            earlier = entries[entry.seq]  # accepted entries sit at index == seq
            if earlier.hash == entry.hash:
                raise ReplayedEntryError(f"copy of the entry at seq {entry.seq}", seq=entry.seq)
            error = RepeatedSeqError("two entries with one seq: a fork", seq=entry.seq)
            error.proof = make_fork_proof(earlier.wire, entry.wire)
            raise error
        if entry.seq > expected:
            later = any(_peek_seq(w) == expected for w in wires[index + 1 :])
            kind = ReorderedError if later else SeqGapError
            raise kind(f"seq {entry.seq} where {expected} belongs", seq=entry.seq)
        if body_error is not None:
            raise body_error
        try:
            state.append(entry, signatures=False, verify=self._verify)
        except DoubleClaimError as exc:
            first = exc.first_seq
            exc.proof = DoubleClaimProof(entries[first].wire, entry.wire)
            exc.existing_entry = entries[first].wire
            raise


def verify_chain(
    wires: Sequence[bytes],
    *,
    author: bytes | None = None,
    head: tuple[int, bytes] | None = None,
    recorded_hashes: Sequence[bytes] | None = None,
) -> ChainState:
    """Verify a whole chain from genesis; return its state or raise the first ``ChainError``.

    ``head`` is the (seq, hash) the chain is known to end at (a store's record, a gossiped head):
    without it a cut-off tail is indistinguishable from a short chain. ``recorded_hashes`` are
    per-entry hashes kept beside the bytes (the store's index); with them, or with the successor's
    ``prev_hash``, an entry whose signature fails is told apart as altered bytes or a foreign key.
    One thread, signatures checked as the fold reaches them; ``ledger.parallel`` spreads them.
    """
    verifier = ChainVerifier(wires, author=author, head=head, recorded_hashes=recorded_hashes)
    for start in range(0, len(wires), WINDOW_ENTRIES):
        verifier.fold(verifier.parse(start, start + WINDOW_ENTRIES))
    return verifier.finish()


def _recorded_hash(
    index: int,
    wires: Sequence[bytes],
    recorded_hashes: Sequence[bytes] | None,
    head: tuple[int, bytes] | None,
    seq: int,
) -> bytes | None:
    if recorded_hashes is not None:
        return recorded_hashes[index]
    if index + 1 < len(wires):
        try:
            return parse_header(wires[index + 1]).prev_hash
        except ChainError:
            return None
    if head is not None and head[0] == seq:
        return head[1]
    return None


def _peek_seq(wire: bytes) -> int | None:
    try:
        return parse_header(wire).seq
    except ChainError:
        return None


def balance_mc(wires: Sequence[bytes]) -> int:
    """The balance a verified chain proves (half-signed receipts never count)."""
    return verify_chain(wires).balance_mc
