"""A host's price floor from its own costs: power draw, time-of-use tariff, measured fuel rate.

I/O: none. Time: ``now_ms`` argument; the host's local hour comes from a configured UTC offset.

    energy cost (mc/s)      = power_w x tariff_mc_per_kwh / 3_600_000      (1 kWh = 3.6e6 W s)
    price floor (mc/Tfuel)  = energy cost x 10^12 / fuel_per_s, plus the configured margin,
                              plus a wear floor that also holds in free-energy hours

Everything is integer arithmetic, rounded up so that a host never quotes below its cost.
In configured solar-surplus hours the marginal energy cost is zero and only wear is charged.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from hearth.protocol import limits
from hearth.protocol.errors import LocalProtocolError

HOUR_MS: Final = 3_600_000
DAY_HOURS: Final = 24
WATT_SECONDS_PER_KWH: Final = 3_600_000
FUEL_PER_TFUEL: Final = 10**12


@dataclasses.dataclass(frozen=True)
class PricingConfig:
    """A host's cost model. ``tariff_mc_per_kwh_by_hour[h]`` is the tariff in local hour h."""

    power_w: int
    tariff_mc_per_kwh_by_hour: tuple[int, ...]
    solar_surplus_hours: frozenset[int] = frozenset()
    utc_offset_min: int = 0
    margin_pct: int = 10
    wear_mc_per_tfuel: int = 1

    def __post_init__(self) -> None:
        if len(self.tariff_mc_per_kwh_by_hour) != DAY_HOURS:
            raise LocalProtocolError("tariff_mc_per_kwh_by_hour needs 24 hourly values")
        if self.power_w < 0 or min(self.tariff_mc_per_kwh_by_hour) < 0:
            raise LocalProtocolError("power and tariff must not be negative")
        if not self.solar_surplus_hours <= set(range(DAY_HOURS)):
            raise LocalProtocolError("solar_surplus_hours must be hours 0-23")
        if self.margin_pct < 0 or self.wear_mc_per_tfuel < 0:
            raise LocalProtocolError("margin and wear must not be negative")


def local_hour(now_ms: int, utc_offset_min: int) -> int:
    return ((now_ms + utc_offset_min * 60_000) // HOUR_MS) % DAY_HOURS


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def price_for_hour(config: PricingConfig, fuel_per_s: int, hour: int) -> int:
    """Price floor in milli-credits per tera-fuel during local ``hour``."""
    if fuel_per_s <= 0:
        raise LocalProtocolError("fuel_per_s must be measured before pricing")
    if hour in config.solar_surplus_hours:
        return config.wear_mc_per_tfuel
    tariff = config.tariff_mc_per_kwh_by_hour[hour]
    energy = _ceil_div(config.power_w * tariff * FUEL_PER_TFUEL, WATT_SECONDS_PER_KWH * fuel_per_s)
    return _ceil_div(energy * (100 + config.margin_pct), 100) + config.wear_mc_per_tfuel


def price_now(config: PricingConfig, fuel_per_s: int, now_ms: int) -> int:
    return price_for_hour(config, fuel_per_s, local_hour(now_ms, config.utc_offset_min))


def price_curve(config: PricingConfig, fuel_per_s: int, now_ms: int) -> tuple[int, tuple[int, ...]]:
    """(start of the current hour in ms, the price for each of the next 24 hours from then)."""
    start_ms = now_ms - now_ms % HOUR_MS
    first = local_hour(start_ms, config.utc_offset_min)
    curve = tuple(
        price_for_hour(config, fuel_per_s, (first + h) % DAY_HOURS)
        for h in range(limits.PRICE_CURVE_HOURS)
    )
    return start_ms, curve


def cost_mc(price_mc_per_tfuel: int, fuel_used: int) -> int:
    """What ``fuel_used`` units of work cost at ``price_mc_per_tfuel``, rounded up."""
    if price_mc_per_tfuel < 0 or fuel_used < 0:
        raise LocalProtocolError("price and fuel must not be negative")
    return _ceil_div(price_mc_per_tfuel * fuel_used, FUEL_PER_TFUEL)
