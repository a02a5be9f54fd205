"""Write the two recorded days shipped in this folder: ``sunny.csv`` and ``cloudy.csv``.

SYNTHETIC: these days are generated, not measured. They follow the shape of a home with 2.4 kWp
of panels, a 5 kWh battery and a household's load (a morning and an evening peak), at 5-minute
resolution, with a seeded cloud model for the cloudy day; the battery is simulated from them
(charged by surplus, discharged into the load down to 10 %, the grid covering the rest).
Run ``python -m hearth.testnet.energy_days.generate`` to write them again (the same bytes).

Columns: ``minute`` (local minute of the day), ``battery_pct``, ``solar_w``, ``load_w``,
``grid_w`` (positive: importing) — the quantities an energy source gives the node.
"""

from __future__ import annotations

import csv
import math
import random
from pathlib import Path

STEP_MIN = 5
PANEL_W_PEAK = 2400
BATTERY_WH = 5000
BATTERY_PCT_MIN = 10.0
BATTERY_PCT_START = 45.0
SUNRISE_H, SUNSET_H = 6.0, 20.0
HERE = Path(__file__).resolve().parent


def solar_w(hour: float, cloudiness: float, rng: random.Random) -> float:
    if not SUNRISE_H <= hour <= SUNSET_H:
        return 0.0
    height = math.sin(math.pi * (hour - SUNRISE_H) / (SUNSET_H - SUNRISE_H))
    clear = PANEL_W_PEAK * float(height**1.5)
    if cloudiness == 0:
        return clear
    return clear * max(0.03, 1 - cloudiness - 0.25 * rng.random())


def load_w(hour: float, rng: random.Random) -> float:
    base = 180.0
    if 6.5 <= hour < 8.5:
        base += 700
    if 12 <= hour < 13:
        base += 400
    if 17.5 <= hour < 22:
        base += 900
    return base + 60 * rng.random()


def day(cloudiness: float, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    battery_pct = BATTERY_PCT_START
    rows = []
    for minute in range(0, 24 * 60, STEP_MIN):
        hour = minute / 60
        solar, load = solar_w(hour, cloudiness, rng), load_w(hour, rng)
        net_wh = (solar - load) * STEP_MIN / 60
        room_wh = (100 - battery_pct) / 100 * BATTERY_WH
        spare_wh = (battery_pct - BATTERY_PCT_MIN) / 100 * BATTERY_WH
        stored_wh = min(net_wh * 0.95, room_wh) if net_wh > 0 else -min(-net_wh, spare_wh)
        battery_pct += stored_wh / BATTERY_WH * 100
        grid_wh = (net_wh - stored_wh / 0.95 if net_wh > 0 else net_wh - stored_wh) * -1
        rows.append(
            {
                "minute": minute,
                "battery_pct": round(battery_pct, 1),
                "solar_w": round(solar),
                "load_w": round(load),
                "grid_w": round(grid_wh * 60 / STEP_MIN),
            }
        )
    return rows


def write(path: Path, rows: list[dict[str, float]]) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    write(HERE / "sunny.csv", day(cloudiness=0.0, seed=1))
    write(HERE / "cloudy.csv", day(cloudiness=0.85, seed=2))


if __name__ == "__main__":
    main()
