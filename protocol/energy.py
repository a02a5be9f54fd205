"""Energy that follows the home: from a sensor reading to cores offered, a pause, and a price.

I/O: none. Time: ``now_ms`` / ``at_ms`` arguments. No floats in state: readings are whole watts
and battery charge in per-mille (ADR 0026).

Theory of operation
-------------------
The node reads an energy source every few seconds (node/energy/) and hands each raw mapping to
``parse_reading``: garbage (not a number, NaN, a negative solar power, a charge outside 0-100 %)
raises ``ReadingError`` with one line and the reading is ignored. ``ReadingFilter`` keeps the last
good reading; a battery charge that jumps by more than ``jump_pct_max`` from it (0 to 100 % in
five seconds is a broken sensor, not a battery) is held back until ``jump_confirmations`` readings
in a row agree with the new level. ``decide`` turns the last good reading into an
``EnergyState``:

    surplus_w    = solar_w - load_w (else -grid_w when the grid is fed, else solar_w), at least 0
    battery_w    = energy stored above the reserve, spread over one hour (Wh -> W)
    available_w  = surplus_w + battery_w
    mode         = "surplus" when surplus_w runs one core, else "battery" when the charge is above
                   the reserve, else the fallback: "grid" (pay the tariff) or "paused"
    cores        = min(cores_max, power_cap_w // watts_per_core, available_w // watts_per_core)
                   (the last bound only off the grid)

A reading older than ``stale_ms`` is no reading: the state falls back ("grid" or "paused", as
configured), never keeps offering on solar that may have set hours ago. ``energy_price`` prices
each mode: surplus costs only wear (zero energy part); battery energy is priced at what buying it
back costs at the next tariff peak; grid is the tariff now.

What must never happen: a bad reading crashes or changes the state; a paused node advertises
cores; a stale source keeps the node on "surplus".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Final

from hearth.protocol.pricing import DAY_HOURS, PricingConfig, local_hour, price_for_hour, price_now

QUANTITIES: Final = ("battery_pct", "solar_w", "load_w", "grid_w")
MODES: Final = ("surplus", "battery", "grid", "paused")
FALLBACKS: Final = ("pause", "grid")
WATTS_MAX: Final = 10_000_000  # a reading above 10 MW is a broken sensor, not a home
PER_MILLE: Final = 1000
CORES_MAX: Final = 4096  # as many as a capacity ad may carry: "no bound" for the energy policy


class ReadingError(ValueError):
    """A reading the node cannot use; its message is one line for the log."""


@dataclasses.dataclass(frozen=True)
class EnergyPolicy:
    """The host's energy rules (config.toml ``[energy]``); watts and percent are whole numbers."""

    cores_max: int
    watts_per_core: int = 10
    power_cap_w: int = 0  # 0: no panel or circuit limit
    reserve_pct: int = 20
    battery_capacity_wh: int = 0
    fallback: str = "pause"  # below the reserve with no surplus, or stale: "pause" or "grid"
    stale_ms: int = 60_000
    jump_pct_max: int = 50
    jump_confirmations: int = 3

    def __post_init__(self) -> None:
        assert self.cores_max >= 1 and self.watts_per_core >= 1, self
        assert self.power_cap_w >= 0 and 0 <= self.reserve_pct <= 100, self
        assert self.fallback in FALLBACKS, self.fallback


@dataclasses.dataclass(frozen=True, slots=True)
class Reading:
    """One sample of the home. None: the source does not know that quantity."""

    at_ms: int
    battery_pml: int | None = None
    solar_w: int | None = None
    load_w: int | None = None
    grid_w: int | None = None  # positive: importing from the grid; negative: feeding it


@dataclasses.dataclass(frozen=True, slots=True)
class EnergyState:
    mode: str
    cores_offered: int
    paused: str  # "" unless paused: why, in one line
    surplus_w: int | None = None
    available_w: int | None = None
    power_cap_w: int | None = None
    reading: Reading | None = None


def _number(name: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        try:
            value = float(text)
        except ValueError:
            raise ReadingError(f"{name}: {text[:40]!r} is not a number") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReadingError(f"{name}: {str(value)[:40]!r} is not a number")
    if not math.isfinite(value):
        raise ReadingError(f"{name}: {value} is not a finite number")
    return float(value)


def parse_reading(raw: Mapping[str, object], at_ms: int) -> Reading:
    """A reading from a source's mapping of quantity -> number (or numeric string, or None)."""
    if not isinstance(raw, Mapping):
        raise ReadingError(f"expected an object of {list(QUANTITIES)}, got {type(raw).__name__}")
    values = {name: _number(name, raw.get(name)) for name in QUANTITIES}
    if all(v is None for v in values.values()):
        raise ReadingError(f"none of {list(QUANTITIES)} in the reading")
    battery = values["battery_pct"]
    if battery is not None and not 0 <= battery <= 100:
        raise ReadingError(f"battery_pct: {battery} is outside 0-100")
    for name in ("solar_w", "load_w"):
        value = values[name]
        if value is not None and not 0 <= value <= WATTS_MAX:
            raise ReadingError(f"{name}: {value} is outside 0-{WATTS_MAX} W")
    grid = values["grid_w"]
    if grid is not None and abs(grid) > WATTS_MAX:
        raise ReadingError(f"grid_w: {grid} is outside +-{WATTS_MAX} W")
    return Reading(
        at_ms=at_ms,
        battery_pml=None if battery is None else round(battery * 10),
        solar_w=None if values["solar_w"] is None else round(values["solar_w"]),
        load_w=None if values["load_w"] is None else round(values["load_w"]),
        grid_w=None if grid is None else round(grid),
    )


class ReadingFilter:
    """Keeps the last good reading; holds back an implausible jump of the battery charge."""

    def __init__(self, policy: EnergyPolicy) -> None:
        self._policy = policy
        self.last: Reading | None = None
        self._pending: list[Reading] = []

    def offer(self, reading: Reading) -> str:
        """Take ``reading`` unless it jumps; returns "" if taken, else why not (one line)."""
        last = self.last
        if last is not None and reading.at_ms < last.at_ms:
            return "a reading older than the last one"
        jump = self._jump_pml(last, reading)
        if jump is None:
            self._pending.clear()
            self.last = reading
            return ""
        # Confirmed when the readings held back agree (within the limit) with this one.
        limit = self._policy.jump_pct_max * 10
        pending = [p for p in self._pending if _close(p, reading, limit)]
        pending.append(reading)
        if len(pending) >= self._policy.jump_confirmations:
            self._pending.clear()
            self.last = reading
            return ""
        self._pending = pending
        assert last is not None and last.battery_pml is not None
        return (
            f"battery_pct jumped from {last.battery_pml / 10:g} to {jump / 10:g} %; "
            f"kept the last good state until {self._policy.jump_confirmations} readings agree"
        )

    def _jump_pml(self, last: Reading | None, reading: Reading) -> int | None:
        if last is None or last.battery_pml is None or reading.battery_pml is None:
            return None
        if abs(reading.battery_pml - last.battery_pml) <= self._policy.jump_pct_max * 10:
            return None
        return reading.battery_pml


def _close(a: Reading, b: Reading, limit_pml: int) -> bool:
    if a.battery_pml is None or b.battery_pml is None:
        return False
    return abs(a.battery_pml - b.battery_pml) <= limit_pml


def surplus_w(reading: Reading) -> int | None:
    """Solar power the home does not use itself, in W (None if the reading cannot tell)."""
    if reading.solar_w is not None and reading.load_w is not None:
        return max(0, reading.solar_w - reading.load_w)
    if reading.grid_w is not None:
        return max(0, -reading.grid_w)
    return reading.solar_w


def battery_w(policy: EnergyPolicy, reading: Reading) -> int:
    """Energy above the reserve, as the power it gives over one hour (Wh -> W); 0 below it."""
    if reading.battery_pml is None:
        return 0
    above_pml = reading.battery_pml - policy.reserve_pct * 10
    return max(0, above_pml * policy.battery_capacity_wh // PER_MILLE)


def cap_cores(policy: EnergyPolicy) -> int:
    if policy.power_cap_w == 0:
        return policy.cores_max
    return min(policy.cores_max, policy.power_cap_w // policy.watts_per_core)


def fallback(policy: EnergyPolicy, why: str, reading: Reading | None = None) -> EnergyState:
    """The state when the home cannot power the node: the grid tariff, or a pause."""
    cap = policy.power_cap_w or None
    if policy.fallback == "grid":
        return EnergyState("grid", cap_cores(policy), "", power_cap_w=cap, reading=reading)
    return EnergyState("paused", 0, why, power_cap_w=cap, reading=reading)


def decide(policy: EnergyPolicy, reading: Reading | None, now_ms: int) -> EnergyState:
    """The energy state from the last good reading (None: no reading yet)."""
    if reading is None:
        return fallback(policy, "no reading from the energy source yet")
    age_ms = now_ms - reading.at_ms
    if age_ms > policy.stale_ms:
        return fallback(policy, f"energy source silent for {age_ms // 1000} s")
    surplus = surplus_w(reading)
    stored = battery_w(policy, reading)
    available = (surplus or 0) + stored
    cap = policy.power_cap_w or None
    above_reserve = reading.battery_pml is not None and stored > 0
    if surplus is not None and surplus >= policy.watts_per_core:
        mode = "surplus"
    elif above_reserve:
        mode = "battery"
    else:
        if reading.battery_pml is not None:
            why = f"battery {reading.battery_pml / 10:g} % at or below the reserve"
            why += f" {policy.reserve_pct} % with no solar surplus"
        else:
            why = "no solar surplus and no battery above the reserve"
        state = fallback(policy, why, reading)
        return dataclasses.replace(state, surplus_w=surplus, available_w=available)
    cores = min(cap_cores(policy), available // policy.watts_per_core)
    paused = "" if cores > 0 else f"{available} W available, less than one core's power"
    return EnergyState(
        mode if cores > 0 else "paused", cores, paused, surplus, available, cap, reading
    )


def next_peak_hour(pricing: PricingConfig, now_ms: int) -> int:
    """The local hour of the highest tariff in the coming 24 hours (the soonest if tied)."""
    first = local_hour(now_ms, pricing.utc_offset_min)
    hours = [(first + h) % DAY_HOURS for h in range(DAY_HOURS)]
    return max(hours, key=lambda hour: pricing.tariff_mc_per_kwh_by_hour[hour])


def energy_price(pricing: PricingConfig, fuel_per_s: int, now_ms: int, mode: str) -> int:
    """The price floor now in ``mode`` (mc per 10^12 fuel); see the module's docstring."""
    if mode == "surplus":
        return pricing.wear_mc_per_tfuel  # the energy part is zero
    if mode == "battery":
        return price_for_hour(pricing, fuel_per_s, next_peak_hour(pricing, now_ms))
    return price_now(pricing, fuel_per_s, now_ms)


def energy_part(pricing: PricingConfig, fuel_per_s: int, now_ms: int, mode: str) -> int:
    """The energy part of ``energy_price``: the price less the wear floor."""
    return energy_price(pricing, fuel_per_s, now_ms, mode) - pricing.wear_mc_per_tfuel
