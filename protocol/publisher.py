"""The publisher side of a job: call for bids, choose winners, award, verify, pay.

I/O: none. Time: ``now_ms`` argument. Randomness: the engine's Random (job seed, adaptive trust).

Theory of operation
-------------------
A local ``PublishJob`` starts a job. The publisher gossips a signed call for bids and collects
sealed bids until the bid deadline: one per peer, at most ``BIDS_PER_AUCTION_MAX``, none above
the max price. At the deadline the winner rule (protocol.auction, ADR 0006) ranks the bids and
awards ``replicas`` diverse winners. Each award is a *slot*:

    AWARDED --accept--> ACCEPTED --commit--> COMMITTED --all live committed--> REVEALING
    REVEALING --reveal opens the commitment--> REVEALED
    AWARDED | ACCEPTED | REVEALING --decline | silent past its deadline | bad reveal--> DROPPED

Each award names its winner's key and carries a lease (protocol.lease): the winner's time to
commit, derived from the job unless the developer set one, so that a winner that accepts and
never commits is replaced while a replacement can still finish.

A dropped slot is replaced by the next candidate that keeps the winners diverse; when none is
left, a fresh call for bids (the next round) finds more, up to ``CALL_ROUNDS_MAX`` rounds. Hosts
that will not bid say why (``BidDecline``); when the candidates run out the publisher names the
cause at once (protocol.causes, ADR 0023), and fails the job then if every host it knows has
answered and the cause will not clear by itself (a runtime, a price, one network group). When
every live slot has revealed, protocol.verification judges them (ADR 0007): accepted -> every
matching worker is paid once and every other one gets a signed mismatch notice; disagreement ->
more replicas, up to ``replicas_max``; past that the job fails as unverifiable with its evidence.

    BIDDING --bid deadline--> RUNNING --all committed--> VERIFYING --quorum--> PAID
    RUNNING | VERIFYING --disagreement | slot dropped--> RUNNING (more awards) | BIDDING (new round)
    any open phase --job deadline | no workers | unverifiable--> FAILED

The two tables live in protocol.publisher_state (SLOT_TRANSITIONS, PHASE_TRANSITIONS); every move
is checked against them. Peer input never moves a slot the tables do not allow: a message that
does not fit the slot's state is ignored or refused before any move.

Penalties fall only on a peer provably at fault (ADR 0012): every direct message must be delivered
by its own signer, so a refusal penalises the peer that both signed and sent it, and no third
party can make an honest worker send something that is punished here.

Never: pay a worker twice for one job (only the single move to PAID pays, and a PAID job stays
PAID through restarts), pay a result that did not win the vote, reveal one worker's result to
another, or ask for reveals before every live replica has committed.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from hearth.protocol import adaptive, limits
from hearth.protocol.auction import BidView, choose_winners, pick, rank
from hearth.protocol.causes import (
    DECLINE_CAUSES,
    TRANSIENT_CAUSES,
    Cause,
    CouldNotRun,
    disagreement,
    from_declines,
    from_market,
    not_diverse,
)
from hearth.protocol.codec import encode
from hearth.protocol.effects import (
    CancelTimer,
    Effect,
    JobProgress,
    Log,
    PayWorker,
    Penalise,
    Publish,
    SaveJob,
    Send,
    SetTimer,
)
from hearth.protocol.envelope import Envelope, EnvelopeWire
from hearth.protocol.errors import LocalProtocolError, RemoteProtocolError
from hearth.protocol.escrow import Escrow, audit_command, result_of
from hearth.protocol.events import (
    CancelJob,
    InvitationUndelivered,
    JobRestored,
    PeerDisconnected,
    PublishJob,
    ReleaseHeldPay,
)
from hearth.protocol.identity import PeerId
from hearth.protocol.invitations import can_take, candidate_views, invitees_wanted, sample
from hearth.protocol.job_messages import (
    PREFERENCES,
    Award,
    AwardReply,
    Bid,
    BidDecline,
    CallForBids,
    Cancel,
    Invitation,
    JobId,
    ResultCommit,
    ResultReveal,
    RevealRequest,
    require_from_author,
)
from hearth.protocol.lease import LEASE_MS_MIN, lease_ms
from hearth.protocol.messages import (
    PROTOCOL_AWARD,
    PROTOCOL_BID,
    PROTOCOL_DECLINE,
    PROTOCOL_INVITE,
    PROTOCOL_RESULT,
    TOPIC_JOBS,
)
from hearth.protocol.publisher_state import (
    TERMINAL_PHASES,
    WAITING_STATES,
    JobSummary,
    Phase,
    PublisherJob,
    Slot,
    SlotState,
    bid_view,
    decode_job,
    encode_job,
    summarise,
)
from hearth.protocol.settlement import reject_result, settle
from hearth.protocol.timers import (
    BatchIdleTimer,
    BidsTimer,
    JobDeadlineTimer,
    PayHoldTimer,
    SlotTimer,
    TimerKey,
)
from hearth.protocol.verification import Verdict, judge, reveal_problem

if TYPE_CHECKING:
    from hearth.protocol.engine import Engine, MessageHandler

SEED_BYTES: Final = 16
AWARDS_PER_REPLICA_MAX: Final = 4  # awards of one job <= this x replicas_max, then it fails
SILENT_PENALTY_POINTS: Final = 5
MISMATCH_PENALTY_POINTS: Final = 100  # as Reputation.on_result(valid=False) charges


BUSY_DECLINE_VERDICT: Final = "declined:busy"


UNREACHABLE: Final = "unreachable"  # an invitee the node could not send its invitation to


def newcomers_max(replicas: int) -> int:
    """Newcomers may hold at most half of the replicas, so they never form a quorum alone."""
    return max(1, replicas // 2)


class PublisherComponent:
    """Runs the auction, the verification and the payment of the jobs this node publishes."""

    name = "publisher"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._config = engine.config.jobs.publisher
        self.jobs: dict[JobId, PublisherJob] = {}
        self.escrow = Escrow(self.jobs, self._config.adaptive, self._send, self._save)
        engine.add_local_handler(PublishJob, self._on_publish_job)
        engine.add_local_handler(ReleaseHeldPay, self._on_release_held_pay)
        engine.add_local_handler(PeerDisconnected, self._on_peer_disconnected)
        engine.add_local_handler(InvitationUndelivered, self._on_invitation_undelivered)
        engine.add_local_handler(JobRestored, self._on_job_restored)
        engine.add_local_handler(CancelJob, self._on_cancel_job)

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        award, result = frozenset({PROTOCOL_AWARD}), frozenset({PROTOCOL_RESULT})
        return {
            Bid: (frozenset({PROTOCOL_BID}), self._on_bid),
            AwardReply: (award, self._on_award_reply),
            ResultCommit: (result, self._on_commit),
            ResultReveal: (result, self._on_reveal),
            BidDecline: (frozenset({PROTOCOL_DECLINE}), self._on_decline),
        }

    def on_started(self, now_ms: int) -> list[Effect]:
        return []

    # Queries

    def summary(self, job_id: JobId) -> JobSummary | None:
        job = self.jobs.get(job_id)
        return None if job is None else summarise(job)

    def list_jobs(self) -> list[JobSummary]:
        ordered = sorted(self.jobs.values(), key=lambda job: (job.created_ms, job.job_id))
        return [summarise(job) for job in ordered]

    def may_fetch(self, peer: PeerId, blob_hash: bytes) -> bool:
        """May ``peer`` fetch ``blob_hash`` from us? Only a module or input of an open job, and
        only for a worker holding a live award of that job (ADR 0015)."""
        for job in self.jobs.values():
            if job.phase in TERMINAL_PHASES:
                continue
            if blob_hash in (job.call.module_hash, job.call.input_hash) and any(
                slot.worker == peer for slot in job.live()
            ):
                return True
        return False

    def blobs_in_use(self) -> tuple[frozenset[bytes], frozenset[bytes]]:
        """(modules and inputs that open jobs need, accepted outputs of the jobs kept here)."""
        needed: set[bytes] = set()
        results: set[bytes] = set()
        for job in self.jobs.values():
            if job.phase not in TERMINAL_PHASES or job.pay_held:  # held: it may be audited
                needed.update((job.call.module_hash, job.call.input_hash))
            results.update(s.output_hash for s in job.slots if s.verdict == "match")
        return frozenset(needed), frozenset(results)

    # Starting, restoring, timers

    def _on_publish_job(self, event: object, now_ms: int) -> list[Effect]:
        assert isinstance(event, PublishJob)
        return self._start_job(event, now_ms)

    def _start_job(
        self, event: PublishJob, now_ms: int, audit: tuple[bytes, str] = (b"", "")
    ) -> list[Effect]:
        """Start a job: the developer's, or an audit of ``audit`` = (solo job, its host)."""
        self._check_command(event, now_ms)
        call = CallForBids(
            job_id=event.job_id,
            call_round=0,
            runtime=event.runtime,
            module_hash=event.module_hash,
            module_bytes=event.module_bytes,
            input_hash=event.input_hash,
            input_bytes=event.input_bytes,
            fuel_max=event.fuel_max,
            memory_mb_max=event.memory_mb_max,
            deadline_ms=event.deadline_ms,
            max_price_mc_per_tfuel=event.max_price_mc_per_tfuel,
            bid_deadline_ms=now_ms + event.bid_window_ms,
            requirements=event.requirements,
        )
        try:
            call.check(now_ms)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"PublishJob: {exc}") from exc
        self._forget_finished()
        job = PublisherJob(
            call=call,
            replicas=event.replicas,
            replicas_max=event.replicas_max,
            prefer=event.prefer,
            lease_ms=event.lease_ms,
            bid_window_ms=event.bid_window_ms,
            seed=self._engine.rng.randbytes(SEED_BYTES),
            created_ms=now_ms,
            target=event.replicas,
            verify=event.verify,
            inline=_inline(event),
            audit_of=audit[0],
            audited=audit[1],
        )
        self.jobs[job.job_id] = job
        effects = self._publish_call(job, now_ms)
        return self._done(job, [*effects, SetTimer(JobDeadlineTimer(job.job_id), call.deadline_ms)])

    def _check_command(self, event: PublishJob, now_ms: int) -> None:
        problems = []
        if event.job_id in self.jobs:
            problems.append("job_id already used")
        if not 1 <= event.replicas <= event.replicas_max <= limits.REPLICAS_MAX:
            problems.append("replicas")
        if event.prefer not in PREFERENCES:
            problems.append("prefer")
        if event.verify not in adaptive.VERIFY_POLICIES:
            problems.append(f"verify (one of {', '.join(adaptive.VERIFY_POLICIES)})")
        if not limits.BID_WINDOW_MS_MIN <= event.bid_window_ms <= limits.BID_WINDOW_MS_MAX:
            problems.append("bid_window_ms")
        if event.lease_ms and not (
            LEASE_MS_MIN <= event.lease_ms <= min(limits.LEASE_MS_MAX, event.deadline_ms - now_ms)
        ):
            problems.append("lease_ms (0 to derive it, else within the deadline)")
        open_jobs = sum(1 for job in self.jobs.values() if job.phase not in TERMINAL_PHASES)
        if open_jobs >= limits.PUBLISHER_JOBS_OPEN_MAX:
            problems.append("too many open jobs")
        if problems:
            raise LocalProtocolError(f"PublishJob: bad {', '.join(problems)}")

    def _forget_finished(self) -> None:
        finished = sorted(
            (job.created_ms, job.job_id)
            for job in self.jobs.values()
            if job.phase in TERMINAL_PHASES and not job.pay_held  # held pay keeps its job
        )
        excess = len(self.jobs) - limits.PUBLISHER_JOBS_KEPT_MAX + 1
        for _, job_id in finished[: max(0, excess)]:
            del self.jobs[job_id]

    def _on_cancel_job(self, event: object, now_ms: int) -> list[Effect]:
        """Stop an open job: open awards are withdrawn, signed; an ended job stays as it is."""
        assert isinstance(event, CancelJob)
        job = self.jobs.get(event.job_id)
        if job is None or job.phase in TERMINAL_PHASES:
            return []
        reason = "cancelled by its publisher"
        return self._done(job, self._fail(job, reason, now_ms, Cause.CANCELLED))

    def _on_job_restored(self, event: object, now_ms: int) -> list[Effect]:
        """Resume a job from ``SaveJob`` bytes after a restart, or cancel it if it is too late.

        A PAID job asks again for each of its payments (when the engine keeps a ledger): the job
        state is saved before its pays are committed (ADR 0019), so a crash between the two
        leaves pays only the job knows of; the payments component skips every one its chain
        already holds.
        """
        assert isinstance(event, JobRestored)
        replay_pays = self._engine.ledger is not None
        job = decode_job(event.state)
        self.jobs[job.job_id] = job
        if job.phase in TERMINAL_PHASES:
            held = self.escrow.restore(job, now_ms)
            if held:  # the batch may have ended while we were down: end it if none is open
                idle_at_ms = now_ms + self._config.adaptive.batch_idle_ms
                held.append(SetTimer(BatchIdleTimer(), idle_at_ms))
            if job.phase is Phase.PAID and replay_pays:
                return [
                    *held,
                    *(
                        PayWorker(job.job_id, slot.worker, slot.paid_mc)
                        for slot in job.live()
                        if slot.verdict == "match"
                        and slot.paid_mc > 0
                        and job.paid_now(slot.worker)
                    ),
                ]
            return held  # kept for queries, and for the pay it holds
        if job.call.deadline_ms <= now_ms:
            return self._done(
                job,
                self._fail(
                    job, "deadline passed while the publisher was down", now_ms, Cause.DEADLINE
                ),
            )
        effects: list[Effect] = [SetTimer(JobDeadlineTimer(job.job_id), job.call.deadline_ms)]
        if job.phase is Phase.BIDDING:
            effects.append(SetTimer(BidsTimer(job.job_id), job.call.bid_deadline_ms))
            return effects
        job.ranked = self._rank(job)
        floor_ms = now_ms + self._config.restart_grace_ms
        for slot in job.live():
            if slot.state in (SlotState.AWARDED, SlotState.ACCEPTED):
                effects.append(self._send_award(job, slot, now_ms))  # may have been lost with us
            elif slot.state is SlotState.REVEALING:
                effects.append(
                    self._send(
                        slot.worker,
                        PROTOCOL_RESULT,
                        RevealRequest(job.job_id, slot.award_no),
                        now_ms,
                    )
                )
            if slot.state in WAITING_STATES:
                slot.deadline_ms = max(slot.deadline_ms, floor_ms)
                effects.append(self._slot_timer(job, slot))
        return self._done(job, [*effects, *self._advance(job, now_ms)])

    def _on_release_held_pay(self, event: object, now_ms: int) -> list[Effect]:
        assert isinstance(event, ReleaseHeldPay)
        auditing = frozenset(
            PeerId(job.audited)
            for job in self.jobs.values()
            if job.audited and job.phase not in TERMINAL_PHASES
        )
        effects, audits = self.escrow.end_batch(self._engine.rng, auditing, now_ms)
        for worker, job in audits:
            command = audit_command(job, worker, now_ms)
            try:
                effects += self._start_job(command, now_ms, (job.job_id, str(worker)))
            except LocalProtocolError:  # audited already, or too many open jobs: pay it
                effects += self.escrow.release(worker, now_ms, cause="audit-unavailable")
            else:
                job.recheck_job = command.job_id
                effects += self._save(job)
        return [*effects, *self._recheck(now_ms)]

    def _recheck(self, now_ms: int) -> list[Effect]:
        """Run again, under always-2 on two other hosts, each solo result whose host was just
        caught (its pay forfeited): nobody checked it, and the developer should learn whether
        to keep it. The outcome lands in the job's result (``rechecked``)."""
        effects: list[Effect] = []
        unchecked, self.escrow.unchecked = self.escrow.unchecked, []
        for worker, job_id in unchecked:
            job = self.jobs.get(job_id)
            if job is None or job.recheck_job:
                continue  # re-run or audited already
            command = audit_command(job, worker, now_ms)
            try:
                effects += self._start_job(command, now_ms, (job.job_id, str(worker)))
            except LocalProtocolError as exc:  # too many open jobs: flagged, not re-run
                effects.append(
                    Log("warning", "recheck-skipped", (("job", job_id.hex()), ("why", str(exc))))
                )
                continue
            job.recheck_job = command.job_id
            effects += self._save(job)
        return effects

    def _batch_open(self) -> bool:
        """Whether an adaptive job of ours, or an audit, is still open."""
        return any(
            job.phase not in TERMINAL_PHASES
            and (job.verify == adaptive.VERIFY_ADAPTIVE or job.audit_of)
            for job in self.jobs.values()
        )

    def _batch_idle_after(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """``job`` ended: if it was the batch's last open one and pay is held, the batch ends
        after ``batch_idle_ms`` without another (the daemon has no other sign that the
        developer's run of jobs is over; ``ReleaseHeldPay`` ends it at once)."""
        adaptive_job = job.verify == adaptive.VERIFY_ADAPTIVE or job.audit_of
        if not adaptive_job or not self.escrow.held or self._batch_open():
            return []
        return [SetTimer(BatchIdleTimer(), now_ms + self._config.adaptive.batch_idle_ms)]

    def on_timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        if isinstance(key, PayHoldTimer):
            return [*self.escrow.on_hold_timer(key.job_id, now_ms), *self._recheck(now_ms)]
        if isinstance(key, BatchIdleTimer):
            if self._batch_open():
                return []  # the next job to end sets it again
            return self._on_release_held_pay(ReleaseHeldPay(), now_ms)
        assert isinstance(key, BidsTimer | JobDeadlineTimer | SlotTimer), key
        job = self.jobs.get(key.job_id)
        if job is None or job.phase in TERMINAL_PHASES:
            return []
        if isinstance(key, BidsTimer):
            effects = self._close_bidding(job, now_ms) if job.phase is Phase.BIDDING else []
        elif isinstance(key, JobDeadlineTimer):
            effects = self._fail(job, _deadline_passed(job), now_ms, Cause.DEADLINE)
        else:
            effects = self._on_slot_timer(job, key.award_no, now_ms)
        return self._done(job, effects)

    def _on_slot_timer(self, job: PublisherJob, award_no: int, now_ms: int) -> list[Effect]:
        slot = next((s for s in job.slots if s.award_no == award_no), None)
        if slot is None or slot.state not in WAITING_STATES or now_ms < slot.deadline_ms:
            return []  # answered in time, or the deadline moved
        reason = "reveal-timeout" if slot.state is SlotState.REVEALING else "silent"
        self._engine.reputation.penalise(slot.worker, SILENT_PENALTY_POINTS)
        return [
            Penalise(slot.worker, reason, SILENT_PENALTY_POINTS),
            *self._drop(job, slot, reason, now_ms, notify=True),
            *self._advance(job, now_ms),
        ]

    def _on_peer_disconnected(self, event: object, now_ms: int) -> list[Effect]:
        """A replica that drops off mid-job gets a short grace, then its award moves on."""
        assert isinstance(event, PeerDisconnected)
        effects: list[Effect] = []
        grace_ms = now_ms + self._config.disconnect_grace_ms
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            if job.phase in TERMINAL_PHASES:
                continue
            for slot in job.live():
                if slot.worker == event.peer and slot.state in WAITING_STATES:
                    slot.deadline_ms = min(slot.deadline_ms, grace_ms)
                    effects.append(self._slot_timer(job, slot))
        return effects

    def _on_invitation_undelivered(self, event: object, now_ms: int) -> list[Effect]:
        """An invitee we could not reach counts as answered: the auction need not wait for it."""
        assert isinstance(event, InvitationUndelivered)
        effects: list[Effect] = []
        for job_id in sorted(self.jobs):
            job = self.jobs[job_id]
            if job.phase is Phase.BIDDING and event.peer in job.invited - set(job.replied):
                job.replied[event.peer] = UNREACHABLE
                effects += self._close_early(job, now_ms)
        return effects

    # Bidding

    def _publish_call(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """Invite hosts from the market view (ADR 0031); gossip only when the view is too thin."""
        call = job.call
        ttl_ms = _ttl_ms(call, now_ms)
        invitees = self._invitees(job, now_ms)
        job.invited = frozenset(invitees)
        job.open_call = len(invitees) < job.target
        job.replied = {}
        effects: list[Effect] = [SetTimer(BidsTimer(job.job_id), call.bid_deadline_ms)]
        if job.open_call:
            effects.append(
                Publish(TOPIC_JOBS, self._engine.seal(call, now_ms=now_ms, ttl_ms=ttl_ms))
            )
        for peer in invitees:
            data = self._engine.seal(Invitation(call), now_ms=now_ms, ttl_ms=ttl_ms)
            effects.append(Send(peer, PROTOCOL_INVITE, data))
        return effects

    def _invitees(self, job: PublisherJob, now_ms: int) -> list[PeerId]:
        if not self._config.directed_invitations:
            return []
        engine = self._engine
        excluded = _barred(job) | {engine.identity.peer_id}
        views = candidate_views(
            engine.market.snapshot(now_ms),
            job.call,
            excluded,
            engine.reputation,
            engine.peer_ips,
            (self._config.network_prefix_v4, self._config.network_prefix_v6),
        )
        count = invitees_wanted(job.target)
        # Hosts that said they were busy with this job's earlier rounds go last: the best-ranked
        # hosts are the first every other job fills, and inviting them again round after round
        # starved the job while hosts further down the ranking were free (ADR 0034, third
        # amendment). They stay when too few others are left.
        busy = {peer for peer, (reason, _) in job.declines.items() if reason == "busy"}
        busy |= {slot.worker for slot in job.slots if slot.verdict == BUSY_DECLINE_VERDICT}
        free = [view for view in views if view.worker not in busy]
        if len(free) >= count:
            views = free
        max_price = job.call.max_price_mc_per_tfuel
        return sample(views, count, job.prefer, max_price, job.seed, engine.rng)

    def _answered(self, job: PublisherJob, peer: PeerId) -> None:
        """Refuse an answer to an invitation we did not send (the call was not gossiped)."""
        if not job.open_call and peer not in job.invited:
            raise RemoteProtocolError("an answer to a call it was not sent", reason="uninvited")

    def _close_early(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """Close the auction as soon as every invitee has answered (ADR 0031).

        Not while the bids cannot fill the places and some invitee declined for a reason that
        clears by itself (busy): then the window runs on, so that it can still bid.
        """
        if job.open_call or job.phase is not Phase.BIDDING:
            return []
        if not job.invited <= set(job.replied):
            return []
        bidders = sum(1 for reason in job.replied.values() if not reason)
        waiting = any(
            DECLINE_CAUSES.get(reason) in TRANSIENT_CAUSES for reason in job.replied.values()
        )
        short = bidders < job.target - len(job.live())
        if short and waiting:
            return []
        if short and UNREACHABLE in job.replied.values():
            # Hosts we could not reach (a node just started, a dial that failed) may still reach
            # us: gossip the call and let the window run, instead of burning the job's rounds
            # in milliseconds on invitations that cannot arrive.
            job.open_call = True
            return [
                Publish(
                    TOPIC_JOBS,
                    self._engine.seal(job.call, now_ms=now_ms, ttl_ms=_ttl_ms(job.call, now_ms)),
                )
            ]
        effects = [CancelTimer(BidsTimer(job.job_id)), *self._close_bidding(job, now_ms)]
        return self._done(job, effects)

    def _on_bid(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        bid = envelope.body
        assert isinstance(bid, Bid)
        bid.check()
        worker = envelope.peer_id
        require_from_author(worker, peer)
        job = self.jobs.get(JobId(bid.job_id))
        if job is None or not _open_for_bids(job, bid.call_round, now_ms):
            # A bid for a finished job, or one that missed the deadline: honest network delay.
            return [Log("debug", "bid-late", (("job", bid.job_id.hex()), ("peer", str(worker))))]
        if bid.price_mc_per_tfuel > job.call.max_price_mc_per_tfuel:
            raise RemoteProtocolError("bid above the max price", reason="over-price")
        if worker in job.bids or worker in _barred(job):
            raise RemoteProtocolError("a second bid for one job", reason="duplicate-bid")
        if len(job.bids) >= limits.BIDS_PER_AUCTION_MAX:
            raise RemoteProtocolError("auction full", reason="busy")
        if worker == self._engine.identity.peer_id:
            return []
        self._answered(job, worker)
        ip = self._engine.peer_ips.get(worker)
        record = self._engine.reputation.get(worker)
        view = bid_view(bid, worker, record, ip, self._config, now_ms)
        job.bids[worker] = (view, bytes(envelope.author))
        job.replied[worker] = ""
        return self._close_early(job, now_ms)  # saved when the auction closes, not per bid

    def _on_decline(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        """A host says why it will not bid (ADR 0023): kept to tell the developer the cause."""
        decline = envelope.body
        assert isinstance(decline, BidDecline)
        decline.check()
        host = envelope.peer_id
        require_from_author(host, peer)
        job = self.jobs.get(JobId(decline.job_id))
        if job is None or job.phase in TERMINAL_PHASES or decline.call_round != job.call.call_round:
            return []  # late, or about another round: honest delay
        self._answered(job, host)
        if host not in job.declines and len(job.declines) >= limits.BIDS_PER_AUCTION_MAX:
            return []  # bounded like the bids; the causes of the first ones are enough
        job.declines[host] = (decline.reason, decline.price_mc_per_tfuel)
        job.replied.setdefault(host, decline.reason)
        return self._close_early(job, now_ms) if job.phase is Phase.BIDDING else []

    def _rank(self, job: PublisherJob) -> list[BidView]:
        views = [view for _, (view, _key) in sorted(job.bids.items())]
        return rank(views, job.prefer, job.call.max_price_mc_per_tfuel, job.seed)

    def _close_bidding(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """The bid deadline: choose winners by the rule of ADR 0006, then award them."""
        taken = frozenset(slot.worker for slot in job.slots)
        views = [view for worker, (view, _) in sorted(job.bids.items()) if worker not in taken]
        needed = max(1, job.target - len(job.live()))
        selection = choose_winners(
            views,
            needed,
            job.prefer,
            job.call.max_price_mc_per_tfuel,
            job.seed,
            newcomers_max(job.target),
            self._asks(job, now_ms),
        )
        job.ranked = self._rank(job)
        job.move(Phase.RUNNING)
        if not job.slots and selection.winners:
            job.clearing_price_mc_per_tfuel = selection.clearing_price_mc_per_tfuel
            self._decide_verification(job, selection.winners[0])
        elif selection.winners:  # a later round: its winners are paid at least their own bid
            job.clearing_price_mc_per_tfuel = max(
                job.clearing_price_mc_per_tfuel, selection.clearing_price_mc_per_tfuel
            )
        return self._advance(job, now_ms)

    def _asks(self, job: PublisherJob, now_ms: int) -> list[tuple[PeerId, int]]:
        """What the hosts of the market view that could take the job ask (a thin market's
        price, ADR 0031)."""
        me = self._engine.identity.peer_id
        return [
            (entry.peer_id, entry.ad.price_mc_per_tfuel)
            for entry in self._engine.market.snapshot(now_ms)
            if entry.peer_id != me and can_take(entry, job.call)
        ]

    def _decide_verification(self, job: PublisherJob, best: BidView) -> None:
        """Adaptive verification (ADR 0034): a trusted best winner may run the job alone."""
        streak = self._engine.reputation.get(best.worker).valid_streak
        rng = self._engine.rng
        decision = adaptive.decide(job.verify, streak, self._config.adaptive, rng)
        job.verified_by, job.error_bound_ppm = decision.verified_by, decision.error_bound_ppm
        if decision.solo:
            job.replicas = job.target = 1

    def _trusted(self, bid: BidView) -> bool:
        streak = self._engine.reputation.get(bid.worker).valid_streak
        return streak >= self._config.adaptive.trust_streak_min

    # Awarding

    def _advance(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """Move the job as far as its slots allow: award, request reveals, judge."""
        if not _awarding(job):
            return []
        effects = self._fill_slots(job, now_ms)
        if not _awarding(job):  # failed, or went back to bidding for more candidates
            return effects
        live = job.live()
        if len(live) < job.target:
            return effects
        if all(
            s.state in (SlotState.COMMITTED, SlotState.REVEALING, SlotState.REVEALED) for s in live
        ):
            job.move(Phase.VERIFYING)
            opened = False
            for slot in live:
                if slot.state is not SlotState.COMMITTED:
                    continue
                if slot.early_reveal is None:
                    effects += self._request_reveal(job, slot, now_ms)
                    continue
                envelope, reveal = slot.early_reveal
                slot.early_reveal = None
                slot.move(SlotState.REVEALING)
                effects += self._open_reveal(job, slot, envelope, reveal, now_ms)
                opened = True
            if opened:  # a reveal that broke its commitment dropped its slot: award again
                return [*effects, *self._advance(job, now_ms)]
        if all(s.state is SlotState.REVEALED for s in live):
            effects += self._judge(job, now_ms)
        return effects

    def _fill_slots(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        needed = job.target - len(job.live())
        if needed <= 0:
            return []
        if len(job.slots) + needed > AWARDS_PER_REPLICA_MAX * job.replicas_max:
            return self._fail(job, _awards_failed(job), now_ms, Cause.AWARDS_FAILED)
        chosen = [slot.bid for slot in job.live()]
        excluded = _barred(job)
        fresh = pick(job.ranked, needed, chosen, excluded, newcomers_max(job.target))
        if job.verified_by == adaptive.SOLO and not all(self._trusted(bid) for bid in fresh):
            # The trusted host dropped out: its stand-in has not earned a solo run (ADR 0034).
            job.verified_by = adaptive.REPLICATED
            job.replicas = job.target = min(2, job.replicas_max)
            return self._fill_slots(job, now_ms)
        job.move(Phase.RUNNING)
        if len(fresh) < needed:
            found = self._diagnose(job, now_ms)
            final = found is not None and found.cause not in TRANSIENT_CAUSES
            if found is not None and final and self._all_answered(job, now_ms):
                return self._fail(job, found.message, now_ms, found.cause)  # no award in vain
            if found is not None:  # said at once; the next round may still find hosts
                job.detail, job.cause = found.message, found.cause
        effects = [effect for bid in fresh for effect in self._award(job, bid, now_ms)]
        if len(fresh) == needed:
            job.cause = ""  # enough hosts after all
            return effects
        return effects + self._new_round(job, now_ms)

    def _diagnose(self, job: PublisherJob, now_ms: int) -> CouldNotRun | None:
        """Why the candidates ran out, from the bids, the declines and the market (ADR 0023)."""
        barred = _barred(job)
        bidders = [view for w, (view, _) in sorted(job.bids.items()) if w not in barred]
        bidders += [slot.bid for slot in job.live()]
        bidder_ids = {view.worker for view in bidders}
        if len(bidder_ids) >= job.target:
            groups = [(view.network_group, view.operator) for view in bidders]
            return not_diverse(groups, job.target)
        declines = {
            str(peer): entry
            for peer, entry in sorted(job.declines.items())
            if peer not in bidder_ids and peer not in barred
        }
        call = job.call
        found = from_declines(declines, call.runtime, call.max_price_mc_per_tfuel)
        if found is None:
            found = from_market(self._offers(now_ms), call.runtime, call.max_price_mc_per_tfuel)
        if found is not None and bidder_ids:
            message = f"only {len(bidder_ids)} of {job.target} replicas found: {found.message}"
            return CouldNotRun(found.cause, message)
        return found

    def _offers(self, now_ms: int) -> list[tuple[tuple[str, ...], int]]:
        me = self._engine.identity.peer_id
        return [
            (entry.ad.runtimes, entry.ad.price_mc_per_tfuel)
            for entry in self._engine.market.snapshot(now_ms)
            if entry.peer_id != me
        ]

    def _all_answered(self, job: PublisherJob, now_ms: int) -> bool:
        """Has every host in our market view bid on or declined this job? Then no later round
        can find another: a cause found now is final."""
        me = self._engine.identity.peer_id
        answered = set(job.bids) | set(job.declines) | {s.worker for s in job.slots}
        hosts = {e.peer_id for e in self._engine.market.snapshot(now_ms) if e.peer_id != me}
        return hosts <= answered

    def _new_round(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """Candidates ran out: call for bids again, unless rounds or time have run out."""
        call = job.call
        # Busy hosts do not bid, and a host frees up only when its job ends: later rounds wait
        # longer (the window doubles, up to a cap) so that they catch hosts as they free up.
        window_ms = min(job.bid_window_ms << (call.call_round + 1), limits.BID_WINDOW_MS_ROUND_MAX)
        bid_deadline_ms = now_ms + max(job.bid_window_ms, window_ms)
        if call.call_round + 1 >= limits.CALL_ROUNDS_MAX or bid_deadline_ms >= call.deadline_ms:
            found = self._diagnose(job, now_ms) or CouldNotRun(
                Cause.NO_HOSTS, "no host answered the call for bids: check `hearth market`"
            )
            return self._fail(job, found.message, now_ms, found.cause)
        job.call = CallForBids(
            **{
                **_fields(call),
                "call_round": call.call_round + 1,
                "bid_deadline_ms": bid_deadline_ms,
            }
        )
        barred = _barred(job)
        job.bids = {w: entry for w, entry in job.bids.items() if w in barred}
        job.move(Phase.BIDDING)
        return self._publish_call(job, now_ms)

    def _award(self, job: PublisherJob, bid: BidView, now_ms: int) -> tuple[Effect, Effect]:
        _, worker_key = job.bids[bid.worker]
        slot = Slot(
            award_no=len(job.slots),
            bid=bid,
            worker_key=worker_key,
            # A later candidate may have bid above the clearing price: never pay below a bid.
            price_mc_per_tfuel=max(job.clearing_price_mc_per_tfuel, bid.price_mc_per_tfuel),
            awarded_ms=now_ms,
            deadline_ms=now_ms + self._config.award_reply_timeout_ms,
        )
        job.slots.append(slot)
        if job.verify == adaptive.VERIFY_ADAPTIVE and self._trusted(bid):
            job.trusted_at_award = (*job.trusted_at_award, bid.worker)
        return self._send_award(job, slot, now_ms), self._slot_timer(job, slot)

    def _send_award(self, job: PublisherJob, slot: Slot, now_ms: int) -> Send:
        award = Award(
            call=job.call,
            winner=slot.worker_key,
            award_no=slot.award_no,
            price_mc_per_tfuel=slot.price_mc_per_tfuel,
            lease_ms=self._lease_ms(job, slot),
            module=job.inline[0],
            input=job.inline[1],
        )
        return self._send(slot.worker, PROTOCOL_AWARD, award, now_ms)

    def _lease_ms(self, job: PublisherJob, slot: Slot) -> int:
        """The set lease, or one derived from the job at our own fuel rate (protocol.lease)."""
        time_left_ms = job.call.deadline_ms - slot.awarded_ms
        fuel_per_s = self._engine.config.profile.fuel_per_s
        return lease_ms(job.lease_ms, job.call.fuel_max, fuel_per_s, time_left_ms)

    def _slot_timer(self, job: PublisherJob, slot: Slot) -> SetTimer:
        return SetTimer(SlotTimer(job.job_id, slot.award_no), slot.deadline_ms)

    def _send(self, peer: PeerId, protocol: str, body: object, now_ms: int) -> Send:
        data = self._engine.seal(body, now_ms=now_ms, ttl_ms=self._config.message_ttl_ms)
        return Send(peer, protocol, data)

    def _drop(
        self, job: PublisherJob, slot: Slot, reason: str, now_ms: int, *, notify: bool
    ) -> list[Effect]:
        slot.move(SlotState.DROPPED)
        slot.verdict = reason
        slot.output = b""  # its evidence is in the RecordMismatch effect; the state stays small
        slot.stderr = b""
        effects: list[Effect] = [
            CancelTimer(SlotTimer(job.job_id, slot.award_no)),
            Log(
                "info",
                "replica-dropped",
                (("job", job.job_id.hex()), ("reason", reason), ("worker", str(slot.worker))),
            ),
        ]
        if notify:  # a worker that revives must not keep working for nothing
            effects.append(
                self._send(
                    slot.worker, PROTOCOL_AWARD, Cancel(job.job_id, slot.award_no, reason), now_ms
                )
            )
        return effects

    # Replies, commits, reveals

    def _slot_for(
        self, envelope: Envelope, peer: PeerId, job_id: bytes, award_no: int
    ) -> tuple[PublisherJob, Slot] | None:
        require_from_author(envelope.peer_id, peer)
        job = self.jobs.get(JobId(job_id))
        if job is None or job.phase in TERMINAL_PHASES:
            return None  # a late message about a finished job: nothing to do, nothing to pay
        slot = job.slot(envelope.peer_id, award_no)
        if slot is None:
            raise RemoteProtocolError("no such award to this worker", reason="wrong-award")
        return job, slot

    def _on_award_reply(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        reply = envelope.body
        assert isinstance(reply, AwardReply)
        reply.check()
        found = self._slot_for(envelope, peer, reply.job_id, reply.award_no)
        if found is None:
            return []
        job, slot = found
        if reply.accept:
            if slot.state is SlotState.AWARDED:
                slot.move(SlotState.ACCEPTED)
                slot.deadline_ms = min(
                    slot.awarded_ms + self._lease_ms(job, slot), job.call.deadline_ms
                )
                return self._done(job, [self._slot_timer(job, slot)])
            return []  # a repeated accept (after a re-sent award)
        if slot.state not in (SlotState.AWARDED, SlotState.ACCEPTED, SlotState.COMMITTED):
            return []
        effects = self._drop(job, slot, f"declined:{reply.reason}"[:64], now_ms, notify=False)
        if slot.verdict == BUSY_DECLINE_VERDICT:
            # The busy host's bid is spent; it may bid again in a later round once it is free.
            job.bids.pop(slot.worker, None)
            job.ranked = [bid for bid in job.ranked if bid.worker != slot.worker]
        return self._done(job, [*effects, *self._advance(job, now_ms)])

    def _on_commit(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        commit = envelope.body
        assert isinstance(commit, ResultCommit)
        commit.check()
        found = self._slot_for(envelope, peer, commit.job_id, commit.award_no)
        if found is None:
            return self._note_again(envelope.peer_id, JobId(commit.job_id), now_ms)
        job, slot = found
        if slot.state not in (SlotState.AWARDED, SlotState.ACCEPTED):
            if slot.commitment and slot.commitment != commit.commitment:
                raise RemoteProtocolError("a second, different commitment", reason="recommit")
            return []  # the same commitment again, after a re-sent award
        slot.move(SlotState.COMMITTED)
        slot.commitment = commit.commitment
        slot.commit_envelope = encode(EnvelopeWire(envelope.signed_bytes, envelope.signature))
        effects: list[Effect] = [CancelTimer(SlotTimer(job.job_id, slot.award_no))]
        return self._done(job, [*effects, *self._advance(job, now_ms)])

    def _note_again(self, worker: PeerId, job_id: JobId, now_ms: int) -> list[Effect]:
        """A worker that re-sends its commit or reveal for a settled job has not heard that its
        pay is held: the note may have been lost (or we restarted), so it goes again."""
        job = self.jobs.get(job_id)
        if job is None or worker not in job.pay_held:
            return []
        return [self.escrow.note(job, worker, now_ms)]

    def _request_reveal(self, job: PublisherJob, slot: Slot, now_ms: int) -> list[Effect]:
        slot.move(SlotState.REVEALING)
        slot.deadline_ms = now_ms + self._config.reveal_timeout_ms
        request = RevealRequest(job.job_id, slot.award_no)
        return [
            self._send(slot.worker, PROTOCOL_RESULT, request, now_ms),
            self._slot_timer(job, slot),
        ]

    def _on_reveal(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        reveal = envelope.body
        assert isinstance(reveal, ResultReveal)
        reveal.check()
        found = self._slot_for(envelope, peer, reveal.job_id, reveal.award_no)
        if found is None:
            return self._note_again(envelope.peer_id, JobId(reveal.job_id), now_ms)
        job, slot = found
        if slot.state is SlotState.COMMITTED and slot.early_reveal is None:
            # Sent with the commit (ADR 0031, Measurements): opened only once every live
            # replica has committed, as if it had been asked for then.
            slot.early_reveal = (envelope, reveal)
            return []
        if slot.state is not SlotState.REVEALING:
            return []  # a repeat, or before the commit: a reveal counts only once
        effects = self._open_reveal(job, slot, envelope, reveal, now_ms)
        return self._done(job, [*effects, *self._advance(job, now_ms)])

    def _open_reveal(
        self,
        job: PublisherJob,
        slot: Slot,
        envelope: Envelope,
        reveal: ResultReveal,
        now_ms: int,
    ) -> list[Effect]:
        """Check a reveal against its slot's commitment; the job advances when it is opened."""
        slot.salt = reveal.salt
        slot.digest = reveal.digest
        slot.error_kind = reveal.error_kind
        slot.output_hash = reveal.output_hash
        slot.output_bytes = reveal.output_bytes
        slot.output = reveal.output
        slot.fuel_used = reveal.fuel_used
        slot.exit_code = reveal.exit_code
        slot.stderr = reveal.stderr
        problem = reveal_problem(reveal, slot.commitment, slot.worker_key)
        if not problem and reveal.fuel_used > job.call.fuel_max:
            problem = "fuel-over-max"
        effects: list[Effect] = [CancelTimer(SlotTimer(job.job_id, slot.award_no))]
        if problem:
            evidence = encode(EnvelopeWire(envelope.signed_bytes, envelope.signature))
            send = functools.partial(self._send, now_ms=now_ms)
            effects += reject_result(job, slot, problem, evidence, self._engine.reputation, send)
            effects += self.escrow.forfeit(slot.worker, now_ms)
            effects += self._recheck(now_ms)
            effects += self._drop(job, slot, problem, now_ms, notify=False)
        else:
            slot.move(SlotState.REVEALED)
        return effects

    # Judging and paying

    def _judge(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        live = job.live()
        judgement = judge([s.digest for s in live], job.replicas, job.replicas_max)
        if judgement.verdict is Verdict.ACCEPTED:
            send = functools.partial(self._send, now_ms=now_ms)
            # Passed a spot check: trusted when awarded, and still trusted now.
            trusted = frozenset(
                s.worker for s in live if s.worker in job.trusted_at_award and self._trusted(s.bid)
            )
            effects = settle(job, judgement.digest, self._engine.reputation, send)
            if job.verify == adaptive.VERIFY_ADAPTIVE or job.audit_of:
                # An audit's pay is held too: paid at once, it would pay a host on probation
                # (or on proof) around the escrow of the batch it audits.
                effects = self.escrow.on_settled(job, effects, trusted, now_ms)
            for slot in live:
                if slot.verdict == "mismatch":  # caught: its held pay is forfeited
                    effects += self.escrow.forfeit(slot.worker, now_ms)
            if job.audit_of:
                effects += self._audited(job, now_ms)
            effects += self._recheck(now_ms)
            effects += self._batch_idle_after(job, now_ms)
            return [*effects, CancelTimer(JobDeadlineTimer(job.job_id))]
        if judgement.verdict is Verdict.NEED_MORE:
            job.target = len(live) + judgement.more
            job.detail = f"results disagree: {job.target} replicas"
            return self._advance(job, now_ms)
        assert judgement.verdict is Verdict.UNVERIFIABLE, judgement
        found = disagreement(
            [(str(s.worker), s.output_hash.hex(), s.error_kind, s.fuel_used) for s in live]
        )
        return self._fail(job, found.message, now_ms, found.cause)

    def _audited(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """An audit ended: its host's held pay is released, or forfeited if it was caught."""
        caught, effects = self.escrow.on_audited(job, now_ms)
        effects += self._record_recheck(job)
        if caught:
            worker = PeerId(job.audited)
            self._engine.reputation.on_result(worker, valid=False)
            effects.append(Penalise(worker, "audit-mismatch", MISMATCH_PENALTY_POINTS))
        return effects

    def _record_recheck(self, audit: PublisherJob) -> list[Effect]:
        """Write in the audited solo job what its re-run found, for the developer."""
        original = self.jobs.get(JobId(audit.audit_of))
        slot = None if original is None else original.match_slot(PeerId(audit.audited))
        if original is None or slot is None or original.recheck_job != audit.job_id:
            return []
        accepted = [s for s in audit.live() if s.verdict == "match"]
        if audit.phase is not Phase.PAID or not accepted:
            original.recheck_result = "failed"
        elif result_of(accepted[0]) == result_of(slot):
            original.recheck_result = "same"
        else:
            original.recheck_result = "different"
        return self._save(original)

    def _fail(self, job: PublisherJob, reason: str, now_ms: int, cause: Cause) -> list[Effect]:
        """End the job unpaid; evidence stays in its slots. Open awards are cancelled, signed."""
        job.move(Phase.FAILED)
        job.detail = reason
        job.cause = cause.value
        effects: list[Effect] = [CancelTimer(JobDeadlineTimer(job.job_id))]
        if job.audit_of:
            effects += self._audited(job, now_ms)
        for slot in job.live():
            if slot.state is not SlotState.REVEALED:
                effects += self._drop(job, slot, "cancelled", now_ms, notify=True)
        return [*effects, *self._batch_idle_after(job, now_ms)]

    def _done(self, job: PublisherJob, effects: list[Effect]) -> list[Effect]:
        """Close a handler that changed ``job``: report progress and save the state.

        Payments go after ``SaveJob``: once the job is durably PAID, no restart can pay it again
        (a crash between the two loses a payment the node must replay, never doubles one).
        """
        payments = [e for e in effects if isinstance(e, PayWorker)]
        rest = [e for e in effects if not isinstance(e, PayWorker)]
        return [*rest, *self._finish(job), *payments]

    def _finish(self, job: PublisherJob) -> list[Effect]:
        live = job.live()
        results = sum(
            1
            for s in live
            if s.state in (SlotState.COMMITTED, SlotState.REVEALING, SlotState.REVEALED)
        )
        effects: list[Effect] = [
            JobProgress(job.job_id, job.phase.value, job.detail, results, job.target, job.cause)
        ]
        return [*effects, *self._save(job)]

    def _save(self, job: PublisherJob) -> list[Effect]:
        """``SaveJob`` when the job's decisions changed since it was last saved."""
        mark = _decisions(job)
        if not self._config.persist_jobs or mark == job.saved_mark:
            return []
        job.saved_mark = mark
        return [SaveJob(job.job_id, encode_job(job))]


def _decisions(job: PublisherJob) -> tuple[object, ...]:
    """What the publisher decided about ``job``: its phase and round, its awards and what each
    came to, the price and the result. The state is saved when this changes, once per decision
    (ADR 0031); what happens between decisions (an accept, a commit, a reveal) is re-derived after
    a restart: the restored job re-sends its awards and reveal requests, and the workers answer
    again from their tasks.
    """
    slots = tuple((s.award_no, s.state is SlotState.DROPPED, s.verdict) for s in job.slots)
    escrow = (
        job.pay_held,
        job.pay_forfeited,
        job.pay_on_proof,
        job.recheck_job,
        job.recheck_result,
    )
    return (
        job.phase,
        job.call.call_round,
        job.target,
        job.replicas,
        slots,
        job.accepted_digest,
        escrow,
    )


def _ttl_ms(call: CallForBids, now_ms: int) -> int:
    """A call's envelope lives until its bid deadline."""
    return min(limits.ENVELOPE_TTL_MS_MAX, max(1, call.bid_deadline_ms - now_ms))


def _fields(call: CallForBids) -> dict[str, Any]:
    return {name: getattr(call, name) for name in CallForBids.__dataclass_fields__}


def _inline(event: PublishJob) -> tuple[bytes, bytes]:
    """The blobs to send inside the awards: both, checked against their hashes, or neither."""
    module, data = event.module_inline, event.input_inline
    fits = len(module) + len(data) <= limits.AWARD_INLINE_BYTES_MAX
    exact = (len(module), len(data)) == (event.module_bytes, event.input_bytes)
    if module and fits and exact:
        matches = hashlib.sha256(module).digest() == event.module_hash
        if matches and hashlib.sha256(data).digest() == event.input_hash:
            return module, data
    return b"", b""


def _barred(job: PublisherJob) -> frozenset[PeerId]:
    """Workers that may not bid on ``job`` again: each holds or lost an award for it.

    A worker that declined only because it was busy is not barred: it may bid in a later round,
    once it is free, as any other host may.
    """
    barred = {slot.worker for slot in job.slots if slot.verdict != BUSY_DECLINE_VERDICT}
    if job.audited:  # an audit never runs on the host it checks
        barred.add(PeerId(job.audited))
    return frozenset(barred)


def _open_for_bids(job: PublisherJob, call_round: int, now_ms: int) -> bool:
    return (
        job.phase is Phase.BIDDING
        and call_round == job.call.call_round
        and now_ms <= job.call.bid_deadline_ms
    )


def _awarding(job: PublisherJob) -> bool:
    return job.phase in (Phase.RUNNING, Phase.VERIFYING)


def _deadline_passed(job: PublisherJob) -> str:
    """The job's deadline came first: say what its replicas were doing, and the fix."""
    states = sorted({slot.verdict or slot.state.value for slot in job.slots})
    doing = f" (replicas: {', '.join(states[:6])})" if states else ""
    return f"deadline: no verified result in time{doing}: raise --deadline-s or --max-price"


def _awards_failed(job: PublisherJob) -> str:
    """Too many winners dropped out: say what they answered."""
    verdicts = sorted({slot.verdict for slot in job.slots if slot.state is SlotState.DROPPED})
    return f"too many awards failed ({', '.join(verdicts[:6])}): see `hearth job show`"
