"""Payment by receipts countersigned on both ledgers, through loss, replays and a full disk."""

from __future__ import annotations

import random
from typing import Any

from hearth.ledger.chain import verify_chain
from hearth.ledger.entry import Kind, parse_receipt, sign_entry
from hearth.ledger.errors import LedgerUnavailableError
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.proofs import make_fork_proof
from hearth.protocol.codec import decode
from hearth.protocol.effects import PayWorker, Send
from hearth.protocol.engine import Engine
from hearth.protocol.envelope import EnvelopeWire, SignedWire
from hearth.protocol.identity import peer_id_from_public_key
from hearth.protocol.job_messages import JobId
from hearth.protocol.messages import PROTOCOL_RECEIPT
from hearth.protocol.payments import COUNTERSIGN_RESEND_WINDOW_MS
from tests.protocol.harness import T0_MS, Cluster

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"


def decode_body(data: bytes) -> object:
    """The message inside a sealed envelope, without checking it (the test's own traffic)."""
    wire = decode(data)
    assert isinstance(wire, EnvelopeWire)
    signed = decode(wire.signed)
    assert isinstance(signed, SignedWire)
    return decode(signed.body)


def ledger_of(cluster: Cluster, index: int) -> MemoryLedger:
    """What node ``index`` committed (its engine's ``CommitEntries``, carried out)."""
    ledger = cluster.nodes[index].ledger
    assert ledger is not None
    return ledger


def pays(ledger: MemoryLedger) -> list[PayWorker]:
    """The payments a publisher's chain records, as the decisions that made them."""
    out = []
    for entry in ledger.entries():
        if entry.kind == Kind.PAY:
            receipt = parse_receipt(entry.body.receipt)
            worker = peer_id_from_public_key(receipt.payee)
            out.append(PayWorker(JobId(receipt.job_id), worker, receipt.amount_mc))
    return out


def kinds(ledger: MemoryLedger) -> list[Kind]:
    return [entry.kind for entry in ledger.entries()]


def check_conserved(cluster: Cluster) -> None:
    total = 0
    for index in range(len(cluster.nodes)):
        ledger = ledger_of(cluster, index)
        verify_chain(ledger.entry_wires(), author=cluster.nodes[index].engine.identity.public_key)
        total += ledger.balance_mc()
    assert total == 0


def settle_all(cluster: Cluster) -> None:
    cluster.run_for(300_000)  # past every receipt's expiry and every resend


def test_each_matching_worker_is_paid_once_on_both_ledgers() -> None:
    cluster = Cluster(5, ledgers=True)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    summary = cluster.nodes[3].engine.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    workers = [p.worker for p in pays(ledger_of(cluster, 3))]
    assert len(set(workers)) == 2
    publisher = ledger_of(cluster, 3)
    assert kinds(publisher).count(Kind.PAY) == 2 and kinds(publisher).count(Kind.SETTLE) == 2
    paid_total = 0
    for node in cluster.nodes:
        ledger = ledger_of(cluster, node.index)
        earns = kinds(ledger).count(Kind.EARN)
        assert earns == (1 if node.peer_id in workers else 0)
        paid_total += max(0, ledger.balance_mc())
    assert publisher.balance_mc() == -paid_total == -summary.credits_paid_mc
    check_conserved(cluster)


def test_the_liar_gets_a_mismatch_entry_and_no_credit() -> None:
    cluster = Cluster(5, behaviours={0: "liar"}, ledgers=True)
    job_id = cluster.publish_job(4, MODULE, INPUT, replicas=3)
    cluster.run_until(cluster.finished(4, job_id))
    settle_all(cluster)
    assert ledger_of(cluster, 0).balance_mc() == 0
    assert Kind.EARN not in kinds(ledger_of(cluster, 0))
    assert kinds(ledger_of(cluster, 4)).count(Kind.MISMATCH) == 1
    check_conserved(cluster)


def test_lost_receipt_messages_are_resent_until_both_sides_agree() -> None:
    lost = {"count": 0}

    def lose_first_receipts(_sender: int, send: Send) -> bool:
        if send.protocol == PROTOCOL_RECEIPT and lost["count"] < 6:
            lost["count"] += 1
            return True
        return False

    cluster = Cluster(5, ledgers=True, drop=lose_first_receipts)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    assert lost["count"] == 6
    assert kinds(ledger_of(cluster, 3)).count(Kind.SETTLE) == 2
    check_conserved(cluster)


def test_a_payee_that_never_answers_ends_in_a_signed_cancel() -> None:
    cluster = Cluster(5, ledgers=True, drop=lambda _s, send: send.protocol == PROTOCOL_RECEIPT)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    publisher = kinds(ledger_of(cluster, 3))
    assert publisher.count(Kind.PAY) == 2 and publisher.count(Kind.CANCEL) == 2
    assert ledger_of(cluster, 3).balance_mc() == 0
    check_conserved(cluster)


def test_a_replayed_pay_decision_pays_nothing_more() -> None:
    cluster = Cluster(5, ledgers=True)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    engine = cluster.nodes[3].engine
    before = kinds(ledger_of(cluster, 3))
    decisions = pays(ledger_of(cluster, 3))
    assert len(decisions) == 2
    for payment in decisions:
        assert engine.payments is not None
        assert engine.payments.absorb([payment], cluster.now_ms) == []
    assert kinds(ledger_of(cluster, 3)) == before


def test_a_full_disk_defers_the_payment_and_it_resumes() -> None:
    cluster = Cluster(5, ledgers=True)
    ledger = ledger_of(cluster, 3)
    real_append = ledger.append_many
    refusals = {"left": 1}

    def full_disk(entries: Any) -> Any:
        if refusals["left"] and any(e.kind is Kind.PAY for e in entries):
            refusals["left"] -= 1
            raise LedgerUnavailableError("database or disk is full")
        return real_append(entries)

    ledger.append_many = full_disk  # type: ignore[method-assign]
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    assert refusals["left"] == 0
    assert kinds(ledger).count(Kind.SETTLE) == 2
    deferred = [
        e for _, e in cluster.nodes[3].effects if getattr(e, "event", "") == "payment-deferred"
    ]
    assert len(deferred) == 2  # one group commit held both pays
    check_conserved(cluster)


def test_a_worker_proven_to_fork_after_its_reveal_is_refused_pay_not_raised() -> None:
    """Found by the simulator: settle() paid a worker the ledger had since refused, and the
    RefusedAuthorError escaped Engine.step."""
    cluster = Cluster(5, ledgers=True)
    forker = cluster.nodes[1].engine.identity
    forked = MemoryLedger(forker, now_ms=T0_MS)
    head = forked.entry_at(0)
    twin = sign_entry(
        forker,
        seq=0,
        prev_hash=head.prev_hash,
        kind=Kind.GENESIS,
        body=head.body,
        created_ms=head.created_ms + 1,
    )
    engine = cluster.nodes[3].engine
    assert engine.payments is not None and engine.ledger is not None
    publisher = engine.ledger  # the engine's view: what it signed, committed or not
    publisher.record_fork(make_fork_proof(head.wire, twin.wire), now_ms=cluster.now_ms)
    effects = engine.payments.absorb([PayWorker(JobId(b"j" * 16), forker.peer_id, 10)], T0_MS)
    assert [(e.level, e.event) for e in effects] == [("error", "payment-refused")]
    assert Kind.PAY not in [entry.kind for entry in publisher.entries()]


def test_a_partition_longer_than_the_receipt_still_ends_settled_on_both_sides() -> None:
    """Found by the simulator: the payee gave up re-sending before the payer cancelled."""
    heal_ms: list[int] = []

    def partition(_sender: int, send: Send) -> bool:
        if send.protocol != PROTOCOL_RECEIPT:
            return False
        kind = type(decode_body(send.data)).__name__
        if not heal_ms and kind == "ReceiptCountersigned":
            heal_ms.append(cluster.now_ms + 300_000)  # the payees have earned; now cut them off
        if heal_ms and cluster.now_ms < heal_ms[0]:
            return kind != "ReceiptOffer"  # offers still arrive: the payees earn, unheard
        # After the heal, lose the payer's offers: the payees alone must repair the books.
        return kind == "ReceiptOffer" and bool(heal_ms)

    cluster = Cluster(5, ledgers=True, drop=partition)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    cluster.run_for(900_000)
    publisher = kinds(ledger_of(cluster, 3))
    assert publisher.count(Kind.CANCEL) == 2  # the receipts expired during the partition
    assert publisher.count(Kind.SETTLE) == 2  # and settled late, from the payees' re-sends
    check_conserved(cluster)


def test_a_restarted_payee_re_sends_its_recent_countersignatures() -> None:
    cluster = Cluster(5, ledgers=True)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    [worker] = [p.worker for p in pays(ledger_of(cluster, 3))][:1]
    node = cluster.by_peer[worker]
    reopened = ledger_of(cluster, node.index).reopen()
    engine = Engine(node.engine.config, random.Random(1), reopened.view())
    assert engine.payments is not None
    resent = engine.payments.on_started(cluster.now_ms)
    assert [type(e).__name__ for e in resent] == ["Send", "SetTimer"]
    assert type(decode_body(resent[0].data)).__name__ == "ReceiptCountersigned"
    much_later = cluster.now_ms + 2 * COUNTERSIGN_RESEND_WINDOW_MS
    assert engine.payments.on_started(much_later) == []
