"""A recorded day of home energy played through the simulator: sunny and cloudy (ADR 0026)."""

from __future__ import annotations

import collections

import pytest

from hearth.testnet.sim.energy_day import DAYS_DIR, HOME_POLICY, read_day, run_day


@pytest.fixture(scope="module")
def sunny_days():  # type: ignore[no-untyped-def]
    # Three seeds: one day's split between hosts is a handful of auctions either way.
    return [run_day("sunny", seed=seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="module")
def cloudy():  # type: ignore[no-untyped-def]
    return run_day("cloudy")


def test_the_shipped_days_are_whole_days_at_5_minute_resolution() -> None:
    for day in ("sunny", "cloudy"):
        rows = read_day(DAYS_DIR / f"{day}.csv")
        assert [int(r["minute"]) for r in rows] == list(range(0, 24 * 60, 5))
    assert "SYNTHETIC" in (DAYS_DIR / "generate.py").read_text()


def test_on_the_sunny_day_the_host_works_more_readily_on_surplus(sunny_days) -> None:  # type: ignore[no-untyped-def]
    # Per row of each mode: the day has more battery rows than surplus ones, and directed
    # invitations (ADR 0031) spread work over every host that can take it.
    worked: collections.Counter[str] = collections.Counter()
    for day in sunny_days:
        worked.update(day.jobs_by_host_mode)
        assert "paused" not in day.jobs_by_host_mode  # never a job taken while paused
        assert day.modes["surplus"] >= day.rows // 3
        assert day.summary["phases"] == {"paid": day.jobs}
    modes = sunny_days[0].modes
    assert worked["surplus"] / modes["surplus"] > worked["battery"] / modes["battery"], worked
    assert worked["surplus"] > worked["battery"], worked


def test_on_the_cloudy_day_the_host_pauses_below_the_reserve(cloudy) -> None:  # type: ignore[no-untyped-def]
    assert cloudy.modes["paused"] > cloudy.rows // 2, cloudy.modes
    assert cloudy.paused_rows_below_reserve > cloudy.rows // 2
    assert "paused" not in cloudy.jobs_by_host_mode
    assert sum(cloudy.jobs_by_host_mode.values()) < cloudy.jobs // 4
    assert cloudy.summary["phases"] == {"paid": cloudy.jobs}  # the other hosts took the work
    assert HOME_POLICY.reserve_pct == 20
