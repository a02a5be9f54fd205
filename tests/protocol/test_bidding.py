"""The host's bid policy and the worker's side of an award."""

from __future__ import annotations

import dataclasses

import pytest

from hearth.protocol.bidding import HostLoad, PublisherStanding, WorkerConfig, decide_bid
from hearth.protocol.effects import AbortJob, FetchBlob, Penalise, RunJob, Send
from hearth.protocol.engine import HostProfile
from hearth.protocol.envelope import open_envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import BlobFetched, JobExecuted, MessageReceived, PaymentReceived
from hearth.protocol.job_messages import Award, AwardReply, CallForBids, Cancel
from hearth.protocol.messages import PROTOCOL_AWARD, TOPIC_JOBS
from hearth.protocol.pricing import price_now
from tests.protocol.harness import T0_MS, Cluster, make_profile

NEUTRAL = PublisherStanding(reputation_score=0, owed_mc=0)


def make_call(**changes: object) -> CallForBids:
    call = CallForBids(
        job_id=b"job-1",
        call_round=0,
        runtime="wasm",
        module_hash=b"m" * 32,
        module_bytes=100,
        input_hash=b"i" * 32,
        input_bytes=10,
        fuel_max=10**10,  # 10 s at the test hosts' 10^9 fuel/s, well inside the deadline
        memory_mb_max=256,
        deadline_ms=T0_MS + 60_000,
        max_price_mc_per_tfuel=50_000,
        bid_deadline_ms=T0_MS + 1_000,
        requirements=(),
    )
    return dataclasses.replace(call, **changes)  # type: ignore[arg-type]


def bid(call: CallForBids, profile: HostProfile | None = None, **kw: object) -> tuple[int, str]:
    profile = profile or make_profile(0)
    config = kw.pop("config", WorkerConfig())
    standing = kw.pop("standing", NEUTRAL)
    running = kw.pop("running", 0)
    decision = decide_bid(call, profile, config, standing, HostLoad(running, 0), T0_MS)  # type: ignore[arg-type]
    return decision.price_mc_per_tfuel, decision.refusal


def test_a_host_bids_its_price_floor() -> None:
    profile = make_profile(0)
    price, refusal = bid(make_call(), profile)
    assert refusal == ""
    assert price == price_now(profile.pricing, profile.fuel_per_s, T0_MS + 1_000)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"max_price_mc_per_tfuel": 100}, "price-floor-above-max"),
        ({"runtime": "python"}, "runtime"),
        ({"memory_mb_max": 4096}, "memory"),
        ({"requirements": ("gpu",)}, "requirements"),
        ({"bid_deadline_ms": T0_MS}, "bid-deadline-passed"),
    ],
)
def test_a_host_refuses_calls_its_policy_rejects(change: dict[str, object], why: str) -> None:
    price, refusal = bid(make_call(**change))
    assert refusal == why
    # A price refusal says what the host would ask, so the publisher can name the fix.
    assert price > 100 if why == "price-floor-above-max" else price == -1


def test_requirements_the_host_meets_are_fine() -> None:
    assert bid(make_call(requirements=("runtime:wasm", "energy:grid")))[1] == ""
    config = WorkerConfig(capabilities=frozenset({"gpu"}))
    assert bid(make_call(requirements=("gpu",)), config=config)[1] == ""


def test_a_host_refuses_outside_its_hours_when_busy_or_for_a_bad_publisher() -> None:
    night_only = dataclasses.replace(make_profile(0), availability_hours_mask=0)
    assert bid(make_call(), night_only)[1] == "unavailable"
    assert bid(make_call(), running=2)[1] == "busy"  # two cores offered, two jobs in flight
    bad = PublisherStanding(reputation_score=-500, owed_mc=0)
    assert bid(make_call(), standing=bad)[1] == "publisher-reputation"
    debtor = PublisherStanding(reputation_score=0, owed_mc=10**9)
    assert bid(make_call(), standing=debtor)[1] == "publisher-credit"
    near_limit = WorkerConfig(credit_limit_mc=50)  # the job may cost about 92 mc
    assert bid(make_call(), config=near_limit)[1] == "publisher-credit"


def _award(
    cluster: Cluster, to: int, call: CallForBids, price: int, award_no: int = 0, bid: bool = True
) -> list[object]:
    """Node 3 awards ``call`` to node ``to``, which first saw the call and bid on it."""
    publisher, node = cluster.nodes[3], cluster.nodes[to]
    if bid:
        data = publisher.engine.seal(call, now_ms=cluster.now_ms, ttl_ms=1_000)
        node.engine.step(MessageReceived(publisher.peer_id, TOPIC_JOBS, data), cluster.now_ms)
    award = Award(call, node.engine.identity.public_key, award_no, price, 30_000)
    data = publisher.engine.seal(award, now_ms=cluster.now_ms, ttl_ms=60_000)
    return node.engine.step(
        MessageReceived(publisher.peer_id, PROTOCOL_AWARD, data), cluster.now_ms
    )


def test_an_award_is_accepted_fetched_run_and_never_run_twice() -> None:
    cluster = Cluster(4)
    call = make_call()
    effects = _award(cluster, 0, call, 40_000)
    [reply] = [e for e in effects if isinstance(e, Send)]
    accepted = open_envelope(reply.data, now_ms=cluster.now_ms).body
    assert isinstance(accepted, AwardReply) and accepted.accept
    fetches = [e for e in effects if isinstance(e, FetchBlob)]
    assert {f.blob_hash for f in fetches} == {call.module_hash, call.input_hash}
    worker = cluster.nodes[0].engine
    assert worker.step(BlobFetched(call.module_hash), cluster.now_ms) == []
    [run] = worker.step(BlobFetched(call.input_hash), cluster.now_ms)
    assert isinstance(run, RunJob) and run.fuel_max == call.fuel_max
    again = _award(cluster, 0, call, 40_000, award_no=1)  # a publisher re-sending after restart
    assert not any(isinstance(e, FetchBlob | RunJob) for e in again)
    assert worker.worker.tasks_running() == 1


def test_a_busy_worker_declines_and_a_cancelled_one_stops() -> None:
    cluster = Cluster(4)
    for n in range(2):
        _award(cluster, 0, make_call(job_id=f"busy-{n}".encode()), 40_000)
    [reply] = [
        e for e in _award(cluster, 0, make_call(job_id=b"third"), 40_000) if isinstance(e, Send)
    ]
    body = open_envelope(reply.data, now_ms=cluster.now_ms).body
    assert isinstance(body, AwardReply) and not body.accept and body.reason == "busy"
    publisher = cluster.nodes[3]
    cancel = publisher.engine.seal(
        Cancel(b"busy-0", -1, "no longer needed"), now_ms=cluster.now_ms, ttl_ms=60_000
    )
    effects = cluster.nodes[0].engine.step(
        MessageReceived(publisher.peer_id, PROTOCOL_AWARD, cancel), cluster.now_ms
    )
    assert AbortJob(b"busy-0") in effects  # type: ignore[arg-type]
    assert cluster.nodes[0].engine.worker.tasks_running() == 1
    # A late result of the cancelled run is ignored: nothing is committed.
    late = JobExecuted(b"busy-0", True, b"o" * 32, b"x", 5, "")  # type: ignore[arg-type]
    assert cluster.nodes[0].engine.step(late, cluster.now_ms) == []


def test_an_award_below_the_bid_or_from_an_impostor_is_refused() -> None:
    cluster = Cluster(4)
    effects = _award(cluster, 0, make_call(), 1)  # below this host's floor
    [reply] = [e for e in effects if isinstance(e, Send)]
    assert open_envelope(reply.data, now_ms=cluster.now_ms).body.reason == "price-below-bid"
    _award(cluster, 0, make_call(job_id=b"mine"), 40_000)
    impostor = cluster.nodes[2]
    winner = cluster.nodes[0].engine.identity.public_key
    data = impostor.engine.seal(
        Award(make_call(job_id=b"mine"), winner, 5, 40_000, 30_000),
        now_ms=cluster.now_ms,
        ttl_ms=60_000,
    )
    effects = cluster.nodes[0].engine.step(
        MessageReceived(impostor.peer_id, PROTOCOL_AWARD, data), cluster.now_ms
    )
    assert Penalise(impostor.peer_id, "forged-award", 25) in effects
    assert not any(isinstance(e, Send) for e in effects)


def test_payment_settles_what_a_publisher_owes() -> None:
    cluster = Cluster(4)
    worker = cluster.nodes[0].engine.worker
    publisher = cluster.nodes[3].peer_id
    worker.owed_mc_by_publisher[publisher] = 500
    cluster.nodes[0].engine.step(PaymentReceived(b"j", publisher, 200), cluster.now_ms)  # type: ignore[arg-type]
    assert worker.standing(publisher).owed_mc == 300
    cluster.nodes[0].engine.step(PaymentReceived(b"k", publisher, 300), cluster.now_ms)  # type: ignore[arg-type]
    assert publisher not in worker.owed_mc_by_publisher


def test_call_checks_refuse_out_of_range_fields() -> None:
    with pytest.raises(RemoteProtocolError):
        make_call(module_hash=b"short").check(T0_MS)
    with pytest.raises(RemoteProtocolError):
        make_call(bid_deadline_ms=T0_MS + 60_000).check(T0_MS)
    with pytest.raises(RemoteProtocolError):
        make_call(runtime="native").check(T0_MS)
    make_call().check(T0_MS)


def test_an_unsolicited_award_is_declined() -> None:
    cluster = Cluster(4)
    effects = _award(cluster, 0, make_call(), 40_000, bid=False)
    [reply] = [e for e in effects if isinstance(e, Send)]
    body = open_envelope(reply.data, now_ms=cluster.now_ms).body
    assert isinstance(body, AwardReply) and not body.accept and body.reason == "no-bid"
    assert not any(isinstance(e, FetchBlob | RunJob) for e in effects)
