"""A mismatch recorded before any verdict (a reveal that does not open its commitment) reaches
the ledger without the empty digest: found by tests/fuzz, it used to raise out of Engine.step."""

from __future__ import annotations

import random

from ledger.entry import Kind, MismatchBody
from ledger.memory import MemoryLedger
from protocol.effects import RecordMismatch
from protocol.engine import Engine, EngineConfig
from protocol.identity import Identity
from protocol.job_messages import JobId
from tests.protocol.harness import T0_MS, make_profile


def test_a_bad_reveal_before_a_verdict_is_recorded_without_the_missing_digest() -> None:
    me, worker = Identity(bytes([7]) * 32), Identity(bytes([8]) * 32)
    ledger = MemoryLedger(me, now_ms=T0_MS)
    engine = Engine(EngineConfig(me, make_profile(0)), random.Random(0), ledger)
    assert engine.payments is not None
    claimed = bytes(range(32))
    effect = RecordMismatch(
        job_id=JobId(b"job-1"), worker=worker.peer_id, reason="bad-reveal",
        claimed_digest=claimed, accepted_digest=b"", salt=bytes(16),
        commit_envelope=b"signed commit", reveal_envelope=b"signed reveal",
    )  # fmt: skip
    assert engine.payments.absorb([effect], T0_MS + 1) == []
    [entry] = ledger.entries(from_seq=1)
    assert entry.kind is Kind.MISMATCH
    body = entry.body
    assert isinstance(body, MismatchBody) and body.worker == worker.public_key
    assert body.evidence_hashes[0] == claimed and len(body.evidence_hashes) == 2
