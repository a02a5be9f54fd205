"""Our invariants fire where decisions are made: each is broken here through a seam.

Diverse winners, accepted result == quorum result (where the publisher settles, before its
state is written and after it is read back), one pay per (payer, job, worker) of the decided
amount, and one settle per pay. A failure is our bug, so these are assertions; a peer's bad
input raises elsewhere.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

import hearth.protocol.publisher_state
from hearth.ledger.entry import HalfSignedReceipt
from hearth.ledger.memory import MemoryLedger
from hearth.protocol import auction
from hearth.protocol.auction import BidView
from hearth.protocol.effects import PayWorker, Send
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.identity import Identity, PeerId
from hearth.protocol.job_messages import JobId
from hearth.protocol.publisher_state import Phase, PublisherJob, SlotState, decode_job, encode_job
from hearth.protocol.reputation import Reputation
from hearth.protocol.settlement import settle
from tests.protocol.harness import T0_MS, Cluster, make_profile

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"
LOSER = b"\x01" * 32


@pytest.fixture(scope="module")
def paid_job() -> PublisherJob:
    """A job three replicas agreed on, as its publisher holds it once PAID."""
    cluster = Cluster(5)
    job_id = cluster.publish_job(3, MODULE, INPUT, replicas=3, replicas_max=3)
    cluster.run_until(cluster.finished(3, job_id))
    job = cluster.nodes[3].engine.publisher.jobs[job_id]
    assert job.phase is Phase.PAID and len(job.live()) == 3
    return job


def judged(job: PublisherJob) -> PublisherJob:
    """``job`` as it stood when it was judged: every replica revealed, nothing paid yet."""
    job = copy.deepcopy(job)
    job.phase, job.accepted_digest = Phase.VERIFYING, b""
    for slot in job.slots:
        slot.verdict, slot.paid_mc = "", 0
    return job


def send(peer: PeerId, protocol: str, body: object) -> Send:
    return Send(peer, protocol, b"")


def test_settling_the_quorum_result_keeps_every_invariant(paid_job: PublisherJob) -> None:
    job = judged(paid_job)
    effects = settle(job, paid_job.accepted_digest, Reputation(), send)
    assert sum(isinstance(e, PayWorker) for e in effects) == 3
    assert decode_job(encode_job(job)).accepted_digest == paid_job.accepted_digest


def test_accepting_a_result_the_vote_did_not_fires(paid_job: PublisherJob) -> None:
    with pytest.raises(AssertionError, match="the vote did not"):
        settle(judged(paid_job), LOSER, Reputation(), send)


def test_settling_before_every_replica_revealed_fires(paid_job: PublisherJob) -> None:
    job = judged(paid_job)
    job.slots.append(copy.deepcopy(job.slots[0]))
    job.slots[-1].state, job.slots[-1].digest = SlotState.REVEALING, b""  # not in yet
    with pytest.raises(AssertionError, match="judged before every reveal"):
        settle(job, paid_job.accepted_digest, Reputation(), send)


def test_a_paid_state_whose_digest_changed_fires_before_the_write(paid_job: PublisherJob) -> None:
    job = copy.deepcopy(paid_job)
    job.accepted_digest = LOSER
    with pytest.raises(AssertionError, match="accepted != quorum"):
        encode_job(job)


def test_a_worker_paid_twice_for_one_job_fires_before_the_write(paid_job: PublisherJob) -> None:
    job = copy.deepcopy(paid_job)
    job.slots[1].bid = job.slots[0].bid  # the same worker holds two paid slots
    with pytest.raises(AssertionError, match="paid twice"):
        encode_job(job)


def test_a_payment_outside_the_move_to_paid_fires(paid_job: PublisherJob) -> None:
    job = judged(paid_job)
    job.slots[0].paid_mc = 1
    with pytest.raises(AssertionError, match="only the move to PAID pays"):
        encode_job(job)


def test_a_saved_state_that_breaks_them_fires_after_the_read(
    paid_job: PublisherJob, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = copy.deepcopy(paid_job)
    job.slots[0].digest = job.slots[1].digest = LOSER  # the saved vote no longer agrees
    with monkeypatch.context() as patched:  # the seam: a write that skipped its assertion
        patched.setattr(hearth.protocol.publisher_state, "assert_payment", lambda job: None)
        state = encode_job(job)
    with pytest.raises(AssertionError, match="accepted != quorum"):
        decode_job(state)


class ShortPayingLedger(MemoryLedger):
    """A ledger with our bug: it writes a pay of one milli-credit less than it was told."""

    def append_pay_pending(self, **fields: Any) -> HalfSignedReceipt:
        return super().append_pay_pending(**{**fields, "amount_mc": fields["amount_mc"] - 1})


def engine_on(ledger: MemoryLedger) -> Engine:
    return Engine(EngineConfig(ledger.identity, make_profile(0)), random.Random(0), ledger)


def test_a_pay_of_another_amount_fires_after_the_write() -> None:
    me, worker = Identity(b"\x01" * 32), Identity(b"\x02" * 32)
    engine = engine_on(ShortPayingLedger(me, now_ms=T0_MS))
    assert engine.payments is not None
    pay = PayWorker(JobId(b"j" * 16), worker.peer_id, 10)
    with pytest.raises(AssertionError, match="another amount"):
        engine.payments.absorb([pay], T0_MS)


def test_a_free_result_never_reaches_the_ledger() -> None:
    me, worker = Identity(b"\x01" * 32), Identity(b"\x02" * 32)
    engine = engine_on(MemoryLedger(me, now_ms=T0_MS))
    assert engine.payments is not None
    with pytest.raises(AssertionError, match="free result"):
        engine.payments.absorb([PayWorker(JobId(b"j" * 16), worker.peer_id, 0)], T0_MS)


def test_a_settle_that_did_not_settle_fires_after_the_write(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cluster = Cluster(5, ledgers=True)
    payments = cluster.nodes[3].engine.payments
    assert payments is not None
    # The seam: the publisher's ledger returns from ``settle`` as if it wrote, and writes nothing.
    monkeypatch.setattr(payments.ledger, "settle", lambda countersigned, *, now_ms: None)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    with pytest.raises(AssertionError, match="settled once"):
        cluster.run_until(cluster.finished(3, job_id))
        cluster.run_for(300_000)


def test_winners_from_one_subnet_fire_where_they_are_picked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sybils = [
        BidView(PeerId(f"sybil{i}"), 0, 5, 0, 0, "solar", f"s{i}", "10.6.6.0/24") for i in range(3)
    ]
    assert len(auction.pick(sybils, 2, (), frozenset(), 2)) == 1
    monkeypatch.setattr(auction, "conflicts", lambda bid, chosen: False)  # the seam: a bug there
    with pytest.raises(AssertionError, match="network group"):
        auction.pick(sybils, 2, (), frozenset(), 2)
