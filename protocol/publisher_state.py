"""The publisher's record of each job it runs: bids, replica slots, persistence, summaries.

I/O: none. ``encode_job`` / ``decode_job`` turn a job into the canonical bytes of ``SaveJob``
(type codes 90-92, never sent to a peer) so that a restarted publisher resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any, Final, TypeVar

from hearth.protocol import limits
from hearth.protocol.adaptive import SOLO, AdaptiveConfig
from hearth.protocol.auction import BidView, network_group
from hearth.protocol.codec import decode_as, encode, message
from hearth.protocol.envelope import Envelope
from hearth.protocol.errors import LocalProtocolError, RemoteProtocolError
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import PREFERENCES, Bid, CallForBids, JobId, ResultReveal
from hearth.protocol.reputation import PeerRecord
from hearth.protocol.verification import Judgement, Verdict, judge

# Outputs are kept only for revealed, undecided replicas (at most REPLICAS_MAX inline outputs),
# then only for the accepted result; bids and slots add little.
STATE_BYTES_MAX: Final = (limits.REPLICAS_MAX + 2) * (
    limits.OUTPUT_INLINE_BYTES_MAX + limits.JOB_STDERR_BYTES_MAX
) + (limits.BIDS_PER_AUCTION_MAX * 1024)


@dataclasses.dataclass(frozen=True)
class PublisherConfig:
    network_prefix_v4: int = 24  # a loopback testnet uses 32: every 127.0.0.x its own group
    network_prefix_v6: int = 48
    award_reply_timeout_ms: int = 5_000
    reveal_timeout_ms: int = 10_000
    disconnect_grace_ms: int = 2_000  # a replica that drops off gets this long to come back
    restart_grace_ms: int = 5_000  # after a restore, waiting replicas get at least this long
    message_ttl_ms: int = 60_000
    persist_jobs: bool = True  # emit SaveJob; a simulator may turn it off
    # N and c of jobs with verify="adaptive" (ADR 0034)
    adaptive: AdaptiveConfig = dataclasses.field(default_factory=AdaptiveConfig)
    # Invite hosts from the market view and close as soon as all answered (ADR 0031); False:
    # gossip every call and wait out the whole bid window (the fixed window of ADR 0006).
    directed_invitations: bool = True
    # The shell writes SaveJob behind, off its loop: the engine wraps what acts on a saved
    # decision in AwaitSaves (ADR 0031). The daemon sets it; the simulator saves in place.
    save_behind: bool = False


class Phase(enum.Enum):
    BIDDING = "bidding"
    RUNNING = "running"
    VERIFYING = "verifying"
    PAID = "paid"
    FAILED = "failed"


TERMINAL_PHASES: Final = frozenset({Phase.PAID, Phase.FAILED})


class SlotState(enum.Enum):
    AWARDED = "awarded"  # award sent, no reply yet
    ACCEPTED = "accepted"  # running on the worker; a commit is due within the lease
    COMMITTED = "committed"  # waiting for the other replicas to commit
    REVEALING = "revealing"  # reveal requested
    REVEALED = "revealed"  # opened and checked against its commitment
    DROPPED = "dropped"  # declined, silent, or its reveal broke its commitment


WAITING_STATES: Final = frozenset({SlotState.AWARDED, SlotState.ACCEPTED, SlotState.REVEALING})

_S, _P = SlotState, Phase
SLOT_TRANSITIONS: Final = {  # (state, next state) a slot may take; anything else is our bug
    (_S.AWARDED, _S.ACCEPTED),
    (_S.AWARDED, _S.COMMITTED),  # a commit implies the accept, which may have been lost
    (_S.ACCEPTED, _S.COMMITTED),
    (_S.COMMITTED, _S.REVEALING),
    (_S.REVEALING, _S.REVEALED),
    (_S.AWARDED, _S.DROPPED),  # declined or silent
    (_S.ACCEPTED, _S.DROPPED),  # late decline, silent past the lease, disconnected
    (_S.COMMITTED, _S.DROPPED),  # late decline, or cancelled when the job fails
    (_S.REVEALING, _S.DROPPED),  # no reveal in time, or a reveal that breaks its commitment
}
PHASE_TRANSITIONS: Final = {  # (phase, next phase) a job may take
    (_P.BIDDING, _P.RUNNING),  # bid deadline
    (_P.RUNNING, _P.RUNNING),
    (_P.RUNNING, _P.VERIFYING),  # every live replica committed
    (_P.VERIFYING, _P.VERIFYING),
    (_P.VERIFYING, _P.RUNNING),  # disagreement or a dropped replica: award more
    (_P.RUNNING, _P.BIDDING),  # candidates ran out: a fresh call for bids
    (_P.VERIFYING, _P.BIDDING),
    (_P.VERIFYING, _P.PAID),  # a quorum
    (_P.BIDDING, _P.FAILED),
    (_P.RUNNING, _P.FAILED),
    (_P.VERIFYING, _P.FAILED),
}


@dataclasses.dataclass(slots=True)
class Slot:
    """One award of the job to one worker, and what came of it."""

    award_no: int
    bid: BidView
    worker_key: bytes
    price_mc_per_tfuel: int
    awarded_ms: int
    state: SlotState = SlotState.AWARDED
    deadline_ms: int = 0
    commitment: bytes = b""
    commit_envelope: bytes = b""
    digest: bytes = b""
    salt: bytes = b""
    error_kind: str = ""
    output_hash: bytes = b""
    output_bytes: int = 0
    output: bytes = b""
    fuel_used: int = 0
    verdict: str = ""  # match | mismatch | a drop reason
    paid_mc: int = 0
    exit_code: int = 0
    stderr: bytes = b""
    # A reveal sent with the commit, before it was asked for (ADR 0031, Measurements): kept
    # unopened, in memory only, until every live replica has committed; a restored job asks again.
    early_reveal: tuple[Envelope, ResultReveal] | None = dataclasses.field(default=None, init=False)

    @property
    def worker(self) -> PeerId:
        return self.bid.worker

    def move(self, state: SlotState) -> None:
        assert (self.state, state) in SLOT_TRANSITIONS, (self.state, state)
        self.state = state


@dataclasses.dataclass(slots=True)
class PublisherJob:
    call: CallForBids  # the current round's call
    replicas: int  # agreeing results wanted (1 when adaptive verification trusts one worker)
    replicas_max: int
    prefer: str
    lease_ms: int
    bid_window_ms: int
    seed: bytes  # secret to the publisher: orders near-equal bids (ADR 0006)
    created_ms: int
    phase: Phase = Phase.BIDDING
    detail: str = ""
    cause: str = ""  # why it could not run (protocol.causes.Cause), "" otherwise
    target: int = 0  # results to collect now; raised on disagreement
    clearing_price_mc_per_tfuel: int = 0
    accepted_digest: bytes = b""
    verify: str = "always-2"  # the job's policy (protocol.adaptive)
    verified_by: str = ""  # replicated | spot-checked | solo, once the first winners are chosen
    error_bound_ppm: int = 0  # the policy's bound on accepted wrong results (ADR 0034)
    # Escrow of an adaptive job's pay (ADR 0034, amendment): the workers whose pay for this PAID
    # job is held, and those whose held pay was forfeited when they were caught; ``pay_by_ms``
    # is the latest date the held pay is released, told to each held worker.
    pay_by_ms: int = 0
    pay_held: tuple[PeerId, ...] = ()
    pay_forfeited: tuple[PeerId, ...] = ()
    # Workers on proof when their pay was held (caught before, no check passed since): their
    # pay is released only if they pass one, and forfeited at the batch's end or pay_by_ms.
    pay_on_proof: tuple[PeerId, ...] = ()
    # Workers already trusted (a streak of N with us) when they were awarded this job: only
    # they can pass a spot check with it, since only they could not tell it from a solo run.
    trusted_at_award: tuple[PeerId, ...] = ()
    # An audit (ADR 0034, amendment): this job re-runs ``audit_of``, a solo job whose pay is
    # held for ``audited``, on two other hosts before that pay is released at the batch's end.
    audit_of: bytes = b""
    audited: str = ""
    # A solo job whose host was caught later is run again under always-2 (or was audited): the
    # re-run's job id, and whether it gave the same result ("same", "different", "failed").
    recheck_job: bytes = b""
    recheck_result: str = ""
    bids: dict[PeerId, tuple[BidView, bytes]] = dataclasses.field(default_factory=dict)
    slots: list[Slot] = dataclasses.field(default_factory=list)
    ranked: list[BidView] = dataclasses.field(default_factory=list)  # derived, not saved
    # Hosts that said why they will not bid (BidDecline): peer -> (reason, their price). Not
    # saved: a restarted publisher learns them again from the next round.
    declines: dict[PeerId, tuple[str, int]] = dataclasses.field(default_factory=dict)
    # This round's invitees (ADR 0031), and whether its call was gossiped too, so that any host
    # may bid. Not saved: a restored job takes bids from anyone until its window ends.
    invited: frozenset[PeerId] = frozenset()
    open_call: bool = True
    replied: dict[PeerId, str] = dataclasses.field(default_factory=dict)  # decline reason, or ""
    # Small module and input sent inside the award (ADR 0031). Not saved: after a restart the
    # awards are re-sent without them and the workers fetch by hash.
    inline: tuple[bytes, bytes] = (b"", b"")
    saved_mark: tuple[object, ...] = ()  # the decisions last saved (publisher._decisions)

    @property
    def job_id(self) -> JobId:
        return JobId(self.call.job_id)

    def move(self, phase: Phase) -> None:
        assert (self.phase, phase) in PHASE_TRANSITIONS, (self.phase, phase)
        self.phase = phase

    def paid_now(self, worker: PeerId) -> bool:
        """Whether ``worker``'s pay for this job is due now: neither held nor forfeited."""
        return worker not in self.pay_held and worker not in self.pay_forfeited

    def match_slot(self, worker: PeerId) -> Slot | None:
        """The slot whose result ``worker`` was paid (or held) for, once the job is PAID."""
        for slot in self.slots:
            if slot.worker == worker and slot.verdict == "match" and slot.paid_mc > 0:
                return slot
        return None

    def live(self) -> list[Slot]:
        return [slot for slot in self.slots if slot.state is not SlotState.DROPPED]

    def slot(self, worker: PeerId, award_no: int) -> Slot | None:
        for slot in self.slots:
            if slot.worker == worker and slot.award_no == award_no:
                return slot
        return None


def bid_view(
    bid: Bid,
    worker: PeerId,
    record: PeerRecord,
    ip: str | None,
    config: PublisherConfig,
    now_ms: int = 0,
) -> BidView:
    """The bid with what we measured of its author, frozen at arrival for reproducibility."""
    group = (
        f"peer:{worker}"  # no address known: a group of its own
        if ip is None
        else network_group(ip, config.network_prefix_v4, config.network_prefix_v6)
    )
    return BidView(
        worker=worker,
        price_mc_per_tfuel=bid.price_mc_per_tfuel,
        rtt_ms=record.rtt_ms,
        reputation_score=record.score,
        results_valid=record.results_valid,
        energy_source=bid.energy_source,
        operator=bid.operator,
        network_group=group,
        wait_ms=min(max(0, bid.start_ms - now_ms), limits.JOB_DEADLINE_MS_MAX),
    )


# Persistence


@message(90, version=2)  # version 2: wait_ms (ADR 0031)
@dataclasses.dataclass(frozen=True)
class BidRecord:
    worker: str
    worker_key: bytes
    price_mc_per_tfuel: int
    rtt_ms: int
    reputation_score: int
    results_valid: int
    energy_source: str
    operator: str
    network_group: str
    wait_ms: int


@message(91, version=2)  # version 2: exit_code and stderr (ADR 0023)
@dataclasses.dataclass(frozen=True)
class SlotRecord:
    award_no: int
    bid: BidRecord
    price_mc_per_tfuel: int
    awarded_ms: int
    state: str
    deadline_ms: int
    commitment: bytes
    commit_envelope: bytes
    digest: bytes
    salt: bytes
    error_kind: str
    output_hash: bytes
    output_bytes: int
    output: bytes
    fuel_used: int
    verdict: str
    paid_mc: int
    exit_code: int
    stderr: bytes


# version 2: cause (ADR 0023); 3: verify policy (ADR 0034); 4: escrow (ADR 0034, amendment);
# 5: pay_on_proof, recheck (ADR 0034, second amendment)
@message(92, version=5)
@dataclasses.dataclass(frozen=True)
class JobRecord:
    call: CallForBids
    replicas: int
    replicas_max: int
    prefer: str
    lease_ms: int
    bid_window_ms: int
    seed: bytes
    created_ms: int
    phase: str
    detail: str
    cause: str
    target: int
    clearing_price_mc_per_tfuel: int
    accepted_digest: bytes
    bids: tuple[BidRecord, ...]
    slots: tuple[SlotRecord, ...]
    verify: str
    verified_by: str
    error_bound_ppm: int
    pay_by_ms: int
    pay_held: tuple[str, ...]
    pay_forfeited: tuple[str, ...]
    pay_on_proof: tuple[str, ...]
    trusted_at_award: tuple[str, ...]
    audit_of: bytes
    audited: str
    recheck_job: bytes
    recheck_result: str


def _bid_record(view: BidView, worker_key: bytes) -> BidRecord:
    return BidRecord(
        worker=view.worker,
        worker_key=worker_key,
        price_mc_per_tfuel=view.price_mc_per_tfuel,
        rtt_ms=view.rtt_ms,
        reputation_score=view.reputation_score,
        results_valid=view.results_valid,
        energy_source=view.energy_source,
        operator=view.operator,
        network_group=view.network_group,
        wait_ms=view.wait_ms,
    )


def _bid_view(record: BidRecord) -> BidView:
    return BidView(
        worker=PeerId(record.worker),
        price_mc_per_tfuel=record.price_mc_per_tfuel,
        rtt_ms=record.rtt_ms,
        reputation_score=record.reputation_score,
        results_valid=record.results_valid,
        energy_source=record.energy_source,
        operator=record.operator,
        network_group=record.network_group,
        wait_ms=record.wait_ms,
    )


T = TypeVar("T")


def _copy_fields(source: Any, target: type[T], **overrides: Any) -> T:
    """Build ``target`` from the same-named fields of ``source``, except ``overrides``."""
    fields = dataclasses.fields(target)  # type: ignore[arg-type]
    names = [f.name for f in fields if f.init and f.name not in overrides]
    return target(**{name: getattr(source, name) for name in names}, **overrides)


def assert_payment(job: PublisherJob) -> None:
    """Our invariants of a job's payment (a failure is our bug, never a peer's).

    Only the move to PAID pays; a PAID job's accepted digest is the one the quorum rule picks
    from its live results; only workers that returned that digest are paid, each once. Asserted
    where the job is settled, before its state is written and after it is read back.
    """
    paid = [slot for slot in job.slots if slot.paid_mc]
    if job.phase is not Phase.PAID:
        assert not paid and not job.accepted_digest, "only the move to PAID pays"
        return
    judgement = judge([s.digest for s in job.live()], job.replicas, job.replicas_max)
    assert judgement == Judgement(Verdict.ACCEPTED, job.accepted_digest), "accepted != quorum"
    assert all(
        s.state is SlotState.REVEALED and s.verdict == "match" and s.digest == judgement.digest
        for s in paid
    ), "a payment for a result that did not win the vote"
    workers = [slot.worker for slot in paid]
    assert len(set(workers)) == len(workers), "a worker paid twice for one job"
    escrowed = [*job.pay_held, *job.pay_forfeited]
    assert set(escrowed) <= set(workers), "escrow of a pay the job never decided"
    assert len(set(escrowed)) == len(escrowed), "a pay both held and forfeited"
    assert set(job.pay_on_proof) <= set(workers), "a pay on proof the job never decided"


def encode_job(job: PublisherJob) -> bytes:
    assert_payment(job)  # before the write
    slots = tuple(
        _copy_fields(s, SlotRecord, bid=_bid_record(s.bid, s.worker_key), state=s.state.value)
        for s in job.slots
    )
    record = JobRecord(
        call=job.call,
        replicas=job.replicas,
        replicas_max=job.replicas_max,
        prefer=job.prefer,
        lease_ms=job.lease_ms,
        bid_window_ms=job.bid_window_ms,
        seed=job.seed,
        created_ms=job.created_ms,
        phase=job.phase.value,
        detail=job.detail,
        cause=job.cause,
        target=job.target,
        clearing_price_mc_per_tfuel=job.clearing_price_mc_per_tfuel,
        accepted_digest=job.accepted_digest,
        bids=tuple(_bid_record(view, key) for _, (view, key) in sorted(job.bids.items())),
        slots=slots,
        verify=job.verify,
        verified_by=job.verified_by,
        error_bound_ppm=job.error_bound_ppm,
        pay_by_ms=job.pay_by_ms,
        pay_held=tuple(job.pay_held),
        pay_forfeited=tuple(job.pay_forfeited),
        pay_on_proof=tuple(job.pay_on_proof),
        trusted_at_award=tuple(job.trusted_at_award),
        audit_of=job.audit_of,
        audited=job.audited,
        recheck_job=job.recheck_job,
        recheck_result=job.recheck_result,
    )
    return encode(record)


def decode_job(state: bytes) -> PublisherJob:
    """Read back ``encode_job``'s bytes; our own storage, so damage is a LocalProtocolError."""
    try:
        record = decode_as(state, JobRecord, bytes_max=STATE_BYTES_MAX)
        phase = Phase(record.phase)
        slot_states = [SlotState(s.state) for s in record.slots]
    except (RemoteProtocolError, ValueError) as exc:
        raise LocalProtocolError(f"saved job state is unreadable: {exc}") from exc
    if record.prefer not in PREFERENCES:
        raise LocalProtocolError(f"saved job state has preference {record.prefer!r}")
    job = PublisherJob(
        call=record.call,
        replicas=record.replicas,
        replicas_max=record.replicas_max,
        prefer=record.prefer,
        lease_ms=record.lease_ms,
        bid_window_ms=record.bid_window_ms,
        seed=record.seed,
        created_ms=record.created_ms,
        phase=phase,
        detail=record.detail,
        cause=record.cause,
        target=record.target,
        clearing_price_mc_per_tfuel=record.clearing_price_mc_per_tfuel,
        accepted_digest=record.accepted_digest,
        verify=record.verify,
        verified_by=record.verified_by,
        error_bound_ppm=record.error_bound_ppm,
        pay_by_ms=record.pay_by_ms,
        pay_held=tuple(PeerId(w) for w in record.pay_held),
        pay_forfeited=tuple(PeerId(w) for w in record.pay_forfeited),
        pay_on_proof=tuple(PeerId(w) for w in record.pay_on_proof),
        trusted_at_award=tuple(PeerId(w) for w in record.trusted_at_award),
        audit_of=record.audit_of,
        audited=record.audited,
        recheck_job=record.recheck_job,
        recheck_result=record.recheck_result,
        bids={PeerId(b.worker): (_bid_view(b), b.worker_key) for b in record.bids},
    )
    for s, slot_state in zip(record.slots, slot_states, strict=True):
        job.slots.append(
            _copy_fields(
                s, Slot, bid=_bid_view(s.bid), worker_key=s.bid.worker_key, state=slot_state
            )
        )
    assert_payment(job)  # after the read: a state we wrote keeps our invariants
    return job


# Queries (for the API): plain values, no references into live state


@dataclasses.dataclass(frozen=True, slots=True)
class BidSummary:
    worker: PeerId
    price_mc_per_tfuel: int
    operator: str
    network_group: str
    energy_source: str
    rtt_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class ReplicaSummary:
    award_no: int
    worker: PeerId
    state: str
    verdict: str
    price_mc_per_tfuel: int
    result_digest: bytes
    output_hash: bytes
    error_kind: str
    fuel_used: int
    paid_mc: int
    exit_code: int


@dataclasses.dataclass(frozen=True, slots=True)
class JobSummary:
    job_id: JobId
    phase: str
    detail: str
    cause: str  # protocol.causes.Cause of a job that could not run, else ""
    created_ms: int
    deadline_ms: int
    call_round: int
    replicas: int
    replicas_max: int
    prefer: str
    max_price_mc_per_tfuel: int
    clearing_price_mc_per_tfuel: int
    bids: tuple[BidSummary, ...]
    replicas_detail: tuple[ReplicaSummary, ...]
    fuel_used: int  # agreed fuel of the accepted result, 0 until then
    credits_paid_mc: int
    result_digest: bytes
    output_hash: bytes
    error_kind: str
    exit_code: int  # of the accepted result (EXIT_CODE_NONE if it never exited)
    stderr: bytes  # the accepted result's stderr tail, agreed by the replicas
    output: bytes  # inline output of the accepted result; empty if fetched as a blob
    verify: str = "always-2"  # the policy asked for (protocol.adaptive)
    verified_by: str = ""  # replicated | spot-checked | solo
    error_bound_ppm: int = 0  # long-run share of accepted results that may be wrong (ADR 0034)
    pay_held_mc: int = 0  # decided but held in escrow until the hosts pass a spot check
    # A host of this job was caught returning a wrong result before its pay for it was released:
    # under "solo" nobody else checked this result, so it is suspect (ADR 0034, amendment).
    host_caught_later: bool = False
    # Its host caught later, this solo result was run again on two other hosts: "same" (keep
    # it), "different" (the re-run's result is the right one), "failed", or "" (not re-run).
    rechecked: str = ""
    rechecked_by: bytes = b""  # the re-run's job id

    @property
    def spot_checked(self) -> bool:
        return self.verified_by == "spot-checked"


def summarise(job: PublisherJob) -> JobSummary:
    accepted = [s for s in job.slots if s.verdict == "match"]
    first = accepted[0] if accepted else None
    return JobSummary(
        job_id=job.job_id,
        phase=job.phase.value,
        detail=job.detail,
        cause=job.cause,
        created_ms=job.created_ms,
        deadline_ms=job.call.deadline_ms,
        call_round=job.call.call_round,
        replicas=job.replicas,
        replicas_max=job.replicas_max,
        prefer=job.prefer,
        max_price_mc_per_tfuel=job.call.max_price_mc_per_tfuel,
        clearing_price_mc_per_tfuel=job.clearing_price_mc_per_tfuel,
        bids=tuple(
            BidSummary(
                v.worker,
                v.price_mc_per_tfuel,
                v.operator,
                v.network_group,
                v.energy_source,
                v.rtt_ms,
            )
            for _, (v, _key) in sorted(job.bids.items())
        ),
        replicas_detail=tuple(
            ReplicaSummary(
                award_no=s.award_no,
                worker=s.worker,
                state=s.state.value,
                verdict=s.verdict,
                price_mc_per_tfuel=s.price_mc_per_tfuel,
                result_digest=s.digest,
                output_hash=s.output_hash,
                error_kind=s.error_kind,
                fuel_used=s.fuel_used,
                paid_mc=s.paid_mc,
                exit_code=s.exit_code,
            )
            for s in job.slots
        ),
        fuel_used=first.fuel_used if first else 0,
        credits_paid_mc=sum(s.paid_mc for s in job.slots if s.worker not in job.pay_forfeited),
        result_digest=job.accepted_digest,
        output_hash=first.output_hash if first else b"",
        error_kind=first.error_kind if first else "",
        exit_code=first.exit_code if first else 0,
        stderr=first.stderr if first else b"",
        output=first.output if first else b"",
        verify=job.verify,
        verified_by=job.verified_by,
        error_bound_ppm=job.error_bound_ppm,
        pay_held_mc=sum(s.paid_mc for s in accepted if s.worker in job.pay_held),
        # Only a solo result went unchecked; a replicated one matched another host's.
        host_caught_later=bool(job.pay_forfeited) and job.verified_by == SOLO,
        rechecked=job.recheck_result,
        rechecked_by=job.recheck_job,
    )
