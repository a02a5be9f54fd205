"""Turn a scenario into a concrete plan for real processes: nodes, configs, churn, jobs. I/O: none.

Every choice comes from one ``random.Random(seed)``, so the same scenario and seed give the same
plan: which node plays which role on which host profile, when each node is killed and restarted,
and which publisher sends which job when. The runner (testnet/run.py) only carries the plan out.
"""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path
from typing import Final

from hearth.node.config import TEMPLATE
from hearth.testnet.launch import NODES_MAX
from hearth.testnet.scenario import Scenario, ScenarioError

MODULES_DIR: Final = Path(__file__).resolve().parents[1] / "node" / "sandbox" / "modules"
ECHO: Final = MODULES_DIR / "echo.wat"
LOOP: Final = MODULES_DIR / "bench_loop.wat"
LOOP_ITERATIONS: Final = (100_000, 1_000_000, 4_000_000)  # a few distinct inputs, each cheap
ECHO_BYTES_MIN: Final = 64
ECHO_BYTES_MAX: Final = 4096
LOOP_SHARE_PCT: Final = 30
HONEST: Final = "honest"
# Roles that cheat on results or never deliver; forkers and crash_restart nodes run jobs honestly.
CHEATING_ROLES: Final = frozenset({"wrong_result", "colluder", "lazy_copier", "bid_spammer"})
ADVERSARIAL_ROLES: Final = CHEATING_ROLES | {"ledger_forker"}
# Adversary plug-in per scenario role (testnet/adversaries/); absent roles run honestly.
BEHAVIOURS: Final = {
    "wrong_result": "wrong-result",
    "colluder": "collude",
    "lazy_copier": "lazy",
    "bid_spammer": "stall",
    "ledger_forker": "fork",
}
COLLUDERS_MIN: Final = 2  # one colluder alone is just a liar
REAL_NODES_MAX: Final = 40  # beyond this a scenario needs a [testnet] section to say so
CRASH_PERIOD_S: Final = (12.0, 24.0)  # a crash_restart node crashes this often ...
CRASH_DOWNTIME_S: Final = (2.0, 5.0)  # ... and stays down this long
WARMUP_S: Final = 2.0  # no kill in the first seconds: the first jobs find a whole market

# name -> (power W, energy source, tariff credits/kWh, solar surplus hours, availability hours)
PROFILES: Final = {
    "gaming_pc": (300, "grid", 30.0, [], ["0-24"]),
    "panel_box": (60, "battery", 25.0, [11, 12, 13, 14], ["0-24"]),
    "solar_streetlight": (15, "solar", 30.0, list(range(8, 17)), ["7-18"]),
    "office_nuc": (40, "grid", 30.0, [], ["0-24"]),
}


@dataclasses.dataclass(frozen=True)
class NodePlan:
    index: int
    profile: str
    role: str
    operator: str

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def behaviour(self) -> str | None:
        return BEHAVIOURS.get(self.role)


@dataclasses.dataclass(frozen=True)
class JobPlan:
    number: int
    at_s: float
    publisher: int
    module: Path
    input: bytes


@dataclasses.dataclass(frozen=True)
class ChurnPlan:
    at_s: float
    node: int
    downtime_s: float
    cause: str  # "churn" or "crash_restart"


@dataclasses.dataclass(frozen=True)
class RunPlan:
    scenario: Scenario
    nodes: tuple[NodePlan, ...]
    publishers: tuple[int, ...]
    jobs: tuple[JobPlan, ...]
    churn: tuple[ChurnPlan, ...]
    duration_s: int


def sizes(scenario: Scenario) -> tuple[int, int, int, float]:
    """Nodes, jobs, duration and jobs per minute for real processes ([testnet] wins over [run])."""
    nodes = scenario.testnet_nodes or scenario.nodes
    if nodes > REAL_NODES_MAX and not scenario.testnet_nodes:
        raise ScenarioError(
            f"scenario {scenario.name!r} has {nodes} nodes, too many real processes for one "
            f"machine; add a [testnet] section with nodes = 8 (at most {NODES_MAX})"
        )
    jobs = scenario.testnet_jobs or scenario.jobs
    duration_s = scenario.testnet_duration_s or scenario.duration_s
    rate_per_min = float(scenario.testnet_job_rate_per_min or scenario.job_rate_per_s * 60)
    return nodes, jobs, duration_s, rate_per_min


def make_plan(scenario: Scenario) -> RunPlan:
    rng = random.Random(scenario.seed)
    count, jobs, duration_s, rate_per_min = sizes(scenario)
    roles = assign_roles(scenario, count, rng)
    profiles = assign_profiles(scenario, count, rng)
    nodes = tuple(
        NodePlan(i, profiles[i], roles[i], "colluders" if roles[i] == "colluder" else f"op-{i}")
        for i in range(count)
    )
    honest = [n.index for n in nodes if n.role == HONEST and n.profile != "solar_streetlight"]
    honest = honest or [n.index for n in nodes if n.role == HONEST]
    if scenario.lab is not None:  # a lab's public nodes come first; homes publish (ADR 0037)
        homes = [i for i in honest if i >= len(scenario.lab.spec.public)]
        honest = homes or honest
    if not honest:
        raise ScenarioError(f"scenario {scenario.name!r}: no honest node is left to publish jobs")
    publishers = tuple(honest[: min(scenario.testnet_publishers, len(honest))])
    return RunPlan(
        scenario=scenario,
        nodes=nodes,
        publishers=publishers,
        jobs=plan_jobs(jobs, rate_per_min, duration_s, publishers, rng),
        churn=plan_churn(scenario, nodes, publishers, duration_s, rng),
        duration_s=duration_s,
    )


def _share(count: int, pct: int) -> int:
    return int(count * pct / 100 + 0.5)


def assign_roles(scenario: Scenario, count: int, rng: random.Random) -> list[str]:
    """Roles by the scenario's shares, rounded to whole nodes; a share above 0 gets a node."""
    roles: list[str] = []
    for name, pct in scenario.adversary_shares_pct:
        wanted = max(1, _share(count, pct))
        if name == "colluder":
            wanted = max(COLLUDERS_MIN, wanted)
        roles += [name] * wanted
    cheaters = sum(1 for role in roles if role in CHEATING_ROLES)
    if 2 * cheaters > count or len(roles) >= count:
        raise ScenarioError(
            f"scenario {scenario.name!r}: {cheaters} of {count} nodes would cheat and "
            f"{count - len(roles)} be honest; raise [testnet] nodes so at least half are honest"
        )
    roles += [HONEST] * (count - len(roles))
    rng.shuffle(roles)
    return roles


def assign_profiles(scenario: Scenario, count: int, rng: random.Random) -> list[str]:
    profiles: list[str] = []
    for name, pct in scenario.host_shares_pct:
        profiles += [name] * (count * pct // 100)
    first = scenario.host_shares_pct[0][0] if scenario.host_shares_pct else "gaming_pc"
    profiles += [first] * (count - len(profiles))
    rng.shuffle(profiles)
    return profiles


def plan_jobs(
    count: int,
    rate_per_min: float,
    duration_s: int,
    publishers: tuple[int, ...],
    rng: random.Random,
) -> tuple[JobPlan, ...]:
    """Poisson arrivals at the scenario's rate; jobs beyond the duration go out at its end."""
    jobs: list[JobPlan] = []
    at_s = 0.0
    for number in range(count):
        at_s = min(at_s + rng.expovariate(max(rate_per_min, 1e-9) / 60), float(duration_s))
        publisher = rng.choice(publishers)
        if rng.randrange(100) < LOOP_SHARE_PCT:
            module, data = LOOP, struct.pack("<Q", rng.choice(LOOP_ITERATIONS))
        else:
            module, data = ECHO, rng.randbytes(rng.randrange(ECHO_BYTES_MIN, ECHO_BYTES_MAX))
        jobs.append(JobPlan(number, round(at_s, 3), publisher, module, data))
    return tuple(jobs)


def plan_churn(
    scenario: Scenario,
    nodes: tuple[NodePlan, ...],
    publishers: tuple[int, ...],
    duration_s: int,
    rng: random.Random,
) -> tuple[ChurnPlan, ...]:
    """Kills and restarts: churn hits workers at random; crash_restart nodes crash repeatedly.

    Publishers are spared so that every job has a publisher to follow it to the end (a publisher
    killed mid-job resumes after a restart; tests/e2e/test_jobs.py covers that case).
    """
    events: list[ChurnPlan] = []
    for node in nodes:
        if node.role == "crash_restart" and node.index not in publishers:
            at_s = WARMUP_S + rng.uniform(*CRASH_PERIOD_S) / 2
            while at_s < duration_s:
                downtime_s = rng.uniform(*CRASH_DOWNTIME_S)
                events.append(ChurnPlan(round(at_s, 3), node.index, downtime_s, "crash_restart"))
                at_s += rng.uniform(*CRASH_PERIOD_S)
    eligible = [n.index for n in nodes if n.index not in publishers and n.role != "crash_restart"]
    kills = int(len(nodes) * scenario.down_pct_per_min * duration_s / 6000 + 0.5)
    if scenario.down_pct_per_min and eligible:
        kills = max(1, kills)
    latest_s = max(WARMUP_S + 1, duration_s - scenario.downtime_s)
    for _ in range(kills if eligible else 0):
        at_s = rng.uniform(WARMUP_S, latest_s)
        free = [i for i in eligible if not _down_at(events, i, at_s, scenario.downtime_s)]
        if free:
            victim = rng.choice(free)
            events.append(ChurnPlan(round(at_s, 3), victim, float(scenario.downtime_s), "churn"))
    return tuple(sorted(events, key=lambda e: (e.at_s, e.node)))


def _down_at(events: list[ChurnPlan], node: int, at_s: float, downtime_s: float) -> bool:
    """True if ``node`` is already down in [at_s, at_s + downtime_s]."""
    return any(
        e.node == node and e.at_s <= at_s + downtime_s and at_s <= e.at_s + e.downtime_s
        for e in events
    )


def config_text(node: NodePlan) -> str:
    """config.toml for one node: its profile's energy and hours, one core, /32 network groups."""
    power_w, source, tariff, solar, hours = PROFILES[node.profile]
    if node.role == "bid_spammer":  # claims free power so that it bids lowest on everything
        power_w, solar, hours = 0, list(range(24)), ["0-24"]
    replacements = {
        "network_group_prefix_v4 = 24": "network_group_prefix_v4 = 32",
        'operator = ""': f'operator = "{node.operator}"',
        "power_w = 60": f"power_w = {power_w}",
        'source = "grid"': f'source = "{source}"',
        "tariff_per_kwh = 30.0": f"tariff_per_kwh = {tariff}",
        "solar_surplus_hours = []": f"solar_surplus_hours = {solar}",
        'hours = ["0-24"]': "hours = [" + ", ".join(f'"{h}"' for h in hours) + "]",
        # Scenario jobs are wasm: a node offering python would compile CPython in the background.
        'runtimes = ["wasm", "python"]': 'runtimes = ["wasm"]',
    }
    text = TEMPLATE
    for old, new in replacements.items():
        assert old in text, f"config template changed: {old!r} not found"
        text = text.replace(old, new)
    return text
