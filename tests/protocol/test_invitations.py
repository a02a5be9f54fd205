"""Directed invitations and early close (ADR 0031), on the in-memory network."""

from __future__ import annotations

import dataclasses
import random

from hearth.protocol import limits
from hearth.protocol.auction import BidView
from hearth.protocol.effects import AwaitSaves, Penalise, Publish, SaveJob, Send
from hearth.protocol.events import InvitationUndelivered, MessageReceived
from hearth.protocol.identity import PeerId
from hearth.protocol.invitations import sample
from hearth.protocol.job_messages import Award, Bid, BidDecline, CallForBids, Invitation
from hearth.protocol.messages import PROTOCOL_BID, PROTOCOL_DECLINE, PROTOCOL_INVITE, TOPIC_JOBS
from hearth.protocol.publisher_state import PublisherConfig, decode_job
from tests.protocol.harness import LATENCY_MS, Cluster

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"
WINDOW_MS = 1_000


def _gossiped_calls(cluster: Cluster, index: int) -> list[Publish]:
    return [e for e in cluster.of_type(index, Publish) if e.topic == TOPIC_JOBS]


def test_invited_hosts_answer_and_the_auction_closes_before_its_window() -> None:
    cluster = Cluster(5, market=True)
    started_ms = cluster.now_ms
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    assert _gossiped_calls(cluster, 3) == []  # the view held enough hosts: nothing gossiped
    invited = {e.peer for e in cluster.of_type(3, Send) if e.protocol == PROTOCOL_INVITE}
    assert invited == {n.peer_id for n in cluster.nodes if n.index != 3}
    first_award_ms = min(at_ms for at_ms, _, _ in cluster.sends_of(3, Award))
    # One round trip to the invitees, not the whole window.
    assert first_award_ms - started_ms <= 2 * LATENCY_MS + 1 < WINDOW_MS


def test_the_fixed_window_path_stays_selectable() -> None:
    config = PublisherConfig(network_prefix_v4=32, directed_invitations=False)
    cluster = Cluster(5, market=True, publisher_config=config)
    started_ms = cluster.now_ms
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    assert len(_gossiped_calls(cluster, 3)) == 1
    first_award_ms = min(at_ms for at_ms, _, _ in cluster.sends_of(3, Award))
    assert first_award_ms - started_ms >= WINDOW_MS


def test_a_thin_view_gossips_the_call() -> None:
    cluster = Cluster(5)  # no capacity ads: the publisher knows no host
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    assert len(_gossiped_calls(cluster, 3)) == 1


def test_a_silent_invitee_holds_the_auction_open_until_the_window_ends() -> None:
    silent = 1

    def drop(sender: int, send: Send) -> bool:
        return sender == silent and send.protocol in (PROTOCOL_BID, PROTOCOL_DECLINE)

    cluster = Cluster(5, market=True, drop=drop)
    started_ms = cluster.now_ms
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    first_award_ms = min(at_ms for at_ms, _, _ in cluster.sends_of(3, Award))
    assert first_award_ms - started_ms >= WINDOW_MS


def test_an_invitation_the_node_could_not_deliver_does_not_hold_the_auction_open() -> None:
    unreachable = 1

    def drop(sender: int, send: Send) -> bool:
        return sender == 3 and send.protocol == PROTOCOL_INVITE and send.peer == peer

    cluster = Cluster(5, market=True, drop=drop)
    peer = cluster.nodes[unreachable].peer_id
    started_ms = cluster.now_ms
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.inject(3, InvitationUndelivered(peer))  # what the node's driver reports
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    assert peer in {e.peer for e in cluster.of_type(3, Send) if e.protocol == PROTOCOL_INVITE}
    first_award_ms = min(at_ms for at_ms, _, _ in cluster.sends_of(3, Award))
    assert first_award_ms - started_ms <= 2 * LATENCY_MS + 1 < WINDOW_MS


def test_when_no_invitation_can_be_delivered_the_call_is_gossiped_not_the_rounds_burnt() -> None:
    # A node just started: its market lists hosts, but every invitation fails at once. It used
    # to close each round on the spot and fail the job in milliseconds, "no host answered".
    def drop(sender: int, send: Send) -> bool:
        return sender == 3 and send.protocol == PROTOCOL_INVITE

    cluster = Cluster(5, market=True, drop=drop)
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_for(1)  # the invitations are out (and lost)
    job = cluster.nodes[3].engine.publisher.jobs[job_id]
    assert job.invited and not job.open_call
    for peer in sorted(job.invited):
        cluster.inject(3, InvitationUndelivered(peer))  # what the node's driver reports
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    assert len(_gossiped_calls(cluster, 3)) == 1  # the fallback, once


def test_an_invited_host_that_cannot_bid_declines_so_the_auction_still_closes_early() -> None:
    cluster = Cluster(5, market=True)
    started_ms = cluster.now_ms
    # Node 0 stops bidding: invited, it must still answer, with a decline.
    engine = cluster.nodes[0].engine
    engine.worker._config = type(engine.worker._config)(bidding=False)
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, job_id))
    declines = cluster.sends_of(0, BidDecline)
    assert [envelope.body.reason for _, _, envelope in declines] == ["not-bidding"]
    first_award_ms = min(at_ms for at_ms, _, _ in cluster.sends_of(3, Award))
    assert first_award_ms - started_ms < WINDOW_MS


def test_an_answer_to_an_invitation_never_sent_is_ignored_and_penalised() -> None:
    cluster = Cluster(12, market=True)  # 11 hosts, 6 invited for 2 replicas
    job_id = cluster.publish_job(0, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_for(1)  # the publisher has sent its invitations; no answer is back yet
    job = cluster.nodes[0].engine.publisher.jobs[job_id]
    assert not job.open_call and len(job.invited) == 6
    outsider = next(n for n in cluster.nodes[1:] if n.peer_id not in job.invited)
    call = job.call
    bid = Bid(job_id, call.call_round, 1, 10**9, "grid", "")
    data = outsider.engine.seal(bid, now_ms=cluster.now_ms, ttl_ms=10_000)
    cluster.inject(0, MessageReceived(outsider.peer_id, PROTOCOL_BID, data))
    cluster.run_for(1)
    assert outsider.peer_id not in job.bids
    assert Penalise(outsider.peer_id, "uninvited", 25) in cluster.of_type(0, Penalise)
    cluster.run_until(cluster.finished(0, job_id))
    assert cluster.phase(0, job_id) == "paid"
    winners = {e.peer for _, e, _ in cluster.sends_of(0, Award)}
    assert winners <= job.invited | {outsider.peer_id} and outsider.peer_id not in winners


def test_an_invitation_delivered_by_another_peer_is_refused() -> None:
    cluster = Cluster(4, market=True)
    publisher, forwarder, host = cluster.nodes[0], cluster.nodes[1], cluster.nodes[2]
    job_id = cluster.publish_job(0, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_for(1)
    call = publisher.engine.publisher.jobs[job_id].call
    assert isinstance(call, CallForBids)
    data = publisher.engine.seal(Invitation(call), now_ms=cluster.now_ms, ttl_ms=10_000)
    effects = host.engine.step(
        MessageReceived(forwarder.peer_id, PROTOCOL_INVITE, data), cluster.now_ms
    )
    assert Penalise(forwarder.peer_id, "forwarded", 25) in effects
    assert not any(isinstance(e, Send) for e in effects)


def _views(count: int) -> list[BidView]:
    return [
        BidView(
            PeerId(f"peer{i:02}"), 100 + i, 20, 50 if i < count // 2 else 0, 0, "grid", "", f"g{i}"
        )
        for i in range(count)
    ]


def test_the_sample_takes_the_best_and_rotates_the_rest_so_newcomers_get_invited() -> None:
    views = _views(20)
    count = 6
    explore = count * limits.INVITEES_EXPLORE_PCT // 100
    rng = random.Random(7)
    seen: set[PeerId] = set()
    always: set[PeerId] | None = None
    for _ in range(200):
        chosen = sample(views, count, "cheapest", 100_000, b"s" * 16, rng)
        assert len(chosen) == count == len(set(chosen))
        seen.update(chosen)
        fixed = set(chosen[: count - explore])
        always = fixed if always is None else always & fixed
    assert always is not None and len(always) == count - explore  # the best, every time
    assert seen == {view.worker for view in views}  # and everyone else now and then


def test_the_sample_spreads_over_network_groups_first() -> None:
    views = [
        BidView(PeerId(f"p{i}"), 100 + i, 20, 50, 5, "grid", "", "same" if i < 5 else f"g{i}")
        for i in range(8)
    ]
    chosen = sample(views, 4, "cheapest", 100_000, b"s" * 16, random.Random(1))
    groups = {view.network_group for view in views if view.worker in chosen[:3]}
    assert len(groups) == 3


def test_a_thin_market_pays_near_the_bids_not_the_publishers_maximum() -> None:
    # As many bidders as replicas, the default max price: no losing bid to set the price.
    cluster = Cluster(3, market=True)
    job_id = cluster.publish_job(0, MODULE, INPUT, max_price_mc_per_tfuel=100_000)
    cluster.run_until(cluster.finished(0, job_id))
    summary = cluster.nodes[0].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    highest = max(bid.price_mc_per_tfuel for bid in summary.bids)
    assert len(summary.bids) == 2
    assert highest <= summary.clearing_price_mc_per_tfuel <= 2 * highest < 100_000
    for payment in cluster.payments(job_id):
        assert payment.amount_mc * 10**12 <= 2 * highest * summary.fuel_used + 10**12


def test_many_jobs_leave_the_publisher_in_good_standing_with_every_host() -> None:
    cluster = Cluster(5, market=True)
    jobs = [
        cluster.publish_job(3, MODULE, INPUT + bytes([i]), bid_window_ms=WINDOW_MS)
        for i in range(40)
    ]
    cluster.run_until(lambda: all(cluster.finished(3, j)() for j in jobs), limit_ms=600_000)
    publisher = cluster.nodes[3].peer_id
    for node in cluster.nodes:
        if node.index != 3:
            assert node.engine.worker.standing(publisher).reputation_score >= 0
    single = cluster.publish_job(3, MODULE, b"one more", bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, single))
    assert cluster.phase(3, single) == "paid"


def test_a_small_module_and_input_travel_inside_the_award() -> None:
    cluster = Cluster(5, market=True)
    job_id = cluster.publish_job(
        3, MODULE, INPUT, module_inline=MODULE, input_inline=INPUT, bid_window_ms=WINDOW_MS
    )
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    awards = [envelope.body for _, _, envelope in cluster.sends_of(3, Award)]
    assert awards and all((a.module, a.input) == (MODULE, INPUT) for a in awards)
    assert cluster.inline_blobs == 2 * len(awards)  # no fetch: both blobs of every award


def test_blobs_that_do_not_match_their_hashes_are_never_inlined() -> None:
    cluster = Cluster(5, market=True)
    job_id = cluster.publish_job(
        3, MODULE, INPUT, module_inline=MODULE, input_inline=b"other" + INPUT[5:]
    )
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    awards = [envelope.body for _, _, envelope in cluster.sends_of(3, Award)]
    assert all((a.module, a.input) == (b"", b"") for a in awards)
    assert cluster.inline_blobs == 0


def test_the_publisher_saves_its_state_once_per_decision() -> None:
    cluster = Cluster(5, market=True)
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, job_id))
    saves = [e for e in cluster.of_type(3, SaveJob) if e.job_id == job_id]
    phases = [decode_job(e.state).phase.value for e in saves]
    # Published, awarded, every replica committed (reveals asked), paid: accepts, commits and
    # reveals in between are re-derived after a restart, not saved.
    assert phases == ["bidding", "running", "verifying", "paid"]


def test_what_acts_on_a_saved_decision_waits_for_the_save_when_saves_go_behind() -> None:
    config = PublisherConfig(network_prefix_v4=32, save_behind=True)
    cluster = Cluster(5, market=True, publisher_config=config, ledgers=True)
    job_id = cluster.publish_job(3, MODULE, INPUT, bid_window_ms=WINDOW_MS)
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    awaits = cluster.of_type(3, AwaitSaves)
    assert awaits and any(a.commits for a in awaits)  # the pays' commit waited for PAID's save
    # Every message of a step that saved went inside its AwaitSaves, after the save.
    effects = [e for _, e in cluster.nodes[3].effects]
    for i, effect in enumerate(effects):
        if isinstance(effect, SaveJob):
            following = effects[i + 1 :]
            nxt = next((e for e in following if isinstance(e, Send | AwaitSaves)), None)
            assert not isinstance(nxt, Send) or nxt in {m for a in awaits for m in a.then}


def test_hosts_with_a_queue_take_more_jobs_than_cores_and_say_when_they_can_start() -> None:
    cluster = Cluster(4, market=True)  # 3 hosts of 2 cores each
    for node in cluster.nodes:
        worker = node.engine.worker
        worker._config = dataclasses.replace(worker._config, backlog=2)
    jobs = [
        cluster.publish_job(0, MODULE, INPUT + bytes([i]), bid_window_ms=WINDOW_MS)
        for i in range(12)  # 24 replicas on 6 cores: every host takes work beyond its cores
    ]
    cluster.run_until(lambda: all(cluster.finished(0, j)() for j in jobs), limit_ms=600_000)
    assert all(cluster.phase(0, j) == "paid" for j in jobs)
    publisher = cluster.nodes[0].engine.publisher
    queued = [v for j in jobs for v, _ in publisher.jobs[j].bids.values() if v.wait_ms > 0]
    assert queued, "some bids came from hosts with a queue, and said so"
