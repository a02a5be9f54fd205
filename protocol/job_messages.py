"""Wire messages of a job's life: call for bids, bid, award, commit, reveal, cancel, mismatch.

I/O: none. Type codes 20-49 go on the wire (ADR 0006, ADR 0007); 90-92 are the publisher's saved
state (protocol.publisher_state). Every message travels in a signed envelope; its author is the
publisher (calls, awards, reveal requests, cancels, mismatch notices) or the worker (bids, award
replies, commits, reveals). ``check`` raises ``RemoteProtocolError`` for a field out of range, so
handlers may trust what they read after it.

An ``Award`` names its winner's key and embeds the exact call it answers; a worker takes an award
only from the peer it bid to, for the call it bid on, addressed to itself, and delivered by its
signer (ADR 0012). Every message on a direct stream must come from its author: a forwarded one
proves only that its deliverer forwards what was not addressed to it (``require_from_author``).

A result is named by its *digest*, which covers exactly what honest replicas must agree on bit
for bit (the sandbox's verdict): the error kind, the output hash, the fuel used, the exit status
and the hash of the stderr tail (version 2, ADR 0023: a failed job is a verified result too).
A worker commits to ``commitment(job_id, digest, salt, its public key)`` before anyone reveals;
the key inside the hash is what stops a lazy worker from submitting a copy of another worker's
commitment.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Final, NewType

from hearth.protocol import limits
from hearth.protocol.codec import encode, message
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.identity import PUBLIC_KEY_BYTES, PeerId
from hearth.protocol.messages import ENERGY_SOURCES, RUNTIMES

JobId = NewType("JobId", bytes)

PREFERENCES: Final = ("cheapest", "fastest", "greenest")
# Wall-clock failures depend on the host, not the job: a worker reports them as a failed award,
# never as a result to vote on (node/sandbox/model.py ExecutionResult.verdict).
HOST_ERROR_KINDS: Final = frozenset({"deadline", "crashed", "compile-timeout"})
ERROR_KIND_BYTES_MAX: Final = 64
REASON_BYTES_MAX: Final = 128

EXIT_CODE_NONE: Final = -1  # the job never exited by itself: a trap, no fuel, no memory
_RESULT_DOMAIN: Final = b"hearth/result/2\x00"
_COMMIT_DOMAIN: Final = b"hearth/commit/1\x00"
_CALL_DOMAIN: Final = b"hearth/call/1\x00"


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise RemoteProtocolError(f"bad {what}", reason="invalid-job-message")


def _check_job_id(job_id: bytes) -> None:
    _require(0 < len(job_id) <= limits.JOB_ID_BYTES_MAX, "job_id")


def _check_hash(value: bytes, what: str) -> None:
    _require(len(value) == limits.HASH_BYTES, what)


def _check_text(value: str, what: str, bytes_max: int) -> None:
    _require(len(value.encode()) <= bytes_max, what)


def require_from_author(author: PeerId, sender: PeerId) -> None:
    """A direct message (bid, award, reply, commit, reveal, cancel) comes from its own author.

    Streams are authenticated, so ``sender`` is who delivered it; a message another peer signed
    is someone else's mail. The sender, not the author, is the one at fault (ADR 0012).
    """
    if author != sender:
        raise RemoteProtocolError(
            "a direct message delivered by a peer that did not sign it", reason="forwarded"
        )


def result_digest(
    job_id: bytes,
    error_kind: str,
    output_hash: bytes,
    fuel_used: int,
    exit_code: int = 0,
    stderr: bytes = b"",
) -> bytes:
    """What replicas vote on. Fixed-width fields first, the one variable field last."""
    return hashlib.sha256(
        _RESULT_DOMAIN
        + len(job_id).to_bytes(1, "big")
        + job_id
        + output_hash
        + fuel_used.to_bytes(8, "big")
        + exit_code.to_bytes(8, "big", signed=True)
        + hashlib.sha256(stderr).digest()
        + error_kind.encode()
    ).digest()


def stderr_tail(stderr: bytes) -> bytes:
    """The part of a job's stderr a result carries: its last JOB_STDERR_BYTES_MAX bytes."""
    return stderr[-limits.JOB_STDERR_BYTES_MAX :] if stderr else b""


def commitment(job_id: bytes, digest: bytes, salt: bytes, worker_key: bytes) -> bytes:
    return hashlib.sha256(
        _COMMIT_DOMAIN + len(job_id).to_bytes(1, "big") + job_id + digest + salt + worker_key
    ).digest()


@message(20)
@dataclasses.dataclass(frozen=True)
class CallForBids:
    """Gossiped on TOPIC_JOBS. Says nothing of how many replicas will run (ADR 0007).

    ``call_round`` counts fresh calls for the same job, made when the candidates run out.
    """

    job_id: bytes
    call_round: int
    runtime: str
    module_hash: bytes
    module_bytes: int
    input_hash: bytes
    input_bytes: int
    fuel_max: int
    memory_mb_max: int
    deadline_ms: int
    max_price_mc_per_tfuel: int
    bid_deadline_ms: int
    requirements: tuple[str, ...]

    def check(self, now_ms: int) -> None:
        _check_job_id(self.job_id)
        _require(0 <= self.call_round < limits.CALL_ROUNDS_MAX, "call_round")
        _require(self.runtime in RUNTIMES, "runtime")
        _check_hash(self.module_hash, "module_hash")
        _check_hash(self.input_hash, "input_hash")
        _require(0 < self.module_bytes <= limits.JOB_MODULE_BYTES_MAX, "module_bytes")
        _require(0 <= self.input_bytes <= limits.JOB_INPUT_BYTES_MAX, "input_bytes")
        _require(0 < self.fuel_max <= limits.JOB_FUEL_MAX, "fuel_max")
        _require(0 < self.memory_mb_max * 1024 * 1024 <= limits.JOB_MEMORY_BYTES_MAX, "memory")
        _require(0 <= self.max_price_mc_per_tfuel <= limits.CREDIT_LIMIT_MC, "max_price")
        _require(self.bid_deadline_ms < self.deadline_ms, "bid_deadline_ms")
        window_ms = self.deadline_ms - now_ms
        _require(window_ms <= limits.JOB_DEADLINE_MS_MAX + limits.BID_WINDOW_MS_MAX, "deadline")
        _require(len(self.requirements) <= limits.REQUIREMENTS_MAX, "requirements")
        for requirement in self.requirements:
            _check_text(requirement, "requirement", limits.OPERATOR_LABEL_BYTES_MAX)


def call_hash(call: CallForBids) -> bytes:
    """Names one call exactly: a worker keeps it with its bid and checks the award against it."""
    return hashlib.sha256(_CALL_DOMAIN + encode(call)).digest()


@message(21, version=2)
@dataclasses.dataclass(frozen=True)
class Bid:
    """Sent on PROTOCOL_BID straight to the publisher; sealed: no other bidder sees it.

    Version 2 (ADR 0031): ``start_ms``, when the host can start the job (now, or after the jobs
    in its queue), so that the winner rule weighs expected completion, not only price.
    """

    job_id: bytes
    call_round: int
    price_mc_per_tfuel: int
    fuel_per_s: int
    energy_source: str
    operator: str
    start_ms: int = 0

    def check(self) -> None:
        _check_job_id(self.job_id)
        _require(0 <= self.call_round < limits.CALL_ROUNDS_MAX, "call_round")
        _require(0 <= self.price_mc_per_tfuel <= limits.CREDIT_LIMIT_MC, "price")
        _require(self.fuel_per_s > 0, "fuel_per_s")
        _require(self.energy_source in ENERGY_SOURCES, "energy_source")
        _check_text(self.operator, "operator", limits.OPERATOR_LABEL_BYTES_MAX)
        _require(self.start_ms >= 0, "start_ms")


@message(22, version=3)
@dataclasses.dataclass(frozen=True)
class Award:
    """PROTOCOL_AWARD, publisher to winner. Carries the call so a worker need not have kept it.

    Version 3 (ADR 0031): ``module`` and ``input`` carry the blobs themselves when they are small
    (together at most ``AWARD_INLINE_BYTES_MAX``), else are empty and fetched by hash.

    ``winner`` is the public key of the worker it is for (version 2, ADR 0012): a copy forwarded to
    anyone else is refused. ``award_no`` numbers the awards of one job, so that replies and commits
    name the award they answer. ``lease_ms`` is how long the worker has, from the award, to commit
    a result.
    """

    call: CallForBids
    winner: bytes
    award_no: int
    price_mc_per_tfuel: int
    lease_ms: int
    module: bytes = b""
    input: bytes = b""

    def check(self, now_ms: int) -> None:
        self.call.check(now_ms)
        _require(len(self.module) + len(self.input) <= limits.AWARD_INLINE_BYTES_MAX, "inline")
        _require(len(self.module) in (0, self.call.module_bytes), "module")
        _require(len(self.input) in (0, self.call.input_bytes), "input")
        _require(len(self.winner) == PUBLIC_KEY_BYTES, "winner")
        _require(0 <= self.award_no <= limits.REPLICAS_MAX * 16, "award_no")
        _require(0 <= self.price_mc_per_tfuel <= self.call.max_price_mc_per_tfuel, "price")
        _require(0 < self.lease_ms <= limits.LEASE_MS_MAX, "lease_ms")


@message(23)
@dataclasses.dataclass(frozen=True)
class AwardReply:
    """PROTOCOL_AWARD, worker to publisher. A late decline (``accept`` false after an accept)
    says the worker could not finish: a blob fetch failed or the host stopped the run."""

    job_id: bytes
    award_no: int
    accept: bool
    reason: str

    def check(self) -> None:
        _check_job_id(self.job_id)
        _check_text(self.reason, "reason", REASON_BYTES_MAX)


@message(24, version=2)
@dataclasses.dataclass(frozen=True)
class ResultCommit:
    """Version 2 commits to a version-2 digest (exit status and stderr included, ADR 0023); an
    old worker's version-1 commit is refused by the decoder, never misread."""

    job_id: bytes
    award_no: int
    commitment: bytes

    def check(self) -> None:
        _check_job_id(self.job_id)
        _check_hash(self.commitment, "commitment")


@message(25)
@dataclasses.dataclass(frozen=True)
class RevealRequest:
    job_id: bytes
    award_no: int

    def check(self) -> None:
        _check_job_id(self.job_id)


@message(26, version=2)
@dataclasses.dataclass(frozen=True)
class ResultReveal:
    """The opening of a commitment. ``output`` is inline when at most OUTPUT_INLINE_BYTES_MAX,
    else empty and fetched by hash from the worker over /hearth/blob/1.

    Version 2 (ADR 0023) adds the job's ``exit_code`` (EXIT_CODE_NONE when it never exited) and
    the tail of its ``stderr``, both inside the digest: replicas agree on a failure's evidence
    as on an output.
    """

    job_id: bytes
    award_no: int
    error_kind: str
    output_hash: bytes
    fuel_used: int
    salt: bytes
    output_bytes: int
    output: bytes
    exit_code: int = 0
    stderr: bytes = b""

    def check(self) -> None:
        _check_job_id(self.job_id)
        _check_text(self.error_kind, "error_kind", ERROR_KIND_BYTES_MAX)
        _require(EXIT_CODE_NONE <= self.exit_code <= limits.EXIT_CODE_MAX, "exit_code")
        _require(len(self.stderr) <= limits.JOB_STDERR_BYTES_MAX, "stderr")
        _check_hash(self.output_hash, "output_hash")
        _require(0 <= self.fuel_used <= limits.JOB_FUEL_MAX, "fuel_used")
        _require(len(self.salt) == limits.SALT_BYTES, "salt")
        _require(0 <= self.output_bytes <= limits.JOB_OUTPUT_BYTES_MAX, "output_bytes")
        inline = self.output_bytes <= limits.OUTPUT_INLINE_BYTES_MAX
        _require(len(self.output) == (self.output_bytes if inline else 0), "output")

    @property
    def digest(self) -> bytes:
        return result_digest(
            self.job_id,
            self.error_kind,
            self.output_hash,
            self.fuel_used,
            self.exit_code,
            self.stderr,
        )


@message(27)
@dataclasses.dataclass(frozen=True)
class Cancel:
    """The publisher withdraws award ``award_no`` of ``job_id`` (or every award, with -1)."""

    job_id: bytes
    award_no: int
    reason: str

    def check(self) -> None:
        _check_job_id(self.job_id)
        _check_text(self.reason, "reason", REASON_BYTES_MAX)


@message(28)
@dataclasses.dataclass(frozen=True)
class MismatchNotice:
    """Signed by the publisher: the worker's result lost the vote, or did not open its commit."""

    job_id: bytes
    award_no: int
    reason: str
    claimed_digest: bytes
    accepted_digest: bytes

    def check(self) -> None:
        _check_job_id(self.job_id)
        _check_text(self.reason, "reason", REASON_BYTES_MAX)


@message(29)
@dataclasses.dataclass(frozen=True)
class PayHeld:
    """PROTOCOL_RESULT, publisher to worker: the result of award ``award_no`` was accepted and its
    ``amount_mc`` is held in escrow (an adaptive job, ADR 0034 amendment), to be paid by
    ``pay_by_ms`` at the latest, or forfeited with a ``MismatchNotice`` if the worker is caught
    returning a wrong result before then. Sent for every adaptive job alike, after the result is
    accepted: it tells nothing of how many replicas ran."""

    job_id: bytes
    award_no: int
    amount_mc: int
    pay_by_ms: int

    def check(self) -> None:
        _check_job_id(self.job_id)
        _require(0 <= self.award_no <= limits.REPLICAS_MAX * 16, "award_no")
        _require(0 < self.amount_mc <= limits.CREDIT_LIMIT_MC, "amount_mc")
        _require(self.pay_by_ms > 0, "pay_by_ms")


@message(44)
@dataclasses.dataclass(frozen=True)
class Invitation:
    """PROTOCOL_INVITE, publisher to a host it chose from its market view (ADR 0031).

    The call itself, sent straight to the host instead of gossiped. An invited host always
    answers, with a sealed ``Bid`` or a ``BidDecline``, so that the publisher can close the
    auction as soon as every invitee has answered.
    """

    call: CallForBids

    def check(self, now_ms: int) -> None:
        self.call.check(now_ms)


DECLINE_REASON_BYTES_MAX: Final = 64


@message(49)
@dataclasses.dataclass(frozen=True)
class BidDecline:
    """PROTOCOL_DECLINE, host to publisher: no bid on this call, and why (ADR 0023).

    ``reason`` is the host's refusal (protocol.bidding: runtime, price-floor-above-max, busy,
    publisher-credit...); ``price_mc_per_tfuel`` is what it would ask, when it knows (0 if not),
    so that the publisher can say how far to raise its max price.
    """

    job_id: bytes
    call_round: int
    reason: str
    price_mc_per_tfuel: int

    def check(self) -> None:
        _check_job_id(self.job_id)
        _require(0 <= self.call_round < limits.CALL_ROUNDS_MAX, "call_round")
        _require(0 < len(self.reason.encode()) <= DECLINE_REASON_BYTES_MAX, "reason")
        _require(0 <= self.price_mc_per_tfuel <= limits.CREDIT_LIMIT_MC, "price")
