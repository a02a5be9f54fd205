"""Shared builders for the ledger tests: real keys, real signatures, real chains."""

from __future__ import annotations

import pytest

from hearth.ledger.base import LedgerBase
from hearth.ledger.entry import CountersignedReceipt
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.identity import Identity


def identity(n: int) -> Identity:
    return Identity(bytes([n]) * 32)


def exchange(
    payer: LedgerBase, payee: LedgerBase, job_id: bytes, amount_mc: int, now_ms: int = 1_000
) -> CountersignedReceipt:
    """One complete payment: pay, earn, settle."""
    half = payer.append_pay_pending(
        job_id=job_id, payee=payee.identity.public_key, amount_mc=amount_mc, now_ms=now_ms,
        ttl_ms=10_000,
    )  # fmt: skip
    countersigned = payee.append_earn(half, now_ms=now_ms + 1)
    payer.settle(countersigned, now_ms=now_ms + 2)
    return countersigned


@pytest.fixture
def pair() -> tuple[MemoryLedger, MemoryLedger]:
    return MemoryLedger(identity(1)), MemoryLedger(identity(2))
