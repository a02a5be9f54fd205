"""Parse a scenario file (TOML) shared by `hearth sim` and the testnet. I/O: reads the one file.

A scenario names the host profiles and their shares, the adversaries and their shares, churn, the
network's faults, the job arrival rate, a seed and a duration. Every error names the line it is
about and how to fix it, because researchers write these files by hand::

    [run]
    seed = 7              # every random choice derives from it
    nodes = 200           # `--nodes` overrides
    jobs = 200            # `--jobs` overrides
    duration_s = 60       # the safety phase; the liveness phase follows until every job settles
    job_rate_per_s = 20   # arrivals; jobs beyond rate x duration are published at the end
    replicas = 2
    replicas_max = 5

    [hosts]               # percent of nodes per profile; must sum to 100
    gaming_pc = 40
    panel_box = 40
    solar_streetlight = 20

    [adversaries]         # percent of nodes; the rest are honest
    wrong_result = 25

    [churn]
    down_pct_per_min = 5  # percent of nodes that go down each minute of the safety phase
    downtime_s = 20

    [network]
    loss_pct = 1
    partition_at_s = 10   # one partition during the safety phase (omit for none)
    partition_heal_s = 30
    partition_pct = 50    # percent of nodes on the far side

    [testnet]             # `hearth testnet run` only: real processes, so fewer of everything
    nodes = 8             # each value here wins over [run] on real processes
    jobs = 30
    duration_s = 90
    job_rate_per_min = 20
    publishers = 3        # honest nodes that publish the jobs
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, Final, NoReturn

from hearth.testnet.netns.topology import LAB_KEYS, LabPlan, has_lab, parse_lab

HOST_PROFILES: Final = ("gaming_pc", "panel_box", "solar_streetlight", "office_nuc")
ADVERSARIES: Final = (
    "wrong_result",  # returns its own wrong output
    "lazy_copier",  # skips the work and commits a cheap guess (the same guess as other copiers)
    "colluder",  # one subnet, all return the same wrong answer
    "bid_spammer",  # bids on everything at the floor price, then never delivers
    "ledger_forker",  # signs two ledger entries with one seq and gossips both heads
    "crash_restart",  # honest, but crashes and restarts over and over
    "trust_cheater",  # honest until a publisher trusts it alone, then wrong (ADR 0034)
)

_SECTIONS: Final[dict[str, dict[str, type]]] = {
    "run": {
        "seed": int,
        "nodes": int,
        "jobs": int,
        "duration_s": int,
        "job_rate_per_s": int,
        "replicas": int,
        "replicas_max": int,
        "name": str,
    },
    "hosts": dict.fromkeys(HOST_PROFILES, int),
    "adversaries": dict.fromkeys(ADVERSARIES, int),
    "churn": {"down_pct_per_min": int, "downtime_s": int},
    "network": {
        "loss_pct": int,
        "partition_at_s": int,
        "partition_heal_s": int,
        "partition_pct": int,
    },
    "testnet": {
        "nodes": int,
        "jobs": int,
        "duration_s": int,
        "job_rate_per_min": int,
        "publishers": int,
    },
}


class ScenarioError(ValueError):
    """A scenario file is wrong; the message names the file, the line and the fix."""


@dataclasses.dataclass(frozen=True)
class Scenario:
    name: str = "default"
    seed: int = 1
    nodes: int = 100
    jobs: int = 100
    duration_s: int = 60
    job_rate_per_s: int = 20
    replicas: int = 2
    replicas_max: int = 5
    host_shares_pct: tuple[tuple[str, int], ...] = (
        ("gaming_pc", 40),
        ("panel_box", 40),
        ("solar_streetlight", 20),
    )
    adversary_shares_pct: tuple[tuple[str, int], ...] = ()
    down_pct_per_min: int = 0
    downtime_s: int = 20
    loss_pct: int = 0
    partition_at_s: int = -1  # -1: no partition
    partition_heal_s: int = -1
    partition_pct: int = 50
    testnet_nodes: int = 0  # 0: [run] nodes; the [testnet] values are for real processes
    testnet_jobs: int = 0
    testnet_duration_s: int = 0
    testnet_job_rate_per_min: int = 0
    testnet_publishers: int = 3
    lab: LabPlan | None = None  # the [network] lab keys: `testnet run` in namespaces (ADR 0037)

    def adversary_pct(self, kind: str) -> int:
        return dict(self.adversary_shares_pct).get(kind, 0)


def load_scenario(path: str | Path) -> Scenario:
    """Read and check a scenario file; raises ``ScenarioError`` naming the line and the fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_scenario(text, source=str(path))


def parse_scenario(text: str, *, source: str = "<scenario>") -> Scenario:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source}: not valid TOML: {exc}") from None
    where = _Locator(text, source)
    lab = _lab(data, where)
    for section, value in data.items():
        if section not in _SECTIONS:
            known = ", ".join(f"[{s}]" for s in _SECTIONS)
            raise ScenarioError(f"{where.at(section)}: unknown section [{section}]; use {known}")
        if not isinstance(value, dict):
            raise ScenarioError(f"{where.at(section)}: {section} must be a [{section}] table")
        _check_keys(section, value, where)
    fields = _fields(data)
    if lab is not None:
        fields["lab"] = lab
        given = data.get("testnet", {}).get("nodes", lab.node_count)
        if given != lab.node_count:
            raise ScenarioError(
                f"{where.at('nodes', 'testnet')}: testnet.nodes is {given} but the [network] lab "
                f"has {lab.node_count} nodes; remove testnet.nodes"
            )
        fields["testnet_nodes"] = lab.node_count
    scenario = Scenario(**fields)
    _check_numbers(scenario, data, where)
    return scenario


def _lab(data: dict[str, Any], where: _Locator) -> LabPlan | None:
    """Take the lab keys out of [network] (testnet/netns/topology.py checks them)."""
    network = data.get("network")
    if not isinstance(network, dict) or not has_lab(network):
        return None

    def fail(key: str, problem: str) -> NoReturn:
        raise ScenarioError(f"{where.at(key, 'network')}: network.{key} {problem}")

    lab = parse_lab(network, fail)
    data["network"] = {k: v for k, v in network.items() if k not in LAB_KEYS}
    return lab


def _check_keys(section: str, table: dict[str, Any], where: _Locator) -> None:
    allowed = _SECTIONS[section]
    for key, value in table.items():
        if key not in allowed:
            raise ScenarioError(
                f"{where.at(key, section)}: unknown key {key!r} in [{section}]; "
                f"use one of {', '.join(sorted(allowed))}"
            )
        expected = allowed[key]
        if isinstance(value, bool) or not isinstance(value, expected):
            example = (
                "a whole number, e.g. 10" if expected is int else 'a string in quotes, e.g. "x"'
            )
            raise ScenarioError(
                f"{where.at(key, section)}: {section}.{key} must be {example}, "
                f"not {type(value).__name__} {value!r}"
            )


def _fields(data: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = dict(data.get("run", {}))
    if "hosts" in data:
        fields["host_shares_pct"] = tuple(sorted(data["hosts"].items()))
    if "adversaries" in data:
        shares = [(k, v) for k, v in sorted(data["adversaries"].items()) if v]
        fields["adversary_shares_pct"] = tuple(shares)
    fields.update(data.get("churn", {}))
    fields.update(data.get("network", {}))
    fields.update({f"testnet_{key}": value for key, value in data.get("testnet", {}).items()})
    return fields


def _check_numbers(s: Scenario, data: dict[str, Any], where: _Locator) -> None:
    def fail(section: str, key: str, problem: str) -> None:
        raise ScenarioError(f"{where.at(key, section)}: {section}.{key} {problem}")

    positive = (("nodes", s.nodes), ("duration_s", s.duration_s))
    for key, value in positive:
        if value < 1:
            fail("run", key, f"is {value}; it must be at least 1")
    for key, value in (("jobs", s.jobs), ("job_rate_per_s", s.job_rate_per_s)):
        if value < 0:
            fail("run", key, f"is {value}; it must be 0 or more")
    if not 1 <= s.replicas <= s.replicas_max <= 15:
        fail("run", "replicas", "and replicas_max need 1 <= replicas <= replicas_max <= 15")
    if "hosts" in data:
        total = sum(v for _, v in s.host_shares_pct)
        if total != 100 or min(v for _, v in s.host_shares_pct) < 0:
            first = next(iter(data["hosts"]), "hosts")
            fail("hosts", first, f"shares sum to {total}; make them non-negative and sum to 100")
    adversaries = sum(v for _, v in s.adversary_shares_pct)
    if adversaries > 100 or any(v < 0 for _, v in s.adversary_shares_pct):
        first = next(iter(data.get("adversaries", {})), "adversaries")
        fail("adversaries", first, f"shares sum to {adversaries}%; keep each >= 0, total <= 100")
    for key in ("down_pct_per_min", "loss_pct", "partition_pct"):
        value = getattr(s, key)
        if not 0 <= value <= 100:
            section = "churn" if key == "down_pct_per_min" else "network"
            fail(section, key, f"is {value}; a percentage must be 0-100")
    if s.downtime_s < 1:
        fail("churn", "downtime_s", f"is {s.downtime_s}; a node stays down at least 1 s")
    _check_partition(s, data, fail)
    _check_testnet(s, data, fail)


def _check_partition(s: Scenario, data: dict[str, Any], fail: Any) -> None:
    network = data.get("network", {})
    if ("partition_at_s" in network) != ("partition_heal_s" in network):
        fail("network", "partition_at_s", "and partition_heal_s go together; set both or neither")
    if "partition_at_s" in network and not 0 <= s.partition_at_s < s.partition_heal_s:
        fail("network", "partition_heal_s", "must come after partition_at_s (both >= 0)")


def _check_testnet(s: Scenario, data: dict[str, Any], fail: Any) -> None:
    given = data.get("testnet", {})
    if "nodes" in given and not 2 <= s.testnet_nodes <= 250:
        fail("testnet", "nodes", f"is {s.testnet_nodes}; a testnet has 2 to 250 real nodes")
    for key in ("jobs", "duration_s", "job_rate_per_min"):
        if key in given and given[key] < 1:
            fail("testnet", key, f"is {given[key]}; it must be at least 1")
    nodes = s.testnet_nodes or s.nodes
    if "publishers" in given and not 1 <= s.testnet_publishers <= nodes:
        fail("testnet", "publishers", f"is {s.testnet_publishers}; it must be 1 to {nodes}")


class _Locator:
    """Finds the line a key (or section header) is on, for error messages."""

    def __init__(self, text: str, source: str) -> None:
        self._lines = text.splitlines()
        self._source = source

    def at(self, key: str, section: str | None = None) -> str:
        current = None
        header = re.compile(r"^\s*\[([^\]]+)\]")
        for number, line in enumerate(self._lines, start=1):
            match = header.match(line)
            if match:
                current = match.group(1).strip()
                if section is None and current == key:
                    return f"{self._source}:{number}"
                continue
            if current == section and re.match(rf"^\s*{re.escape(key)}\s*=", line):
                return f"{self._source}:{number}"
        return self._source
