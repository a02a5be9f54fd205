"""Escrow of adaptive jobs' pay (ADR 0034, amendment): held, released once, or forfeited."""

from __future__ import annotations

import pytest

from hearth.ledger.entry import parse_receipt
from hearth.ledger.memory import MemoryLedger
from hearth.protocol import limits
from hearth.protocol.adaptive import PPM, AdaptiveConfig
from hearth.protocol.effects import Penalise, Send
from hearth.protocol.envelope import open_envelope
from hearth.protocol.escrow import FORFEIT_REASON
from hearth.protocol.events import MessageReceived, ReleaseHeldPay
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import JobId, MismatchNotice, PayHeld
from hearth.protocol.messages import PROTOCOL_RESULT
from hearth.protocol.publisher_state import PublisherConfig, PublisherJob
from hearth.protocol.worker import TaskState
from tests.protocol.harness import Cluster

MODULE = b"\0asm m"
HOUR_MS = 60 * 60 * 1000


def _cluster(n: int, *, streak: int, spot_ppm: int, ledgers: bool = True, **kw: int) -> Cluster:
    adaptive = AdaptiveConfig(trust_streak_min=streak, spot_check_ppm=spot_ppm, **kw)
    config = PublisherConfig(network_prefix_v4=32, adaptive=adaptive)
    return Cluster(n, ledgers=ledgers, publisher_config=config)


def _run_job(cluster: Cluster, data: bytes, verify: str = "adaptive") -> PublisherJob:
    job_id = cluster.publish_job(0, MODULE, data, verify=verify)
    cluster.run_until(cluster.finished(0, job_id))
    cluster.run_for(5_000)  # receipts offered, countersigned, settled
    job = cluster.nodes[0].engine.publisher.jobs[job_id]
    assert job.phase.value == "paid", job.detail
    return job


def _earned(cluster: Cluster, worker: PeerId) -> dict[bytes, int]:
    """What ``worker``'s ledger says it earned, by job."""
    ledger = cluster.by_peer[worker].ledger
    assert isinstance(ledger, MemoryLedger)
    earned = {}
    for (_, job_id), seq in ledger.state.earns.items():
        receipt = parse_receipt(ledger.entry_at(seq).body.receipt)
        earned[job_id] = receipt.amount_mc
    return earned


def _matching(job: PublisherJob) -> dict[PeerId, int]:
    return {s.worker: s.paid_mc for s in job.slots if s.verdict == "match" and s.paid_mc}


def test_an_honest_host_is_paid_exactly_once_when_it_passes_a_spot_check() -> None:
    # N = 1 and c = 100 %: the first job earns trust, the second is spot-checked.
    cluster = _cluster(4, streak=1, spot_ppm=PPM)
    first = _run_job(cluster, b"one")
    held = _matching(first)
    assert first.verified_by == "replicated" and len(held) == 2
    assert set(first.pay_held) == set(held)
    told = {s.peer for _, s, e in cluster.sends_of(0, PayHeld) if e.body.job_id == first.job_id}
    assert told == set(held)
    for worker in held:  # told, not paid; the worker counts it as owed
        assert _earned(cluster, worker) == {}
        task = cluster.by_peer[worker].engine.worker.tasks[first.job_id]
        assert task.state is TaskState.REVEALED and task.pay_by_ms == first.pay_by_ms
        owed = cluster.by_peer[worker].engine.worker.owed_mc_by_publisher
        assert owed[cluster.nodes[0].peer_id] == held[worker]
    second = _run_job(cluster, b"two")
    assert second.verified_by == "spot-checked"
    passed = set(second.trusted_at_award) & set(_matching(second))
    assert passed, "a trusted host took the spot check"
    for worker in passed:  # released: both jobs paid, each once
        assert _earned(cluster, worker) == {
            first.job_id: held[worker],
            second.job_id: _matching(second)[worker],
        }
        assert cluster.by_peer[worker].engine.worker.tasks[first.job_id].state is TaskState.DONE
    # Releasing again pays nothing twice: the ledger would refuse, and nothing is left to pay.
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(5_000)
    for worker in passed:
        assert len(_earned(cluster, worker)) == 2


def test_a_caught_host_forfeits_its_escrow_and_is_told() -> None:
    # N is never reached: every job is replicated and every pay held.
    cluster = _cluster(4, streak=1_000, spot_ppm=PPM)
    first = _run_job(cluster, b"one")
    cheater = sorted(_matching(first))[0]
    cluster.by_peer[cheater].behaviour = "liar"
    caught: PublisherJob | None = None
    for round_no in range(6):  # until the liar is picked for a job and outvoted
        job = _run_job(cluster, f"job {round_no}".encode())
        if any(s.worker == cheater and s.verdict == "mismatch" for s in job.slots):
            caught = job
            break
    assert caught is not None, "the liar was never picked"
    publisher = cluster.nodes[0].engine.publisher
    assert cheater not in publisher.escrow.held
    assert cheater in first.pay_forfeited and cheater not in first.pay_held
    notices = [
        e.body
        for _, _, e in cluster.sends_of(0, MismatchNotice)
        if e.body.reason == FORFEIT_REASON and e.body.job_id == first.job_id
    ]
    assert len(notices) == 1
    task = cluster.by_peer[cheater].engine.worker.tasks[first.job_id]
    assert task.state is TaskState.DONE  # it stops waiting for that pay
    owed = cluster.by_peer[cheater].engine.worker.owed_mc_by_publisher
    assert cluster.nodes[0].peer_id not in owed
    # The end of the batch pays everyone else, and never the cheater.
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(5_000)
    assert _earned(cluster, cheater) == {}
    for job in publisher.jobs.values():
        for worker, amount_mc in _matching(job).items():
            if worker != cheater:
                assert _earned(cluster, worker)[job.job_id] == amount_mc
    assert not publisher.escrow.held
    # Its forfeited pay does not flag the first job's result: it matched another host's.
    assert not publisher.summary(first.job_id).host_caught_later  # type: ignore[union-attr]


def test_held_pay_survives_a_publisher_restart_and_is_paid_once() -> None:
    cluster = _cluster(4, streak=1_000, spot_ppm=PPM)
    job = _run_job(cluster, b"one")
    held = _matching(job)
    assert set(job.pay_held) == set(held)
    cluster.restart_publisher(0, job.job_id)  # a SIGKILL: memory gone, the last SaveJob read
    restored = cluster.nodes[0].engine.publisher
    assert set(restored.escrow.held) == set(held)  # nothing paid by the restore itself
    assert restored.jobs[job.job_id].pay_held == job.pay_held
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(5_000)
    for worker, amount_mc in held.items():
        assert _earned(cluster, worker) == {job.job_id: amount_mc}
    # A second crash, after the release was saved: the restore replays the released pays, and
    # the ledger keeps them to one per (job, worker).
    cluster.restart_publisher(0, job.job_id)
    assert not cluster.nodes[0].engine.publisher.escrow.held
    cluster.run_for(5_000)
    for worker, amount_mc in held.items():
        assert _earned(cluster, worker) == {job.job_id: amount_mc}


def test_always_2_pays_at_once_and_holds_nothing() -> None:
    cluster = _cluster(4, streak=1, spot_ppm=PPM)
    job = _run_job(cluster, b"one", verify="always-2")
    assert not job.pay_held and not job.pay_by_ms
    assert not cluster.sends_of(0, PayHeld)
    for worker, amount_mc in _matching(job).items():
        assert _earned(cluster, worker) == {job.job_id: amount_mc}


def test_the_hold_ends_by_its_date_and_a_publisher_that_does_not_pay_is_penalised() -> None:
    # Without ledgers the released pay never reaches the worker: to it, the publisher held
    # past the date it signed, and it is penalised for it.
    cluster = _cluster(
        4, streak=1_000, spot_ppm=PPM, ledgers=False, pay_hold_ms=1_000, batch_idle_ms=HOUR_MS
    )
    job_id = cluster.publish_job(0, MODULE, b"one", verify="adaptive")
    cluster.run_until(cluster.finished(0, job_id))
    job = cluster.nodes[0].engine.publisher.jobs[job_id]
    assert job.pay_by_ms == job.call.deadline_ms + 1_000
    cluster.run_for(job.pay_by_ms - cluster.now_ms + 1)
    assert not job.pay_held  # released at its date
    assert {p.worker for p in cluster.payments(JobId(job_id))} == set(_matching(job))
    for worker in _matching(job):
        penalties = cluster.of_type(cluster.by_peer[worker].index, Penalise)
        assert [p.reason for p in penalties] == ["pay-overdue"]


def test_a_batch_end_audits_a_held_solo_result_and_catches_a_host_that_cheated_alone() -> None:
    # N = 1 and c = 1 ppm: once trusted, a host runs jobs alone, in practice never checked.
    cluster = _cluster(5, streak=1, spot_ppm=1)
    first = _run_job(cluster, b"one")
    trusted = set(_matching(first))
    for worker in trusted:  # trusted now: they turn to lying
        cluster.by_peer[worker].behaviour = "liar"
    second = _run_job(cluster, b"two")
    assert second.verified_by == "solo"
    (cheater,) = _matching(second)
    assert cheater in trusted and set(second.pay_held) == {cheater}
    publisher = cluster.nodes[0].engine.publisher
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(30_000)
    audits = [job for job in publisher.jobs.values() if job.audit_of == second.job_id]
    assert len(audits) == 1 and audits[0].phase.value == "paid"
    assert cheater not in {s.worker for s in audits[0].slots}  # never its own auditor
    assert cheater in second.pay_forfeited and cheater in first.pay_forfeited
    assert _earned(cluster, cheater) == {}
    summary = publisher.summary(second.job_id)
    assert summary is not None and summary.host_caught_later
    assert not publisher.escrow.held  # the others were paid (or caught too)


def test_a_batch_end_pays_a_host_whose_held_solo_result_passes_its_audit() -> None:
    cluster = _cluster(5, streak=1, spot_ppm=1)
    _run_job(cluster, b"one")
    second = _run_job(cluster, b"two")
    assert second.verified_by == "solo"
    (host,) = _matching(second)
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(30_000)
    publisher = cluster.nodes[0].engine.publisher
    assert [job.phase.value for job in publisher.jobs.values() if job.audit_of] == ["paid"]
    assert _earned(cluster, host)[second.job_id] == _matching(second)[host]
    assert not publisher.escrow.held and not second.pay_forfeited


def test_a_hold_longer_than_the_protocol_allows_or_of_another_amount_is_refused() -> None:
    cluster = _cluster(4, streak=1_000, spot_ppm=PPM)
    job = _run_job(cluster, b"one")
    worker, amount_mc = sorted(_matching(job).items())[0]
    node, publisher = cluster.by_peer[worker], cluster.nodes[0]
    slot = job.match_slot(worker)
    assert slot is not None
    too_late_ms = job.call.deadline_ms + limits.PAY_HOLD_MS_MAX + 1
    for body, reason in (
        (PayHeld(job.job_id, slot.award_no, amount_mc, too_late_ms), "hold-too-long"),
        (PayHeld(job.job_id, slot.award_no, amount_mc + 1, job.pay_by_ms), "hold-amount"),
        (PayHeld(job.job_id, slot.award_no, amount_mc, job.pay_by_ms + 1), "hold-moved"),
    ):
        data = publisher.engine.seal(body, now_ms=cluster.now_ms, ttl_ms=60_000)
        event = MessageReceived(publisher.peer_id, PROTOCOL_RESULT, data)
        effects = node.engine.step(event, cluster.now_ms)
        assert [e.reason for e in effects if isinstance(e, Penalise)] == [reason]
    task = node.engine.worker.tasks[job.job_id]
    assert task.pay_by_ms == job.pay_by_ms  # the first, honest note stands


def test_a_host_waits_for_at_most_the_bound_of_held_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "ESCROW_JOBS_PER_HOST_MAX", 1)
    cluster = _cluster(3, streak=1_000, spot_ppm=PPM)  # two hosts: both run every job
    first = _run_job(cluster, b"one")
    second = _run_job(cluster, b"two")
    for worker, amount_mc in _matching(first).items():  # the oldest was released
        assert _earned(cluster, worker) == {first.job_id: amount_mc}
        assert worker in second.pay_held and worker not in first.pay_held


def test_a_lost_note_is_sent_again_when_the_worker_re_sends_its_commit() -> None:
    lost: list[bytes] = []

    def drop_first_notes(sender: int, send: Send) -> bool:
        envelope = open_envelope(send.data, now_ms=cluster.now_ms, verify=False)
        if isinstance(envelope.body, PayHeld) and send.peer not in lost:
            lost.append(send.peer)
            return True
        return False

    # The batch does not end by itself meanwhile (it would pay, and the note would not matter).
    adaptive = AdaptiveConfig(trust_streak_min=1_000, spot_check_ppm=PPM, batch_idle_ms=HOUR_MS)
    config = PublisherConfig(network_prefix_v4=32, adaptive=adaptive)
    cluster = Cluster(4, ledgers=True, publisher_config=config, drop=drop_first_notes)
    job = _run_job(cluster, b"one")
    assert set(lost) == set(_matching(job))
    cluster.run_for(job.call.deadline_ms - cluster.now_ms + 1_000)
    for worker in lost:  # its commit or reveal, sent again, brought the note again
        task = cluster.by_peer[worker].engine.worker.tasks[job.job_id]
        assert task.state is TaskState.REVEALED and task.pay_by_ms == job.pay_by_ms


def _catch(cluster: Cluster, cheater: PeerId) -> None:
    """Run jobs with ``cheater`` lying until it is outvoted in one, then make it honest again
    and leave it one honest peer, so that every later job (two replicas) is awarded to it."""
    cluster.by_peer[cheater].behaviour = "liar"
    for round_no in range(8):
        job = _run_job(cluster, f"catch {round_no}".encode())
        if any(s.worker == cheater and s.verdict == "mismatch" for s in job.slots):
            break
    else:
        raise AssertionError("the liar was never picked")
    cluster.by_peer[cheater].behaviour = "honest"
    others = [n for n in cluster.nodes[1:] if n.peer_id != cheater]
    cluster.kill(others[0].index)


def test_a_caught_host_is_on_proof_and_its_later_work_is_forfeited_at_the_batch_end() -> None:
    # The trust cheater's way to earn: honest probation after each catch, paid at the batch's
    # end. On proof, a caught host is paid only if it passes a check it cannot tell from a solo
    # run; here N is never reached, so it cannot, and its probation pay is forfeited.
    cluster = _cluster(4, streak=1_000, spot_ppm=PPM)
    cheater = sorted(_matching(_run_job(cluster, b"one")))[0]
    _catch(cluster, cheater)
    publisher = cluster.nodes[0].engine.publisher
    assert cheater in publisher.escrow.on_proof
    later: list[PublisherJob] = []
    for round_no in range(8):
        job = _run_job(cluster, f"after {round_no}".encode())
        if cheater in _matching(job):
            later.append(job)
            assert cheater in job.pay_on_proof and cheater in job.pay_held
    assert later, "the host was never picked again"
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(5_000)
    assert _earned(cluster, cheater) == {}
    for job in later:
        assert cheater in job.pay_forfeited
        for worker, amount_mc in _matching(job).items():  # the others are paid
            if worker != cheater:
                assert _earned(cluster, worker)[job.job_id] == amount_mc
    assert not publisher.escrow.held
    assert not any(job.audit_of for job in publisher.jobs.values())  # forfeited, unaudited
    # The worker was told: it stops counting that pay as owed.
    owed = cluster.by_peer[cheater].engine.worker.owed_mc_by_publisher
    assert cluster.nodes[0].peer_id not in owed


def test_a_host_on_proof_is_paid_everything_held_once_it_passes_a_spot_check() -> None:
    # N = 2, c = 100 %: once trusted again, every job is a spot check it passes.
    cluster = _cluster(4, streak=2, spot_ppm=PPM)
    cheater = sorted(_matching(_run_job(cluster, b"one")))[0]
    _catch(cluster, cheater)
    publisher = cluster.nodes[0].engine.publisher
    passed: PublisherJob | None = None
    on_proof: list[PublisherJob] = []
    for round_no in range(12):
        job = _run_job(cluster, f"after {round_no}".encode())
        if cheater in job.pay_on_proof:
            on_proof.append(job)
        if cheater in job.trusted_at_award and cheater in _matching(job):
            passed = job
            break
    assert passed is not None and on_proof, "the host never passed a spot check"
    assert cheater not in publisher.escrow.on_proof
    earned = _earned(cluster, cheater)
    for job in [*on_proof, passed]:
        assert earned[job.job_id] == _matching(job)[cheater]


def test_pay_on_proof_survives_a_publisher_restart() -> None:
    cluster = _cluster(4, streak=1_000, spot_ppm=PPM)
    cheater = sorted(_matching(_run_job(cluster, b"one")))[0]
    _catch(cluster, cheater)
    for round_no in range(8):
        job = _run_job(cluster, f"after {round_no}".encode())
        if cheater in job.pay_on_proof:
            break
    else:
        raise AssertionError("the host was never picked again")
    cluster.restart_publisher(0, job.job_id)
    restored = cluster.nodes[0].engine.publisher
    assert restored.jobs[job.job_id].pay_on_proof == job.pay_on_proof
    assert cheater in restored.escrow.on_proof
    cluster.inject(0, ReleaseHeldPay())
    cluster.run_for(5_000)
    assert job.job_id not in _earned(cluster, cheater)


def test_the_batch_ends_by_itself_once_no_adaptive_job_is_open() -> None:
    # No ReleaseHeldPay: the daemon's publisher ends the batch batch_idle_ms after its last
    # adaptive job, and not while another is open.
    cluster = _cluster(4, streak=1_000, spot_ppm=PPM, batch_idle_ms=3_000)
    first = _run_job(cluster, b"one")  # run_for 5 s after it: past the idle time
    for worker, amount_mc in _matching(first).items():
        assert _earned(cluster, worker) == {first.job_id: amount_mc}
    assert not cluster.nodes[0].engine.publisher.escrow.held
    second_id = cluster.publish_job(0, MODULE, b"two", verify="adaptive")
    third_id = cluster.publish_job(0, MODULE, b"three" * 1000, verify="adaptive")
    cluster.run_until(cluster.finished(0, second_id))
    jobs = cluster.nodes[0].engine.publisher.jobs
    if jobs[third_id].phase.value not in ("paid", "failed"):
        cluster.run_for(3_500)  # idle time passed, but the third job is open: still held
        if jobs[third_id].phase.value not in ("paid", "failed"):
            assert set(jobs[second_id].pay_held) == set(_matching(jobs[second_id]))
    cluster.run_until(cluster.finished(0, third_id))
    cluster.run_for(5_000)
    for job_id in (second_id, third_id):
        for worker, amount_mc in _matching(jobs[job_id]).items():
            assert _earned(cluster, worker)[job_id] == amount_mc


def test_a_caught_host_s_unchecked_solo_results_are_run_again_and_the_result_says_so() -> None:
    # N = 1 and c = 1 ppm: once trusted, a host runs jobs alone, in practice never checked.
    cluster = _cluster(5, streak=1, spot_ppm=1)
    first = _run_job(cluster, b"one")
    for worker in _matching(first):  # trusted now: they turn to lying
        cluster.by_peer[worker].behaviour = "liar"
    solo = [_run_job(cluster, f"solo {n}".encode()) for n in range(3)]
    assert all(job.verified_by == "solo" for job in solo)
    publisher = cluster.nodes[0].engine.publisher
    cluster.inject(0, ReleaseHeldPay())  # one audit per host catches it; the rest are re-run
    cluster.run_for(60_000)
    for job in solo:
        (cheater,) = _matching(job)
        assert cheater in job.pay_forfeited and _earned(cluster, cheater) == {}
        summary = publisher.summary(job.job_id)
        assert summary is not None and summary.host_caught_later
        assert summary.rechecked == "different", (summary.rechecked, summary.rechecked_by)
        rerun = publisher.jobs[JobId(summary.rechecked_by)]
        assert rerun.audit_of == job.job_id and rerun.phase.value == "paid"
        assert cheater not in {s.worker for s in rerun.slots}  # never its own re-checker
    assert not publisher.escrow.held and not publisher.escrow.unchecked
