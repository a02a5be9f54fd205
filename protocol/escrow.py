"""Escrow of adaptive jobs' pay: released when a trusted host passes a spot check, forfeited
when it is caught (ADR 0034, amendment).

I/O: none. Time: ``now_ms`` arguments. The held pays live in the publisher's jobs (each PAID
adaptive job names the workers whose pay it still holds, ``PublisherJob.pay_held``), so they are
saved with each job's state and survive a restart; this class keeps only an index by host.

Theory of operation
-------------------
When an adaptive job is accepted, each matching worker's pay is decided as under ``always-2``
(the amount is in its slot) but *held*: the worker gets a signed ``PayHeld`` note with the amount
and ``pay_by_ms`` (the job's deadline + ``AdaptiveConfig.pay_hold_ms``) instead of a receipt.
Then, for each host:

    HELD --the host passes a spot check while trusted--> RELEASED (every held job of the host)
    HELD --pay_by_ms--> RELEASED (that job)
    HELD --ReleaseHeldPay (end of a batch), host on proof (below)--> FORFEITED (every job)
    HELD --ReleaseHeldPay (end of a batch), no held solo result--> RELEASED (every held job)
    HELD --ReleaseHeldPay, a held solo result--> AUDIT: one of them, drawn at random, re-run
         under always-2 on two other hosts; the same result --> RELEASED, another --> FORFEITED
    HELD --the host is caught (mismatch, outvoted, bad reveal, audit)--> FORFEITED (every job)

A caught host stays *on proof* until it passes a spot check while trusted (a check it cannot
tell from a solo run): pay held for it meanwhile (``PublisherJob.pay_on_proof``) is released
only by such a pass, and forfeited at the end of a batch (unaudited: one audit, drawn among
results of which the host chose which to get wrong, may miss the wrong ones) or at
``pay_by_ms``.
Otherwise a host that cheats once trusted would be paid, after each catch, for the probation
it serves to earn trust again, whenever a batch ends before its next catch: cheating would
earn something. An honest host is never caught, so never on proof.

A release pays as today: one ``PayWorker`` per (job, worker), turned into a receipt by the
payments component; the ledger keys pays by (job, worker), so a job is never paid twice. A
forfeit sends a signed ``MismatchNotice`` (reason ``escrow-forfeited``) for each held job, so the
worker stops waiting for that pay and does not count the publisher as one that does not pay.

Never: pay a held job before it is released (its ``PayWorker`` is withheld from the effects),
release a forfeited pay, or forget a job that still holds pay. Every change of a job's escrow is
saved (``SaveJob``) before the pays it releases, as for the move to PAID (ADR 0019): a crash
between the two replays the released pays from the saved state, never a held or forfeited one.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable
from typing import Final

from hearth.protocol import limits
from hearth.protocol.adaptive import SOLO, SPOT_CHECKED, VERIFY_ALWAYS_2, AdaptiveConfig
from hearth.protocol.effects import Effect, Log, PayWorker, SaveJob, Send, SetTimer
from hearth.protocol.events import PublishJob
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import JobId, MismatchNotice, PayHeld
from hearth.protocol.messages import PROTOCOL_RESULT
from hearth.protocol.publisher_state import Phase, PublisherJob, Slot
from hearth.protocol.timers import PayHoldTimer

FORFEIT_REASON: Final = "escrow-forfeited"
# The release that proves a host: a spot check passed while trusted, which it could not tell
# from a solo run. The others (the batch's end, an audit, which only a host not on proof gets,
# the hold's date) only end a wait.
PROOFS: Final = frozenset({"spot-check-passed"})

Sender = Callable[[PeerId, str, object, int], Send]  # (peer, protocol, body, now_ms)
Saver = Callable[[PublisherJob], list[Effect]]  # SaveJob when the job's decisions changed


class Escrow:
    """Which of the publisher's PAID adaptive jobs still hold pay, by host (ordered by hold)."""

    def __init__(
        self, jobs: dict[JobId, PublisherJob], config: AdaptiveConfig, send: Sender, save: Saver
    ) -> None:
        self._jobs = jobs
        self._config = config
        self._send = send
        self._save = save
        self.held: dict[PeerId, dict[JobId, None]] = {}  # host -> its held jobs, oldest first
        # Hosts caught since they last passed a check, oldest catch first (module docstring).
        self.on_proof: dict[PeerId, None] = {}
        # Solo jobs whose held pay was just forfeited: nobody checked their results, so the
        # publisher runs each again (``PublisherComponent._recheck``), then clears this.
        self.unchecked: list[tuple[PeerId, JobId]] = []
        self.released_mc = 0
        self.forfeited_mc = 0

    def held_mc(self, worker: PeerId) -> int:
        total = 0
        for job_id in self.held.get(worker, {}):
            slot = self._jobs[job_id].match_slot(worker)
            assert slot is not None, "a held pay without its slot"
            total += slot.paid_mc
        return total

    # Deciding at the move to PAID

    def on_settled(
        self, job: PublisherJob, effects: list[Effect], trusted: frozenset[PeerId], now_ms: int
    ) -> list[Effect]:
        """Hold the pays ``settle`` decided for adaptive ``job``, or release the host's escrow.

        ``trusted``: the job's workers that were trusted (a streak of N) before this result.
        A trusted worker whose result matched in a spot-checked job passed a check it could not
        tell from a solo run: everything held for it is paid, this job included.
        """
        assert job.phase is Phase.PAID and not job.pay_held, "held once, at the move to PAID"
        out: list[Effect] = []
        for effect in effects:
            if not isinstance(effect, PayWorker):
                out.append(effect)
                continue
            worker = effect.worker
            if job.verified_by == SPOT_CHECKED and worker in trusted:
                out += [effect, *self.release(worker, now_ms, cause="spot-check-passed")]
                continue
            if worker in self.on_proof:
                job.pay_on_proof = (*job.pay_on_proof, worker)
            if not job.pay_by_ms:
                job.pay_by_ms = job.call.deadline_ms + self._config.pay_hold_ms
                out.append(SetTimer(PayHoldTimer(job.job_id), job.pay_by_ms))
            job.pay_held = (*job.pay_held, worker)
            held = self.held.setdefault(worker, {})
            held[job.job_id] = None
            out.append(self.note(job, worker, now_ms))
            if len(held) > limits.ESCROW_JOBS_PER_HOST_MAX:
                # A bound on what one host waits for: its oldest held pay is released, or
                # forfeited if it waits for a proof it has not given.
                oldest = self._jobs[next(iter(held))]
                if worker in oldest.pay_on_proof:
                    out += self._forfeit_jobs(worker, [oldest.job_id], now_ms)
                else:
                    out += self._release_job(oldest, worker, now_ms)
        return out

    def note(self, job: PublisherJob, worker: PeerId, now_ms: int) -> Send:
        """The signed note that ``worker``'s pay for ``job`` is held, and until when."""
        slot = job.match_slot(worker)
        assert slot is not None and worker in job.pay_held, "a note for a pay not held"
        body = PayHeld(job.job_id, slot.award_no, slot.paid_mc, job.pay_by_ms)
        return self._send(worker, PROTOCOL_RESULT, body, now_ms)

    # Releasing and forfeiting

    def release(self, worker: PeerId, now_ms: int, *, cause: str) -> list[Effect]:
        """Pay everything held for ``worker``: it passed a check, or its wait is over (then a
        host on proof, which gave no proof, forfeits it instead)."""
        if cause in PROOFS:
            self.on_proof.pop(worker, None)
        elif worker in self.on_proof:
            return self.forfeit(worker, now_ms, cause=f"unproven, {cause}")
        effects: list[Effect] = []
        for job_id in list(self.held.get(worker, {})):
            effects += self._release_job(self._jobs[job_id], worker, now_ms)
        if effects:
            fields = (("worker", str(worker)), ("cause", cause))
            effects.append(Log("info", "escrow-released", fields))
        return _saves_first(effects)

    def end_batch(
        self, rng: random.Random, auditing: frozenset[PeerId], now_ms: int
    ) -> tuple[list[Effect], list[tuple[PeerId, PublisherJob]]]:
        """The end of a batch: pay every host still waiting whose held results were all
        checked, and name, for each other host, one of its held solo results to audit.

        A solo result nobody checked is the one a host that cheats once trusted gets paid for;
        auditing one of them, drawn at random, catches such a host before its pay leaves.
        Hosts whose audit is running (``auditing``) wait for it. A host on proof has not passed
        a spot check since it was caught: what it holds is forfeited, unaudited.
        """
        effects: list[Effect] = []
        audits: list[tuple[PeerId, PublisherJob]] = []
        for worker in sorted(self.held):
            if worker in auditing:
                continue
            if worker in self.on_proof:
                # Caught before and no spot check passed since: one audit, drawn among results
                # of which it chose which to get wrong, would release the wrong ones with it.
                effects += self.forfeit(worker, now_ms, cause="unproven at the batch's end")
                continue
            solo = [self._jobs[j] for j in self.held[worker] if self._jobs[j].verified_by == SOLO]
            if solo:
                audits.append((worker, rng.choice(solo)))
            else:
                effects += self.release(worker, now_ms, cause="batch-ended")
        return _saves_first(effects), audits

    def on_audited(self, audit: PublisherJob, now_ms: int) -> tuple[bool, list[Effect]]:
        """Audit ``audit`` ended: (whether it caught its host, the escrow's effects).

        Its accepted result is compared with the audited solo result field by field (the
        digests differ: each names its own job). A match, or an audit that could not run,
        releases the host's pay; a difference forfeits it.
        """
        worker = PeerId(audit.audited)
        original = self._jobs.get(JobId(audit.audit_of))
        slot = None if original is None else original.match_slot(worker)
        if original is None or slot is None or worker not in original.pay_held:
            return False, []  # released or forfeited meanwhile
        accepted = [s for s in audit.live() if s.verdict == "match"]
        if audit.phase is not Phase.PAID or not accepted:
            return False, self.release(worker, now_ms, cause="audit-failed")
        if result_of(accepted[0]) == result_of(slot):
            return False, self.release(worker, now_ms, cause="audit-passed")
        return True, self.forfeit(worker, now_ms)

    def on_hold_timer(self, job_id: JobId, now_ms: int) -> list[Effect]:
        """``pay_by_ms`` of ``job_id`` came: pay what it still holds, as the note promised."""
        job = self._jobs.get(job_id)
        if job is None or not job.pay_held:
            return []
        effects: list[Effect] = []
        for worker in job.pay_held:
            if worker in job.pay_on_proof:  # no proof came by the date: the condition failed
                effects += self._forfeit_jobs(worker, [job_id], now_ms)
            else:
                effects += self._release_job(job, worker, now_ms)
        return _saves_first(effects)

    def forfeit(self, worker: PeerId, now_ms: int, *, cause: str = "caught") -> list[Effect]:
        """``worker`` was caught with a wrong result (or, on proof, gave none by the batch's
        end): what is held for it is never paid, and it is on proof until it passes a check."""
        self.on_proof.pop(worker, None)
        self.on_proof[worker] = None  # most recent catch last
        if len(self.on_proof) > limits.ESCROW_ON_PROOF_MAX:
            del self.on_proof[next(iter(self.on_proof))]
        effects = self._forfeit_jobs(worker, list(self.held.get(worker, {})), now_ms)
        if effects:
            fields = (("worker", str(worker)), ("cause", cause))
            effects.append(Log("warning", "escrow-forfeited", fields))
        return effects

    def _forfeit_jobs(self, worker: PeerId, job_ids: list[JobId], now_ms: int) -> list[Effect]:
        held = self.held.get(worker, {})
        effects: list[Effect] = []
        for job_id in job_ids:
            job = self._jobs[job_id]
            slot = job.match_slot(worker)
            assert slot is not None and worker in job.pay_held, "forfeiting a pay not held"
            held.pop(job_id, None)
            job.pay_held = tuple(w for w in job.pay_held if w != worker)
            if job.verified_by == SOLO:
                self.unchecked.append((worker, job_id))
            job.pay_forfeited = (*job.pay_forfeited, worker)
            self.forfeited_mc += slot.paid_mc
            notice = MismatchNotice(
                job.job_id, slot.award_no, FORFEIT_REASON, slot.digest, job.accepted_digest
            )
            effects += [*self._save(job), self._send(worker, PROTOCOL_RESULT, notice, now_ms)]
        if not held:
            self.held.pop(worker, None)
        return effects

    def _release_job(self, job: PublisherJob, worker: PeerId, now_ms: int) -> list[Effect]:
        slot = job.match_slot(worker)
        assert slot is not None and worker in job.pay_held, "releasing a pay not held"
        job.pay_held = tuple(w for w in job.pay_held if w != worker)
        held = self.held.get(worker, {})
        held.pop(job.job_id, None)
        if not held:
            self.held.pop(worker, None)
        self.released_mc += slot.paid_mc
        return [*self._save(job), PayWorker(job.job_id, worker, slot.paid_mc)]

    # Restarts

    def restore(self, job: PublisherJob, now_ms: int) -> list[Effect]:
        """Index a restored PAID job's held pays again, with their release timer."""
        if not job.pay_held:
            return []
        for worker in job.pay_held:
            self.held.setdefault(worker, {})[job.job_id] = None
            if worker in job.pay_on_proof:
                self.on_proof[worker] = None
        return [SetTimer(PayHoldTimer(job.job_id), max(now_ms, job.pay_by_ms))]


def audit_command(job: PublisherJob, worker: PeerId, now_ms: int) -> PublishJob:
    """Re-run solo ``job`` under always-2, with the time it had (its host is barred from it)."""
    call = job.call
    digest = hashlib.sha256(b"audit:" + job.job_id + worker.encode()).digest()
    return PublishJob(
        job_id=JobId(digest[: len(job.job_id)]),
        runtime=call.runtime,
        module_hash=call.module_hash,
        module_bytes=call.module_bytes,
        input_hash=call.input_hash,
        input_bytes=call.input_bytes,
        fuel_max=call.fuel_max,
        memory_mb_max=call.memory_mb_max,
        deadline_ms=now_ms + max(1, call.deadline_ms - job.created_ms),
        max_price_mc_per_tfuel=call.max_price_mc_per_tfuel,
        bid_window_ms=job.bid_window_ms,
        replicas=2,
        replicas_max=max(2, job.replicas_max),
        prefer=job.prefer,
        requirements=call.requirements,
        verify=VERIFY_ALWAYS_2,
    )


def result_of(slot: Slot) -> tuple[object, ...]:
    """What a result says, without the job id its digest is bound to."""
    return (slot.error_kind, slot.output_hash, slot.fuel_used, slot.exit_code, slot.stderr)


def _saves_first(effects: list[Effect]) -> list[Effect]:
    """Every SaveJob before any PayWorker: a pay is released only once its job says so."""
    saves = [e for e in effects if isinstance(e, SaveJob)]
    rest = [e for e in effects if not isinstance(e, SaveJob)]
    return [*saves, *rest]
