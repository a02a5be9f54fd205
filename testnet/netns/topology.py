"""A scenario's internet: the lab keys of its [network] section, checked. I/O: none.

::

    [network]
    public = 2                 # public nodes 203.0.113.10, .11, ...; they come first: node0, node1
    public_link = "fiber"      # their link class ("lan": unshaped)
    public_jobs = false        # public nodes relay and bootstrap but take no jobs

    [network.links.dsl]        # a link class: added to every packet crossing a home's uplink
    delay_ms = 10              # one way, so two homes on dsl see 40 ms +/- 10 round trips
    jitter_ms = 3
    loss_pct = 1               # may be fractional (0.5)
    rate_kbit = 20000          # each direction; 0 or absent: no cap

    [[network.homes]]          # homes behind NAT routers; nodes sit at 192.168.1.10, .11, ...
    count = 2                  # this many homes like this one
    router = "port-restricted" # or "symmetric" (new port per destination, RST to strangers)
    link = "dsl"
    nodes = 1                  # nodes per home (on one LAN)
    lan = "192.168.1.0/24"     # every home may use the same one, as real homes do

    [[network.faults]]         # cut the internet between `side` and everyone else
    kind = "partition"
    at_s = 40
    heal_s = 70
    side = ["h0", "p1"]        # p<i>: public node i; h<i>: home i (router and nodes)

    [[network.faults]]         # relay loss: kill public node p1 (restart at heal_s, if given)
    kind = "kill"
    at_s = 50
    node = "p1"

Nodes are numbered publics first, then each home's nodes in order.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any, Final, NoReturn, cast

from hearth.testnet.netns.spec import HomeSpec, LabSpec, LinkClass, RouterKind, SpecError

LAB_KEYS: Final = ("public", "public_link", "public_jobs", "links", "homes", "faults")
FAULT_KINDS: Final = ("partition", "kill")
_NAME: Final = re.compile(r"^(p|h)(\d+)$")

Fail = Callable[[str, str], NoReturn]  # (key, problem) -> raises


@dataclasses.dataclass(frozen=True)
class Fault:
    kind: str
    at_s: float
    heal_s: float | None = None
    side: tuple[str, ...] = ()
    node: str = ""


@dataclasses.dataclass(frozen=True)
class LabPlan:
    spec: LabSpec
    faults: tuple[Fault, ...] = ()
    public_jobs: bool = True

    @property
    def node_count(self) -> int:
        return len(self.spec.public) + sum(home.nodes for home in self.spec.homes)

    def slot_names(self) -> list[str]:
        """Node index -> lab slot (p0, p1, h0n0, ...)."""
        names = [f"p{i}" for i in range(len(self.spec.public))]
        for i, home in enumerate(self.spec.homes):
            names += [f"h{i}n{j}" for j in range(home.nodes)]
        return names


def has_lab(network: dict[str, Any]) -> bool:
    return any(key in network for key in LAB_KEYS)


def parse_lab(network: dict[str, Any], fail: Fail) -> LabPlan:
    """The lab keys of a [network] table; ``fail(key, problem)`` raises the scenario's error."""
    public = _int(network, "public", 1, fail)
    if not 1 <= public <= 50:
        fail("public", f"is {public}; a lab has 1 to 50 public nodes")
    links = tuple(
        _link(name, table, fail) for name, table in _table(network, "links", fail).items()
    )
    homes: list[HomeSpec] = []
    for entry in _array(network, "homes", fail):
        count = _int(entry, "count", 1, fail)
        home = HomeSpec(
            router=cast(RouterKind, str(entry.get("router", "port-restricted"))),
            link=str(entry.get("link", "lan")),
            nodes=_int(entry, "nodes", 1, fail),
            lan=str(entry.get("lan", "192.168.1.0/24")),
        )
        unknown = set(entry) - {"count", "router", "link", "nodes", "lan"}
        if unknown:
            fail(
                "homes",
                f"has unknown key {sorted(unknown)[0]!r}; use count, router, link, nodes, lan",
            )
        homes += [home] * count
    spec = LabSpec(
        public=(str(network.get("public_link", "lan")),) * public, homes=tuple(homes), links=links
    )
    try:
        spec.check()
    except SpecError as exc:
        fail("homes", str(exc))
    faults = tuple(_fault(entry, spec, fail) for entry in _array(network, "faults", fail))
    public_jobs = network.get("public_jobs", True)
    if not isinstance(public_jobs, bool):
        fail("public_jobs", "must be true or false")
    return LabPlan(spec, faults, public_jobs)


def _link(name: str, table: Any, fail: Fail) -> LinkClass:
    if not isinstance(table, dict):
        fail("links", f"{name} must be a table [network.links.{name}]")
    unknown = set(table) - {"delay_ms", "jitter_ms", "loss_pct", "rate_kbit"}
    if unknown:
        fail("links", f"{name}: unknown key {sorted(unknown)[0]!r}")
    loss = table.get("loss_pct", 0)
    if isinstance(loss, bool) or not isinstance(loss, int | float):
        fail("links", f"{name}: loss_pct must be a number")
    link = LinkClass(
        name,
        delay_ms=_int(table, "delay_ms", 0, fail),
        jitter_ms=_int(table, "jitter_ms", 0, fail),
        loss_pct=float(loss),
        rate_kbit=_int(table, "rate_kbit", 0, fail),
    )
    try:
        link.check()
    except SpecError as exc:
        fail("links", str(exc))
    return link


def _fault(entry: dict[str, Any], spec: LabSpec, fail: Fail) -> Fault:
    kind = entry.get("kind")
    if kind not in FAULT_KINDS:
        fail("faults", f"kind must be one of {', '.join(FAULT_KINDS)}, not {kind!r}")
    at_s = entry.get("at_s")
    heal_s = entry.get("heal_s")
    if isinstance(at_s, bool) or not isinstance(at_s, int | float) or at_s < 0:
        fail("faults", "at_s must be a number of seconds >= 0")
    if heal_s is not None and (not isinstance(heal_s, int | float) or heal_s <= at_s):
        fail("faults", "heal_s must come after at_s")
    if kind == "partition":
        side = entry.get("side")
        if heal_s is None:
            fail("faults", "a partition needs heal_s (a partition that never heals loses jobs)")
        if not isinstance(side, list) or not side:
            fail("faults", 'a partition needs side = ["h0", "p1", ...]')
        for name in side:
            _check_name(str(name), spec, fail)
        return Fault("partition", float(at_s), float(heal_s), side=tuple(map(str, side)))
    node = str(entry.get("node", ""))
    _check_name(node, spec, fail)
    if not node.startswith("p"):
        fail("faults", f"kill takes a public node (p0, p1, ...), not {node!r}")
    return Fault("kill", float(at_s), None if heal_s is None else float(heal_s), node=node)


def _check_name(name: str, spec: LabSpec, fail: Fail) -> None:
    match = _NAME.match(name)
    count = len(spec.public) if match and match.group(1) == "p" else len(spec.homes)
    if not match or int(match.group(2)) >= count:
        fail("faults", f"{name!r} names no node: use p0..p{len(spec.public) - 1} or h0..")


def _int(table: dict[str, Any], key: str, default: int, fail: Fail) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        fail(key, f"must be a whole number, not {value!r}")
    return int(value)


def _table(network: dict[str, Any], key: str, fail: Fail) -> dict[str, Any]:
    value = network.get(key, {})
    if not isinstance(value, dict):
        fail(key, f"must be a table such as [network.{key}.NAME]")
    return cast(dict[str, Any], value)


def _array(network: dict[str, Any], key: str, fail: Fail) -> list[dict[str, Any]]:
    value = network.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        fail(key, f"must be an array of tables: [[network.{key}]]")
    return cast(list[dict[str, Any]], value)
