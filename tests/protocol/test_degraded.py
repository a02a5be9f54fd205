"""A degraded node (its disk or ledger cannot write) bids on nothing and says why, until healed."""

from __future__ import annotations

from hearth.protocol.effects import Log, Send
from hearth.protocol.events import MessageReceived
from hearth.protocol.messages import TOPIC_JOBS
from tests.protocol.harness import Cluster
from tests.protocol.test_bidding import make_call


def _call_reaches(cluster: Cluster, job_id: bytes) -> list[object]:
    publisher, worker = cluster.nodes[3], cluster.nodes[0]
    data = publisher.engine.seal(make_call(job_id=job_id), now_ms=cluster.now_ms, ttl_ms=60_000)
    event = MessageReceived(publisher.peer_id, TOPIC_JOBS, data)
    return worker.engine.step(event, cluster.now_ms)


def test_a_degraded_node_bids_on_nothing_and_bids_again_once_healed() -> None:
    cluster = Cluster(4)
    engine = cluster.nodes[0].engine
    assert engine.unable_reasons() == []
    engine.degraded["jobs"] = "[Errno 28] No space left on device"
    effects = _call_reaches(cluster, b"job-full")
    assert not any(isinstance(e, Send) for e in effects)
    [why] = [dict(e.fields)["why"] for e in effects if isinstance(e, Log) and e.event == "no-bid"]
    assert why == "jobs: [Errno 28] No space left on device"
    del engine.degraded["jobs"]
    assert any(isinstance(e, Send) for e in _call_reaches(cluster, b"job-healed"))


def test_an_unwritable_ledger_is_one_of_the_reasons() -> None:
    cluster = Cluster(4, ledgers=True)
    engine = cluster.nodes[0].engine
    assert engine.payments is not None
    engine.payments.ledger.unable_reason = "disk full (database or disk is full)"
    engine.degraded["log"] = "node.log: [Errno 28] No space left on device"
    assert engine.unable_reasons() == [
        "ledger-unwritable: disk full (database or disk is full)",
        "log: node.log: [Errno 28] No space left on device",
    ]
    assert not any(isinstance(e, Send) for e in _call_reaches(cluster, b"job-ledger"))
