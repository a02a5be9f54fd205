"""A job end to end on an in-memory network: auction, execution, verification, payment."""

from __future__ import annotations

import dataclasses

from hearth.protocol.adaptive import AdaptiveConfig
from hearth.protocol.effects import FetchBlob, PayWorker, RecordMismatch
from hearth.protocol.pricing import cost_mc
from hearth.protocol.publisher_state import PublisherConfig
from tests.protocol.harness import Cluster, honest_output, sha256

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"


def test_a_job_completes_verified_by_two_agreeing_replicas() -> None:
    cluster = Cluster(5)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid", summary
    assert summary.output == honest_output(MODULE, INPUT)
    assert summary.output_hash == sha256(summary.output)
    payments = cluster.payments(job_id)
    assert len(payments) == 2
    assert len({p.worker for p in payments}) == 2
    for payment in payments:
        assert payment.amount_mc == cost_mc(summary.clearing_price_mc_per_tfuel, summary.fuel_used)
    assert cluster.progress(3, job_id) == ["bidding", "running", "verifying", "paid"]
    assert cluster.mismatches(job_id) == []
    # Only the publisher pays, and nothing more happens afterwards.
    cluster.run_for(200_000)
    assert len(cluster.payments(job_id)) == 2
    assert all(not isinstance(e, PayWorker) for n in cluster.nodes[:3] for _, e in n.effects)


def test_one_liar_of_three_is_outvoted_and_not_paid() -> None:
    # Node 0 bids cheapest, so it is sure to be among the first two winners.
    cluster = Cluster(5, behaviours={0: "liar"})
    job_id = cluster.publish_job(4, MODULE, INPUT)
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid", summary
    assert summary.output == honest_output(MODULE, INPUT)
    liar = cluster.nodes[0].peer_id
    paid = [p.worker for p in cluster.payments(job_id)]
    assert liar not in paid
    assert len(paid) == len(set(paid)) == 2
    [mismatch] = cluster.mismatches(job_id)
    assert isinstance(mismatch, RecordMismatch) and mismatch.worker == liar
    assert mismatch.accepted_digest == summary.result_digest
    verdicts = {r.worker: r.verdict for r in summary.replicas_detail}
    assert verdicts[liar] == "mismatch"
    assert sorted(verdicts.values()) == ["match", "match", "mismatch"]
    assert cluster.nodes[4].engine.reputation.get(liar).results_invalid == 1


def winners(cluster: Cluster, index: int, job_id: bytes) -> list[str]:
    summary = cluster.nodes[index].engine.publisher.summary(job_id)  # type: ignore[arg-type]
    assert summary is not None
    return [r.worker for r in summary.replicas_detail]


def test_a_silent_winner_loses_its_award_to_the_next_candidate_after_the_lease() -> None:
    cluster = Cluster(5, behaviours={0: "mute"})  # node 0 receives its award, never answers
    job_id = cluster.publish_job(4, MODULE, INPUT)
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    mute = cluster.nodes[0].peer_id
    [dropped] = [r for r in summary.replicas_detail if r.worker == mute]
    assert dropped.verdict == "silent" and dropped.paid_mc == 0
    assert len(summary.replicas_detail) == 3
    assert mute not in [p.worker for p in cluster.payments(job_id)]
    assert len(cluster.payments(job_id)) == 2


def test_a_worker_that_dies_mid_job_is_replaced() -> None:
    cluster = Cluster(5, behaviours={0: "stall"})  # accepts, fetches, never finishes running
    job_id = cluster.publish_job(4, MODULE, INPUT)
    cluster.run_until(lambda: cluster.phase(4, job_id) == "running")
    cluster.run_for(300)  # the awards are accepted and node 0 is running
    assert cluster.nodes[0].engine.worker.tasks_running() == 1
    cluster.kill(0)
    started_ms = cluster.now_ms
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    assert cluster.nodes[0].peer_id not in [p.worker for p in cluster.payments(job_id)]
    lease_ms = 60_000
    assert cluster.now_ms - started_ms < lease_ms  # the disconnect, not the lease, moved it


def test_a_stalled_worker_loses_its_award_when_the_lease_runs_out() -> None:
    cluster = Cluster(5, behaviours={0: "stall"})
    job_id = cluster.publish_job(4, MODULE, INPUT, lease_ms=5_000)
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    [stalled] = [r for r in summary.replicas_detail if r.worker == cluster.nodes[0].peer_id]
    assert stalled.verdict == "silent"
    assert len(cluster.payments(job_id)) == 2


def test_the_job_fails_at_once_when_every_host_declines_on_price() -> None:
    cluster = Cluster(3)
    job_id = cluster.publish_job(2, MODULE, INPUT, max_price_mc_per_tfuel=10)  # below every floor
    cluster.run_until(cluster.finished(2, job_id))
    summary = cluster.nodes[2].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "failed"
    # Every host said why (BidDecline): no second round, the cause and its fix at once.
    assert summary.call_round == 0 and summary.cause == "price"
    assert "raise --max-price to at least" in summary.detail
    assert cluster.payments(job_id) == []


def test_candidates_run_out_so_a_fresh_call_for_bids_finds_more() -> None:
    # Nodes 0-2 share one /24; with the default prefix only one of them may win. Node 3 and 4 are
    # elsewhere, but node 4 is the publisher: after a liar there is no diverse candidate left.
    ips = {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.9.0.1", 4: "10.8.0.1"}
    cluster = Cluster(5, ips=ips, behaviours={3: "liar"}, publisher_config=PublisherConfig())
    job_id = cluster.publish_job(4, MODULE, INPUT)
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None
    assert summary.phase == "failed", summary
    groups = [b.network_group for b in summary.bids]
    assert "10.0.0.0/24" in groups


def test_disagreement_without_a_majority_fails_as_unverifiable_and_keeps_evidence() -> None:
    cluster = Cluster(6, behaviours={0: "liar", 1: "liar", 2: "liar", 3: "liar"})
    job_id = cluster.publish_job(5, MODULE, INPUT, replicas_max=3)
    cluster.run_until(cluster.finished(5, job_id))
    summary = cluster.nodes[5].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "failed"
    assert summary.detail.startswith("unverifiable")
    revealed = [r for r in summary.replicas_detail if r.result_digest]
    assert len(revealed) == 3 and len({r.result_digest for r in revealed}) == 3
    assert cluster.payments(job_id) == []


def test_a_large_output_is_fetched_by_hash_from_a_matching_worker() -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(3, MODULE, b"big: input")
    cluster.run_until(cluster.finished(3, job_id))
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    assert summary.output == b""
    [fetch] = [f for f in cluster.of_type(3, FetchBlob) if f.blob_hash == summary.output_hash]
    assert fetch.size_bytes == len(honest_output(MODULE, b"big: input"))
    assert fetch.peer in {p.worker for p in cluster.payments(job_id)}


def test_the_same_seed_replays_the_same_run() -> None:
    def run() -> list[object]:
        cluster = Cluster(5, seed=7, behaviours={1: "liar"})
        job_id = cluster.publish_job(4, MODULE, INPUT)
        cluster.run_until(cluster.finished(4, job_id))
        return [e for node in cluster.nodes for e in node.effects]

    assert run() == run()


def test_adaptive_verification_may_trust_a_long_valid_streak_alone() -> None:
    # c = 100 %: never alone; so first prove the streak, then lower c to 0.1 % to see solo runs.
    config = PublisherConfig(
        network_prefix_v4=32, adaptive=AdaptiveConfig(trust_streak_min=3, spot_check_ppm=1_000)
    )
    cluster = Cluster(4, publisher_config=config)
    jobs = []
    for n in range(6):
        job_id = cluster.publish_job(3, MODULE, INPUT + bytes([n]), verify="adaptive")
        cluster.run_until(cluster.finished(3, job_id))
        jobs.append(cluster.nodes[3].engine.publisher.summary(job_id))
    assert all(s is not None and s.phase == "paid" for s in jobs)
    replicas = [len(s.replicas_detail) for s in jobs if s is not None]
    assert replicas[0] == 2 and 1 in replicas  # checked at first, then trusted once proven
    ways = [s.verified_by for s in jobs if s is not None]
    assert ways[0] == "replicated" and "solo" in ways
    bound = AdaptiveConfig(trust_streak_min=3, spot_check_ppm=1_000).error_bound_ppm
    assert all(s is not None and s.error_bound_ppm == bound for s in jobs)


def test_always_2_is_the_default_and_never_runs_alone() -> None:
    config = PublisherConfig(
        network_prefix_v4=32, adaptive=AdaptiveConfig(trust_streak_min=1, spot_check_ppm=1)
    )
    cluster = Cluster(4, publisher_config=config)
    for n in range(4):
        job_id = cluster.publish_job(3, MODULE, INPUT + bytes([n]))
        cluster.run_until(cluster.finished(3, job_id))
        summary = cluster.nodes[3].engine.publisher.summary(job_id)
        assert summary is not None and summary.phase == "paid"
        assert (summary.verify, summary.verified_by, summary.error_bound_ppm) == (
            "always-2",
            "replicated",
            0,
        )
        assert len(summary.replicas_detail) == 2


def test_the_job_list_and_summaries_are_plain_values() -> None:
    cluster = Cluster(4)
    first = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_for(1)
    second = cluster.publish_job(3, MODULE, INPUT + b"!")
    cluster.run_until(lambda: cluster.finished(3, first)() and cluster.finished(3, second)())
    listed = cluster.nodes[3].engine.publisher.list_jobs()
    assert [s.job_id for s in listed] == [first, second]
    summary = listed[0]
    assert summary.credits_paid_mc == sum(p.amount_mc for p in cluster.payments(first))
    assert len(summary.bids) == 3 and all(r.verdict == "match" for r in summary.replicas_detail)
    assert dataclasses.replace(summary) == summary  # a frozen snapshot, detached from the engine


def test_a_job_waits_for_busy_hosts_rather_than_failing() -> None:
    # Five jobs at once on three one-core hosts: most hosts are busy when the first calls go
    # out, and the later, longer rounds catch them as they free up.
    cluster = Cluster(4)
    jobs = [cluster.publish_job(3, MODULE, INPUT + bytes([i])) for i in range(5)]
    cluster.run_until(lambda: all(cluster.finished(3, j)() for j in jobs))
    phases = [cluster.nodes[3].engine.publisher.summary(j).phase for j in jobs]  # type: ignore[union-attr]
    assert phases == ["paid"] * 5


def test_hosts_busy_with_a_job_are_invited_last_in_its_next_round() -> None:
    # The best-ranked hosts are the ones every other job fills first: a job that invited them
    # again round after round starved while hosts further down were free (ADR 0034, third
    # amendment). The round's own invitation is the thing decided, so it is read directly.
    cluster = Cluster(16, market=True)
    job_id = cluster.publish_job(15, MODULE, INPUT)
    cluster.run_for(0)
    publisher = cluster.nodes[15].engine.publisher
    job = publisher.jobs[job_id]
    first = set(job.invited)
    assert len(first) == 6  # two replicas: twice as many, plus two spares
    job.declines = {peer: ("busy", 0) for peer in first}
    again = set(publisher._invitees(job, cluster.now_ms))
    assert len(again) == 6 and not again & first
    # Too few others left (15 hosts, 12 of them busy): the busy ones are invited after all.
    job.declines = {peer: ("busy", 0) for peer in list(cluster.by_peer)[:12]}
    assert len(publisher._invitees(job, cluster.now_ms)) == 6
