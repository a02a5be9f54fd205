"""A recorded day of a home's energy, played into the simulator (ADR 0026).

I/O: reads the day's CSV (testnet/energy_days/). Time: simulated; the day is compressed so that
each 5-minute row lasts ``ROW_MS`` of simulated time. The run is the ordinary ``Simulation``
(real engines, seeded, invariants checked) with node 0 as the home's host: each row goes through
the same pure code as on a real node (``parse_reading`` -> ``ReadingFilter`` -> ``decide``) and
reaches node 0's engine as an ``EnergyChanged``, exactly as node/energy/service.py sends it.
Jobs arrive at a steady rate all day; the report says in which energy mode node 0 worked them.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Final

from hearth.protocol.energy import EnergyPolicy, ReadingFilter, decide, parse_reading
from hearth.protocol.events import EnergyChanged
from hearth.testnet.scenario import Scenario
from hearth.testnet.sim.cluster import T0_MS, Control
from hearth.testnet.sim.simulation import TICK_MS, SimConfig, Simulation

DAYS_DIR: Final = Path(__file__).resolve().parents[1] / "energy_days"
ROW_MS: Final = 3_000  # one 5-minute row of the day lasts 3 s of simulated time
START_MS: Final = 6_000  # after every node is up
HOST: Final = 0
HOME_POLICY: Final = EnergyPolicy(
    cores_max=4, watts_per_core=15, power_cap_w=60, reserve_pct=20, battery_capacity_wh=5000,
    stale_ms=3 * ROW_MS,
)  # fmt: skip


@dataclasses.dataclass
class DayReport:
    day: str
    rows: int
    modes: dict[str, int]  # rows in each mode
    jobs: int
    jobs_by_host_mode: dict[str, int]  # jobs node 0 worked, by its mode when they were published
    paused_rows_below_reserve: int
    summary: dict[str, Any]


class DaySimulation(Simulation):
    """The ordinary run, with one job published at the middle of each row of the day."""

    def _schedule(self) -> None:
        cluster = self.cluster
        for node in cluster.nodes:
            cluster.push(T0_MS + self.rng.randrange(5_000), node.index, Control("up", node.index))
        for j in range(self.config.jobs):
            cluster.push(T0_MS + START_MS + j * ROW_MS + ROW_MS // 2, -1, Control("job", j))
        cluster.push(T0_MS + TICK_MS, -1, Control("tick"))
        cluster.push(self.safety_end_ms, -1, Control("liveness"))


def read_day(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def energy_events(rows: list[dict[str, str]], policy: EnergyPolicy) -> list[EnergyChanged]:
    """One event per row, from the same pure code the node runs."""
    kept = ReadingFilter(policy)
    events = []
    for i, row in enumerate(rows):
        at_ms = i * ROW_MS
        raw = {k: row.get(k) or None for k in ("battery_pct", "solar_w", "load_w", "grid_w")}
        kept.offer(parse_reading(raw, at_ms))
        state = decide(policy, kept.last, at_ms)
        events.append(EnergyChanged(state.mode, state.cores_offered, state.paused))
    return events


def run_day(
    day: str, *, seed: int = 1, nodes: int = 4, policy: EnergyPolicy = HOME_POLICY
) -> DayReport:
    rows = read_day(DAYS_DIR / f"{day}.csv")
    events = energy_events(rows, policy)
    duration_s = (START_MS + len(rows) * ROW_MS) // 1000
    scenario = Scenario(
        name=f"energy-{day}", seed=seed, nodes=nodes, jobs=len(rows), duration_s=duration_s,
        job_rate_per_s=1, replicas=1, replicas_max=3, host_shares_pct=(("panel_box", 100),),
    )  # fmt: skip
    simulation = DaySimulation(SimConfig(nodes=nodes, jobs=len(rows), seed=seed, scenario=scenario))
    cluster = simulation.cluster
    host = cluster.nodes[HOST]
    host.profile = dataclasses.replace(host.profile, energy_source="mixed")
    for i, event in enumerate(events):
        cluster.push(T0_MS + START_MS + i * ROW_MS, HOST, event)
    simulation.run()
    host_key = bytes(host.identity.public_key)
    by_mode: collections.Counter[str] = collections.Counter()
    for job_id, record in simulation.jobs.items():
        if (bytes(job_id), host_key) in cluster.runs:
            row = min(len(rows) - 1, max(0, (record.published_ms - T0_MS - START_MS) // ROW_MS))
            by_mode[events[row].mode] += 1
    below = sum(
        1 for row, event in zip(rows, events, strict=True)
        if event.mode == "paused" and float(row["battery_pct"]) <= policy.reserve_pct
    )  # fmt: skip
    return DayReport(
        day=day,
        rows=len(rows),
        modes=dict(collections.Counter(e.mode for e in events)),
        jobs=len(simulation.jobs),
        jobs_by_host_mode=dict(by_mode),
        paused_rows_below_reserve=below,
        summary={"phases": dict(collections.Counter(r.phase for r in simulation.jobs.values()))},
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m hearth.testnet.sim.energy_day sunny|cloudy [seed]``: the day's report as JSON."""
    args = sys.argv[1:] if argv is None else argv
    days = sorted(p.stem for p in DAYS_DIR.glob("*.csv"))
    if (
        not args
        or args[0] not in days
        or len(args) > 2
        or (len(args) == 2 and not args[1].isdigit())
    ):
        print(f"usage: python -m hearth.testnet.sim.energy_day {{{','.join(days)}}} [seed]",
              file=sys.stderr)  # fmt: skip
        return 2
    report = run_day(args[0], seed=int(args[1]) if len(args) == 2 else 1)
    print(json.dumps(dataclasses.asdict(report), indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
