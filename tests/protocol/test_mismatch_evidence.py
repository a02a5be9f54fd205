"""A result refused before any vote is recorded on the publisher's ledger, never crashes it.

Found while binding awards (ADR 0012): a winner whose reveal broke its commitment, carried
garbage or claimed more fuel than the call allowed made the publisher's engine raise out of
``step``, because the mismatch entry took the empty accepted digest as a 32-byte hash.
"""

from __future__ import annotations

import pytest

from hearth.ledger.entry import Kind
from tests.protocol.harness import Cluster

MODULE = b"\0asm fake module"
INPUT = b"hello, hearth"


@pytest.mark.parametrize(
    ("behaviour", "spec", "reason"),
    [
        ("garbage", {}, "garbage-output"),  # claims the honest hash, sends other bytes
        ("honest", {"fuel_max": 10**10}, "fuel-over-max"),  # the fake run burns 1.4 x 10^10
    ],
)
def test_a_result_refused_before_the_vote_is_recorded_with_its_reveal(
    behaviour: str, spec: dict[str, int], reason: str
) -> None:
    cluster = Cluster(5, behaviours={0: behaviour}, ledgers=True)
    job_id = cluster.publish_job(4, MODULE, INPUT, **spec)
    cluster.run_until(cluster.finished(4, job_id))  # raised out of the publisher's step before
    ledger = cluster.nodes[4].engine.payments.ledger  # type: ignore[union-attr]
    entries = [ledger.entry_at(seq) for seq in range(1, ledger.head().seq + 1)]
    recorded = [e for e in entries if e.kind is Kind.MISMATCH and e.body.job_id == job_id]
    assert recorded
    for entry in recorded:
        assert len(entry.body.evidence_hashes) >= 3 and all(
            len(h) == 32 for h in entry.body.evidence_hashes
        )
    summary = cluster.nodes[4].engine.publisher.summary(job_id)
    assert summary is not None
    assert reason in {r.verdict for r in summary.replicas_detail}
