"""A host's earnings against the estimated energy cost of the work it did.

I/O: none. Time: ``now_ms`` argument. Figures for people (floats), never signed.

    busy seconds = fuel burnt / fuel_per_s        (the rate of one core, calibrated at first
                                                   start: jobs on several cores each count)
    energy Wh    = power_w x busy seconds / 3600  (power_w: the extra draw of a busy job, as the
                                                   price floor assumes, protocol/pricing.py)
    cost mc      = energy kWh x the tariff        (the tariff of the hour; nothing in
                                                   solar-surplus hours or on surplus power; the
                                                   day's peak tariff for battery power, what
                                                   buying it back costs)
    net mc       = credits earned - cost

The metrics (``hearth_sandbox_fuel_total``, ``hearth_credits_earned_mc_total``) give the fuel and
the credits; the node's config gives power and tariff.
"""

from __future__ import annotations

import dataclasses

from hearth.protocol.pricing import PricingConfig, local_hour

SECONDS_PER_HOUR = 3600
WH_PER_KWH = 1000


@dataclasses.dataclass(frozen=True)
class Earnings:
    jobs: int
    fuel: int
    earned_mc: int
    energy_wh: float
    energy_cost_mc: float

    @property
    def energy_kwh(self) -> float:
        return self.energy_wh / WH_PER_KWH

    @property
    def net_mc(self) -> float:
        return self.earned_mc - self.energy_cost_mc


def tariff_mc_per_kwh(pricing: PricingConfig, now_ms: int, mode: str | None = None) -> int:
    """What a kWh of this host's work costs now; ``mode`` is the energy state's, if known."""
    hour = local_hour(now_ms, pricing.utc_offset_min)
    if mode == "surplus" or (mode in (None, "grid") and hour in pricing.solar_surplus_hours):
        return 0
    if mode == "battery":
        return max(pricing.tariff_mc_per_kwh_by_hour)
    return pricing.tariff_mc_per_kwh_by_hour[hour]


def estimate(
    pricing: PricingConfig,
    fuel_per_s: int,
    *,
    jobs: int,
    fuel: int,
    earned_mc: int,
    now_ms: int,
    mode: str | None = None,
) -> Earnings:
    assert fuel_per_s > 0 and fuel >= 0, (fuel_per_s, fuel)
    energy_wh = pricing.power_w * (fuel / fuel_per_s) / SECONDS_PER_HOUR
    cost_mc = energy_wh / WH_PER_KWH * tariff_mc_per_kwh(pricing, now_ms, mode)
    return Earnings(jobs, fuel, earned_mc, energy_wh, cost_mc)
