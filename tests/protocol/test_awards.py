"""Awards bound to their winner, publisher and call; penalties only on the peer at fault (ADR 0012).

Every test drives real engines through the in-memory harness: a forger signs awards for another
publisher's job, a winner forwards its awards to other bidders, a peer delivers messages it did
not sign. The honest publisher's jobs must run as if nothing happened, and no honest peer may be
penalised for what another peer sent.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hearth.protocol.effects import FetchBlob, Log, Penalise, RunJob, Send
from hearth.protocol.envelope import open_envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import MessageReceived
from hearth.protocol.job_messages import (
    Award,
    AwardReply,
    Bid,
    CallForBids,
    Cancel,
    JobId,
    MismatchNotice,
    PayHeld,
    ResultCommit,
    ResultReveal,
    RevealRequest,
)
from hearth.protocol.messages import PROTOCOL_AWARD, PROTOCOL_BID, PROTOCOL_RESULT
from tests.protocol.harness import LATENCY_MS, Cluster

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"
PUBLISHER = 3


def _deliver(cluster: Cluster, to: int, sender: int, channel: str, data: bytes) -> list[Any]:
    node = cluster.nodes[to]
    event = MessageReceived(cluster.nodes[sender].peer_id, channel, data)
    effects = node.engine.step(event, cluster.now_ms)
    cluster.carry_out(node, effects)
    return effects


def _seal(cluster: Cluster, author: int, body: object) -> bytes:
    return cluster.nodes[author].engine.seal(body, now_ms=cluster.now_ms, ttl_ms=60_000)


def _call_after_bids(cluster: Cluster) -> tuple[JobId, CallForBids]:
    job_id = cluster.publish_job(PUBLISHER, MODULE, INPUT)
    cluster.run_until(lambda: bool(cluster.sends_of(0, Bid)))  # node 0 has bid on the call
    [(_, _, envelope)] = cluster.sends_of(PUBLISHER, CallForBids)
    return job_id, envelope.body


def _key(cluster: Cluster, index: int) -> bytes:
    return cluster.nodes[index].engine.identity.public_key


def _penalised(cluster: Cluster, index: int) -> set[tuple[str, str]]:
    """(peer, reason) of every penalty node ``index`` has handed out."""
    return {(p.peer, p.reason) for p in cluster.of_type(index, Penalise)}


def _finish_ms(cluster: Cluster, job_id: JobId) -> int:
    cluster.run_until(cluster.finished(PUBLISHER, job_id))
    return cluster.now_ms


def test_a_forged_award_is_refused_its_signer_penalised_and_the_real_award_taken() -> None:
    control = Cluster(5)
    control_job, _ = _call_after_bids(control)
    normal_finish_ms = _finish_ms(control, control_job)

    cluster = Cluster(5)
    job_id, call = _call_after_bids(cluster)
    # Node 4 never published this job: it copies the gossiped call into an award signed by itself.
    forged = Award(call, _key(cluster, 0), 0, call.max_price_mc_per_tfuel, 30_000)
    effects = cluster.nodes[0].engine.step(
        MessageReceived(cluster.nodes[4].peer_id, PROTOCOL_AWARD, _seal(cluster, 4, forged)),
        cluster.now_ms,
    )
    assert Penalise(cluster.nodes[4].peer_id, "forged-award", 25) in effects
    assert not [e for e in effects if isinstance(e, Send | FetchBlob | RunJob)]  # no reply at all
    assert cluster.nodes[0].engine.worker.tasks == {}
    # The honest job runs as if nothing happened, and node 0 still takes its real award.
    assert _finish_ms(cluster, job_id) == normal_finish_ms
    summary = cluster.nodes[PUBLISHER].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    assert cluster.nodes[0].peer_id in {p.worker for p in cluster.payments(job_id)}
    publisher = cluster.nodes[PUBLISHER]
    assert cluster.nodes[0].engine.reputation.get(publisher.peer_id).penalties == 0
    assert _penalised(cluster, PUBLISHER) == set()  # nobody was blamed at the publisher


def test_a_forged_award_relayed_by_a_third_peer_penalises_the_relay() -> None:
    cluster = Cluster(5)
    _, call = _call_after_bids(cluster)
    forged = Award(call, _key(cluster, 0), 0, call.max_price_mc_per_tfuel, 30_000)
    effects = _deliver(cluster, 0, 1, PROTOCOL_AWARD, _seal(cluster, 4, forged))
    assert Penalise(cluster.nodes[1].peer_id, "forwarded", 25) in effects
    assert not [e for e in effects if isinstance(e, Send)]
    assert cluster.nodes[0].engine.reputation.get(cluster.nodes[4].peer_id).penalties == 0


def test_a_winner_forwarding_its_awards_gets_nobody_else_penalised() -> None:
    # Node 0 bids cheapest, so it wins; every award (and cancel) the publisher sends it, it
    # forwards at once to every other worker, which all bid on the same call.
    holder: list[Cluster] = []

    def forward(sender: int, send: Send) -> bool:
        cluster = holder[0]
        to_winner = cluster.by_peer.get(send.peer) is cluster.nodes[0]
        if sender == PUBLISHER and send.protocol == PROTOCOL_AWARD and to_winner:
            for other in (1, 2, 4):
                event = MessageReceived(cluster.nodes[0].peer_id, PROTOCOL_AWARD, send.data)
                cluster.inject(other, event, delay_ms=2 * LATENCY_MS)
        return False

    cluster = Cluster(5, drop=forward)
    holder.append(cluster)
    jobs = []
    for n in range(3):
        job_id = cluster.publish_job(PUBLISHER, MODULE, INPUT + bytes([n]))
        cluster.run_until(cluster.finished(PUBLISHER, job_id))
        jobs.append(job_id)
    publisher = cluster.nodes[PUBLISHER].engine
    for job_id in jobs:
        summary = publisher.publisher.summary(job_id)
        assert summary is not None and summary.phase == "paid"
    forwarder = cluster.nodes[0].peer_id
    for honest in (1, 2, 4):
        record = publisher.reputation.get(cluster.nodes[honest].peer_id)
        assert record.penalties == 0 and record.score >= 0
        # The forwarder, not the publisher, is the one each honest worker blames.
        assert (forwarder, "forwarded") in _penalised(cluster, honest)
        seen_by_honest = cluster.nodes[honest].engine.reputation
        assert seen_by_honest.get(cluster.nodes[PUBLISHER].peer_id).penalties == 0
    assert _penalised(cluster, PUBLISHER) == set()


def test_an_award_for_another_worker_is_refused_without_a_reply() -> None:
    cluster = Cluster(5)
    _, call = _call_after_bids(cluster)
    # Signed and sent by the publisher itself, but naming node 1: a misdirected award.
    award = Award(call, _key(cluster, 1), 0, call.max_price_mc_per_tfuel, 30_000)
    effects = _deliver(cluster, 0, PUBLISHER, PROTOCOL_AWARD, _seal(cluster, PUBLISHER, award))
    assert Penalise(cluster.nodes[PUBLISHER].peer_id, "misdirected-award", 25) in effects
    assert not [e for e in effects if isinstance(e, Send)]
    assert cluster.nodes[0].engine.worker.tasks == {}


def test_an_award_for_other_terms_than_the_call_is_declined_and_its_signer_penalised() -> None:
    cluster = Cluster(5)
    _, call = _call_after_bids(cluster)
    longer = dataclasses.replace(call, fuel_max=call.fuel_max * 2)  # same job and round
    award = Award(longer, _key(cluster, 0), 0, call.max_price_mc_per_tfuel, 30_000)
    effects = _deliver(cluster, 0, PUBLISHER, PROTOCOL_AWARD, _seal(cluster, PUBLISHER, award))
    [reply] = [e for e in effects if isinstance(e, Send)]
    body = open_envelope(reply.data, now_ms=cluster.now_ms).body
    assert isinstance(body, AwardReply) and not body.accept and body.reason == "call-mismatch"
    assert Penalise(cluster.nodes[PUBLISHER].peer_id, "call-mismatch", 25) in effects
    assert not [e for e in effects if isinstance(e, FetchBlob)]


def test_a_worker_bids_on_a_job_id_to_one_publisher_only() -> None:
    cluster = Cluster(5)
    _, call = _call_after_bids(cluster)
    # Node 4 gossips a call under the same job id: node 0 does not bid on it a second time.
    copy = dataclasses.replace(call, call_round=1)
    effects = _deliver(cluster, 0, 4, "hearth/jobs/1", _seal(cluster, 4, copy))
    assert not [e for e in effects if isinstance(e, Send)]
    assert any(isinstance(e, Log) and ("why", "job-id-taken") in e.fields for e in effects)


def _direct_messages(call: CallForBids) -> list[tuple[int, str, object]]:
    """(recipient, channel, body) of every direct message type, each for node 0 or the publisher."""
    job = call.job_id
    return [
        (0, PROTOCOL_AWARD, Cancel(job, 0, "cancelled")),
        (0, PROTOCOL_RESULT, RevealRequest(job, 0)),
        (0, PROTOCOL_RESULT, MismatchNotice(job, 0, "mismatch", b"d" * 32, b"e" * 32)),
        (0, PROTOCOL_RESULT, PayHeld(job, 0, 1, 1)),
        (PUBLISHER, PROTOCOL_BID, Bid(job, 0, 1, 10**9, "grid", "op1")),
        (PUBLISHER, PROTOCOL_AWARD, AwardReply(job, 0, True, "")),
        (PUBLISHER, PROTOCOL_RESULT, ResultCommit(job, 0, b"c" * 32)),
        (PUBLISHER, PROTOCOL_RESULT, ResultReveal(job, 0, "", b"o" * 32, 1, b"s" * 16, 1, b"x")),
    ]


@pytest.mark.parametrize("which", range(8))
def test_every_direct_message_delivered_by_another_peer_penalises_only_the_deliverer(
    which: int,
) -> None:
    cluster = Cluster(5)
    _, call = _call_after_bids(cluster)
    to, channel, body = _direct_messages(call)[which]
    author = PUBLISHER if to == 0 else 1  # what its rightful author would sign
    effects = _deliver(cluster, to, 4, channel, _seal(cluster, author, body))
    assert [e for e in effects if isinstance(e, Penalise)] == [
        Penalise(cluster.nodes[4].peer_id, "forwarded", 25)
    ]
    assert not [e for e in effects if isinstance(e, Send)]
    record = cluster.nodes[to].engine.reputation.get(cluster.nodes[author].peer_id)
    assert record.penalties == 0


def test_an_award_requires_a_winner_key_and_inline_blobs_of_the_called_sizes() -> None:
    call = CallForBids(b"j", 0, "wasm", b"m" * 32, 1, b"i" * 32, 1, 10**9, 64, 60_000, 1, 1_000, ())
    assert Award.VERSION == 3  # 2: names its winner (ADR 0012); 3: small blobs inline (ADR 0031)
    with pytest.raises(RemoteProtocolError):
        Award(call, b"short", 0, 1, 1_000).check(0)
    Award(call, b"k" * 32, 0, 1, 1_000).check(0)
    Award(call, b"k" * 32, 0, 1, 1_000, b"m", b"i").check(0)
    with pytest.raises(RemoteProtocolError):
        Award(call, b"k" * 32, 0, 1, 1_000, b"mm", b"i").check(0)
