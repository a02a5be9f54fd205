"""Prices come from the host's own costs, in integers, rounded so a host never quotes below cost."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.pricing import (
    HOUR_MS,
    PricingConfig,
    cost_mc,
    price_curve,
    price_for_hour,
    price_now,
)

FLAT = PricingConfig(power_w=120, tariff_mc_per_kwh_by_hour=(300_000,) * 24, margin_pct=0)


def test_worked_example() -> None:
    # 120 W at 300 credits/kWh costs 10 mc/s; at 10^9 fuel/s that is 10,000 mc per 10^12 fuel.
    assert price_for_hour(FLAT, 10**9, 0) == 10_000 + FLAT.wear_mc_per_tfuel


def test_margin_and_time_of_use() -> None:
    tariff = tuple(600_000 if 17 <= h < 21 else 300_000 for h in range(24))
    config = PricingConfig(120, tariff, margin_pct=10, wear_mc_per_tfuel=0)
    assert price_for_hour(config, 10**9, 18) == 22_000
    assert price_for_hour(config, 10**9, 3) == 11_000


def test_solar_surplus_hours_charge_only_wear() -> None:
    config = PricingConfig(120, (300_000,) * 24, frozenset({11, 12, 13}), wear_mc_per_tfuel=3)
    assert price_for_hour(config, 10**9, 12) == 3
    assert price_for_hour(config, 10**9, 10) > 3


def test_utc_offset_shifts_the_hour() -> None:
    tariff = tuple(1_000 * h for h in range(24))
    config = PricingConfig(1000, tariff, utc_offset_min=120, margin_pct=0, wear_mc_per_tfuel=0)
    two_am_utc = 2 * HOUR_MS
    assert price_now(config, 10**9, two_am_utc) == price_for_hour(config, 10**9, 4)


def test_curve_starts_at_the_hour_and_covers_a_day() -> None:
    start_ms, curve = price_curve(FLAT, 10**9, 5 * HOUR_MS + 1234)
    assert start_ms == 5 * HOUR_MS
    assert len(curve) == 24 and all(isinstance(p, int) for p in curve)


@given(
    power_w=st.integers(1, 5_000),
    tariff=st.integers(0, 2_000_000),
    fuel_per_s=st.integers(1, 10**11),
)
def test_price_never_below_cost(power_w: int, tariff: int, fuel_per_s: int) -> None:
    config = PricingConfig(power_w, (tariff,) * 24, margin_pct=0, wear_mc_per_tfuel=0)
    price = price_for_hour(config, fuel_per_s, 0)
    # Over one second of work the host is paid at least its energy cost (in exact rationals).
    paid_times_denominator = price * fuel_per_s * 3_600_000
    cost_times_denominator = power_w * tariff * 10**12
    assert paid_times_denominator >= cost_times_denominator


def test_cost_rounds_up_and_refuses_negatives() -> None:
    assert cost_mc(1, 1) == 1
    assert cost_mc(1_000, 10**12) == 1_000
    assert cost_mc(0, 10**15) == 0
    with pytest.raises(LocalProtocolError):
        cost_mc(-1, 1)


def test_bad_configs_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        PricingConfig(100, (1,) * 23)
    with pytest.raises(LocalProtocolError):
        PricingConfig(100, (1,) * 24, frozenset({24}))
    with pytest.raises(LocalProtocolError):
        price_for_hour(FLAT, 0, 0)
