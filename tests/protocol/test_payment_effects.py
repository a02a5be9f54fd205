"""The publisher's ledger effects (PayWorker, RecordMismatch) run after the message handlers'
refusal boundary, so nothing they do may raise out of Engine.step: cases found by tests/fuzz."""

from __future__ import annotations

import hashlib
import random

from hearth.ledger.entry import Kind, MismatchBody
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.view import ChainView
from hearth.protocol import limits
from hearth.protocol.effects import Log, PayWorker, RecordMismatch
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import JobId
from tests.protocol.harness import T0_MS, make_profile

ME, WORKER = Identity(bytes([7]) * 32), Identity(bytes([8]) * 32)


def publisher() -> tuple[Engine, ChainView]:
    """A publisher's engine and its view of its chain: entries it stages wait there (ADR 0019)."""
    view = MemoryLedger(ME, now_ms=T0_MS).view()
    return Engine(EngineConfig(ME, make_profile(0)), random.Random(0), view), view


def test_a_bad_reveal_before_a_verdict_is_recorded_without_the_missing_digest() -> None:
    engine, ledger = publisher()
    worker = WORKER
    assert engine.payments is not None
    claimed = bytes(range(32))
    effect = RecordMismatch(
        job_id=JobId(b"job-1"), worker=worker.peer_id, reason="bad-reveal",
        claimed_digest=claimed, accepted_digest=b"", salt=bytes(16),
        commit_envelope=b"signed commit", reveal_envelope=b"signed reveal",
    )  # fmt: skip
    assert engine.payments.absorb([effect], T0_MS + 1) == []
    [entry] = ledger.take_staged()  # the next CommitEntries
    assert entry.kind is Kind.MISMATCH
    body = entry.body
    assert isinstance(body, MismatchBody) and body.worker == worker.public_key
    # The claimed digest, then the hashes of the signed commit and reveal: no empty digest.
    assert body.evidence_hashes == (
        claimed,
        hashlib.sha256(b"signed commit").digest(),
        hashlib.sha256(b"signed reveal").digest(),
    )


def test_a_payment_larger_than_one_receipt_can_carry_is_refused_with_a_log() -> None:
    """fuel_max x max price may exceed the credit limit; paying it raised LocalProtocolError."""
    engine, ledger = publisher()
    assert engine.payments is not None
    too_much = PayWorker(JobId(b"job-2"), WORKER.peer_id, limits.CREDIT_LIMIT_MC + 1)
    [log] = engine.payments.absorb([too_much], T0_MS + 1)
    assert isinstance(log, Log) and log.event == "payment-refused"
    assert ledger.head().seq == 0
