"""Credit lines (ADR 0013): receipts without work behind them are bounded per payer and in all,
history raises a payer's line, honest payments never touch it; countersignature resends back off
and stay bounded across restarts."""

from __future__ import annotations

import random
from typing import Any

import pytest

from hearth.ledger.entry import CountersignedReceipt, Kind
from hearth.ledger.errors import LedgerUnavailableError
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.receipts import make_receipt
from hearth.protocol.codec import encode
from hearth.protocol.credit import CreditConfig, CreditLines
from hearth.protocol.effects import Log, Send, SetTimer
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.envelope import seal
from hearth.protocol.events import MessageReceived, TimerFired
from hearth.protocol.identity import Identity
from hearth.protocol.messages import PROTOCOL_RECEIPT
from hearth.protocol.payments import (
    COUNTERSIGN_RESENDS_MAX,
    RESEND_MS,
    RESEND_MS_MAX,
    UNBACKED_PER_PAYER_MAX,
    ReceiptOffer,
    resends_due,
)
from hearth.protocol.timers import CountersignTimer
from tests.protocol.harness import T0_MS, Cluster, LedgerEngine, make_profile
from tests.protocol.test_payments import INPUT, MODULE, check_conserved, ledger_of, settle_all

WORKER = Identity(b"\x41" * 32)
MALLORY = Identity(b"\x42" * 32)
DAY_MS = 24 * 3_600_000


def lines(config: CreditConfig | None = None) -> tuple[CreditLines, MemoryLedger]:
    ledger = MemoryLedger(WORKER, now_ms=T0_MS)
    return CreditLines(config or CreditConfig(), ledger.state), ledger


def admit(credit: CreditLines, payer: bytes, amount_mc: int, now_ms: int = T0_MS) -> str:
    why = credit.decide(payer, amount_mc, backed=False, now_ms=now_ms)
    if not why:
        credit.charge(payer, amount_mc, backed=False)
    return why


def test_an_unknown_payer_gets_the_small_default_line_only() -> None:
    credit, _ = lines()
    payer = MALLORY.public_key
    assert admit(credit, payer, 1_000_000) == "over-credit-line"
    assert admit(credit, payer, 6_000) == ""
    assert admit(credit, payer, 4_000) == ""
    assert admit(credit, payer, 1) == "over-credit-line"  # 10,000 mc used
    assert credit.line(payer) == (10_000, 16)


def test_an_unknown_payer_line_also_counts_receipts() -> None:
    credit, _ = lines(CreditConfig(unbacked_burst=100))
    verdicts = [admit(credit, MALLORY.public_key, 1) for _ in range(40)]
    assert verdicts.count("") == 16
    assert set(verdicts[16:]) == {"over-credit-line"}


def test_all_unknown_payers_together_share_one_bounded_pool() -> None:
    credit, _ = lines()
    swarm = [Identity(bytes([100 + i]) * 32).public_key for i in range(100)]
    verdicts = [admit(credit, key, 5_000) for key in swarm]
    assert verdicts.count("") == 20  # 20 x 5,000 mc fill the 100,000 mc pool
    assert set(verdicts[20:]) == {"unknown-payers-pool-full"}
    assert credit.statistics()["unknown_pool_mc"] == 100_000


def test_unbacked_offers_are_rate_limited_per_payer() -> None:
    credit, _ = lines(CreditConfig(unknown_payer_receipts=100, unknown_total_receipts=100))
    verdicts = [admit(credit, MALLORY.public_key, 1) for _ in range(20)]
    assert verdicts.count("") == 8 and set(verdicts[8:]) == {"unbacked-rate"}
    assert admit(credit, MALLORY.public_key, 1, now_ms=T0_MS + 4_999) == "unbacked-rate"
    assert admit(credit, MALLORY.public_key, 1, now_ms=T0_MS + 5_000) == ""
    assert admit(credit, WORKER.public_key, 1) == ""  # another payer has its own bucket


def test_backed_receipts_always_pass_and_raise_the_line() -> None:
    credit, _ = lines()
    payer = MALLORY.public_key
    for _ in range(50):  # the honest path: never rate-limited, never capped
        assert credit.decide(payer, 900_000, backed=True, now_ms=T0_MS) == ""
        credit.charge(payer, 900_000, backed=True)
    assert credit.has_history(payer)
    assert credit.line(payer) == (10_000 + 1_000_000, 16 + 50)
    assert admit(credit, payer, 500_000) == ""  # history: not limited to the unknown line
    assert credit.statistics()["unknown_pool_mc"] == 0  # nor charged to the pool


def test_what_we_paid_a_payer_raises_its_line() -> None:
    credit, ledger = lines()
    ledger.append_pay_pending(
        job_id=b"j" * 16, payee=MALLORY.public_key, amount_mc=50_000, now_ms=T0_MS, ttl_ms=60_000
    )
    [pay] = [e for e in ledger.entries() if e.kind is Kind.PAY]
    half = pay.body
    ledger.settle(
        CountersignedReceipt(half.receipt, half.payer_signature, MALLORY.sign(encode(half))),
        now_ms=T0_MS + 1,
    )
    assert credit.line(MALLORY.public_key) == (60_000, 17)
    assert admit(credit, MALLORY.public_key, 60_000) == ""


def test_a_restart_counts_every_earlier_earn_as_unbacked() -> None:
    cluster = Cluster(5, ledgers=True)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    publisher = cluster.nodes[3].engine.identity.public_key
    worker = next(n for n in cluster.nodes if ledger_of(cluster, n.index).balance_mc() > 0)
    earned = ledger_of(cluster, worker.index).balance_mc()
    reopened = CreditLines(CreditConfig(), ledger_of(cluster, worker.index).reopen().state)
    assert not reopened.has_history(publisher)
    assert reopened.statistics()["unknown_pool_mc"] == earned


def test_the_fold_takes_back_the_flows_of_a_failed_commit() -> None:
    ledger = MemoryLedger(WORKER, now_ms=T0_MS, entries_max=2)
    first, second = (
        make_receipt(
            MALLORY, job_id=bytes([job]) * 8, payee=WORKER.public_key, amount_mc=7,
            now_ms=T0_MS, ttl_ms=60_000,
        )
        for job in (1, 2)
    )  # fmt: skip
    ledger.append_earn(first, now_ms=T0_MS)
    with pytest.raises(LedgerUnavailableError):
        ledger.append_earn(second, now_ms=T0_MS)
    assert ledger.state.earned_by_payer == {MALLORY.public_key: [7, 1]}
    assert ledger.reopen().state.earned_by_payer == {MALLORY.public_key: [7, 1]}


# Engines driven directly: a hostile payer offers receipts to one worker engine.


def worker_engine(ledger: MemoryLedger | None = None) -> Engine:
    ledger = ledger or MemoryLedger(WORKER, now_ms=T0_MS)
    return LedgerEngine(EngineConfig(WORKER, make_profile(1)), random.Random(1), ledger)


def offer(engine: Engine, payer: Identity, amount_mc: int, job: int, now_ms: int) -> list[Any]:
    half = make_receipt(
        payer, job_id=job.to_bytes(8, "big"), payee=WORKER.public_key, amount_mc=amount_mc,
        now_ms=now_ms, ttl_ms=120_000,
    )  # fmt: skip
    data = seal(
        payer,
        ReceiptOffer(half),
        now_ms=now_ms,
        ttl_ms=60_000,
        rng=random.Random(f"{job}:{now_ms}"),
    )
    return engine.step(MessageReceived(payer.peer_id, PROTOCOL_RECEIPT, data), now_ms)


def earns(engine: Engine) -> int:
    assert engine.payments is not None
    return sum(1 for e in engine.payments.ledger.entries() if e.kind is Kind.EARN)


def test_three_large_receipts_from_a_fresh_key_credit_nothing() -> None:
    engine = worker_engine()
    effects = [e for job in range(3) for e in offer(engine, MALLORY, 1_000_000, job, T0_MS)]
    assert engine.payments is not None
    assert engine.payments.ledger.balance_mc() == 0 and earns(engine) == 0
    assert not [e for e in effects if isinstance(e, Send)]  # nothing countersigned
    [log] = [e for e in effects if isinstance(e, Log)]  # summarised: one line for three
    assert log.event == "receipts-refused" and ("reason", "over-credit-line") in log.fields
    assert engine.payments.status()["receipts_refused"] == {"over-credit-line": 3}


def test_hundreds_of_unsolicited_receipts_write_a_bounded_number_of_entries() -> None:
    engine = worker_engine()
    logs = 0
    for job in range(726):
        now_ms = T0_MS + job * 100  # ten a second for 72 s
        logs += sum(1 for e in offer(engine, MALLORY, 1, job, now_ms) if isinstance(e, Log))
    assert earns(engine) == 16  # the unknown payer's line, in receipts
    assert engine.payments is not None and engine.payments.ledger.balance_mc() == 16
    assert logs <= 1 + 72 // 10  # at most one summary line every 10 s


def test_countersignature_resends_back_off_and_stop() -> None:
    engine = worker_engine()
    effects = offer(engine, MALLORY, 5, 1, T0_MS)  # the payer never says ReceiptSettled
    sends, gaps, now_ms = 1, [], T0_MS
    while True:
        timers = [e for e in effects if isinstance(e, SetTimer)]
        [timer] = [e for e in timers if isinstance(e.key, CountersignTimer)]
        gaps.append(timer.at_ms - now_ms)
        now_ms = timer.at_ms
        effects = engine.step(TimerFired(timer.key), now_ms)
        if not any(isinstance(e, Send) for e in effects):
            break
        sends += 1
    assert sends == COUNTERSIGN_RESENDS_MAX
    assert gaps[:4] == [RESEND_MS, 2 * RESEND_MS, 4 * RESEND_MS, 8 * RESEND_MS]
    assert max(gaps) == RESEND_MS_MAX and now_ms - T0_MS < DAY_MS
    assert [e.event for e in effects if isinstance(e, Log)] == ["countersignatures-unconfirmed"]
    assert (
        engine.payments is not None
        and engine.payments.status()["countersignatures_unconfirmed"] == 0
    )


def test_pending_countersignatures_are_capped_per_payer() -> None:
    config = CreditConfig(
        unknown_payer_receipts=1000, unknown_total_receipts=1000, unbacked_burst=1000
    )
    ledger = MemoryLedger(WORKER, now_ms=T0_MS)
    engine = LedgerEngine(
        EngineConfig(WORKER, make_profile(1), credit=config), random.Random(1), ledger
    )
    for job in range(UNBACKED_PER_PAYER_MAX + 30):
        offer(engine, MALLORY, 1, job, T0_MS)
    assert engine.payments is not None
    assert earns(engine) == UNBACKED_PER_PAYER_MAX + 30
    assert engine.payments.status()["countersignatures_unconfirmed"] == UNBACKED_PER_PAYER_MAX


def test_a_restart_resumes_the_backoff_and_never_multiplies_resends() -> None:
    ledger = MemoryLedger(WORKER, now_ms=T0_MS)
    engine = worker_engine(ledger)
    for job in range(10):
        offer(engine, MALLORY, 1, job, T0_MS)
    assert earns(engine) == 8  # the rest were over the payer's rate
    for age_ms, expected in ((1_000, 8), (3_600_000, 8), (7 * 3_600_000, 0), (2 * DAY_MS, 0)):
        restarted = worker_engine(ledger.reopen())
        assert restarted.payments is not None
        sent = [e for e in restarted.payments.on_started(T0_MS + age_ms) if isinstance(e, Send)]
        assert len(sent) == expected, age_ms
    assert resends_due(0) == 0 and resends_due(RESEND_MS) == 1
    assert resends_due(DAY_MS) == COUNTERSIGN_RESENDS_MAX


def test_the_honest_path_is_backed_and_untouched_by_the_lines() -> None:
    tight = CreditConfig(unknown_payer_mc=0, unknown_payer_receipts=0, unknown_total_mc=0)
    cluster = Cluster(5, ledgers=True)
    for node in cluster.nodes:  # no unbacked credit at all: every honest payment must be backed
        payments = node.engine.payments
        assert payments is not None
        payments.credit = CreditLines(tight, payments.ledger.state)
    job_id = cluster.publish_job(3, MODULE, INPUT)
    cluster.run_until(cluster.finished(3, job_id))
    settle_all(cluster)
    assert ledger_of(cluster, 3).balance_mc() < 0
    publisher = cluster.nodes[3].engine.identity.public_key
    for node in cluster.nodes:
        payments = node.engine.payments
        assert payments is not None and payments.status()["receipts_refused"] == {}
        if ledger_of(cluster, node.index).balance_mc() > 0:
            assert payments.credit.has_history(publisher)
    check_conserved(cluster)


def test_an_earn_the_disk_refused_charges_no_line() -> None:
    ledger = MemoryLedger(WORKER, now_ms=T0_MS, entries_max=1)  # genesis only: every write fails
    engine = worker_engine(ledger)
    effects = offer(engine, MALLORY, 500, 1, T0_MS)
    assert [e.event for e in effects if isinstance(e, Log)] == ["earn-deferred"]
    assert not [e for e in effects if isinstance(e, Send)]
    assert engine.payments is not None
    assert engine.payments.credit.statistics()["unknown_pool_mc"] == 0
    ledger.entries_max = None  # space returns: the re-offer is admitted and charged once
    offer(engine, MALLORY, 500, 1, T0_MS + 10)
    assert earns(engine) == 1
    assert engine.payments.credit.statistics()["unknown_pool_mc"] == 500
