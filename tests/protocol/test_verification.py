"""The verification quorum (ADR 0007): unit cases and a hypothesis state machine."""

from __future__ import annotations

from collections import Counter

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from hearth.protocol.job_messages import ResultReveal, commitment, result_digest
from hearth.protocol.verification import Judgement, Verdict, judge, reveal_problem

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


def test_agreement_of_all_replicas_is_accepted() -> None:
    assert judge([A, A], 2, 5) == Judgement(Verdict.ACCEPTED, A)
    assert judge([A], 2, 5).verdict is Verdict.PENDING
    assert judge([A], 1, 1) == Judgement(Verdict.ACCEPTED, A)


def test_disagreement_asks_for_the_fewest_replicas_that_could_decide() -> None:
    assert judge([A, B], 2, 5) == Judgement(Verdict.NEED_MORE, more=1)
    assert judge([A, B, A], 2, 5) == Judgement(Verdict.ACCEPTED, A)
    assert judge([A, B, C], 2, 5) == Judgement(Verdict.NEED_MORE, more=2)
    assert judge([A, B, C], 2, 4).verdict is Verdict.UNVERIFIABLE
    assert judge([A, B], 2, 2).verdict is Verdict.UNVERIFIABLE


def test_a_tie_is_never_a_quorum() -> None:
    assert judge([A, A, B, B], 2, 5).verdict is Verdict.NEED_MORE
    assert judge([A, A, B, B, A], 2, 5) == Judgement(Verdict.ACCEPTED, A)


def _reveal(job_id: bytes, output: bytes, salt: bytes) -> ResultReveal:
    import hashlib

    output_hash = hashlib.sha256(output).digest()
    return ResultReveal(job_id, 0, "", output_hash, 5, salt, len(output), output)


def test_a_reveal_must_open_its_own_commitment() -> None:
    job_id, salt, key, other_key = b"job", b"s" * 16, b"k" * 32, b"o" * 32
    reveal = _reveal(job_id, b"output", salt)
    committed = commitment(job_id, reveal.digest, salt, key)
    assert reveal_problem(reveal, committed, key) == ""
    assert reveal_problem(reveal, committed, other_key) == "bad-reveal"  # a copied commitment
    garbage = ResultReveal(job_id, 0, "", reveal.output_hash, 5, salt, 7, b"garbage")
    assert reveal_problem(garbage, commitment(job_id, garbage.digest, salt, key), key) == (
        "garbage-output"
    )


def test_the_digest_covers_error_kind_output_and_fuel() -> None:
    base = result_digest(b"j", "", A, 10)
    assert (
        len(
            {
                base,
                result_digest(b"j", "trap", A, 10),
                result_digest(b"j", "", B, 10),
                result_digest(b"j", "", A, 11),
                result_digest(b"k", "", A, 10),
            }
        )
        == 5
    )


class QuorumMachine(RuleBasedStateMachine):
    """Results arrive one by one, as the publisher collects them; more are asked on dispute."""

    @initialize(replicas=st.integers(1, 4), extra=st.integers(0, 6))
    def start(self, replicas: int, extra: int) -> None:
        self._begin(replicas, extra)

    @precondition(lambda self: self.outcome is not None)
    @rule(replicas=st.integers(1, 4), extra=st.integers(0, 6))
    def next_job(self, replicas: int, extra: int) -> None:
        self._begin(replicas, extra)

    def _begin(self, replicas: int, extra: int) -> None:
        self.replicas = replicas
        self.replicas_max = replicas + extra
        self.target = replicas
        self.results: list[bytes] = []
        self.outcome: Judgement | None = None

    @precondition(lambda self: self.outcome is None)
    @rule(digest=st.sampled_from([A, A, A, B, C]))
    def result_arrives(self, digest: bytes) -> None:
        self.results.append(digest)
        if len(self.results) < self.target:
            return
        judgement = judge(self.results, self.replicas, self.replicas_max)
        assert judgement.verdict is not Verdict.PENDING
        if judgement.verdict is Verdict.NEED_MORE:
            assert judgement.more >= 1
            self.target = len(self.results) + judgement.more
        else:
            self.outcome = judgement

    @invariant()
    def never_beyond_the_maximum(self) -> None:
        assert self.target <= self.replicas_max
        assert len(self.results) <= self.replicas_max

    @invariant()
    def an_accepted_result_holds_a_strict_majority_of_at_least_replicas(self) -> None:
        if self.outcome is not None and self.outcome.verdict is Verdict.ACCEPTED:
            votes = Counter(self.results)[self.outcome.digest]
            assert votes >= self.replicas
            assert 2 * votes > len(self.results)

    @invariant()
    def unanimity_is_accepted_at_once(self) -> None:
        if len(self.results) >= self.replicas and len(set(self.results)) == 1:
            assert self.outcome == Judgement(Verdict.ACCEPTED, self.results[0])

    @invariant()
    def unverifiable_only_when_no_quorum_is_reachable(self) -> None:
        if self.outcome is not None and self.outcome.verdict is Verdict.UNVERIFIABLE:
            leader_votes = max(Counter(self.results).values())
            left = self.replicas_max - len(self.results)
            best = leader_votes + left
            assert best < self.replicas or 2 * best <= self.replicas_max


TestQuorum = QuorumMachine.TestCase
