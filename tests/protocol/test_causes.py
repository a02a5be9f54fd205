"""Each cause a job could not run, named within 5 s with its fix; verified failures (ADR 0023)."""

from __future__ import annotations

import msgpack
import pytest

from hearth.protocol.causes import (
    Cause,
    disagreement,
    exit_code_for,
    from_declines,
    from_market,
    not_diverse,
)
from hearth.protocol.codec import decode, encode
from hearth.protocol.errors import RemoteProtocolError, UnsupportedVersionError
from hearth.protocol.events import Started
from hearth.protocol.job_messages import BidDecline, ResultReveal, result_digest
from hearth.protocol.publisher_state import PublisherConfig, decode_job
from tests.protocol.harness import FAILED_STDERR, Cluster

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"
KNOWN_WITHIN_MS = 5_000  # from the publish: a 1 s bid window, then the cause at once


def _with_market(cluster: Cluster) -> Cluster:
    """Start every engine, so that each one's capacity ads fill the others' market views."""
    for index in range(len(cluster.nodes)):
        cluster.inject(index, Started())
    cluster.run_for(1_000)
    return cluster


def _failed_at_once(cluster: Cluster, index: int, **spec: object) -> tuple[str, str]:
    _with_market(cluster)
    assert len(cluster.nodes[index].engine.market) == len(cluster.nodes) - 1
    started_ms = cluster.now_ms
    job_id = cluster.publish_job(index, MODULE, INPUT, **spec)
    cluster.run_until(cluster.finished(index, job_id), limit_ms=KNOWN_WITHIN_MS)
    summary = cluster.nodes[index].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "failed", summary
    assert cluster.now_ms - started_ms <= KNOWN_WITHIN_MS
    assert summary.call_round == 0  # no second call for bids: the hosts had said why
    assert cluster.payments(job_id) == []
    return summary.cause, summary.detail


# The pure rules


def test_declines_name_the_nearest_fix_first_and_the_rest_after() -> None:
    declines = {"a": ("price-floor-above-max", 9_000), "b": ("price-floor-above-max", 7_000)}
    declines |= {"c": ("runtime", 0), "d": ("busy", 0)}
    found = from_declines(declines, "wasm", 100)
    assert found is not None and found.cause is Cause.PRICE
    assert found.message.startswith("2 hosts ask more than the max price of 100 mc/Tfuel")
    assert "raise --max-price to at least 7000" in found.message
    assert "1 host busy" in found.message and "do not offer the wasm runtime" in found.message


@pytest.mark.parametrize(
    ("reason", "cause", "fix"),
    [
        ("runtime", Cause.NO_RUNTIME, 'runtimes = ["wasm", "python"]'),
        ("busy", Cause.HOSTS_BUSY, "later --deadline-s"),
        ("publisher-credit", Cause.PUBLISHER_REFUSED, "settle what this node owes"),
        ("publisher-reputation", Cause.PUBLISHER_REFUSED, "publish from another node"),
        ("memory", Cause.NO_FIT, "lower --memory-mb"),
    ],
)
def test_each_decline_reason_has_its_cause_and_fix(reason: str, cause: Cause, fix: str) -> None:
    found = from_declines({"a": (reason, 0)}, "python", 100)
    assert found is not None and found.cause is cause and fix in found.message


def test_unknown_decline_reasons_say_nothing() -> None:
    assert from_declines({"a": ("job-id-taken", 0)}, "wasm", 100) is None


def test_the_market_names_a_missing_runtime_or_a_price_when_no_host_answers() -> None:
    assert from_market([], "wasm", 1).cause is Cause.NO_HOSTS  # type: ignore[union-attr]
    missing = from_market([(("wasm",), 10)], "python", 100)
    assert missing is not None and missing.cause is Cause.NO_RUNTIME
    price = from_market([(("wasm",), 500), (("wasm",), 300)], "wasm", 0)
    assert price is not None and price.cause is Cause.PRICE
    assert "raise --max-price to at least 300" in price.message
    assert from_market([(("wasm",), 50)], "wasm", 100) is None


def test_bidders_in_one_network_group_or_one_operator_cannot_be_replicas() -> None:
    one_group = not_diverse([("127.0.0.0/24", "a"), ("127.0.0.0/24", "b")], 2)
    assert one_group is not None and one_group.cause is Cause.ONE_NETWORK_GROUP
    assert "network_group_prefix_v4 = 32" in one_group.message
    one_operator = not_diverse([("10.0.0.1/32", "op"), ("10.0.0.2/32", "op")], 2)
    assert one_operator is not None and "operator" in one_operator.message
    assert not_diverse([("10.0.0.1/32", "op"), ("10.0.0.2/32", "")], 2) is None


def test_disagreement_carries_the_evidence() -> None:
    found = disagreement([("peerAAAAAAAA", "ab" * 32, "", 10), ("peerBBBBBBBB", "cd" * 32, "", 9)])
    assert found.cause is Cause.REPLICAS_DISAGREE
    assert "AAAAAAAA: output abababababab ok fuel 10" in found.message
    assert "BBBBBBBB: output cdcdcdcdcdcd ok fuel 9" in found.message


def test_exit_codes_are_distinct_per_kind_and_stay_out_of_1_and_2() -> None:
    kinds = ["exit", "trap", "out-of-fuel", "memory-limit", "deadline", "invalid-module"]
    codes = [exit_code_for(kind, "") for kind in kinds]
    assert codes == [10, 11, 12, 13, 14, 15]
    assert exit_code_for("", "price") == 16 and exit_code_for("", "replicas-disagree") == 17
    assert all(10 <= exit_code_for("", cause) <= 19 for cause in Cause)


# The wire


def test_exit_code_and_stderr_are_inside_the_digest() -> None:
    base = result_digest(b"j", "exit", b"o" * 32, 5, 1, b"err")
    assert base != result_digest(b"j", "exit", b"o" * 32, 5, 2, b"err")
    assert base != result_digest(b"j", "exit", b"o" * 32, 5, 1, b"other")


def test_an_old_version_reveal_is_refused_cleanly() -> None:
    reveal = ResultReveal(b"j", 0, "", b"o" * 32, 5, b"s" * 16, 1, b"x", 0, b"")
    fields = msgpack.unpackb(encode(reveal))
    old = msgpack.packb([fields[0], 1, *fields[2:10]], use_bin_type=True)  # v1: 8 fields
    with pytest.raises(UnsupportedVersionError, match="ResultReveal version 1"):
        decode(old)
    assert decode(encode(reveal)) == reveal


def test_a_reveal_with_too_much_stderr_is_refused() -> None:
    reveal = ResultReveal(b"j", 0, "exit", b"o" * 32, 5, b"s" * 16, 0, b"", 1, b"e" * 8193)
    with pytest.raises(RemoteProtocolError, match="stderr"):
        reveal.check()
    with pytest.raises(RemoteProtocolError, match="reason"):
        BidDecline(b"j", 0, "", 0).check()


# The engines, end to end on the in-memory network


def test_a_job_that_fails_alike_everywhere_is_verified_and_its_workers_paid() -> None:
    cluster = Cluster(4, behaviours={i: "fails" for i in range(3)})
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid", summary
    assert (summary.error_kind, summary.exit_code, summary.stderr) == ("exit", 1, FAILED_STDERR)
    assert len(cluster.payments(job_id)) == 2  # they did the work and agreed (ADR 0023)
    restored = decode_job(cluster.saved_state(3, job_id))  # the saved state keeps them
    assert next(s.stderr for s in restored.slots if s.verdict == "match") == FAILED_STDERR


def test_failures_with_different_stderr_disagree() -> None:
    behaviours = {0: "fails:one", 1: "fails:two", 2: "fails:three", 3: "fails:four"}
    cluster = Cluster(5, behaviours=behaviours)
    job_id = cluster.publish_job(4, MODULE, INPUT, replicas_max=3)
    cluster.run_until(cluster.finished(4, job_id))
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "failed"
    assert summary.cause == "replicas-disagree" and summary.detail.count("output") == 3


def test_a_runtime_no_host_offers_fails_at_once() -> None:
    cause, detail = _failed_at_once(Cluster(3), 2, runtime="python")
    assert cause == "no-runtime" and "2 hosts do not offer the python runtime" in detail


def test_a_max_price_of_zero_fails_at_once_with_the_price_to_offer() -> None:
    cause, detail = _failed_at_once(Cluster(3), 2, max_price_mc_per_tfuel=0)
    assert cause == "price" and "raise --max-price to at least" in detail


def test_hosts_in_one_network_group_fail_at_once() -> None:
    ips = {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.0.0.4"}
    cluster = Cluster(4, ips=ips, publisher_config=PublisherConfig())  # /24 groups
    cause, detail = _failed_at_once(cluster, 3)
    assert cause == "one-network-group" and "10.0.0.0/24" in detail


def test_hosts_that_refuse_the_publisher_say_so() -> None:
    cluster = Cluster(3)
    publisher = cluster.nodes[2].peer_id
    for worker in cluster.nodes[:2]:
        worker.engine.reputation.penalise(publisher, 120)  # below publisher_score_min
    cause, detail = _failed_at_once(cluster, 2)
    assert cause == "publisher-refused" and "publisher-reputation" in detail


def test_busy_hosts_are_named_at_once_and_the_job_keeps_trying() -> None:
    cluster = Cluster(3, behaviours={0: "stall", 1: "stall"})
    cluster.publish_job(2, MODULE, INPUT, replicas=2)  # takes a core of each
    second = cluster.publish_job(2, MODULE, b"other input", replicas=2)  # takes the other
    cluster.run_until(lambda: cluster.phase(2, second) == "running")
    started_ms = cluster.now_ms
    third = cluster.publish_job(2, MODULE, b"a third", replicas=2)
    cluster.run_for(KNOWN_WITHIN_MS)
    summary = cluster.nodes[2].engine.publisher.summary(third)
    assert summary is not None and summary.cause == "hosts-busy", summary
    assert summary.phase == "bidding" and "busy" in summary.detail  # still trying
    assert cluster.now_ms - started_ms <= KNOWN_WITHIN_MS


def test_in_a_large_market_a_sample_of_hosts_declines_and_the_cause_still_shows_at_once() -> None:
    cluster = _with_market(Cluster(48))
    started_ms = cluster.now_ms
    job_id = cluster.publish_job(47, MODULE, INPUT, max_price_mc_per_tfuel=0)
    cluster.run_for(KNOWN_WITHIN_MS)
    declines = [
        envelope.body
        for i in range(47)
        for _, _, envelope in cluster.sends_of(i, BidDecline)
        if envelope.body.job_id == job_id and envelope.body.call_round == 0
    ]
    assert 0 < len(declines) < 47  # a seeded sample of the 47 hosts, about DECLINES_PER_CALL_MAX
    summary = cluster.nodes[47].engine.publisher.summary(job_id)
    assert summary is not None and summary.cause == "price", summary
    assert "raise --max-price to at least" in summary.detail
    assert cluster.now_ms - started_ms <= KNOWN_WITHIN_MS


def test_a_deadline_that_passes_first_says_what_the_replicas_were_doing() -> None:
    cluster = Cluster(3, behaviours={0: "stall", 1: "stall"})
    deadline_ms = cluster.now_ms + 60_000
    job_id = cluster.publish_job(2, MODULE, INPUT, deadline_ms=deadline_ms, lease_ms=60_000)
    cluster.run_until(cluster.finished(2, job_id))
    summary = cluster.nodes[2].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "failed" and summary.cause == "deadline"
    assert "raise --deadline-s" in summary.detail and "replicas:" in summary.detail
