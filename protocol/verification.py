"""Verification by redundant execution: open commitments and judge a quorum (ADR 0007).

I/O: none. Pure functions of the revealed digests; integers only.

A digest wins when at least ``replicas`` results agree on it and they are a strict majority of
all results in. While none does, more replicas are wanted: the fewest that could still give the
leading digest a quorum, never beyond ``replicas_max``. When even ``replicas_max`` results could
not give any digest a quorum, the job is unverifiable.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
from collections import Counter
from collections.abc import Iterable

from hearth.protocol import limits
from hearth.protocol.job_messages import ResultReveal, commitment


class Verdict(enum.Enum):
    PENDING = "pending"  # fewer results than replicas; wait for them
    ACCEPTED = "accepted"
    NEED_MORE = "need-more"
    UNVERIFIABLE = "unverifiable"


@dataclasses.dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    digest: bytes = b""  # the accepted digest
    more: int = 0  # replicas to add for NEED_MORE


def judge(digests: Iterable[bytes], replicas: int, replicas_max: int) -> Judgement:
    """Judge the results in: accept, wait, ask for ``more`` replicas, or give up."""
    assert 1 <= replicas <= replicas_max
    counts = Counter(digests)
    total = sum(counts.values())
    if total == 0:
        return Judgement(Verdict.PENDING)
    # Most votes first; among equals the smaller digest, so that every node picks the same one.
    leader, votes = min(counts.items(), key=lambda item: (-item[1], item[0]))
    if _quorum(votes, total, replicas):
        return Judgement(Verdict.ACCEPTED, leader)
    if len(counts) == 1 and total < replicas:
        return Judgement(Verdict.PENDING)
    # The leader needs x more agreeing results: votes + x >= replicas and 2(votes + x) > total + x.
    more = max(replicas - votes, total - 2 * votes + 1, 1)
    if total + more > replicas_max:
        return Judgement(Verdict.UNVERIFIABLE)
    assert _quorum(votes + more, total + more, replicas), "more would not make a quorum"
    assert more == 1 or not _quorum(votes + more - 1, total + more - 1, replicas), "not fewest"
    return Judgement(Verdict.NEED_MORE, more=more)


def _quorum(votes: int, total: int, replicas: int) -> bool:
    return votes >= replicas and 2 * votes > total


def reveal_problem(reveal: ResultReveal, commitment_bytes: bytes, worker_key: bytes) -> str:
    """ "" when ``reveal`` opens ``commitment_bytes`` made by ``worker_key``, else a reason code."""
    opened = commitment(reveal.job_id, reveal.digest, reveal.salt, worker_key)
    if opened != commitment_bytes:
        return "bad-reveal"
    inline = reveal.output_bytes <= limits.OUTPUT_INLINE_BYTES_MAX
    if inline and hashlib.sha256(reveal.output).digest() != reveal.output_hash:
        return "garbage-output"
    return ""
