"""The pure energy decisions (protocol/energy.py): power, cap, price, garbage and stale readings."""

from __future__ import annotations

import dataclasses
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearth.protocol import limits
from hearth.protocol.effects import Publish, SetTimer
from hearth.protocol.energy import (
    EnergyPolicy,
    Reading,
    ReadingError,
    ReadingFilter,
    decide,
    energy_part,
    energy_price,
    next_peak_hour,
    parse_reading,
)
from hearth.protocol.engine import Engine, EngineConfig, HostProfile
from hearth.protocol.events import EnergyChanged, Started
from hearth.protocol.identity import Identity
from hearth.protocol.pricing import PricingConfig, price_now

HOUR_MS = 3_600_000
PANEL = EnergyPolicy(cores_max=8, watts_per_core=10, power_cap_w=30, reserve_pct=20,
                     battery_capacity_wh=1000)  # fmt: skip
TARIFF = PricingConfig(60, tuple(45_000 if 17 <= h < 21 else 30_000 for h in range(24)))
FUEL_PER_S = 500_000_000


def reading(**values: object) -> Reading:
    return parse_reading(values, at_ms=0)


def test_a_30_w_cap_on_10_w_per_core_offers_3_cores() -> None:
    state = decide(PANEL, reading(battery_pct=80, solar_w=500, load_w=100), now_ms=1000)
    assert (state.mode, state.cores_offered, state.paused) == ("surplus", 3, "")
    assert state.surplus_w == 400 and state.available_w == 400 + 600  # 60 % of 1 kWh above 20 %


def test_below_the_reserve_with_no_solar_pauses_and_solar_resumes() -> None:
    low = decide(PANEL, reading(battery_pct=15, solar_w=0, load_w=200), now_ms=0)
    assert low.mode == "paused" and low.cores_offered == 0
    assert "battery 15 % at or below the reserve 20 %" in low.paused
    sunny = decide(PANEL, reading(battery_pct=15, solar_w=300, load_w=200), now_ms=0)
    assert (sunny.mode, sunny.cores_offered) == ("surplus", 3)


def test_the_battery_above_the_reserve_runs_the_node_without_sun() -> None:
    state = decide(PANEL, reading(battery_pct=21, solar_w=0, load_w=100), now_ms=0)
    assert (state.mode, state.cores_offered) == ("battery", 1)  # 1 % of 1 kWh: 10 W, one core


def test_the_grid_fallback_pays_the_tariff_instead_of_pausing() -> None:
    policy = dataclasses.replace(PANEL, fallback="grid")
    state = decide(policy, reading(battery_pct=5, solar_w=0), now_ms=0)
    assert (state.mode, state.cores_offered, state.paused) == ("grid", 3, "")


def test_a_stale_reading_falls_back_never_keeps_the_surplus() -> None:
    sunny = reading(battery_pct=90, solar_w=900)
    assert decide(PANEL, sunny, now_ms=PANEL.stale_ms).mode == "surplus"
    stale = decide(PANEL, sunny, now_ms=PANEL.stale_ms + 1)
    assert stale.mode == "paused" and "silent for 60 s" in stale.paused
    assert decide(PANEL, None, now_ms=0).paused == "no reading from the energy source yet"


def test_the_price_on_surplus_has_zero_energy_part() -> None:
    now_ms = 12 * HOUR_MS
    assert energy_part(TARIFF, FUEL_PER_S, now_ms, "surplus") == 0
    assert energy_price(TARIFF, FUEL_PER_S, now_ms, "surplus") == TARIFF.wear_mc_per_tfuel
    assert energy_part(TARIFF, FUEL_PER_S, now_ms, "grid") > 0


def test_battery_energy_is_priced_at_the_next_peak() -> None:
    now_ms = 3 * HOUR_MS  # 03:00, the peak is 17:00-21:00
    assert next_peak_hour(TARIFF, now_ms) == 17
    battery = energy_price(TARIFF, FUEL_PER_S, now_ms, "battery")
    assert battery == price_now(TARIFF, FUEL_PER_S, 17 * HOUR_MS)
    assert battery > energy_price(TARIFF, FUEL_PER_S, now_ms, "grid")


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ({"battery_pct": "lots"}, "battery_pct: 'lots' is not a number"),
        ({"battery_pct": 140}, "outside 0-100"),
        ({"solar_w": -5}, "solar_w: -5.0 is outside"),
        ({"solar_w": float("nan")}, "not a finite number"),
        ({"load_w": True}, "is not a number"),
        ({"temperature": 20}, "none of"),
        ({"grid_w": [1, 2]}, "is not a number"),
    ],
)
def test_garbage_is_one_clear_line(raw: dict[str, object], why: str) -> None:
    with pytest.raises(ReadingError, match=why.replace("(", r"\(").replace(".", r"\.")):
        parse_reading(raw, at_ms=0)


def test_a_jump_from_0_to_100_is_held_back_until_readings_agree() -> None:
    kept = ReadingFilter(PANEL)
    assert kept.offer(reading(battery_pct=0, solar_w=0)) == ""
    jump = parse_reading({"battery_pct": 100, "solar_w": 0}, at_ms=5000)
    why = kept.offer(jump)
    assert "jumped from 0 to 100 %" in why and kept.last is not None
    assert kept.last.battery_pml == 0  # the last good state is kept
    assert kept.offer(parse_reading({"battery_pct": 99}, at_ms=10_000))
    assert kept.offer(parse_reading({"battery_pct": 99.5}, at_ms=15_000)) == ""
    assert kept.last.battery_pml == 995  # three readings agree: a real change after all


@given(
    battery=st.none() | st.floats(0, 100),
    solar=st.none() | st.floats(0, 50_000),
    load=st.none() | st.floats(0, 50_000),
    grid=st.none() | st.floats(-50_000, 50_000),
    cap=st.integers(0, 500),
    watts_per_core=st.integers(1, 200),
    cores_max=st.integers(1, 64),
    age_ms=st.integers(0, 120_000),
)
def test_decide_never_offers_more_than_the_cap_or_cores_while_paused(
    battery: float | None, solar: float | None, load: float | None, grid: float | None,
    cap: int, watts_per_core: int, cores_max: int, age_ms: int,
) -> None:  # fmt: skip
    values = {"battery_pct": battery, "solar_w": solar, "load_w": load, "grid_w": grid}
    if all(v is None for v in values.values()):
        values["solar_w"] = 0.0
    policy = EnergyPolicy(cores_max=cores_max, watts_per_core=watts_per_core, power_cap_w=cap,
                          battery_capacity_wh=2000)  # fmt: skip
    state = decide(policy, parse_reading(values, at_ms=0), now_ms=age_ms)
    assert 0 <= state.cores_offered <= cores_max
    if cap:
        assert state.cores_offered * watts_per_core <= cap
    assert (state.mode == "paused") == bool(state.paused) == (state.cores_offered == 0)
    if state.mode == "surplus":
        assert energy_part(TARIFF, FUEL_PER_S, age_ms, state.mode) == 0


def _engine() -> Engine:
    profile = HostProfile(8, 1024, FUEL_PER_S, ("wasm",), 2**24 - 1, "solar", "", TARIFF)
    identity = Identity(b"\x07" * 32)
    return Engine(EngineConfig(identity, profile), random.Random(1))


def test_the_engine_republishes_its_ad_on_a_change_within_the_rate_limit() -> None:
    engine = _engine()
    engine.step(Started(), 0)
    effects = engine.step(EnergyChanged("paused", 0, "battery low"), 2000)
    assert any(isinstance(e, Publish) for e in effects)
    ad = engine.market_component.current_ad(2000)
    assert (ad.cores_offered, ad.available_now) == (0, False)
    soon = engine.step(EnergyChanged("surplus", 3, ""), 2500)  # within the gap: a timer, no ad
    assert not any(isinstance(e, Publish) for e in soon)
    timers = [e for e in soon if isinstance(e, SetTimer)]
    assert [t.at_ms for t in timers] == [2000 + limits.CAPACITY_AD_GAP_MS_MIN]
    ad = engine.market_component.current_ad(2500)
    assert (ad.cores_offered, ad.available_now) == (3, True)
    assert ad.price_mc_per_tfuel == TARIFF.wear_mc_per_tfuel
    assert engine.step(EnergyChanged("surplus", 3, ""), 9000) == []  # nothing changed
    assert engine.config.profile.cores_offered == 8  # the configured cap stays as it was
    engine.step(EnergyChanged("surplus", 20, ""), 12_000)  # more power than the cap: the cap
    assert engine.market_component.current_ad(12_000).cores_offered == 8
