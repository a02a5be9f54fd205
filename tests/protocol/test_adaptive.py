"""Adaptive verification (ADR 0034): the error bound's arithmetic and the per-job decision."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearth.protocol.adaptive import (
    PPM,
    AdaptiveConfig,
    decide,
    error_bound_ppm,
)
from hearth.protocol.errors import LocalProtocolError
from tests.protocol.harness import Cluster


@given(st.integers(1, 10_000), st.integers(1, PPM))
def test_the_bound_is_epsilon_rounded_up(streak_min: int, spot_ppm: int) -> None:
    c = Fraction(spot_ppm, PPM)
    exact = (1 - c) / (c * streak_min + 1) * PPM
    assert exact <= error_bound_ppm(streak_min, spot_ppm) < exact + 1


def test_the_default_bound_and_how_it_moves() -> None:
    assert AdaptiveConfig().error_bound_ppm == 81_819  # N = 100, c = 10 %: 8.2 %
    assert error_bound_ppm(200, 100_000) < error_bound_ppm(100, 100_000)  # longer proof
    assert error_bound_ppm(100, 200_000) < error_bound_ppm(100, 100_000)  # more checks
    assert error_bound_ppm(1, PPM) == 0  # always checked: nothing slips through


def test_a_worker_under_the_streak_is_always_replicated() -> None:
    config = AdaptiveConfig(trust_streak_min=10, spot_check_ppm=1)
    rng = random.Random(1)
    ways = {decide("adaptive", streak, config, rng).verified_by for streak in range(10)}
    assert ways == {"replicated"}
    assert decide("always-2", 10**6, config, rng).verified_by == "replicated"


def test_a_trusted_worker_is_spot_checked_at_the_configured_rate() -> None:
    config = AdaptiveConfig(trust_streak_min=10, spot_check_ppm=150_000)
    rng = random.Random(7)
    ways = [decide("adaptive", 10, config, rng).verified_by for _ in range(20_000)]
    assert ways.count("spot-checked") + ways.count("solo") == len(ways)
    assert 2_700 < ways.count("spot-checked") < 3_300  # 15 % of 20,000, within ~4 sigma


def test_an_unknown_verify_policy_is_refused_with_its_name() -> None:
    cluster = Cluster(3)
    cluster.publish_job(2, b"\0asm m", b"in", verify="sometimes")
    with pytest.raises(LocalProtocolError, match="bad verify"):
        cluster.run_for(1)
