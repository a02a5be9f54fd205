"""Adaptive verification (ADR 0034): a proven host may run a task alone, spot-checked at random.

I/O: none. Randomness: the ``random.Random`` passed in (the engine's). Integers only: rates are
parts per million.

BOINC's adaptive replication is the anchor. Under ``verify = "adaptive"`` the publisher looks at
the best-ranked winner of the job's first auction. If its run of matching results with us (its
``valid_streak``, reset to 0 by any mismatch) is shorter than ``trust_streak_min`` (N), the job is
replicated as always. Otherwise the job is spot-checked with probability c (it is replicated as
always) and run alone on that host with probability 1 - c. The host cannot tell which: the call
for bids and the award never reveal the replica count.

The bound. Whatever a host's strategy, a wrong result it returns while trusted is caught with
probability c, independently of the others, and a catch resets its streak; rebuilding it takes N
matching results, all replicated (an untrusted host is always checked). So in each cycle between
two catches the host gets at most (1 - c) / c wrong results accepted in expectation, against at
least N + 1/c accepted results (N to earn trust, and at least one trusted task per wrong result
submitted, 1/c of them in expectation). By the renewal-reward theorem the long-run share of a
host's accepted results that are wrong is at most

    epsilon = ((1 - c) / c) / (N + 1 / c) = (1 - c) / (c * N + 1)

which ``error_bound_ppm`` computes, rounded up. Colluders that agree on a wrong answer defeat any
replication; diversity (ADR 0006) is the defence there, as under ``always-2``.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Final

from hearth.protocol import limits

VERIFY_ALWAYS_2: Final = "always-2"
VERIFY_ADAPTIVE: Final = "adaptive"
VERIFY_POLICIES: Final = (VERIFY_ALWAYS_2, VERIFY_ADAPTIVE)
PPM: Final = 1_000_000

# How a job's result was checked (JobSummary.verified_by).
REPLICATED: Final = "replicated"  # always-2, or a host not yet trusted
SPOT_CHECKED: Final = "spot-checked"  # a trusted host, replicated at random
SOLO: Final = "solo"  # a trusted host, alone


@dataclasses.dataclass(frozen=True, slots=True)
class AdaptiveConfig:
    """N and c of the bound. The defaults give epsilon = 8.2 % per host (ADR 0034, table)."""

    trust_streak_min: int = 100
    spot_check_ppm: int = 100_000  # 10 %
    # How long after an adaptive job's deadline its pay may stay in escrow (ADR 0034,
    # amendment): long enough for a host to meet a spot check, short enough to be a debt a host
    # can wait for. The award's host is told the date, and holds the publisher to it.
    pay_hold_ms: int = 60 * 60 * 1000
    # A batch ends when none of our adaptive jobs has been open for this long: then held pay is
    # audited and released (ADR 0034, second amendment). Jobs published closer together than
    # this (a map, a script's loop) share one batch and its one audit per host.
    batch_idle_ms: int = 10_000

    def __post_init__(self) -> None:
        assert self.trust_streak_min >= 1, self
        assert 0 < self.spot_check_ppm <= PPM, self
        assert 0 <= self.pay_hold_ms <= limits.PAY_HOLD_MS_MAX, self
        assert 0 <= self.batch_idle_ms <= limits.PAY_HOLD_MS_MAX, self

    @property
    def error_bound_ppm(self) -> int:
        return error_bound_ppm(self.trust_streak_min, self.spot_check_ppm)


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    verified_by: str  # REPLICATED | SPOT_CHECKED | SOLO
    error_bound_ppm: int  # 0 under always-2: every result is compared with another

    @property
    def solo(self) -> bool:
        return self.verified_by == SOLO


def error_bound_ppm(trust_streak_min: int, spot_check_ppm: int) -> int:
    """epsilon = (1 - c) / (c N + 1) in parts per million, rounded up (module docstring)."""
    assert trust_streak_min >= 1 and 0 < spot_check_ppm <= PPM
    # With c = s / PPM: epsilon = (PPM - s) / (s N + PPM); times PPM, rounded up.
    return -(-(PPM - spot_check_ppm) * PPM // (spot_check_ppm * trust_streak_min + PPM))


def decide(policy: str, streak: int, config: AdaptiveConfig, rng: random.Random) -> Decision:
    """How the job whose best winner has ``streak`` matching results in a row is checked."""
    if policy == VERIFY_ALWAYS_2:
        return Decision(REPLICATED, 0)
    assert policy == VERIFY_ADAPTIVE, policy
    bound = config.error_bound_ppm
    if streak < config.trust_streak_min:
        return Decision(REPLICATED, bound)
    if rng.randrange(PPM) < config.spot_check_ppm:
        return Decision(SPOT_CHECKED, bound)
    return Decision(SOLO, bound)
