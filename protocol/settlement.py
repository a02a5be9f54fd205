"""Settling a judged job: pay each matching replica once, reject each other one with evidence.

I/O: none. Decides only: the effects it returns are what the node carries out (ADR 0007).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from hearth.protocol import limits
from hearth.protocol.effects import Effect, FetchBlob, PayWorker, Penalise, RecordMismatch, Send
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import MismatchNotice
from hearth.protocol.messages import PROTOCOL_RESULT
from hearth.protocol.pricing import cost_mc
from hearth.protocol.publisher_state import Phase, PublisherJob, Slot, SlotState, assert_payment
from hearth.protocol.reputation import Reputation
from hearth.protocol.verification import Judgement, Verdict, judge

Sender = Callable[[PeerId, str, object], Send]  # (peer, protocol, body) -> the sealed Send
MISMATCH_PENALTY_POINTS: Final = 100  # as Reputation.on_result(valid=False) charges


def settle(job: PublisherJob, digest: bytes, reputation: Reputation, send: Sender) -> list[Effect]:
    """The one move to PAID: pay each matching worker once, notify each other one.

    Every matching worker is paid its award price times the agreed fuel; the fuel is equal among
    them because the digest covers it. A free result (zero price or fuel) needs no receipt.
    """
    assert job.phase is not Phase.PAID, "a job is settled once"
    live = job.live()
    # The decision, re-checked where it takes effect: only the quorum's result is accepted.
    decided = judge([slot.digest for slot in live], job.replicas, job.replicas_max)
    assert decided == Judgement(Verdict.ACCEPTED, digest), "accepting a result the vote did not"
    assert all(slot.state is SlotState.REVEALED for slot in live), "judged before every reveal"
    job.move(Phase.PAID)
    job.accepted_digest = digest
    matching = [slot for slot in live if slot.digest == digest]
    fuel_used = min(slot.fuel_used for slot in matching)
    effects: list[Effect] = []
    for slot in live:
        if slot.digest == digest:
            slot.verdict = "match"
            slot.paid_mc = cost_mc(slot.price_mc_per_tfuel, fuel_used)
            reputation.on_result(slot.worker, valid=True)
            if slot.paid_mc > 0:
                effects.append(PayWorker(job.job_id, slot.worker, slot.paid_mc))
        else:
            effects += reject_result(job, slot, "outvoted", b"", reputation, send)
            slot.verdict = "mismatch"
    first = matching[0]
    for slot in live:
        if slot is not first:
            slot.output = b""  # one copy of the accepted output is enough to keep
            slot.stderr = b""
    if first.output_bytes > limits.OUTPUT_INLINE_BYTES_MAX:
        effects.append(FetchBlob(first.worker, first.output_hash, first.output_bytes))
    job.detail = f"verified by {len(matching)} of {len(live)} replicas"
    payees = [effect.worker for effect in effects if isinstance(effect, PayWorker)]
    assert len(set(payees)) == len(payees), "one pay per (job, worker)"
    assert_payment(job)
    return effects


def reject_result(
    job: PublisherJob,
    slot: Slot,
    reason: str,
    reveal_envelope: bytes,
    reputation: Reputation,
    send: Sender,
) -> list[Effect]:
    """Record and notify a result that lost the vote or did not open its commitment.

    An outvoted worker's own signed commitment, opened by the digest and salt, proves what it
    claimed; a reveal that does not open its commitment is proved by the signed reveal itself.
    """
    reputation.on_result(slot.worker, valid=False)
    notice = MismatchNotice(job.job_id, slot.award_no, reason, slot.digest, job.accepted_digest)
    return [
        RecordMismatch(
            job_id=job.job_id,
            worker=slot.worker,
            reason=reason,
            claimed_digest=slot.digest,
            accepted_digest=job.accepted_digest,
            salt=slot.salt,
            commit_envelope=slot.commit_envelope,
            reveal_envelope=reveal_envelope,
        ),
        send(slot.worker, PROTOCOL_RESULT, notice),
        Penalise(slot.worker, reason, MISMATCH_PENALTY_POINTS),
    ]
