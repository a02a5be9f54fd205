"""Timer keys: one frozen type per kind of timer, naming the component that owns it. I/O: none.

A component sets a timer with ``SetTimer(key, at_ms)`` and gets ``TimerFired(key)`` back; the
engine hands the event to ``key.component``. Keys are values (equal fields, same timer), so
setting one again replaces its deadline. ``str(key)`` is a stable label for logs and the
simulator's trace; nothing parses it.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar, TypeAlias

from hearth.protocol.job_messages import JobId


@dataclasses.dataclass(frozen=True, slots=True)
class MarketAdTimer:
    """Publish this host's capacity ad again."""

    component: ClassVar[str] = "market"

    def __str__(self) -> str:
        return "market:ad"


@dataclasses.dataclass(frozen=True, slots=True)
class HeadsTimer:
    """Gossip our ledger head again."""

    component: ClassVar[str] = "heads"

    def __str__(self) -> str:
        return "heads:publish"


@dataclasses.dataclass(frozen=True, slots=True)
class PayRetryTimer:
    """Try again the pays the ledger could not write (a full disk)."""

    component: ClassVar[str] = "payments"

    def __str__(self) -> str:
        return "payments:retry"


@dataclasses.dataclass(frozen=True, slots=True)
class OfferTimer:
    """Offer the receipt ``digest`` again, or cancel it once expired."""

    digest: bytes
    component: ClassVar[str] = "payments"

    def __str__(self) -> str:
        return f"payments:{self.digest.hex()}:offer"


@dataclasses.dataclass(frozen=True, slots=True)
class CountersignTimer:
    """Send our countersignature of the receipt ``digest`` again."""

    digest: bytes
    component: ClassVar[str] = "payments"

    def __str__(self) -> str:
        return f"payments:{self.digest.hex()}:countersign"


@dataclasses.dataclass(frozen=True, slots=True)
class BidsTimer:
    """The bid deadline of a job we published."""

    job_id: JobId
    component: ClassVar[str] = "publisher"

    def __str__(self) -> str:
        return f"publisher:{self.job_id.hex()}:bids"


@dataclasses.dataclass(frozen=True, slots=True)
class JobDeadlineTimer:
    """The deadline of a job we published."""

    job_id: JobId
    component: ClassVar[str] = "publisher"

    def __str__(self) -> str:
        return f"publisher:{self.job_id.hex()}:deadline"


@dataclasses.dataclass(frozen=True, slots=True)
class SlotTimer:
    """The deadline of award ``award_no`` of a job we published (reply, commit or reveal)."""

    job_id: JobId
    award_no: int
    component: ClassVar[str] = "publisher"

    def __str__(self) -> str:
        return f"publisher:{self.job_id.hex()}:slot-{self.award_no}"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskDeadlineTimer:
    """The deadline of a job we work on."""

    job_id: JobId
    component: ClassVar[str] = "worker"

    def __str__(self) -> str:
        return f"worker:{self.job_id.hex()}:deadline"


@dataclasses.dataclass(frozen=True, slots=True)
class TaskForgetTimer:
    """Forget a task, long after its job's deadline."""

    job_id: JobId
    component: ClassVar[str] = "worker"

    def __str__(self) -> str:
        return f"worker:{self.job_id.hex()}:forget"


@dataclasses.dataclass(frozen=True, slots=True)
class RecommitTimer:
    """Send our commitment again until the publisher asks for the reveal."""

    job_id: JobId
    component: ClassVar[str] = "worker"

    def __str__(self) -> str:
        return f"worker:{self.job_id.hex()}:recommit"


@dataclasses.dataclass(frozen=True, slots=True)
class PayDueTimer:
    """The date by which the publisher promised the pay it holds for a task (ADR 0034)."""

    job_id: JobId
    component: ClassVar[str] = "worker"

    def __str__(self) -> str:
        return f"worker:{self.job_id.hex()}:pay-due"


@dataclasses.dataclass(frozen=True, slots=True)
class PayHoldTimer:
    """The end of the hold of a job's escrowed pay: release what is still held (ADR 0034)."""

    job_id: JobId
    component: ClassVar[str] = "publisher"

    def __str__(self) -> str:
        return f"publisher:{self.job_id.hex()}:pay-hold"


@dataclasses.dataclass(frozen=True, slots=True)
class BatchIdleTimer:
    """Our adaptive jobs have all ended a while ago: the batch is over, audit and release the
    pay still held (ADR 0034, second amendment). One per publisher: setting it again moves it."""

    component: ClassVar[str] = "publisher"

    def __str__(self) -> str:
        return "publisher:batch-idle"


TimerKey: TypeAlias = (
    MarketAdTimer
    | HeadsTimer
    | PayRetryTimer
    | OfferTimer
    | CountersignTimer
    | BidsTimer
    | JobDeadlineTimer
    | SlotTimer
    | TaskDeadlineTimer
    | TaskForgetTimer
    | RecommitTimer
    | PayDueTimer
    | PayHoldTimer
    | BatchIdleTimer
)
