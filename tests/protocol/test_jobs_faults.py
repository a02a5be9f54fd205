"""Hostile and unlucky inputs to jobs: copiers, restarts, replays, expiry, floods."""

from __future__ import annotations

import dataclasses
import random

import pytest

from hearth.protocol import limits
from hearth.protocol.effects import Log, Penalise, RunJob, Send
from hearth.protocol.envelope import seal
from hearth.protocol.events import MessageReceived
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import (
    Award,
    Bid,
    CallForBids,
    JobId,
    ResultCommit,
    ResultReveal,
    RevealRequest,
)
from hearth.protocol.messages import PROTOCOL_AWARD, PROTOCOL_BID, PROTOCOL_RESULT, TOPIC_JOBS
from tests.protocol.harness import Cluster, honest_output

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"


def test_a_lazy_copier_cannot_pass_off_another_workers_commitment() -> None:
    # One winner works honestly; the other copies: it never runs the job, it submits the honest
    # worker's commitment as its own and later the honest worker's revealed digest and salt.
    cluster = Cluster(4)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(lambda: len(cluster.sends_of(3, Award)) == 2)
    awards = [(cluster.by_peer[s.peer], e.body) for _, s, e in cluster.sends_of(3, Award)]
    (honest, _), (copier, copier_award) = awards
    copier.behaviour = "stall"
    cluster.run_until(lambda: bool(cluster.sends_of(honest.index, ResultCommit)))
    [(_, _, honest_commit)] = cluster.sends_of(honest.index, ResultCommit)
    award_no = copier_award.award_no
    forged = ResultCommit(job_id, award_no, honest_commit.body.commitment)
    data = copier.engine.seal(forged, now_ms=cluster.now_ms, ttl_ms=60_000)
    cluster.inject(3, MessageReceived(copier.peer_id, PROTOCOL_RESULT, data), delay_ms=5)
    # The honest reveal follows its commit at once; the copier's is asked for once it committed.
    cluster.run_until(lambda: bool(cluster.sends_of(3, RevealRequest)))
    [(_, _, honest_reveal)] = cluster.sends_of(honest.index, ResultReveal)
    copied = dataclasses.replace(honest_reveal.body, award_no=award_no)
    data = copier.engine.seal(copied, now_ms=cluster.now_ms, ttl_ms=60_000)
    cluster.inject(3, MessageReceived(copier.peer_id, PROTOCOL_RESULT, data))
    cluster.run_until(cluster.finished(3, job_id))
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    paid = {p.worker for p in cluster.payments(job_id)}
    assert copier.peer_id not in paid and honest.peer_id in paid and len(paid) == 2
    [mismatch] = cluster.mismatches(job_id)
    assert mismatch.worker == copier.peer_id and mismatch.reason == "bad-reveal"
    assert mismatch.commit_envelope  # the copier's own signed commitment is the evidence


@pytest.mark.parametrize("restart_when", ["bidding", "running", "verifying", "paid"])
def test_a_restarted_publisher_finishes_from_its_saved_state_without_paying_twice(
    restart_when: str,
) -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(lambda: cluster.phase(3, job_id) == restart_when)
    cluster.nodes[3].alive = False  # killed: what was in flight to it is lost
    cluster.run_for(2_000)
    paid_before = len(cluster.payments(job_id))
    cluster.restart_publisher(3, job_id)
    cluster.run_until(cluster.finished(3, job_id))
    cluster.run_for(120_000)
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    assert summary.output == honest_output(MODULE, INPUT)
    payments = cluster.payments(job_id)
    assert len(payments) == 2 and len({p.worker for p in payments}) == 2
    if restart_when == "paid":
        assert paid_before == 2
    # No worker ran the job twice, whatever awards were re-sent.
    for node in cluster.nodes[:3]:
        assert len([r for r in cluster.of_type(node.index, RunJob) if r.job_id == job_id]) <= 1


def test_a_publisher_restored_after_the_deadline_cancels_with_signed_messages() -> None:
    cluster = Cluster(4, behaviours={0: "stall", 1: "stall", 2: "stall"})
    job_id = cluster.publish_job(3, MODULE, INPUT, deadline_ms=cluster.now_ms + 30_000)
    cluster.run_until(lambda: cluster.phase(3, job_id) == "running")
    cluster.run_for(500)
    cluster.nodes[3].alive = False
    cluster.run_for(40_000)
    effects = cluster.restart_publisher(3, job_id)
    cancels = [e for e in effects if isinstance(e, Send) and e.protocol == PROTOCOL_AWARD]
    assert len(cancels) == 2
    assert cluster.phase(3, job_id) == "failed"
    assert cluster.payments(job_id) == []


def _deliver(cluster: Cluster, to: int, sender: int, channel: str, data: bytes) -> list[object]:
    node = cluster.nodes[to]
    event = MessageReceived(cluster.nodes[sender].peer_id, channel, data)
    effects = node.engine.step(event, cluster.now_ms)
    cluster.carry_out(node, effects)
    return effects


def _dropped(effects: list[object], reason: str) -> bool:
    return any(
        isinstance(e, Log) and e.event == "message-dropped" and ("reason", reason) in e.fields
        for e in effects
    )


def test_replayed_calls_bids_and_awards_change_nothing() -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    # Each comes back while still unexpired, so only the replay guard stands in its way.
    cluster.run_until(lambda: bool(cluster.sends_of(0, Bid)))
    [(_, call, _)] = cluster.sends_of(3, CallForBids)
    [(_, bid, _)] = cluster.sends_of(0, Bid)
    cluster.run_for(50)
    assert _dropped(_deliver(cluster, 0, 3, TOPIC_JOBS, call.data), "replay")
    assert _dropped(_deliver(cluster, 3, 0, PROTOCOL_BID, bid.data), "replay")
    cluster.run_until(lambda: bool(cluster.sends_of(3, Award)))
    cluster.run_for(50)
    _, award, _ = cluster.sends_of(3, Award)[0]
    winner = cluster.by_peer[award.peer].index
    tasks_before = {
        k: dataclasses.replace(v) for k, v in cluster.nodes[winner].engine.worker.tasks.items()
    }
    assert _dropped(_deliver(cluster, winner, 3, PROTOCOL_AWARD, award.data), "replay")
    assert cluster.nodes[winner].engine.worker.tasks == tasks_before
    cluster.run_until(cluster.finished(3, job_id))
    assert len(cluster.payments(job_id)) == 2
    assert len([r for r in cluster.of_type(winner, RunJob) if r.job_id == job_id]) == 1


def test_expired_calls_bids_and_awards_are_dropped() -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    [(_, call, _)] = cluster.sends_of(3, CallForBids)
    [(_, bid, _)] = cluster.sends_of(0, Bid)
    award_sent = cluster.sends_of(3, Award)[0]
    winner = cluster.by_peer[award_sent[1].peer].index
    cluster.now_ms += limits.ENVELOPE_TTL_MS_MAX + 1
    fresh = Cluster(4)  # peers that never saw them, so that only expiry can refuse them
    fresh.now_ms = cluster.now_ms
    assert _dropped(_deliver(fresh, 0, 3, TOPIC_JOBS, call.data), "expired")
    assert _dropped(_deliver(fresh, 3, 0, PROTOCOL_BID, bid.data), "expired")
    assert _dropped(_deliver(fresh, winner, 3, PROTOCOL_AWARD, award_sent[1].data), "expired")
    assert fresh.nodes[winner].engine.worker.tasks == {}


def _open_auction(cluster: Cluster) -> tuple[JobId, CallForBids]:
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_for(50)  # the call is out and the honest bids are in
    [(_, _, envelope)] = cluster.sends_of(3, CallForBids)
    return job_id, envelope.body


def test_bids_over_the_max_price_or_past_the_deadline_are_dropped() -> None:
    cluster = Cluster(5)
    job_id, call = _open_auction(cluster)
    job = cluster.nodes[3].engine.publisher.jobs[job_id]
    outsider = cluster.nodes[4].engine  # its honest bid is forgotten, so that it may bid again
    del job.bids[outsider.identity.peer_id]
    over = Bid(call.job_id, 0, call.max_price_mc_per_tfuel + 1, 10**9, "grid", "op4")
    data = outsider.seal(over, now_ms=cluster.now_ms, ttl_ms=30_000)
    effects = _deliver(cluster, 3, 4, PROTOCOL_BID, data)
    assert _dropped(effects, "over-price")
    assert Penalise(outsider.identity.peer_id, "over-price", 25) in effects
    assert outsider.identity.peer_id not in job.bids
    cluster.now_ms = call.bid_deadline_ms + 1  # past the deadline, before the timer closes it
    late = Bid(call.job_id, 0, 1, 10**9, "grid", "op4")
    data = outsider.seal(late, now_ms=cluster.now_ms, ttl_ms=30_000)
    effects = _deliver(cluster, 3, 4, PROTOCOL_BID, data)
    assert outsider.identity.peer_id not in job.bids
    assert not any(isinstance(e, Penalise) for e in effects)  # lateness is not misconduct


def test_a_bid_flood_is_bounded_one_bid_per_peer_and_per_auction() -> None:
    cluster = Cluster(4)
    job_id, call = _open_auction(cluster)
    publisher = cluster.nodes[3].engine
    job = publisher.publisher.jobs[job_id]
    flooder = cluster.nodes[0].engine
    assert flooder.identity.peer_id in job.bids  # its honest bid came first
    first = job.bids[flooder.identity.peer_id]
    for price in range(1_000):  # a thousand more, each with a fresh nonce: none counts
        bid = Bid(call.job_id, 0, price, 10**9, "grid", "x")
        data = flooder.seal(bid, now_ms=cluster.now_ms, ttl_ms=30_000)
        effects = _deliver(cluster, 3, 0, PROTOCOL_BID, data)
        assert _dropped(effects, "duplicate-bid")
    assert job.bids[flooder.identity.peer_id] == first
    for i in range(limits.BIDS_PER_AUCTION_MAX + 50):  # many identities: the auction is bounded
        identity = Identity(i.to_bytes(2, "big") * 16)
        bid = Bid(call.job_id, 0, 100, 10**9, "grid", "")
        data = seal(identity, bid, now_ms=cluster.now_ms, ttl_ms=30_000, rng=random.Random(i))
        publisher.step(MessageReceived(identity.peer_id, PROTOCOL_BID, data), cluster.now_ms)
    assert len(job.bids) == limits.BIDS_PER_AUCTION_MAX
    cluster.run_until(cluster.finished(3, job_id))
    summary = publisher.publisher.summary(job_id)
    assert summary is not None
    assert len(summary.replicas_detail) <= 4 * 5  # awards of one job are bounded too


def test_garbage_output_under_an_honest_hash_is_caught_and_not_paid() -> None:
    cluster = Cluster(5, behaviours={0: "garbage", 1: "garbage"})
    job_id = cluster.publish_job(4, MODULE, INPUT)
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    assert summary.output == honest_output(MODULE, INPUT)
    cheats = {cluster.nodes[0].peer_id, cluster.nodes[1].peer_id}
    assert not cheats & {p.worker for p in cluster.payments(job_id)}
    assert cluster.mismatches(job_id)
    for mismatch in cluster.mismatches(job_id):
        assert mismatch.worker in cheats and mismatch.reason == "garbage-output"
        assert mismatch.reveal_envelope  # the cheat's own signed reveal is the evidence


def test_bids_from_refused_authors_are_dropped() -> None:
    cluster = Cluster(4)
    job_id, call = _open_auction(cluster)
    publisher = cluster.nodes[3].engine
    job = publisher.publisher.jobs[job_id]
    refused = cluster.nodes[1].engine
    del job.bids[refused.identity.peer_id]
    publisher.refused_authors.add(refused.identity.public_key)  # e.g. proven to have forked
    data = refused.seal(
        Bid(call.job_id, 0, 1, 10**9, "grid", "op1"), now_ms=cluster.now_ms, ttl_ms=30_000
    )
    assert _dropped(_deliver(cluster, 3, 1, PROTOCOL_BID, data), "refused-author")
    assert refused.identity.peer_id not in job.bids


def test_a_lost_commit_is_sent_again_until_the_publisher_asks_for_the_reveal() -> None:
    from hearth.protocol.messages import PROTOCOL_RESULT

    lost: set[int] = set()

    def lose_each_workers_first_result(sender: int, send: Send) -> bool:
        if send.protocol == PROTOCOL_RESULT and sender != 3 and sender not in lost:
            lost.add(sender)
            return True
        return False

    cluster = Cluster(5, drop=lose_each_workers_first_result)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid", summary
    assert len(lost) == 2
