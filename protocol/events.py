"""Input events for the engine: past-tense facts the node observed. I/O: none."""

from __future__ import annotations

import dataclasses

from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import JobId
from hearth.protocol.pricing import PricingConfig
from hearth.protocol.timers import TimerKey


@dataclasses.dataclass(frozen=True, slots=True)
class Started:
    """The node is listening; the engine schedules its first ads and timers."""


@dataclasses.dataclass(frozen=True, slots=True)
class MessageReceived:
    """``data`` arrived from ``peer`` on ``channel`` (a gossip topic or a stream protocol id).

    ``ip`` is the observed remote address of the connection it came on when ``peer`` is that
    connection's peer ("" if unknown, or for gossip relayed by another peer), so that a message
    arriving before its ``PeerConnected`` still places the peer in its network group.
    ``verified``: the shell's edge check (protocol/inbound.py) already verified the signature of
    these exact bytes; the engine still runs every other check.
    """

    peer: PeerId
    channel: str
    data: bytes
    ip: str = ""
    verified: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class InboundRefused:
    """The shell refused what ``peer`` sent on ``channel``: the edge check (protocol/inbound.py)
    or a request the node answers itself (blobs, ledger ranges).

    It never reached ``step``; the engine charges ``peer`` in its book for ``reason`` as if it
    had, by ``points`` when given (else by the engine's table of reasons).
    """

    peer: PeerId
    channel: str
    reason: str
    points: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class TimerFired:
    key: TimerKey


@dataclasses.dataclass(frozen=True, slots=True)
class PeerConnected:
    """A connection to ``peer`` is up; ``ip`` is its observed address (for replica diversity)."""

    peer: PeerId
    ip: str


@dataclasses.dataclass(frozen=True, slots=True)
class PeerDisconnected:
    peer: PeerId


@dataclasses.dataclass(frozen=True, slots=True)
class InvitationUndelivered:
    """The node found no stream to ``peer`` for an invitation: it will not answer (ADR 0031)."""

    peer: PeerId


@dataclasses.dataclass(frozen=True, slots=True)
class RttMeasured:
    peer: PeerId
    rtt_ms: int


# Jobs (issue 6). Local facts the node reports to the job components; none comes from a peer.


@dataclasses.dataclass(frozen=True, slots=True)
class PublishJob:
    """A local command: run this job on the network (the node already holds both blobs).

    ``replicas`` results must agree; on disagreement more run, up to ``replicas_max``. The call
    for bids never reveals either number. ``prefer`` is "cheapest", "fastest" or "greenest".
    """

    job_id: JobId
    runtime: str
    module_hash: bytes
    module_bytes: int
    input_hash: bytes
    input_bytes: int
    fuel_max: int
    memory_mb_max: int
    deadline_ms: int
    max_price_mc_per_tfuel: int
    bid_window_ms: int
    replicas: int = 2
    replicas_max: int = 5
    prefer: str = "cheapest"
    requirements: tuple[str, ...] = ()
    lease_ms: int = 0  # an accepted award must commit within this; 0: derived (protocol.lease)
    verify: str = "always-2"  # or "adaptive" (protocol.adaptive, ADR 0034)
    # The module and input themselves when together at most AWARD_INLINE_BYTES_MAX: they go
    # inside the award instead of being fetched (ADR 0031); empty: fetched by hash.
    module_inline: bytes = b""
    input_inline: bytes = b""


@dataclasses.dataclass(frozen=True, slots=True)
class CancelJob:
    """A local command: stop job ``job_id`` published here (``hearth job cancel``, ADR 0033).

    Its open awards are withdrawn with signed cancels; nothing is paid for it after this.
    """

    job_id: JobId


@dataclasses.dataclass(frozen=True, slots=True)
class ReleaseHeldPay:
    """A local command: the developer's run of adaptive jobs is over (the end of a batch), so
    pay now what is still held for every host that was never caught (ADR 0034, amendment)."""


@dataclasses.dataclass(frozen=True, slots=True)
class JobRestored:
    """After a restart the node read back ``state``, the last ``SaveJob`` of a job it published.

    The publisher resumes the job from it, or cancels it with signed messages if it is too late.
    """

    state: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimeOffered:
    """The node can now run ``runtime`` (the Python runtime compiled): offer it from now on."""

    runtime: str


@dataclasses.dataclass(frozen=True, slots=True)
class HostSettingsChanged:
    """The host saved new caps, hours, tariff or energy source (the dashboard's settings page):
    offer them from now on, and announce them at once rather than at the next ad interval."""

    cores_offered: int
    memory_mb_offered: int
    availability_hours_mask: int
    energy_source: str
    pricing: PricingConfig


@dataclasses.dataclass(frozen=True, slots=True)
class BlobFetched:
    """The blob is in the local store, hash-checked (at once if it already was)."""

    blob_hash: bytes


@dataclasses.dataclass(frozen=True, slots=True)
class BlobFetchFailed:
    blob_hash: bytes
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class JobExecuted:
    """The sandbox finished ``RunJob``. ``error_kind`` is "" on success, else the sandbox's kind.

    The node keeps ``output`` in its blob store under ``output_hash`` so that a publisher can
    fetch an output too large to travel inline.
    """

    job_id: JobId
    ok: bool
    output_hash: bytes
    output: bytes
    fuel_used: int
    error_kind: str
    exit_code: int = 0  # job_messages.EXIT_CODE_NONE when the job never exited by itself
    stderr: bytes = b""  # the tail the result carries (job_messages.stderr_tail)


@dataclasses.dataclass(frozen=True, slots=True)
class PaymentReceived:
    """The ledger recorded ``amount_mc`` earned from ``payer`` for ``job_id`` (countersigned)."""

    job_id: JobId
    payer: PeerId
    amount_mc: int


@dataclasses.dataclass(frozen=True, slots=True)
class EntriesCommitted:
    """The shell made the engine's ledger entries up to ``last_seq`` durable (ADR 0019)."""

    last_seq: int


@dataclasses.dataclass(frozen=True, slots=True)
class CommitFailed:
    """The commit of entries from ``first_seq`` failed (``reason``: disk full, busy...); none of
    them, nor any staged after them, is durable: the engine takes them back (ADR 0019)."""

    first_seq: int
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class EnergyChanged:
    """The home's energy state or the owner's wishes changed (node/energy/, ADR 0026).

    ``mode`` is one of ``protocol.energy.MODES``; ``paused`` is why the node takes no new work
    ("" when it may); ``cores_offered`` already honours the power cap and the power available.
    Jobs already running are not touched: they finish or are handed back within their lease.
    """

    mode: str
    cores_offered: int
    paused: str = ""
