"""Effects: what the engine asks the node (or the simulator) to do. I/O: none."""

from __future__ import annotations

import dataclasses
from typing import TypeAlias

from hearth.ledger.entry import Entry
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import JobId
from hearth.protocol.timers import TimerKey


@dataclasses.dataclass(frozen=True, slots=True)
class Publish:
    """Gossip ``data`` on ``topic``."""

    topic: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``data`` to ``peer`` over a direct stream speaking ``protocol``."""

    peer: PeerId
    protocol: str
    data: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class SetTimer:
    """Fire ``TimerFired(key)`` at ``at_ms``; setting a key again replaces its deadline."""

    key: TimerKey
    at_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class CancelTimer:
    key: TimerKey


@dataclasses.dataclass(frozen=True, slots=True)
class Penalise:
    """Lower ``peer``'s reputation by ``points`` because of ``reason`` (a stable short code)."""

    peer: PeerId
    reason: str
    points: int


@dataclasses.dataclass(frozen=True, slots=True)
class BanPeer:
    """Refuse ``peer`` at the transport (connections, streams, gossip it sends or forwards).

    The engine's reputation book decides: it emits this when a penalty leaves the peer at or
    below ``limits.REPUTATION_BAN_SCORE`` (ADR 0021).
    """

    peer: PeerId


@dataclasses.dataclass(frozen=True, slots=True)
class Log:
    """A structured log record: ``event`` is a stable name, ``fields`` sorted key/value pairs."""

    level: str
    event: str
    fields: tuple[tuple[str, str | int], ...] = ()


# Jobs (issue 6). The node carries these out and reports back with the events in protocol.events.


@dataclasses.dataclass(frozen=True, slots=True)
class FetchBlob:
    """Fetch ``blob_hash`` (``size_bytes`` long) from ``peer`` over /hearth/blob/1, hash-check it,
    then report ``BlobFetched`` or ``BlobFetchFailed``; if the store has it, report at once.
    ``data``: the blob itself, when it came inside the award (ADR 0031): store it, no fetch."""

    peer: PeerId
    blob_hash: bytes
    size_bytes: int
    data: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class RunJob:
    """Run the job in the sandbox on the two fetched blobs; report ``JobExecuted``."""

    job_id: JobId
    runtime: str
    module_hash: bytes
    input_hash: bytes
    fuel_max: int
    memory_mb_max: int
    deadline_ms: int


@dataclasses.dataclass(frozen=True, slots=True)
class AbortJob:
    """Stop ``RunJob(job_id)`` if it still runs (the award was cancelled); no event follows."""

    job_id: JobId


@dataclasses.dataclass(frozen=True, slots=True)
class PayWorker:
    """Pay ``worker`` for a verified result: one per (job, worker), ever (ADR 0007)."""

    job_id: JobId
    worker: PeerId
    amount_mc: int


@dataclasses.dataclass(frozen=True, slots=True)
class RecordMismatch:
    """Record that ``worker``'s result for ``job_id`` lost the vote or broke its commitment.

    ``commit_envelope`` is the worker's own signed commitment: with ``claimed_digest`` and
    ``salt`` anyone can check what it committed to. ``reveal_envelope`` is the worker's signed
    reveal when that reveal failed to open the commitment ("bad-reveal", "garbage-output"),
    else empty (ADR 0007). ``accepted_digest`` is empty when the job had no verdict yet.
    """

    job_id: JobId
    worker: PeerId
    reason: str  # outvoted | bad-reveal | garbage-output | fuel-over-max
    claimed_digest: bytes
    accepted_digest: bytes
    salt: bytes
    commit_envelope: bytes
    reveal_envelope: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class JobProgress:
    """For the progress display: ``phase`` is bidding|running|verifying|paid|failed."""

    job_id: JobId
    phase: str
    detail: str
    results: int
    replicas: int
    cause: str = ""  # protocol.causes.Cause: why it cannot run (yet), as soon as that is known


@dataclasses.dataclass(frozen=True, slots=True)
class SaveJob:
    """Persist the publisher's state of ``job_id``; after a restart the node hands it back to the
    engine as ``JobRestored(state)``."""

    job_id: JobId
    state: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class CommitEntries:
    """Make ``entries`` (signed by the engine, in seq order) durable in one commit, then carry
    out ``then``: the sends that carry their signatures (ADR 0019).

    The shell answers ``EntriesCommitted`` after ``then``, or ``CommitFailed`` and drops ``then``
    (and every later ``CommitEntries`` it still holds: they build on these entries). Effects
    listed before this one in a step (``SaveJob``) are carried out, durably, before it.
    """

    entries: tuple[Entry, ...]
    then: tuple[Publish | Send, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class AwaitSaves:
    """Carry out ``then`` once every ``SaveJob`` before it is durable (ADR 0031).

    A shell that writes publisher state behind, off its event loop, holds back what acts on a
    decision (its messages, its ledger commit) until the decision is on disk; the engine returns
    this only when ``PublisherConfig.save_behind`` says the shell does so.
    """

    then: tuple[Publish | Send | CommitEntries, ...]

    @property
    def commits(self) -> bool:
        """Whether a ledger commit waits here (the engine must not step until it is done)."""
        return any(isinstance(effect, CommitEntries) for effect in self.then)


# Every effect the engine returns: a closed set, so that each shell's interpreter
# (protocol.interpreter) can be checked for a handler of each.
Effect: TypeAlias = (
    Publish
    | Send
    | SetTimer
    | CancelTimer
    | Penalise
    | BanPeer
    | Log
    | FetchBlob
    | RunJob
    | AbortJob
    | PayWorker
    | RecordMismatch
    | JobProgress
    | SaveJob
    | CommitEntries
    | AwaitSaves
)
