"""Payments: turn the publisher's ``PayWorker`` into a receipt countersigned on both ledgers.

I/O: none. It signs entries into the engine's ``ChainView``; the engine hands them to the shell as
one ``CommitEntries`` per step, with the sends that carry their signatures to follow the commit
(ADR 0019). Time: ``now_ms`` argument.

Theory of operation
-------------------
Payer (the publisher)::

    PayWorker --append_pay_pending--> PENDING --ReceiptCountersigned--> SETTLED (+ ReceiptSettled)
        |  resend ReceiptOffer every RESEND_MS while PENDING and unexpired
        +-- expired ----------------> CANCELLED (signed cancel entry); a countersignature that
                                      arrives later still settles (ADR 0004), so nothing is lost

Payee (the worker)::

    ReceiptOffer --credit line (ADR 0013)--> refused: counted, logged in summary, nothing written
        |  admitted
        +--append_earn (idempotent)--> send ReceiptCountersigned, resend with exponential backoff
                                       until ReceiptSettled, at most COUNTERSIGN_RESENDS_MAX times
                                       within COUNTERSIGN_RESEND_WINDOW_MS. At most UNCONFIRMED_MAX
                                       pending, of which at most UNBACKED_UNCONFIRMED_MAX (and
                                       UNBACKED_PER_PAYER_MAX per payer) not for our work. A
                                       restart resumes the newest where their age says their
                                       backoff would be, as unbacked (the tasks are gone).

A receipt is admitted if it is *backed* (this node did the work for that payer: its worker task
is owed at least the amount) or fits the payer's credit line (``protocol.credit``).

What must never happen: a signature leaves before its entry is committed (the engine puts every
send of a step that staged entries into ``CommitEntries.then``); two pays for one (job, worker)
(the chain's own pay index is consulted first, so a decision replayed after a restart pays
nothing); an earn for a receipt not addressed to us, or offered by anyone but its payer; an
unbacked earn beyond the payer's line. The engine hands this component every ``PayWorker`` and
``RecordMismatch`` its other components emit (``absorb``), so that payment is staged in the same
step that decided it. What waits on the commit (a credit line charged, a countersignature to
re-send, the worker told it was paid) runs on ``EntriesCommitted``; a ``CommitFailed`` takes back
what was assumed (a pay is retried, as when the disk was full before).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from hearth.ledger.chain import PayStatus
from hearth.ledger.entry import CountersignedReceipt, HalfSignedReceipt, Kind, parse_receipt
from hearth.ledger.errors import (
    CreditLimitError,
    DoubleClaimError,
    ExpiredReceiptError,
    RefusedAuthorError,
)
from hearth.ledger.receipts import check_countersignature, check_half_signed, receipt_hash
from hearth.protocol import limits
from hearth.protocol.codec import message
from hearth.protocol.credit import CreditConfig, CreditLines
from hearth.protocol.effects import Log, PayWorker, RecordMismatch, Send, SetTimer
from hearth.protocol.envelope import Envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import PaymentReceived
from hearth.protocol.identity import PeerId, peer_id_from_public_key, public_key_from_peer_id
from hearth.protocol.job_messages import JobId
from hearth.protocol.messages import PROTOCOL_RECEIPT
from hearth.protocol.timers import CountersignTimer, OfferTimer, PayRetryTimer, TimerKey

if TYPE_CHECKING:
    from hearth.ledger.view import ChainView
    from hearth.protocol.effects import Effect
    from hearth.protocol.engine import Engine, MessageHandler

RECEIPT_TTL_MS: Final = 120_000  # time the payee has to countersign
RESEND_MS: Final = 2_000
# The payer may cancel an unanswered receipt and then settle it late (ADR 0004); the payee keeps
# re-sending its countersignature far beyond the receipt's life so that a long partition or a
# payer's restart still ends in a settle, and credits stay conserved. Backoff doubles from
# RESEND_MS to an hour: 16 sends span about 6 hours (ADR 0013).
RESEND_MS_MAX: Final = 3_600_000
COUNTERSIGN_RESENDS_MAX: Final = 16
COUNTERSIGN_RESEND_WINDOW_MS: Final = 24 * 3_600_000
UNCONFIRMED_MAX: Final = 100_000  # countersignatures awaiting ReceiptSettled, in all
# Pending countersignatures of unbacked receipts (no work of ours behind them), in all and per
# payer: the oldest give way. Backed ones are bounded by the work we did (ADR 0013).
UNBACKED_UNCONFIRMED_MAX: Final = 1_024
UNBACKED_PER_PAYER_MAX: Final = 64
REFUSALS_LOG_INTERVAL_MS: Final = 10_000  # refused receipts are logged as one summary this often
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
    backed: bool = True

    def next_resend_ms(self, now_ms: int) -> int:
        return now_ms + _backoff_ms(self.resends)


def _backoff_ms(resends: int) -> int:
    return min(RESEND_MS << min(resends, 16), RESEND_MS_MAX)


def resends_due(age_ms: int) -> int:
    """How many resends the backoff would have made in ``age_ms`` (to resume after a restart)."""
    done, elapsed_ms = 0, _backoff_ms(0)
    while elapsed_ms <= age_ms and done < COUNTERSIGN_RESENDS_MAX:
        done += 1
        elapsed_ms += _backoff_ms(done)
    return done


class LogSummary:
    """Turns a stream of like events into at most one ``Log`` per interval, with counts."""

    def __init__(self, event: str, interval_ms: int = REFUSALS_LOG_INTERVAL_MS) -> None:
        self._event = event
        self._interval_ms = interval_ms
        self._logged_ms: int | None = None
        self.counts: dict[str, int] = {}
        self.totals: dict[str, int] = {}

    def note(self, reason: str, now_ms: int, *fields: tuple[str, str | int]) -> list[Effect]:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        self.totals[reason] = self.totals.get(reason, 0) + 1
        if self._logged_ms is not None and now_ms - self._logged_ms < self._interval_ms:
            return []
        self._logged_ms = now_ms
        counts = ",".join(f"{r}={n}" for r, n in sorted(self.counts.items()))
        self.counts = {}
        return [Log("warning", self._event, (*fields, ("reason", reason), ("counts", counts)))]


def _not_recorded(what: str, *, event: str = "") -> Callable[[str, int], list[Effect]]:
    """What a failed commit of one entry leaves: a line in the log (the peer will ask again)."""

    def failed(reason: str, now_ms: int) -> list[Effect]:
        return [Log("error", event or f"{what}-not-recorded", (("reason", reason),))]

    return failed


class PaymentComponent:
    name = "payments"

    def __init__(
        self, engine: Engine, ledger: ChainView, credit: CreditConfig | None = None
    ) -> None:
        self._engine = engine
        self.ledger = ledger
        self.credit = CreditLines(credit or CreditConfig(), ledger.state)
        self._offers: dict[bytes, tuple[PeerId, HalfSignedReceipt]] = {}
        self._unconfirmed: dict[bytes, _Unconfirmed] = {}
        self._unbacked_by_payer: dict[PeerId, int] = {}  # pending unbacked, per payer
        self._retry: list[PayWorker] = []
        self.refusals = LogSummary("receipts-refused")
        self.given_up = LogSummary("countersignatures-unconfirmed")
        self.countersignatures_sent = 0  # first sends and resends, for statistics

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        channel = frozenset({PROTOCOL_RECEIPT})
        return {
            ReceiptOffer: (channel, self._on_offer),
            ReceiptCountersigned: (channel, self._on_countersigned),
            ReceiptSettled: (channel, self._on_settled),
        }

    def _add_unconfirmed(self, digest: bytes, pending: _Unconfirmed) -> None:
        """Keep a countersignature to re-send, within the caps (the oldest give way)."""
        assert digest not in self._unconfirmed
        if not pending.backed:
            if self._unbacked_by_payer.get(pending.payer, 0) >= UNBACKED_PER_PAYER_MAX:
                self._forget_oldest_unconfirmed(pending.payer)
            if sum(self._unbacked_by_payer.values()) >= UNBACKED_UNCONFIRMED_MAX:
                self._forget_oldest_unconfirmed(None)
            self._unbacked_by_payer[pending.payer] = (
                self._unbacked_by_payer.get(pending.payer, 0) + 1
            )
        if len(self._unconfirmed) >= UNCONFIRMED_MAX:
            self._forget_oldest_unconfirmed(None, backed_too=True)
        self._unconfirmed[digest] = pending

    def _drop_unconfirmed(self, digest: bytes) -> None:
        pending = self._unconfirmed.pop(digest)
        if not pending.backed:
            count = self._unbacked_by_payer[pending.payer] - 1
            if count:
                self._unbacked_by_payer[pending.payer] = count
            else:
                del self._unbacked_by_payer[pending.payer]

    def _forget_oldest_unconfirmed(self, payer: PeerId | None, *, backed_too: bool = False) -> None:
        candidates = [
            d
            for d, p in self._unconfirmed.items()
            if (backed_too or not p.backed) and (payer is None or p.payer == payer)
        ]
        oldest = min(candidates, key=lambda d: (self._unconfirmed[d].first_sent_ms, d))
        self._drop_unconfirmed(oldest)

    def on_started(self, now_ms: int) -> list[Effect]:
        """After a restart: offer every receipt still pending, and re-send recent countersignatures.

        The payer settles a repeated countersignature as a no-op and answers ReceiptSettled, so
        re-sending what it may already hold costs one message and can only repair its books.
        """
        effects: list[Effect] = []
        # Newest earns first, from the chain's own index: stop at the first one out of the window
        # (or past what may be pending) rather than parse the whole chain at every start. Each
        # resumes its backoff where its age puts it, so restarts never multiply the resends.
        for seq in sorted(self.ledger.state.earns.values(), reverse=True):
            if len(self._unconfirmed) >= UNBACKED_UNCONFIRMED_MAX:
                break
            entry = self.ledger.entry_at(seq)
            assert entry.kind == Kind.EARN, "the earns index points at earn entries"
            age_ms = now_ms - entry.created_ms
            if age_ms > COUNTERSIGN_RESEND_WINDOW_MS:
                break
            resends = resends_due(age_ms)
            if resends >= COUNTERSIGN_RESENDS_MAX:
                break  # and so are all older ones
            countersigned: CountersignedReceipt = entry.body
            payer = peer_id_from_public_key(parse_receipt(countersigned.receipt).payer)
            if self._unbacked_by_payer.get(payer, 0) >= UNBACKED_PER_PAYER_MAX:
                continue
            digest = receipt_hash(countersigned.receipt)
            self._add_unconfirmed(
                digest, _Unconfirmed(payer, countersigned, entry.created_ms, resends, backed=False)
            )
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
        assert effect.amount_mc > 0, "a free result needs no receipt"
        if not effect.amount_mc <= limits.CREDIT_LIMIT_MC:  # more than one receipt carries
            reason = f"{effect.amount_mc} mc is over the {limits.CREDIT_LIMIT_MC} mc"
            return [Log("error", "payment-refused", (("reason", reason),))]
        try:
            half = self.ledger.append_pay_pending(
                job_id=effect.job_id,
                payee=payee,
                amount_mc=effect.amount_mc,
                now_ms=now_ms,
                ttl_ms=RECEIPT_TTL_MS,
            )
        except (CreditLimitError, RefusedAuthorError) as exc:
            # A worker proven to have forked since its result was revealed is never paid.
            return [Log("error", "payment-refused", (("reason", str(exc)),))]
        digest = receipt_hash(half.receipt)
        # After the write: one pay of the decided amount for this (us, job, worker), pending.
        assert self.ledger.state.pay_keys[(effect.job_id, payee)] == digest
        record = self.ledger.state.pays[digest]
        assert record.amount_mc == effect.amount_mc, "a pay of another amount than decided"
        assert record.status is PayStatus.PENDING
        self._offers[digest] = (effect.worker, half)

        def deferred(reason: str, now_ms: int) -> list[Effect]:
            self._offers.pop(digest, None)
            self._retry.append(effect)
            return [
                Log("error", "payment-deferred", (("reason", reason),)),
                SetTimer(PayRetryTimer(), now_ms + RETRY_PAY_MS),
            ]

        self._engine.after_commit(self.ledger.head().seq, None, deferred)
        return self._offer(digest, now_ms)

    def _offer(self, digest: bytes, now_ms: int) -> list[Effect]:
        worker, half = self._offers[digest]
        data = self._engine.seal(ReceiptOffer(half), now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return [
            Send(worker, PROTOCOL_RECEIPT, data),
            SetTimer(OfferTimer(digest), now_ms + RESEND_MS),
        ]

    def _record_mismatch(self, effect: RecordMismatch, now_ms: int) -> list[Effect]:
        # Only 32-byte hashes are valid evidence: a reveal refused before any vote (bad-reveal,
        # garbage-output, fuel-over-max) has no accepted digest, and its proof is the reveal.
        evidence = [effect.claimed_digest, effect.accepted_digest]
        evidence.append(hashlib.sha256(effect.commit_envelope).digest())
        if effect.reveal_envelope:
            evidence.append(hashlib.sha256(effect.reveal_envelope).digest())
        evidence = [h for h in evidence if len(h) == limits.HASH_BYTES]
        self.ledger.append_mismatch(
            job_id=effect.job_id,
            worker=public_key_from_peer_id(effect.worker),
            evidence_hashes=evidence,
            now_ms=now_ms,
        )
        self._engine.after_commit(self.ledger.head().seq, None, _not_recorded("mismatch"))
        return []

    def on_timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        if isinstance(key, PayRetryTimer):
            retry, self._retry = self._retry, []
            return self.absorb(list(retry), now_ms)
        if isinstance(key, OfferTimer):
            return self._on_offer_timer(key.digest, now_ms)
        assert isinstance(key, CountersignTimer), key
        return self._on_countersign_timer(key.digest, now_ms)

    def _on_offer_timer(self, digest: bytes, now_ms: int) -> list[Effect]:
        record = self.ledger.state.pays.get(digest)
        if record is None or record.status is not PayStatus.PENDING:
            self._offers.pop(digest, None)
            return []
        if now_ms > record.expires_ms:
            self._offers.pop(digest, None)
            self.ledger.cancel(digest, now_ms=now_ms)

            def deferred(reason: str, now_ms: int) -> list[Effect]:
                return [
                    Log("error", "cancel-deferred", (("reason", reason),)),
                    SetTimer(OfferTimer(digest), now_ms + RETRY_PAY_MS),
                ]

            self._engine.after_commit(self.ledger.head().seq, None, deferred)
            return [Log("warning", "receipt-cancelled", (("receipt", digest.hex()[:16]),))]
        return self._offer(digest, now_ms)

    def _on_countersign_timer(self, digest: bytes, now_ms: int) -> list[Effect]:
        pending = self._unconfirmed.get(digest)
        if pending is None:
            return []
        pending.resends += 1
        if (
            pending.resends >= COUNTERSIGN_RESENDS_MAX
            or now_ms - pending.first_sent_ms > COUNTERSIGN_RESEND_WINDOW_MS
        ):
            self._drop_unconfirmed(digest)
            return self.given_up.note(
                "no-receipt-settled", now_ms, ("payer", pending.payer), ("receipt", digest.hex())
            )
        return self._send_countersigned(digest, now_ms)

    def _send_countersigned(self, digest: bytes, now_ms: int) -> list[Effect]:
        pending = self._unconfirmed[digest]
        return [
            self._countersigned_send(pending.payer, pending.countersigned, now_ms),
            SetTimer(CountersignTimer(digest), pending.next_resend_ms(now_ms)),
        ]

    def _countersigned_send(
        self, payer: PeerId, countersigned: CountersignedReceipt, now_ms: int
    ) -> Send:
        self.countersignatures_sent += 1
        body = ReceiptCountersigned(countersigned)
        data = self._engine.seal(body, now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return Send(payer, PROTOCOL_RECEIPT, data)

    def _on_offer(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        half: HalfSignedReceipt = envelope.body.half
        receipt = parse_receipt(half.receipt)
        if receipt.payer != envelope.author:
            raise RemoteProtocolError("a receipt offered by someone else", reason="bad-receipt")
        check_half_signed(half, payee=self._engine.identity.public_key, now_ms=now_ms)
        digest = receipt_hash(half.receipt)
        new_earn = (receipt.payer, receipt.job_id) not in self.ledger.state.earns
        backed = self._backed(receipt.payer, JobId(receipt.job_id), receipt.amount_mc)
        if new_earn:
            why = self.credit.decide(receipt.payer, receipt.amount_mc, backed=backed, now_ms=now_ms)
            if why:
                # Nothing is written and nothing is sent: the payer learns by its receipt's
                # expiry and cancels it (ADR 0004), so no credit moves on either side.
                return self.refusals.note(
                    why, now_ms, ("payer", envelope.peer_id), ("amount_mc", receipt.amount_mc)
                )
        try:
            countersigned, staged = self.ledger.append_earn(half, now_ms=now_ms)
        except (ExpiredReceiptError, DoubleClaimError) as exc:
            raise RemoteProtocolError(str(exc), reason=exc.reason) from None
        # Credits are conserved by each receipt: what we earn is exactly what the payer pays.
        assert countersigned.receipt == half.receipt, "an earn of another receipt"
        payer = envelope.peer_id

        def earned(now_ms: int) -> list[Effect]:
            """The earn is durable (or was already): charge the line, keep re-sending."""
            # After the commit: the earn is in the chain.
            assert (receipt.payer, receipt.job_id) in self.ledger.state.earns
            if new_earn:
                self.credit.charge(receipt.payer, receipt.amount_mc, backed=backed)
            if digest in self._unconfirmed:
                return []
            self._add_unconfirmed(digest, _Unconfirmed(payer, countersigned, now_ms, backed=backed))
            paid = PaymentReceived(JobId(receipt.job_id), payer, receipt.amount_mc)
            resend_ms = self._unconfirmed[digest].next_resend_ms(now_ms)
            return [
                SetTimer(CountersignTimer(digest), resend_ms),
                *self._engine.dispatch_local(paid, now_ms),
            ]

        if not staged:
            if digest in self._unconfirmed:
                return self._send_countersigned(digest, now_ms)
            return [self._countersigned_send(payer, countersigned, now_ms), *earned(now_ms)]
        self._engine.after_commit(
            self.ledger.head().seq, earned, _not_recorded("earn", event="earn-deferred")
        )
        return [self._countersigned_send(payer, countersigned, now_ms)]

    def _backed(self, payer: bytes, job_id: JobId, amount_mc: int) -> bool:
        """True when we did this job for this payer and are owed at least ``amount_mc``."""
        task = self._engine.worker.tasks.get(job_id)
        return (
            task is not None
            and task.publisher == peer_id_from_public_key(payer)
            and 0 < amount_mc <= self._engine.worker.owed_mc(task)
        )

    def _on_countersigned(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        countersigned: CountersignedReceipt = envelope.body.countersigned
        receipt = check_countersignature(countersigned)
        if receipt.payer != self._engine.identity.public_key or receipt.payee != envelope.author:
            raise RemoteProtocolError("countersignature for another receipt", reason="bad-receipt")
        digest = receipt_hash(countersigned.receipt)

        def settled(now_ms: int) -> list[Effect]:
            record = self.ledger.state.pays[digest]  # after the commit: settled once, for the pay
            assert record.status is PayStatus.SETTLED, "settled once, for the pay"
            assert record.amount_mc == receipt.amount_mc, "settled once, for the pay's amount"
            self._offers.pop(digest, None)
            return []

        if self.ledger.settle(countersigned, now_ms=now_ms):
            self._engine.after_commit(
                self.ledger.head().seq, settled, _not_recorded("settle", event="settle-deferred")
            )
        else:
            settled(now_ms)
        data = self._engine.seal(ReceiptSettled(digest), now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return [Send(envelope.peer_id, PROTOCOL_RECEIPT, data)]

    def _on_settled(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        pending = self._unconfirmed.get(envelope.body.receipt_hash)
        if pending is not None and pending.payer == envelope.peer_id:
            self._drop_unconfirmed(envelope.body.receipt_hash)
        return []

    def status(self) -> dict[str, Any]:
        return {
            "offers_open": len(self._offers),
            "countersignatures_unconfirmed": len(self._unconfirmed),
            "pays_deferred": len(self._retry),
            "receipts_refused": dict(sorted(self.refusals.totals.items())),
            "countersignatures_given_up": sum(self.given_up.totals.values()),
            "countersignatures_sent": self.countersignatures_sent,
            **self.credit.statistics(),
        }
