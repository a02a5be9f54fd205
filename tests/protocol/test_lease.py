"""The lease of an award fits the job; a host never bids on a job it cannot finish in time."""

from __future__ import annotations

import dataclasses

import pytest

from hearth.protocol.bidding import (
    HostLoad,
    PublisherStanding,
    WorkerConfig,
    can_finish,
    decide_bid,
)
from hearth.protocol.effects import Log
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.job_messages import Award, Bid, CallForBids
from hearth.protocol.lease import LEASE_MARGIN_MS, derived_lease_ms, lease_ms, run_ms_max
from tests.protocol.harness import T0_MS, Cluster, make_profile

MODULE = b"\0asm fake module"
SHORT_INPUT = b"x"  # the fake sandbox charges 10^9 fuel per input byte plus one: 2 x 10^9
PUBLISHER = 3


@pytest.mark.parametrize(
    ("fuel_max", "fuel_per_s", "time_left_ms", "expected_ms"),
    [
        (10**10, 10**10, 18_500, 8_000),  # 1 s of work: three times that plus the margin
        (2 * 10**11, 10**10, 178_500, 65_000),  # 20 s of work, a long deadline
        (10**11, 10**10, 20_000, 15_000),  # the slack would pass half the time: the floor holds
        (3 * 10**11, 10**10, 20_000, 20_000),  # never past the deadline
        (10**6, 10**10, 3_600_000, LEASE_MARGIN_MS + 3),  # a 1 ms job: the margin dominates
    ],
)
def test_the_derived_lease_fits_the_job(
    fuel_max: int, fuel_per_s: int, time_left_ms: int, expected_ms: int
) -> None:
    assert derived_lease_ms(fuel_max, fuel_per_s, time_left_ms) == expected_ms


def test_a_set_lease_wins_but_never_runs_past_the_deadline() -> None:
    assert lease_ms(5_000, 10**12, 10**9, 60_000) == 5_000
    assert lease_ms(90_000, 10**12, 10**9, 60_000) == 60_000
    assert lease_ms(0, 10**10, 10**10, 18_500) == 8_000
    assert run_ms_max(10**9 + 1, 10**9) == 1_001  # rounded up: never promise too little time


@pytest.mark.parametrize("lease", [1, 999, 121_000, 10**10])
def test_a_lease_outside_its_bounds_is_refused_at_publication(lease: int) -> None:
    cluster = Cluster(4)
    with pytest.raises(LocalProtocolError, match="lease_ms"):
        cluster.publish_job(PUBLISHER, MODULE, SHORT_INPUT, lease_ms=lease)
        cluster.run_for(0)


def test_the_award_carries_the_derived_lease() -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(PUBLISHER, MODULE, SHORT_INPUT, fuel_max=4 * 10**9)
    cluster.run_until(lambda: bool(cluster.sends_of(PUBLISHER, Award)))
    [(at_ms, _, envelope), *_] = cluster.sends_of(PUBLISHER, Award)
    job = cluster.nodes[PUBLISHER].engine.publisher.jobs[job_id]
    fuel_per_s = cluster.nodes[PUBLISHER].engine.config.profile.fuel_per_s
    expected = derived_lease_ms(4 * 10**9, fuel_per_s, job.call.deadline_ms - at_ms)
    assert envelope.body.lease_ms == expected == 17_000  # 4 s of work, 3 x 4 s + 5 s


def test_a_winner_that_accepts_and_never_commits_loses_a_20_s_job_in_time() -> None:
    # Node 0 bids cheapest, wins, accepts, fetches, and never finishes: before this lease, a
    # fixed 60 s lease held its replica past the 20 s deadline and the job failed.
    cluster = Cluster(5, behaviours={0: "stall"})
    job_id = cluster.publish_job(
        PUBLISHER,
        MODULE,
        SHORT_INPUT,
        fuel_max=3 * 10**9,
        deadline_ms=cluster.now_ms + 20_000,
    )
    cluster.run_until(cluster.finished(PUBLISHER, job_id))
    summary = cluster.nodes[PUBLISHER].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid", summary
    [stalled] = [r for r in summary.replicas_detail if r.worker == cluster.nodes[0].peer_id]
    assert stalled.verdict == "silent" and stalled.paid_mc == 0
    assert len(cluster.payments(job_id)) == 2


NEUTRAL = PublisherStanding(reputation_score=0, owed_mc=0)


def _call(**changes: object) -> CallForBids:
    call = CallForBids(
        job_id=b"job-1",
        call_round=0,
        runtime="wasm",
        module_hash=b"m" * 32,
        module_bytes=100,
        input_hash=b"i" * 32,
        input_bytes=10,
        fuel_max=10**10,
        memory_mb_max=256,
        deadline_ms=T0_MS + 61_000,
        max_price_mc_per_tfuel=50_000,
        bid_deadline_ms=T0_MS + 1_000,
        requirements=(),
    )
    return dataclasses.replace(call, **changes)  # type: ignore[arg-type]


def test_a_host_does_not_bid_on_a_job_it_cannot_finish_before_the_deadline() -> None:
    profile = make_profile(0)  # 10^9 fuel/s; 60 s between the bid deadline and the deadline
    fits = _call(fuel_max=60 * 10**9)
    too_much = _call(fuel_max=60 * 10**9 + 1)
    assert can_finish(fits, profile.fuel_per_s, T0_MS)
    assert not can_finish(too_much, profile.fuel_per_s, T0_MS)
    decide = decide_bid(too_much, profile, WorkerConfig(), NEUTRAL, HostLoad(0, 0), T0_MS)
    assert decide.refusal == "cannot-finish"
    assert decide_bid(fits, profile, WorkerConfig(), NEUTRAL, HostLoad(0, 0), T0_MS).refusal == ""
    # Time already spent counts: later than the bid deadline, less is left.
    assert not can_finish(fits, profile.fuel_per_s, T0_MS + 2_000)


def test_no_host_bids_on_a_job_that_cannot_finish_and_each_says_why() -> None:
    cluster = Cluster(4)
    job_id = cluster.publish_job(
        PUBLISHER, MODULE, SHORT_INPUT, fuel_max=10**12, deadline_ms=cluster.now_ms + 60_000
    )
    cluster.run_until(cluster.finished(PUBLISHER, job_id))
    assert cluster.phase(PUBLISHER, job_id) == "failed"
    for worker in range(3):
        assert not cluster.sends_of(worker, Bid)
        reasons = [
            dict(e.fields)["why"]
            for e in cluster.of_type(worker, Log)
            if e.event == "no-bid" and e.level == "info"
        ]
        assert reasons and all(str(r).startswith("cannot-finish") for r in reasons)
