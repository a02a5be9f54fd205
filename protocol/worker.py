"""The worker side of a job: bid on calls, take awards, fetch, run, commit, reveal.

I/O: none. Time: ``now_ms`` argument. Randomness (commitment salts): the engine's Random.

Theory of operation
-------------------
A call for bids arrives by gossip; ``protocol.bidding`` decides whether to bid and at what
price (never on a job it cannot finish before the deadline at its own fuel rate), and a bid goes
straight to the publisher. A worker bids at most once per (job, round), and on one job id only to
one publisher. It remembers, per bid, the publisher (the call's signer) and the hash of the exact
call it bid on.

An award is taken only when (ADR 0012): the peer that delivered it signed it (a forwarded award is
refused and its deliverer penalised, with no reply, so that nothing reaches the publisher that it
would punish), it names this worker as its winner (same), its signer is the publisher this worker
bid to for that job (else it is forged: its signer is penalised, the honest publisher's standing is
untouched and its real award is still taken), and it embeds the very call that was bid on.

An award creates a *task*, keyed by job id: a worker runs one job at most once, whatever awards
are re-sent or replayed. The worker accepts (or declines when its cores are busy), asks the node
for the module and the input (``FetchBlob``; the node answers at once when it has a blob), runs
the job (``RunJob``), then commits to its result with a salted hash that includes its own key,
and sends the reveal right behind it, to the publisher only, which opens it once every live
replica has committed (ADR 0031, Measurements); a restored publisher asks again (RevealRequest).

    FETCHING --all blobs--> RUNNING --JobExecuted--> COMMITTED --RevealRequest--> REVEALED
    COMMITTED | REVEALED --PaymentReceived | MismatchNotice--> DONE
    FETCHING | RUNNING --fetch failed | host error | Cancel | deadline--> ABANDONED

A task is forgotten ``WORKER_TASK_RETENTION_MS`` after the job's deadline. Until then a re-sent
award (a publisher restarted from its saved state) is answered from the task: accepted again and,
once committed, the same commitment is sent again; the job never runs twice.
Never: run a job whose award was cancelled, reveal before being asked, reveal to anyone but the
publisher that awarded the job, act on a direct message its author did not deliver itself, or
blame a publisher for what another peer sent in its name.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from hearth.protocol import limits
from hearth.protocol.bidding import (
    BidDecision,
    HostLoad,
    PublisherStanding,
    decide_bid,
    host_load,
)
from hearth.protocol.causes import DECLINE_CAUSES
from hearth.protocol.effects import (
    AbortJob,
    CancelTimer,
    Effect,
    FetchBlob,
    Log,
    Penalise,
    RunJob,
    Send,
    SetTimer,
)
from hearth.protocol.envelope import Envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import BlobFetched, BlobFetchFailed, JobExecuted, PaymentReceived
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import (
    DECLINE_REASON_BYTES_MAX,
    EXIT_CODE_NONE,
    HOST_ERROR_KINDS,
    Award,
    AwardReply,
    Bid,
    BidDecline,
    CallForBids,
    Cancel,
    Invitation,
    JobId,
    MismatchNotice,
    PayHeld,
    ResultCommit,
    ResultReveal,
    RevealRequest,
    call_hash,
    commitment,
    require_from_author,
    result_digest,
    stderr_tail,
)
from hearth.protocol.lease import run_ms_max
from hearth.protocol.messages import (
    PROTOCOL_AWARD,
    PROTOCOL_BID,
    PROTOCOL_DECLINE,
    PROTOCOL_INVITE,
    PROTOCOL_RESULT,
    TOPIC_JOBS,
)
from hearth.protocol.pricing import cost_mc
from hearth.protocol.timers import (
    PayDueTimer,
    RecommitTimer,
    TaskDeadlineTimer,
    TaskForgetTimer,
    TimerKey,
)

if TYPE_CHECKING:
    from hearth.protocol.engine import Engine, MessageHandler

MESSAGE_TTL_MS: Final = 60_000
COMMIT_RESEND_MS: Final = 2_000
CALL_MISMATCH_PENALTY_POINTS: Final = 25  # a publisher that awards other terms than it called
# A publisher that held our pay (an adaptive job, ADR 0034) past the date it signed, per task.
PAY_OVERDUE_PENALTY_POINTS: Final = 50


class TaskState(enum.Enum):
    FETCHING = "fetching"
    RUNNING = "running"
    COMMITTED = "committed"
    REVEALED = "revealed"
    DONE = "done"
    ABANDONED = "abandoned"


S = TaskState
TRANSITIONS: Final = {  # (state, trigger) -> next state; our own moves, asserted
    (S.FETCHING, "blobs-ready"): S.RUNNING,
    (S.FETCHING, "fetch-failed"): S.ABANDONED,
    (S.ABANDONED, "retry-fetch"): S.FETCHING,  # never ran: the publisher came back, try again
    (S.RUNNING, "executed"): S.COMMITTED,
    (S.RUNNING, "host-error"): S.ABANDONED,
    (S.COMMITTED, "reveal"): S.REVEALED,
    (S.REVEALED, "reveal"): S.REVEALED,
    (S.REVEALED, "paid"): S.DONE,
    (S.COMMITTED, "mismatch"): S.DONE,
    (S.REVEALED, "mismatch"): S.DONE,
    (S.FETCHING, "cancel"): S.ABANDONED,
    (S.RUNNING, "cancel"): S.ABANDONED,
    (S.COMMITTED, "cancel"): S.ABANDONED,
    (S.FETCHING, "deadline"): S.ABANDONED,
    (S.RUNNING, "deadline"): S.ABANDONED,
}
BUSY_STATES: Final = frozenset({S.FETCHING, S.RUNNING})
OUTPUT_STATES: Final = frozenset({S.COMMITTED, S.REVEALED, S.DONE})  # output may be fetched


@dataclasses.dataclass(slots=True)
class Task:
    call: CallForBids
    publisher: PeerId
    award_no: int
    price_mc_per_tfuel: int
    state: TaskState = TaskState.FETCHING
    blobs_pending: frozenset[bytes] = frozenset()
    error_kind: str = ""
    output_hash: bytes = b""
    output_bytes: int = 0
    output: bytes = b""
    fuel_used: int = 0
    exit_code: int = 0
    stderr: bytes = b""
    salt: bytes = b""
    commitment: bytes = b""
    owed_mc: int = 0
    pay_by_ms: int = 0  # the publisher holds our pay until at most then (PayHeld, ADR 0034)
    fetch_failed: bool = False  # abandoned before running, because the blobs could not be had

    @property
    def job_id(self) -> JobId:
        return JobId(self.call.job_id)

    def move(self, trigger: str) -> None:
        self.state = TRANSITIONS[(self.state, trigger)]


@dataclasses.dataclass(slots=True)
class JobBids:
    """What this worker bid on one job: to whom, and on exactly which call in each round."""

    publisher: PeerId
    calls: dict[int, tuple[bytes, int]]  # call_round -> (call_hash of the call, price bid)


class WorkerComponent:
    """Bids on calls for bids and carries out awards for this host."""

    name = "worker"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._config = engine.config.jobs.worker
        self.tasks: dict[JobId, Task] = {}
        self._bids_sent: collections.OrderedDict[bytes, JobBids] = collections.OrderedDict()
        self.owed_mc_by_publisher: dict[PeerId, int] = {}
        engine.add_local_handler(BlobFetched, self._on_blob_fetched)
        engine.add_local_handler(BlobFetchFailed, self._on_blob_failed)
        engine.add_local_handler(JobExecuted, self._on_job_executed)
        engine.add_local_handler(PaymentReceived, self._on_payment)

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        award, result = frozenset({PROTOCOL_AWARD}), frozenset({PROTOCOL_RESULT})
        return {
            CallForBids: (frozenset({TOPIC_JOBS}), self._on_call),
            Invitation: (frozenset({PROTOCOL_INVITE}), self._on_invitation),
            Award: (award, self._on_award),
            Cancel: (award, self._on_cancel),
            RevealRequest: (result, self._on_reveal_request),
            MismatchNotice: (result, self._on_mismatch),
            PayHeld: (result, self._on_pay_held),
        }

    def on_started(self, now_ms: int) -> list[Effect]:
        return []

    def on_timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        assert isinstance(key, TaskDeadlineTimer | TaskForgetTimer | RecommitTimer | PayDueTimer), (
            key
        )
        job_id = key.job_id
        task = self.tasks.get(job_id)
        if task is None:
            return []
        if isinstance(key, PayDueTimer):
            return self._on_pay_due(task, now_ms)
        if isinstance(key, TaskDeadlineTimer) and task.state in BUSY_STATES:
            task.move("deadline")
            return [AbortJob(job_id), Log("info", "task-deadline", (("job", job_id.hex()),))]
        if isinstance(key, TaskDeadlineTimer) and task.state is S.REVEALED and not task.pay_by_ms:
            # Revealed, the job over, and neither paid nor told that the pay is held: the
            # publisher's note may have been lost. Our reveal again asks it to send it again.
            return [self._reveal_message(task, now_ms)]
        if isinstance(key, TaskForgetTimer):
            del self.tasks[job_id]
        recommit = isinstance(key, RecommitTimer)
        if recommit and task.state is S.COMMITTED and now_ms < task.call.deadline_ms:
            return [
                self._commit_message(task, now_ms),
                self._reveal_message(task, now_ms),
                self._recommit_timer(task, now_ms),
            ]
        return []

    def tasks_running(self) -> int:
        return sum(1 for task in self.tasks.values() if task.state in BUSY_STATES)

    def load(self) -> HostLoad:
        """The tasks we hold and, when every core is taken, the wait before one is free."""
        fuel_per_s = self._engine.config.profile.fuel_per_s
        runs_ms = [
            run_ms_max(task.call.fuel_max, fuel_per_s)
            for task in self.tasks.values()
            if task.state in BUSY_STATES
        ]
        return host_load(runs_ms, self._engine.config.profile.cores_now())

    def may_fetch(self, peer: PeerId, blob_hash: bytes) -> bool:
        """May ``peer`` fetch ``blob_hash`` from us? Only our output of a task it published."""
        return any(
            task.publisher == peer and task.output_hash == blob_hash and task.state in OUTPUT_STATES
            for task in self.tasks.values()
        )

    def blobs_in_use(self) -> frozenset[bytes]:
        """Blobs our tasks still need: the module and input until run, the output until revealed."""
        needed: set[bytes] = set()
        for task in self.tasks.values():
            if task.state in BUSY_STATES:
                needed.update((task.call.module_hash, task.call.input_hash))
            elif task.state in (S.COMMITTED, S.REVEALED):
                needed.add(task.output_hash)
        return frozenset(needed)

    def standing(self, publisher: PeerId) -> PublisherStanding:
        return PublisherStanding(
            reputation_score=self._engine.reputation.get(publisher).score,
            owed_mc=self.owed_mc_by_publisher.get(publisher, 0),
        )

    # Calls and bids

    def _on_call(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        call = envelope.body
        assert isinstance(call, CallForBids)
        call.check(now_ms)
        return self._answer(call, envelope.peer_id, now_ms, invited=False)

    def _on_invitation(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        """A call sent to us alone (ADR 0031): always answered, with a bid or a decline."""
        invitation = envelope.body
        assert isinstance(invitation, Invitation)
        invitation.check(now_ms)
        require_from_author(envelope.peer_id, peer)
        return self._answer(invitation.call, envelope.peer_id, now_ms, invited=True)

    def _answer(
        self, call: CallForBids, publisher: PeerId, now_ms: int, *, invited: bool
    ) -> list[Effect]:
        if publisher == self._engine.identity.peer_id:
            return []  # our own call back through the mesh
        bids = self._bids_sent.get(call.job_id)
        if bids is not None and bids.publisher != publisher:
            # A job id is one publisher's: a second caller of it could only be copying it.
            refusal = BidDecision(refusal="job-id-taken")
            return [
                _no_bid(call, "job-id-taken", "debug"),
                *self._decline(call, publisher, refusal, now_ms, invited),
            ]
        if bids is not None and call.call_round in bids.calls:
            return []  # a second copy of a call we answered
        if JobId(call.job_id) in self.tasks:
            # We already hold an award for this job: never bid on it again.
            holding = BidDecision(refusal="holding-award")
            return self._decline(call, publisher, holding, now_ms, invited)
        unable = self._engine.unable_reasons()
        if unable:
            # No bid while we could not record our earnings or our work (a full disk): say why,
            # bid again once the node can.
            refusal = BidDecision(refusal="unable")
            return [
                _no_bid(call, "; ".join(unable), "warning"),
                *self._decline(call, publisher, refusal, now_ms, invited),
            ]
        profile = self._engine.config.profile
        load = self.load()
        decision = decide_bid(call, profile, self._config, self.standing(publisher), load, now_ms)
        if decision.refusal == "cannot-finish":
            run_ms = run_ms_max(call.fuel_max, profile.fuel_per_s)
            left_ms = call.deadline_ms - max(now_ms, call.bid_deadline_ms)
            why = f"cannot-finish: fuel_max needs up to {run_ms} ms here, {left_ms} ms left"
            return [
                _no_bid(call, why, "info"),
                *self._decline(call, publisher, decision, now_ms, invited),
            ]
        if decision.refusal:
            return [
                _no_bid(call, decision.refusal, "debug"),
                *self._decline(call, publisher, decision, now_ms, invited),
            ]
        self._remember_bid(call, publisher, decision.price_mc_per_tfuel)
        bid = Bid(
            job_id=call.job_id,
            call_round=call.call_round,
            price_mc_per_tfuel=decision.price_mc_per_tfuel,
            fuel_per_s=profile.fuel_per_s,
            energy_source=profile.energy_source,
            operator=profile.operator,
            start_ms=max(now_ms, call.bid_deadline_ms) + load.wait_ms,
        )
        ttl_ms = min(self._config.bid_ttl_ms, limits.ENVELOPE_TTL_MS_MAX)
        return [Send(publisher, PROTOCOL_BID, self._engine.seal(bid, now_ms=now_ms, ttl_ms=ttl_ms))]

    def _remember_bid(self, call: CallForBids, publisher: PeerId, price_mc_per_tfuel: int) -> None:
        bids = self._bids_sent.get(call.job_id)
        if bids is None:
            bids = self._bids_sent[call.job_id] = JobBids(publisher, {})
        bids.calls[call.call_round] = (call_hash(call), price_mc_per_tfuel)
        self._bids_sent.move_to_end(call.job_id)
        while len(self._bids_sent) > limits.WORKER_BIDS_REMEMBERED_MAX:
            self._bids_sent.popitem(last=False)

    # Awards

    def _on_award(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        award = envelope.body
        assert isinstance(award, Award)
        award.check(now_ms)
        call, publisher = award.call, envelope.peer_id
        # Refusals that raise go unanswered: the engine logs them and penalises ``peer``, who
        # delivered the award. Each is provably that peer's doing (ADR 0012).
        require_from_author(publisher, peer)
        if award.winner != self._engine.identity.public_key:
            raise RemoteProtocolError("an award for another worker", reason="misdirected-award")
        job_id = JobId(call.job_id)
        bids = self._bids_sent.get(job_id)
        if bids is not None and bids.publisher != publisher:
            raise RemoteProtocolError("an award for another publisher's job", reason="forged-award")
        task = self.tasks.get(job_id)
        if task is not None:
            if publisher != task.publisher:  # only once our bid on it is forgotten
                return [self._reply(publisher, job_id, award.award_no, "job-id-taken", now_ms)]
            return self._on_award_again(task, award, publisher, now_ms)
        refusal = self._award_refusal(award, bids, now_ms)
        if refusal:
            reply = self._reply(publisher, job_id, award.award_no, refusal, now_ms)
            effects: list[Effect] = [reply]
            if refusal == "call-mismatch":  # it signed both the call and these other terms
                self._engine.reputation.penalise(publisher, CALL_MISMATCH_PENALTY_POINTS)
                effects.append(Penalise(publisher, refusal, CALL_MISMATCH_PENALTY_POINTS))
            return effects
        task = Task(
            call=call,
            publisher=publisher,
            award_no=award.award_no,
            price_mc_per_tfuel=award.price_mc_per_tfuel,
            blobs_pending=frozenset({call.module_hash, call.input_hash}),
        )
        self.tasks[job_id] = task
        return [
            self._reply(publisher, job_id, award.award_no, "", now_ms),
            SetTimer(TaskDeadlineTimer(job_id), call.deadline_ms),
            SetTimer(TaskForgetTimer(job_id), call.deadline_ms + limits.WORKER_TASK_RETENTION_MS),
            *_fetches(award, publisher),
        ]

    def _decline(
        self,
        call: CallForBids,
        publisher: PeerId,
        decision: BidDecision,
        now_ms: int,
        invited: bool = False,
    ) -> list[Effect]:
        """Tell the publisher why we do not bid (ADR 0023). An invitation is always answered
        (ADR 0031); a gossiped call only for the reasons the publisher can act on, once per
        call round, by a sample of the hosts; a host that does not bid for its own reasons on a
        gossiped call stays silent."""
        reason = decision.refusal.split(":", 1)[0][:DECLINE_REASON_BYTES_MAX]
        if not invited and (reason not in DECLINE_CAUSES or not self._declines(call)):
            return []
        price = min(max(0, decision.price_mc_per_tfuel), limits.CREDIT_LIMIT_MC)
        decline = BidDecline(call.job_id, call.call_round, reason, price)
        data = self._engine.seal(decline, now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return [Send(publisher, PROTOCOL_DECLINE, data)]

    def _declines(self, call: CallForBids) -> bool:
        """Whether this host is one of the ~DECLINES_PER_CALL_MAX that answer ``call`` with a
        decline: all of them in a small market, a sample drawn from the call in a large one."""
        hosts = len(self._engine.market)
        if hosts <= limits.DECLINES_PER_CALL_MAX:
            return True
        seed = call.job_id + bytes([call.call_round]) + self._engine.identity.public_key
        draw = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big")
        return draw % hosts < limits.DECLINES_PER_CALL_MAX

    def _award_refusal(self, award: Award, bids: JobBids | None, now_ms: int) -> str:
        """Why a well-addressed award from the publisher we bid to is declined, or ""."""
        call = award.call
        profile = self._engine.config.profile
        if call.deadline_ms <= now_ms:
            return "deadline-passed"
        if profile.paused:
            return "paused"  # bid before the home's energy or the owner paused us (ADR 0026)
        cores = profile.cores_now()
        if len(self.tasks) >= limits.WORKER_TASKS_MAX or cores == 0:
            return "busy"
        if self.tasks_running() >= cores + self._config.backlog:
            return "busy"  # the queue is full (ADR 0031)
        bid = None if bids is None else bids.calls.get(call.call_round)
        if bid is None:
            return "no-bid"  # unsolicited work (or a bid we no longer remember): not ours to run
        bid_call_hash, bid_price = bid
        if call_hash(call) != bid_call_hash:
            return "call-mismatch"
        if award.price_mc_per_tfuel < bid_price:
            return "price-below-bid"
        return ""

    def _on_award_again(
        self, task: Task, award: Award, publisher: PeerId, now_ms: int
    ) -> list[Effect]:
        """A re-sent award (publisher restarted): answer from the task, never run again."""
        if task.state is S.ABANDONED and task.fetch_failed and now_ms < task.call.deadline_ms:
            # The publisher was away while we fetched from it (it restarted): the job never
            # ran here, so fetching again cannot run it twice.
            task.move("retry-fetch")
            task.fetch_failed = False
            task.award_no = award.award_no
            task.blobs_pending = frozenset({task.call.module_hash, task.call.input_hash})
            return [
                self._reply(publisher, task.job_id, award.award_no, "", now_ms),
                FetchBlob(publisher, task.call.module_hash, task.call.module_bytes),
                FetchBlob(publisher, task.call.input_hash, task.call.input_bytes),
            ]
        if task.state is S.ABANDONED:
            return [self._reply(publisher, task.job_id, award.award_no, "abandoned", now_ms)]
        task.award_no = award.award_no
        effects: list[Effect] = [self._reply(publisher, task.job_id, award.award_no, "", now_ms)]
        if task.state in (S.COMMITTED, S.REVEALED, S.DONE):
            effects.append(self._commit_message(task, now_ms))
        if task.state in (S.COMMITTED, S.REVEALED):
            effects.append(self._reveal_message(task, now_ms))
        return effects

    def _reply(
        self, publisher: PeerId, job_id: JobId, award_no: int, refusal: str, now_ms: int
    ) -> Send:
        reply = AwardReply(job_id=job_id, award_no=award_no, accept=not refusal, reason=refusal)
        data = self._engine.seal(reply, now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return Send(publisher, PROTOCOL_AWARD, data)

    def _on_cancel(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        cancel = envelope.body
        assert isinstance(cancel, Cancel)
        cancel.check()
        require_from_author(envelope.peer_id, peer)
        task = self.tasks.get(JobId(cancel.job_id))
        if task is None or task.publisher != envelope.peer_id:
            return []
        if cancel.award_no not in (-1, task.award_no) or (task.state, "cancel") not in TRANSITIONS:
            return []  # a cancel of an older award, or of work already revealed: nothing to stop
        was_running = task.state in BUSY_STATES
        task.move("cancel")
        effects: list[Effect] = [Log("info", "task-cancelled", (("job", cancel.job_id.hex()),))]
        if was_running:
            effects.append(AbortJob(task.job_id))
        return effects

    # Blobs and execution (local events from the node)

    def _on_blob_fetched(self, event: object, now_ms: int) -> list[Effect]:
        assert isinstance(event, BlobFetched)
        effects: list[Effect] = []
        for job_id in sorted(self.tasks):
            task = self.tasks[job_id]
            if task.state is not S.FETCHING or event.blob_hash not in task.blobs_pending:
                continue
            task.blobs_pending = task.blobs_pending - {event.blob_hash}
            if not task.blobs_pending:
                task.move("blobs-ready")
                call = task.call
                effects.append(
                    RunJob(
                        job_id=job_id,
                        runtime=call.runtime,
                        module_hash=call.module_hash,
                        input_hash=call.input_hash,
                        fuel_max=call.fuel_max,
                        memory_mb_max=call.memory_mb_max,
                        deadline_ms=call.deadline_ms,
                    )
                )
        return effects

    def _on_blob_failed(self, event: object, now_ms: int) -> list[Effect]:
        assert isinstance(event, BlobFetchFailed)
        effects: list[Effect] = []
        for job_id in sorted(self.tasks):
            task = self.tasks[job_id]
            if task.state is S.FETCHING and event.blob_hash in task.blobs_pending:
                task.move("fetch-failed")
                task.fetch_failed = True
                reason = f"fetch-failed:{event.reason}"[:64]
                effects.append(self._reply(task.publisher, job_id, task.award_no, reason, now_ms))
        return effects

    def _on_job_executed(self, event: object, now_ms: int) -> list[Effect]:
        assert isinstance(event, JobExecuted)
        task = self.tasks.get(event.job_id)
        if task is None or task.state is not S.RUNNING:
            return []  # cancelled or past its deadline while it ran
        error_kind = "" if event.ok else (event.error_kind or "crashed")
        if error_kind in HOST_ERROR_KINDS:
            task.move("host-error")
            return [self._reply(task.publisher, task.job_id, task.award_no, error_kind, now_ms)]
        task.move("executed")
        task.error_kind = error_kind
        task.output_hash = event.output_hash
        task.output_bytes = len(event.output)
        task.output = event.output if task.output_bytes <= limits.OUTPUT_INLINE_BYTES_MAX else b""
        task.fuel_used = event.fuel_used
        task.exit_code = min(max(event.exit_code, EXIT_CODE_NONE), limits.EXIT_CODE_MAX)
        task.stderr = stderr_tail(event.stderr)
        task.salt = self._engine.rng.randbytes(limits.SALT_BYTES)
        digest = result_digest(
            task.job_id,
            error_kind,
            event.output_hash,
            event.fuel_used,
            task.exit_code,
            task.stderr,
        )
        task.commitment = commitment(
            task.job_id, digest, task.salt, self._engine.identity.public_key
        )
        # The reveal follows the commit at once, to the publisher only (ADR 0031, Measurements):
        # it opens it when every live replica has committed, one round trip sooner than asking.
        # The task stays COMMITTED, owed nothing, until the publisher asks or pays.
        return [
            self._commit_message(task, now_ms),
            self._reveal_message(task, now_ms),
            self._recommit_timer(task, now_ms),
        ]

    def _recommit_timer(self, task: Task, now_ms: int) -> SetTimer:
        # A commit is one-way: if the publisher was down when it was sent (a restart), nothing
        # else would tell it we finished. Re-send it until the publisher asks for the reveal.
        return SetTimer(RecommitTimer(task.job_id), now_ms + COMMIT_RESEND_MS)

    def _commit_message(self, task: Task, now_ms: int) -> Send:
        commit = ResultCommit(task.job_id, task.award_no, task.commitment)
        data = self._engine.seal(commit, now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return Send(task.publisher, PROTOCOL_RESULT, data)

    # Reveal and settlement

    def _publisher_task(self, envelope: Envelope, peer: PeerId, job_id: bytes) -> Task | None:
        require_from_author(envelope.peer_id, peer)
        task = self.tasks.get(JobId(job_id))
        if task is not None and task.publisher != envelope.peer_id:
            raise RemoteProtocolError("not the publisher of this job", reason="not-publisher")
        return task

    def _award_task(
        self, envelope: Envelope, peer: PeerId, job_id: bytes, award_no: int
    ) -> Task | None:
        """Our task for the publisher's note about award ``award_no``; None if it is about an
        award we do not hold (an older one, or none)."""
        task = self._publisher_task(envelope, peer, job_id)
        return task if task is not None and task.award_no == award_no else None

    def _on_reveal_request(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        request = envelope.body
        assert isinstance(request, RevealRequest)
        request.check()
        task = self._publisher_task(envelope, peer, request.job_id)
        if task is None or task.state not in (S.COMMITTED, S.REVEALED):
            return [Log("debug", "reveal-unanswerable", (("job", request.job_id.hex()),))]
        if request.award_no != task.award_no:
            raise RemoteProtocolError("reveal request for another award", reason="wrong-award")
        self._mark_revealed(task)
        return [self._reveal_message(task, now_ms)]

    def owed_mc(self, task: Task) -> int:
        """What ``task``'s publisher owes us for it. The reveal travels with the commit, so a
        payment may arrive before any reveal request: a committed task is owed its cost."""
        if task.state is S.COMMITTED:
            return cost_mc(task.price_mc_per_tfuel, task.fuel_used)
        return task.owed_mc

    def _mark_revealed(self, task: Task) -> None:
        if task.state is S.COMMITTED:
            task.owed_mc = cost_mc(task.price_mc_per_tfuel, task.fuel_used)
            self._add_owed(task.publisher, task.owed_mc)
        task.move("reveal")

    def _reveal_message(self, task: Task, now_ms: int) -> Send:
        reveal = ResultReveal(
            job_id=task.job_id,
            award_no=task.award_no,
            error_kind=task.error_kind,
            output_hash=task.output_hash,
            fuel_used=task.fuel_used,
            salt=task.salt,
            output_bytes=task.output_bytes,
            output=task.output,
            exit_code=task.exit_code,
            stderr=task.stderr,
        )
        data = self._engine.seal(reveal, now_ms=now_ms, ttl_ms=MESSAGE_TTL_MS)
        return Send(task.publisher, PROTOCOL_RESULT, data)

    def _add_owed(self, publisher: PeerId, amount_mc: int) -> None:
        if publisher not in self.owed_mc_by_publisher and (
            len(self.owed_mc_by_publisher) >= limits.WORKER_PUBLISHERS_OWING_MAX
        ):
            return  # full: this debt goes unrecorded rather than evicting a known debtor
        self.owed_mc_by_publisher[publisher] = self.owed_mc_by_publisher.get(publisher, 0) + (
            amount_mc
        )

    def _settle_owed(self, publisher: PeerId, amount_mc: int) -> None:
        owed = self.owed_mc_by_publisher.get(publisher, 0) - amount_mc
        if owed > 0:
            self.owed_mc_by_publisher[publisher] = owed
        else:
            self.owed_mc_by_publisher.pop(publisher, None)

    def _on_mismatch(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        notice = envelope.body
        assert isinstance(notice, MismatchNotice)
        notice.check()
        task = self._award_task(envelope, peer, notice.job_id, notice.award_no)
        if task is None or (task.state, "mismatch") not in TRANSITIONS:
            return []
        task.move("mismatch")
        self._settle_owed(task.publisher, task.owed_mc)
        fields = (("job", notice.job_id.hex()), ("reason", notice.reason))
        return [
            Log("warning", "result-rejected", fields),
            CancelTimer(TaskDeadlineTimer(task.job_id)),
        ]

    def _on_pay_held(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        """The publisher accepted our result and holds its pay until ``pay_by_ms`` (ADR 0034).

        The task is owed from now on (it counts against the publisher's credit with us, which
        bounds what it can hold), is kept until the date passes so that the pay is matched to
        its work, and the date is watched: past it, an unpaid hold is penalised.
        """
        note = envelope.body
        assert isinstance(note, PayHeld)
        note.check()
        task = self._award_task(envelope, peer, note.job_id, note.award_no)
        if task is None or task.state not in (S.COMMITTED, S.REVEALED):
            return []  # paid, rejected or abandoned already: nothing is held
        if note.pay_by_ms > task.call.deadline_ms + limits.PAY_HOLD_MS_MAX:
            raise RemoteProtocolError("pay held beyond the longest hold", reason="hold-too-long")
        if note.amount_mc != cost_mc(task.price_mc_per_tfuel, task.fuel_used):
            raise RemoteProtocolError("held pay of another amount", reason="hold-amount")
        if task.pay_by_ms and note.pay_by_ms > task.pay_by_ms:
            raise RemoteProtocolError("a hold moved later", reason="hold-moved")
        task.pay_by_ms = note.pay_by_ms
        self._mark_revealed(task)  # the publisher opened our reveal: the pay is owed
        forget_ms = max(task.call.deadline_ms, note.pay_by_ms) + limits.WORKER_TASK_RETENTION_MS
        fields = (("job", task.job_id.hex()), ("pay_by_ms", note.pay_by_ms))
        return [
            Log("info", "pay-held", fields),
            SetTimer(PayDueTimer(task.job_id), note.pay_by_ms),
            SetTimer(TaskForgetTimer(task.job_id), forget_ms),
        ]

    def _on_pay_due(self, task: Task, now_ms: int) -> list[Effect]:
        """The date of a hold came and the pay did not: penalise it like a publisher that does
        not pay. The debt stays owed (it keeps counting against the publisher's credit)."""
        if task.state is not S.REVEALED or not task.pay_by_ms or now_ms < task.pay_by_ms:
            return []  # paid or forfeited meanwhile
        publisher = task.publisher
        self._engine.reputation.penalise(publisher, PAY_OVERDUE_PENALTY_POINTS)
        return [
            Log("warning", "pay-overdue", (("job", task.job_id.hex()), ("publisher", publisher))),
            Penalise(publisher, "pay-overdue", PAY_OVERDUE_PENALTY_POINTS),
        ]

    def _on_payment(self, event: object, now_ms: int) -> list[Effect]:
        assert isinstance(event, PaymentReceived)
        task = self.tasks.get(event.job_id)
        if task is not None and task.state is S.COMMITTED and task.publisher == event.payer:
            self._mark_revealed(task)  # the publisher opened the reveal sent with the commit
        self._settle_owed(event.payer, event.amount_mc)
        if task is not None and (task.state, "paid") in TRANSITIONS:
            task.move("paid")
        return []


def _fetches(award: Award, publisher: PeerId) -> list[Effect]:
    """Get the module and the input: from inside the award when they came there and match their
    hashes (ADR 0031), else fetched from the publisher by hash."""
    call = award.call
    wanted = (
        (call.module_hash, call.module_bytes, award.module),
        (call.input_hash, call.input_bytes, award.input),
    )
    return [
        FetchBlob(
            publisher, blob_hash, size, data if hashlib.sha256(data).digest() == blob_hash else b""
        )
        for blob_hash, size, data in wanted
    ]


def _no_bid(call: CallForBids, why: str, level: str) -> Log:
    return Log(level, "no-bid", (("job", call.job_id.hex()), ("why", why)))
