"""Payments: turn the publisher's ``PayWorker`` into a receipt countersigned on both ledgers.

I/O: none of its own; it writes through the ledger object it is given (SQLite in the daemon,
memory in the simulator), whose methods return only once the entry is durably committed (ADR 0008).
Time: ``now_ms`` argument.

Theory of operation
-------------------
Payer (the publisher)::

    PayWorker --append_pay_pending--> PENDING --ReceiptCountersigned--> SETTLED (+ ReceiptSettled)
        |  resend ReceiptOffer every RESEND_MS while PENDING and unexpired
        +-- expired ----------------> CANCELLED (signed cancel entry); a countersignature that
                                      arrives later still settles (ADR 0004), so nothing is lost

Payee (the worker)::

    ReceiptOffer --append_earn (idempotent)--> send ReceiptCountersigned, resend every RESEND_MS
                                               with backoff until ReceiptSettled, for up
                                               to COUNTERSIGN_RESEND_WINDOW_MS (a restart
                                               resumes it for the earns of that window)

What must never happen: a signature leaves before its entry is committed (the ledger methods
return only after commit); two pays for one (job, worker) (the chain's own pay index is
consulted first, so a decision replayed after a restart pays nothing); an earn for a receipt
not addressed to us, or offered by anyone but its payer.
The engine hands this component every ``PayWorker`` and ``RecordMismatch`` its other components
emit (``absorb``), so that payment happens in the same step that decided it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ledger.chain import PayStatus
from ledger.entry import CountersignedReceipt, HalfSignedReceipt, Kind, parse_receipt
from ledger.errors import (
    CreditLimitError,
    DoubleClaimError,
    ExpiredReceiptError,
    LedgerUnavailableError,
    RefusedAuthorError,
)
from ledger.receipts import check_countersignature, check_half_signed, receipt_hash
from protocol import limits
from protocol.codec import message
from protocol.effects import Log, PayWorker, RecordMismatch, Send, SetTimer
from protocol.envelope import Envelope
from protocol.errors import RemoteProtocolError
from protocol.events import PaymentReceived
from protocol.identity import PeerId, peer_id_from_public_key, public_key_from_peer_id
from protocol.job_messages import JobId
from protocol.messages import PROTOCOL_RECEIPT

if TYPE_CHECKING:
    from ledger.base import LedgerBase
    from protocol.engine import Effect, Engine, MessageHandler

RECEIPT_TTL_MS: Final = 120_000  # time the payee has to countersign
RESEND_MS: Final = 2_000
# The payer may cancel an unanswered receipt and then settle it late (ADR 0004); the payee keeps
# re-sending its countersignature far beyond the receipt's life so that a long partition or a
# payer's restart still ends in a settle, and credits stay conserved.
RESEND_MS_MAX: Final = 60_000
COUNTERSIGN_RESEND_WINDOW_MS: Final = 24 * 3_600_000
UNCONFIRMED_MAX: Final = 100_000
MESSAGE_TTL_MS: Final = 60_000
RETRY_PAY_MS: Final = 5_000  # a pay the ledger could not write (disk full) is tried again


@message(130)
@dataclasses.dataclass(frozen=True)
class ReceiptOffer:
    half: HalfSignedReceipt


@message(131)
@dataclasses.dataclass(frozen=True)
class ReceiptCountersigned:
    countersigned: CountersignedReceipt


@message(132)
@dataclasses.dataclass(frozen=True)
class ReceiptSettled:
    receipt_hash: bytes


@dataclasses.dataclass(slots=True)
class _Unconfirmed:
    payer: PeerId
    countersigned: CountersignedReceipt
    first_sent_ms: int
    resends: int = 0

    def next_resend_ms(self, now_ms: int) -> int:
        return now_ms + min(RESEND_MS << min(self.resends, 16), RESEND_MS_MAX)


class PaymentComponent:
    name = "payments"

    def __init__(self, engine: Engine, ledger: LedgerBase) -> None:
        self._engine = engine
        self.ledger = ledger
        self._offers: dict[bytes, tuple[PeerId, HalfSignedReceipt]] = {}
        self._unconfirmed: dict[bytes, _Unconfirmed] = {}
        self._retry: list[PayWorker] = []

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        channel = frozenset({PROTOCOL_RECEIPT})
        return {
            ReceiptOffer: (channel, self._on_offer),
            ReceiptCountersigned: (channel, self._on_countersigned),
            ReceiptSettled: (channel, self._on_settled),
        }

    def _forget_oldest_unconfirmed(self) -> None:
        oldest = min(self._unconfirmed, key=lambda d: (self._unconfirmed[d].first_sent_ms, d))
        del self._unconfirmed[oldest]

    def on_started(self, now_ms: int) -> list[Effect]:
        """After a restart: offer every receipt still pending, and re-send recent countersignatures.

        The payer settles a repeated countersignature as a no-op and answers ReceiptSettled, so
        re-sending what it may already hold costs one message and can only repair its books.
        """
        effects: list[Effect] = []
        # Newest earns first, from the chain's own index: stop at the first one out of the window
        # rather than parse the whole chain at every start.
        for seq in sorted(self.ledger.state.earns.values(), reverse=True):
            entry = self.ledger.entry_at(seq)
            assert entry.kind == Kind.EARN, "the earns index points at earn entries"
            if now_ms - entry.created_ms > COUNTERSIGN_RESEND_WINDOW_MS:
                break
            countersigned: CountersignedReceipt = entry.body
            payer = peer_id_from_public_key(parse_receipt(countersigned.receipt).payer)
            digest = receipt_hash(countersigned.receipt)
            self._unconfirmed[digest] = _Unconfirmed(payer, countersigned, entry.created_ms)
            effects += self._send_countersigned(digest, now_ms)
        for pending in self.ledger.pending_pays():
            record = self.ledger.state.pays[pending.receipt_hash]
            half = self.ledger.entry_at(record.seq).body  # a PENDING record's seq is its pay
            assert isinstance(half, HalfSignedReceipt)
            worker = peer_id_from_public_key(record.payee)
            self._offers[pending.receipt_hash] = (worker, half)
            effects += self._offer(pending.receipt_hash, now_ms)
        return effects

    def absorb(self, effects: list[Effect], now_ms: int) -> list[Effect]:
        """Carry out the PayWorker and RecordMismatch effects of a step; pass the rest on."""
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, PayWorker):
                out += self._pay(effect, now_ms)
            elif isinstance(effect, RecordMismatch):
                out += self._record_mismatch(effect, now_ms)
            else:
                out.append(effect)
        return out

    def _pay(self, effect: PayWorker, now_ms: int) -> list[Effect]:
        payee = public_key_from_peer_id(effect.worker)
        if payee in self._engine.refused_authors:
            return [
                Log(
                    "warning",
                    "payment-withheld",
                    (("worker", effect.worker), ("reason", "refused-author")),
                )
            ]
        if (effect.job_id, payee) in self.ledger.state.pay_keys:
            return []  # already paid (a replayed decision, or one restored after a restart)
        if not 0 < effect.amount_mc <= limits.CREDIT_LIMIT_MC:  # more than one receipt carries
            reason = f"{effect.amount_mc} mc is outside (0, {limits.CREDIT_LIMIT_MC}]"
            return [Log("error", "payment-refused", (("reason", reason),))]
        try:
            half = self.ledger.append_pay_pending(
                job_id=effect.job_id,
                payee=payee,
                amount_mc=effect.amount_mc,
                now_ms=now_ms,
                ttl_ms=RECEIPT_TTL_MS,
            )
        except LedgerUnavailableError as exc:
            self._retry.append(effect)
            return [
                Log("error", "payment-deferred", (("reason", str(exc)),)),
                SetTimer("payments:retry", now_ms + RETRY_PAY_MS),
            ]
        except (CreditLimitError, RefusedAuthorError) as exc:
            # A worker proven to have forked since its result was revealed is never paid.
            return [Log("error", "payment-refused", (("reason", str(exc)),))]
        digest = receipt_hash(half.receipt)
        self._offers[digest] = (effect.worker, half)
        return self._offer(digest, now_ms)

    def _offer(self, digest: bytes, now_ms: int) -> list[Effect]:
        worker, half = self._offers[digest]
        data = self._engine.seal(ReceiptOffer(half), now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return [
            Send(worker, PROTOCOL_RECEIPT, data),
            SetTimer(f"payments:{digest.hex()}:offer", now_ms + RESEND_MS),
        ]

    def _record_mismatch(self, effect: RecordMismatch, now_ms: int) -> list[Effect]:
        evidence = tuple(  # a digest is empty before a verdict or a reveal (RecordMismatch)
            digest
            for digest in (
                effect.claimed_digest,
                effect.accepted_digest,
                hashlib.sha256(effect.commit_envelope).digest(),
            )
            if len(digest) == limits.HASH_BYTES
        )
        try:
            self.ledger.append_mismatch(
                job_id=effect.job_id,
                worker=public_key_from_peer_id(effect.worker),
                evidence_hashes=evidence,
                now_ms=now_ms,
            )
        except LedgerUnavailableError as exc:
            return [Log("error", "mismatch-not-recorded", (("reason", str(exc)),))]
        return []

    def on_timer(self, key: str, now_ms: int) -> list[Effect]:
        if key == "payments:retry":
            retry, self._retry = self._retry, []
            return self.absorb(list(retry), now_ms)
        _, digest_hex, what = key.split(":")
        digest = bytes.fromhex(digest_hex)
        if what == "offer":
            return self._on_offer_timer(digest, now_ms)
        return self._on_countersign_timer(digest, now_ms)

    def _on_offer_timer(self, digest: bytes, now_ms: int) -> list[Effect]:
        record = self.ledger.state.pays.get(digest)
        if record is None or record.status is not PayStatus.PENDING:
            self._offers.pop(digest, None)
            return []
        if now_ms > record.expires_ms:
            self._offers.pop(digest, None)
            try:
                self.ledger.cancel(digest, now_ms=now_ms)
            except LedgerUnavailableError as exc:
                return [
                    Log("error", "cancel-deferred", (("reason", str(exc)),)),
                    SetTimer(f"payments:{digest.hex()}:offer", now_ms + RETRY_PAY_MS),
                ]
            return [Log("warning", "receipt-cancelled", (("receipt", digest.hex()[:16]),))]
        return self._offer(digest, now_ms)

    def _on_countersign_timer(self, digest: bytes, now_ms: int) -> list[Effect]:
        pending = self._unconfirmed.get(digest)
        if pending is None:
            return []
        pending.resends += 1
        if now_ms - pending.first_sent_ms > COUNTERSIGN_RESEND_WINDOW_MS:
            del self._unconfirmed[digest]
            return [Log("warning", "countersignature-unconfirmed", (("receipt", digest.hex()),))]
        return self._send_countersigned(digest, now_ms)

    def _send_countersigned(self, digest: bytes, now_ms: int) -> list[Effect]:
        pending = self._unconfirmed[digest]
        body = ReceiptCountersigned(pending.countersigned)
        data = self._engine.seal(body, now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return [
            Send(pending.payer, PROTOCOL_RECEIPT, data),
            SetTimer(f"payments:{digest.hex()}:countersign", pending.next_resend_ms(now_ms)),
        ]

    def _on_offer(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        half: HalfSignedReceipt = envelope.body.half
        receipt = parse_receipt(half.receipt)
        if receipt.payer != envelope.author:
            raise RemoteProtocolError("a receipt offered by someone else", reason="bad-receipt")
        check_half_signed(half, payee=self._engine.identity.public_key, now_ms=now_ms)
        digest = receipt_hash(half.receipt)
        try:
            countersigned = self.ledger.append_earn(half, now_ms=now_ms)
        except (ExpiredReceiptError, DoubleClaimError) as exc:
            raise RemoteProtocolError(str(exc), reason=exc.reason) from None
        except LedgerUnavailableError as exc:
            return [Log("error", "earn-deferred", (("reason", str(exc)),))]
        first = digest not in self._unconfirmed
        if first and len(self._unconfirmed) >= UNCONFIRMED_MAX:
            self._forget_oldest_unconfirmed()
        if first:
            self._unconfirmed[digest] = _Unconfirmed(envelope.peer_id, countersigned, now_ms)
        effects = self._send_countersigned(digest, now_ms)
        if first:
            paid = PaymentReceived(JobId(receipt.job_id), envelope.peer_id, receipt.amount_mc)
            effects += self._engine.step(paid, now_ms)
        return effects

    def _on_countersigned(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        countersigned: CountersignedReceipt = envelope.body.countersigned
        receipt = check_countersignature(countersigned)
        if receipt.payer != self._engine.identity.public_key or receipt.payee != envelope.author:
            raise RemoteProtocolError("countersignature for another receipt", reason="bad-receipt")
        try:
            self.ledger.settle(countersigned, now_ms=now_ms)
        except LedgerUnavailableError as exc:
            return [Log("error", "settle-deferred", (("reason", str(exc)),))]
        digest = receipt_hash(countersigned.receipt)
        self._offers.pop(digest, None)
        data = self._engine.seal(ReceiptSettled(digest), now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return [Send(envelope.peer_id, PROTOCOL_RECEIPT, data)]

    def _on_settled(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        pending = self._unconfirmed.get(envelope.body.receipt_hash)
        if pending is not None and pending.payer == envelope.peer_id:
            del self._unconfirmed[envelope.body.receipt_hash]
        return []

    def status(self) -> dict[str, Any]:
        return {
            "offers_open": len(self._offers),
            "countersignatures_unconfirmed": len(self._unconfirmed),
            "pays_deferred": len(self._retry),
        }
