"""The simulator's fault classes and their rates, set by flags or drawn from the seed (swarm).

I/O: none. Randomness: swarm mode draws from ``random.Random(f"{seed}:swarm")`` only, so a
seed names its fault mix and ``--swarm --seed N`` replays it exactly.

Each class is off at zero, and a run with every class off is the plain run of ADR 0009 with the
same trace hash. The classes (ADR 0018):

- clock: each node's clock runs ``offset`` ms from true time (drawn in
  +-``clock_offset_ms_max``) and drifts ``drift`` ppm (in +-``clock_drift_ppm_max``); its
  engine sees only its own clock, timers included. Clocks never heal.
- duplication: a message is delivered twice (``duplicate_pct``), the copy up to
  ``DUPLICATE_DELAY_MS_MAX`` later; the receiver must drop the second copy it sees.
- reordering: a message is held back up to ``REORDER_DELAY_MS_MAX`` (``reorder_pct``), so later
  messages on the same link overtake it.
- storage: a step that committed ledger entries sends nothing until its commit returns, up to
  ``storage_latency_ms_max`` later; a ledger write fails (``storage_fail_pct``, disk error), and
  a node crashes after a commit and before any effect of that step is carried out
  (``crash_after_commit_pct``): the entries are durable, the sends that follow are lost.
- connection order: ``PeerConnected`` reaches the engine after the first message of a new peer
  (``late_connect_pct``), as a real node can see when a stream opens before the notification.
- loss: ``loss_pct`` replaces the scenario's loss (``None`` keeps it).

Liveness heals every class except clocks and storage latency, which are not faults a network
recovers from but conditions it must live with.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Final

DUPLICATE_DELAY_MS_MAX: Final = 2_000
REORDER_DELAY_MS_MAX: Final = 500
CRASH_DOWN_MS: Final = (3_000, 8_000)


@dataclasses.dataclass(frozen=True)
class FaultRates:
    clock_offset_ms_max: int = 0
    clock_drift_ppm_max: int = 0
    duplicate_pct: int = 0
    reorder_pct: int = 0
    storage_latency_ms_max: int = 0
    storage_fail_pct: int = 0
    crash_after_commit_pct: int = 0
    late_connect_pct: int = 0
    loss_pct: int | None = None

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None and value < 0:
                raise ValueError(f"{field.name} must be >= 0, not {value}")
            if field.name.endswith("_pct") and value is not None and value > 100:
                raise ValueError(f"{field.name} must be 0-100, not {value}")

    def shown(self) -> dict[str, int]:
        """The rates that are on, by name (for the summary and the replay command)."""
        return {
            field.name: value
            for field in dataclasses.fields(self)
            if (value := getattr(self, field.name)) is not None and value != 0
        }

    def flags(self) -> list[str]:
        """Command-line flags that set these rates (``hearth sim --duplicate-pct 5 ...``)."""
        parts: list[str] = []
        for name, value in self.shown().items():
            parts += [f"--{name.replace('_', '-')}", str(value)]
        return parts


def swarm(seed: int) -> FaultRates:
    """A fault mix drawn from the seed: each class on or off by a coin, its rate at random.

    A loop over seeds thus explores different mixes (TigerBeetle's swarm testing): a bug that
    shows only when duplication is frequent and clocks are calm gets runs where that holds.
    """
    rng = random.Random(f"{seed}:swarm")

    def pick(low: int, high: int) -> int:
        return rng.randint(low, high) if rng.randrange(2) else 0

    return FaultRates(
        clock_offset_ms_max=pick(1, 10_000),
        clock_drift_ppm_max=pick(1, 500),
        duplicate_pct=pick(1, 20),
        reorder_pct=pick(1, 30),
        storage_latency_ms_max=pick(1, 200),
        storage_fail_pct=pick(1, 10),
        crash_after_commit_pct=pick(1, 3),
        late_connect_pct=pick(1, 50),
        loss_pct=pick(0, 3),
    )
