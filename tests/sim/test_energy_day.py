"""A recorded day of home energy played through the simulator: sunny and cloudy (ADR 0026)."""

from __future__ import annotations

import pytest

from hearth.testnet.sim.energy_day import DAYS_DIR, HOME_POLICY, read_day, run_day


@pytest.fixture(scope="module")
def sunny():  # type: ignore[no-untyped-def]
    return run_day("sunny")


@pytest.fixture(scope="module")
def cloudy():  # type: ignore[no-untyped-def]
    return run_day("cloudy")


def test_the_shipped_days_are_whole_days_at_5_minute_resolution() -> None:
    for day in ("sunny", "cloudy"):
        rows = read_day(DAYS_DIR / f"{day}.csv")
        assert [int(r["minute"]) for r in rows] == list(range(0, 24 * 60, 5))
    assert "SYNTHETIC" in (DAYS_DIR / "generate.py").read_text()


def test_on_the_sunny_day_the_host_works_more_readily_on_surplus(sunny) -> None:  # type: ignore[no-untyped-def]
    # Per row of each mode: the day has more battery rows than surplus ones, and since directed
    # invitations (ADR 0031) rotate work over every host that can take it, the host's share of a
    # row's job is what its cheaper surplus price buys.
    worked, modes = sunny.jobs_by_host_mode, sunny.modes
    assert worked.get("surplus", 0) / modes["surplus"] > worked.get("battery", 0) / modes["battery"]
    assert worked.get("surplus", 0) > sum(worked.values()) / 3, worked
    assert "paused" not in worked  # never a job taken while paused
    assert sunny.modes["surplus"] >= sunny.rows // 3
    assert sunny.summary["phases"] == {"paid": sunny.jobs}


def test_on_the_cloudy_day_the_host_pauses_below_the_reserve(cloudy) -> None:  # type: ignore[no-untyped-def]
    assert cloudy.modes["paused"] > cloudy.rows // 2, cloudy.modes
    assert cloudy.paused_rows_below_reserve > cloudy.rows // 2
    assert "paused" not in cloudy.jobs_by_host_mode
    assert sum(cloudy.jobs_by_host_mode.values()) < cloudy.jobs // 4
    assert cloudy.summary["phases"] == {"paid": cloudy.jobs}  # the other hosts took the work
    assert HOME_POLICY.reserve_pct == 20
