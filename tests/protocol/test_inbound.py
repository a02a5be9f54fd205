"""The edge check (protocol/inbound.py): verdicts, no state change, and the engine's use of it."""

from __future__ import annotations

import dataclasses
import random

from hearth.protocol.auction import network_group
from hearth.protocol.effects import Penalise
from hearth.protocol.engine import Engine
from hearth.protocol.envelope import seal
from hearth.protocol.events import MessageReceived, Started
from hearth.protocol.identity import Identity
from hearth.protocol.inbound import Verdict, check_inbound
from hearth.protocol.job_messages import Bid
from hearth.protocol.messages import PROTOCOL_BID, TOPIC_CAPACITY, TOPIC_JOBS
from tests.protocol.harness import Cluster
from tests.protocol.test_engine_market import NOW_MS, make_engine, published
from tests.protocol.test_jobs_faults import INPUT, MODULE, _dropped


def _ad_and_receiver() -> tuple[bytes, Engine]:
    sender, receiver = make_engine(1), make_engine(2)
    return published(sender.step(Started(), NOW_MS)), receiver


def _bad_signature(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])  # the signature is the envelope's last field


def test_a_good_ad_is_accepted_and_nothing_is_recorded() -> None:
    data, receiver = _ad_and_receiver()
    for _ in range(2):  # checking twice is still an accept: the check records no nonce
        checked = receiver.check_inbound(data, TOPIC_CAPACITY, NOW_MS)
        assert checked.verdict is Verdict.ACCEPT and checked.envelope is not None
    assert len(receiver.replay_guard) == 0


def test_verdicts_reject_what_is_invalid_and_ignore_what_is_merely_useless() -> None:
    data, receiver = _ad_and_receiver()
    cases = [
        (_bad_signature(data), TOPIC_CAPACITY, NOW_MS, Verdict.REJECT, "bad-signature"),
        (b"\x93junk", TOPIC_CAPACITY, NOW_MS, Verdict.REJECT, "malformed"),
        (data, TOPIC_JOBS, NOW_MS, Verdict.REJECT, "wrong-channel"),
        (data, TOPIC_CAPACITY, NOW_MS + 10**9, Verdict.IGNORE, "expired"),
    ]
    for payload, channel, now_ms, verdict, reason in cases:
        checked = receiver.check_inbound(payload, channel, now_ms)
        assert (checked.verdict, checked.reason) == (verdict, reason), reason
    receiver.step(MessageReceived(make_engine(1).identity.peer_id, TOPIC_CAPACITY, data), NOW_MS)
    checked = receiver.check_inbound(data, TOPIC_CAPACITY, NOW_MS)
    assert (checked.verdict, checked.reason) == (Verdict.IGNORE, "replay")
    receiver.refused_authors.add(make_engine(1).identity.public_key)
    fresh = published(make_engine(1).step(Started(), NOW_MS + 1))
    checked = receiver.check_inbound(fresh, TOPIC_CAPACITY, NOW_MS + 1)
    assert (checked.verdict, checked.reason) == (Verdict.IGNORE, "refused-author")


def test_the_engine_keeps_its_own_checks_for_what_bypassed_the_edge() -> None:
    data, receiver = _ad_and_receiver()
    sender = make_engine(1).identity.peer_id
    effects = receiver.step(MessageReceived(sender, TOPIC_CAPACITY, _bad_signature(data)), NOW_MS)
    assert Penalise(sender, "bad-signature", 50) in effects
    # "verified" skips only the signature: a replay is still refused.
    assert receiver.step(MessageReceived(sender, TOPIC_CAPACITY, data, verified=True), NOW_MS) == []
    again = receiver.step(MessageReceived(sender, TOPIC_CAPACITY, data, verified=True), NOW_MS)
    assert Penalise(sender, "replay", 10) in again
    assert check_inbound(data, TOPIC_JOBS, now_ms=NOW_MS, rules=receiver.inbound_rules()).reason


def test_a_bid_before_any_connection_event_carries_its_real_network_group() -> None:
    cluster = Cluster(5)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_for(50)  # the call is out and the honest bids are in
    publisher = cluster.nodes[3].engine
    job = publisher.publisher.jobs[job_id]
    newcomer = Identity(b"\x42" * 32)  # never announced by a PeerConnected
    assert newcomer.peer_id not in publisher.peer_ips
    bid = Bid(job_id, 0, 1, 10**9, "grid", "newcomer")
    data = seal(newcomer, bid, now_ms=cluster.now_ms, ttl_ms=30_000, rng=random.Random(1))
    event = MessageReceived(newcomer.peer_id, PROTOCOL_BID, data, ip="203.0.113.7")
    effects = publisher.step(event, cluster.now_ms)
    assert not _dropped(effects, "busy")
    view, _ = job.bids[newcomer.peer_id]
    config = publisher.publisher._config
    group = network_group("203.0.113.7", config.network_prefix_v4, config.network_prefix_v6)
    assert view.network_group == group
    assert publisher.peer_ips[newcomer.peer_id] == "203.0.113.7"
    # Without the address (the old way) the same bid would have been a group of its own.
    other = Identity(b"\x43" * 32)
    data = seal(other, dataclasses.replace(bid, operator="x"), now_ms=cluster.now_ms,
                ttl_ms=30_000, rng=random.Random(2))  # fmt: skip
    publisher.step(MessageReceived(other.peer_id, PROTOCOL_BID, data), cluster.now_ms)
    assert job.bids[other.peer_id][0].network_group == f"peer:{other.peer_id}"


def test_a_message_that_expired_in_our_own_queue_costs_its_sender_nothing() -> None:
    data, receiver = _ad_and_receiver()
    sender = make_engine(1).identity.peer_id
    late_ms = NOW_MS + 10**9
    # It passed the edge in time and then waited in our queue: our load, not the sender's.
    queued = receiver.step(MessageReceived(sender, TOPIC_CAPACITY, data, verified=True), late_ms)
    assert not any(isinstance(e, Penalise) for e in queued)
    assert receiver.reputation.get(sender).score == 0
    # Never checked at the edge: expired when it came, the sender's doing.
    unchecked = receiver.step(MessageReceived(sender, TOPIC_CAPACITY, data), late_ms)
    assert Penalise(sender, "expired", 2) in unchecked
