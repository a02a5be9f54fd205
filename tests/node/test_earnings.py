"""The energy cost of a host's work, against what it earned: the figures the demo shows."""

from __future__ import annotations

import pytest

from hearth.node.earnings import estimate, tariff_mc_per_kwh
from hearth.protocol.pricing import HOUR_MS, PricingConfig

TARIFF = tuple(45_000 if 17 <= h < 21 else 30_000 for h in range(24))
PRICING = PricingConfig(power_w=180, tariff_mc_per_kwh_by_hour=TARIFF, solar_surplus_hours={12})
NOON_MS = 12 * HOUR_MS
TEN_MS = 10 * HOUR_MS


def test_an_hour_of_work_at_180_w_costs_0_18_kwh_at_the_tariff_of_the_hour() -> None:
    fuel_per_s = 1_000_000_000
    earnings = estimate(
        PRICING, fuel_per_s, jobs=3, fuel=3600 * fuel_per_s, earned_mc=9_000, now_ms=TEN_MS
    )
    assert earnings.energy_kwh == pytest.approx(0.18)
    assert earnings.energy_cost_mc == pytest.approx(0.18 * 30_000)
    assert earnings.net_mc == pytest.approx(9_000 - 5_400)


def test_surplus_is_free_and_battery_power_costs_what_buying_it_back_at_the_peak_does() -> None:
    assert tariff_mc_per_kwh(PRICING, NOON_MS) == 0  # a configured solar-surplus hour
    assert tariff_mc_per_kwh(PRICING, TEN_MS, mode="surplus") == 0
    assert tariff_mc_per_kwh(PRICING, TEN_MS, mode="battery") == 45_000
    assert tariff_mc_per_kwh(PRICING, TEN_MS, mode="grid") == 30_000
    assert tariff_mc_per_kwh(PRICING, 18 * HOUR_MS) == 45_000


def test_no_work_costs_nothing() -> None:
    earnings = estimate(PRICING, 5, jobs=0, fuel=0, earned_mc=0, now_ms=TEN_MS)
    assert (earnings.energy_wh, earnings.energy_cost_mc, earnings.net_mc) == (0, 0, 0)
