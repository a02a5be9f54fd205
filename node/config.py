"""The node's configuration file (``config.toml``): defaults, a commented template, validation.

Money in the file is in credits (decimals, for people); the node turns it into integer
milli-credits before anything is signed. A wrong value gives one line that names the key and the
fix, never a traceback.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from pathlib import Path
from typing import Any

from hearth.node.commands.common import CommandError
from hearth.node.energy.config import (
    TEMPLATE_ENERGY,
    TEMPLATE_OWNER,
    OwnerConfig,
    SensorConfig,
    parse_owner,
    parse_policy,
    parse_sensor,
)
from hearth.protocol.credit import CreditConfig
from hearth.protocol.energy import EnergyPolicy
from hearth.protocol.messages import ENERGY_SOURCES, HOURS_MASK_ALL, RUNTIMES
from hearth.protocol.pricing import DAY_HOURS, PricingConfig

TEMPLATE = (
    """\
# Hearth node configuration. `hearth node start` reads this file; command-line flags win.
# Money is in credits (1 credit = 1000 milli-credits; the testnet reckons 1 credit as 1 cent);
# power in watts; hours are local hours.

[node]
# Address and TCP port to listen on (port 0 picks a free one).
host = "127.0.0.1"
port = 0
# Multiaddrs of peers to join through, each ending in /p2p/<peer id>.
bootstrap = []
# Who runs this machine. One job's replicas never all go to one operator.
operator = ""
# Replicas of one job go to different networks of this prefix length (a loopback testnet: 32).
network_group_prefix_v4 = 24
# Invite hosts from the market view and close each auction as soon as they all answered
# (ADR 0031); false gossips every call and waits out the whole bid window.
directed_invitations = true

[limits]
# Caps on what jobs may use on this machine.
cores = 1
# Jobs taken beyond the cores, waiting in this node's queue; it bids only on jobs it can
# still start within their deadline, and says when it can start (ADR 0031).
backlog = 2
memory_mb = 1024
runtimes = ["wasm", "python"]
# Disk for compiled job modules, oldest unused evicted first (0 keeps none on disk).
module_cache_mb = 512
# Disk for job blobs (modules, inputs, outputs), and the most held for any one peer's jobs.
# Blobs no job needs are evicted, least recently used first, and deleted after 10 minutes.
blob_store_mb = 4096
blob_store_peer_mb = 512
# Largest input (all files of a job) this node fetches, largest output tree it returns or
# collects, and chunks fetched at once from the hosts that hold them (ADR 0024).
input_mb_max = 2048
output_mb_max = 1024
parallel_fetches = 8
# node.log is rotated at this size; three old files are kept besides it.
log_mb = 10

[energy]
# Extra power the machine draws when it is busy, in watts.
power_w = 60
# Electricity price in credits per kWh, and time-of-use prices by local hour range.
tariff_per_kwh = 30.0
tariff_hours = { "17-21" = 45.0, "0-6" = 20.0 }
# Local hours when solar surplus makes energy free (only wear is charged then).
solar_surplus_hours = []
# grid, solar, battery or mixed: publishers may prefer the greenest hosts.
source = "grid"
# Your offset from UTC in minutes, so that "local hour" means your hour.
utc_offset_min = 0
# Margin over cost, in percent, and a floor for wear in milli-credits per 10^12 fuel.
margin_pct = 10
wear_mc_per_tfuel = 1
"""
    + TEMPLATE_ENERGY
    + """
"""
    + TEMPLATE_OWNER
    + """
[availability]
# Local hours when the node takes jobs, as ranges.
hours = ["0-24"]

[credit]
# Credit this node accepts from a payer for no work it did for that payer (gifts, spam, or a
# payment it can no longer match to its job after a restart), in credits and in receipts.
# Payment for work this node did is never limited. See docs/adr/0013-credit-lines.md.
unknown_payer = 10.0
unknown_payer_receipts = 16
# The same, for every payer without history together (a swarm of throwaway keys shares it).
unknown_total = 100.0
unknown_total_receipts = 256
# A payer's line grows by what it paid us for work and what we paid it, up to this much more.
history_max = 1000.0
"""
)


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    host: str = "127.0.0.1"
    port: int = 0
    bootstrap: tuple[str, ...] = ()
    operator: str = ""
    network_group_prefix_v4: int = 24
    directed_invitations: bool = True
    cores: int = 1
    backlog: int = 2
    memory_mb: int = 1024
    module_cache_mb: int = 512
    blob_store_mb: int = 4096
    blob_store_peer_mb: int = 512
    input_mb_max: int = 2048
    output_mb_max: int = 1024
    parallel_fetches: int = 8
    log_mb: int = 10
    runtimes: tuple[str, ...] = ("wasm", "python")
    energy_source: str = "grid"
    availability_hours_mask: int = HOURS_MASK_ALL
    pricing: PricingConfig = dataclasses.field(
        default_factory=lambda: PricingConfig(60, (30_000,) * DAY_HOURS)
    )
    credit: CreditConfig = dataclasses.field(default_factory=CreditConfig)
    energy_sensor: SensorConfig = dataclasses.field(default_factory=SensorConfig)
    energy_policy: EnergyPolicy = dataclasses.field(default_factory=lambda: EnergyPolicy(1))
    owner: OwnerConfig = dataclasses.field(default_factory=OwnerConfig)


BACKLOG_MAX = 256
TRANSFER_KEYS = ("input_mb_max", "output_mb_max", "parallel_fetches")
TRANSFER_MAX = {"input_mb_max": 1 << 20, "output_mb_max": 1 << 20, "parallel_fetches": 64}


MACHINE_CORES_ENV = "HEARTH_MACHINE_CORES"  # tests: stand in for a bigger machine


def machine_cores() -> int:
    """Cores this process may run on (its affinity, which containers and taskset narrow), or
    ``$HEARTH_MACHINE_CORES`` where a test runs a profile bigger than the machine it is on."""
    stand_in = os.environ.get(MACHINE_CORES_ENV, "")
    if stand_in.isdigit() and int(stand_in) > 0:
        return int(stand_in)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _bad(key: str, fix: str) -> CommandError:
    return CommandError(f"config: {key}: {fix}")


def _hours(spec: str, key: str) -> list[int]:
    """Hours in a range: "17-21" is 17:00 to 21:00 (hours 17-20); "5" is the hour from 05:00."""
    try:
        if "-" in spec:
            start, end = (int(part) for part in spec.split("-", 1))
        else:
            start = int(spec)
            end = start + 1
    except ValueError:
        raise _bad(key, f'{spec!r} is not an hour range like "17-21"') from None
    if not (0 <= start <= 23 and 1 <= end <= 24 and start < end):
        raise _bad(key, f"{spec!r} must be within 0-24 with start < end")
    return list(range(start, end))


def _typed(section: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = section[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad(f"{where}.{key}", f"expected {kind.__name__}, got {value!r}")
    return value


def _mc(credits: float) -> int:
    return round(credits * 1000)


def _prefix(bits: int) -> int:
    if not 8 <= bits <= 32:
        raise _bad("node.network_group_prefix_v4", "must be between 8 and 32")
    return bits


def parse(text: str) -> NodeConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(
            f"config: not valid TOML ({exc}); fix the file or run `hearth init`"
        ) from None
    known = {"node", "limits", "energy", "owner", "availability", "credit"}
    for section in raw:
        if section not in known:
            raise _bad(section, f"unknown section; expected one of {sorted(known)}")
    template = tomllib.loads(TEMPLATE)
    merged = {name: {**template[name], **raw.get(name, {})} for name in known}
    for name in known:
        for key in merged[name]:
            if key not in template[name]:
                raise _bad(
                    f"{name}.{key}", f"unknown key; expected one of {sorted(template[name])}"
                )
    node, caps, energy, avail = (merged[n] for n in ("node", "limits", "energy", "availability"))
    runtimes = tuple(_typed(caps, "runtimes", list, "limits"))
    if not set(runtimes) <= set(RUNTIMES):
        raise _bad("limits.runtimes", f"choose from {list(RUNTIMES)}")
    source = _typed(energy, "source", str, "energy")
    if source not in ENERGY_SOURCES:
        raise _bad("energy.source", f"choose one of {list(ENERGY_SOURCES)}")
    tariff = [_mc(_typed(energy, "tariff_per_kwh", float, "energy"))] * DAY_HOURS
    for spec, price in sorted(_typed(energy, "tariff_hours", dict, "energy").items()):
        if not isinstance(price, int | float) or price < 0:
            raise _bad(f"energy.tariff_hours.{spec}", "expected a price in credits per kWh")
        for hour in _hours(spec, f"energy.tariff_hours.{spec}"):
            tariff[hour] = _mc(price)
    utc_offset_min = _typed(energy, "utc_offset_min", int, "energy")
    mask = 0  # the ad speaks UTC hours so that every reader agrees on them
    for spec in _typed(avail, "hours", list, "availability"):
        for hour in _hours(str(spec), "availability.hours"):
            mask |= 1 << ((hour - utc_offset_min // 60) % DAY_HOURS)
    cores = _typed(caps, "cores", int, "limits")
    memory_mb = _typed(caps, "memory_mb", int, "limits")
    if cores < 1 or memory_mb < 16:
        raise _bad("limits", "cores must be at least 1 and memory_mb at least 16")
    if cores > machine_cores():  # each core offered is a worker process
        raise _bad("limits.cores", f"{cores} is more than this machine's {machine_cores()} cores")
    backlog = _typed(caps, "backlog", int, "limits")
    if not 0 <= backlog <= BACKLOG_MAX:
        raise _bad("limits.backlog", f"must be from 0 to {BACKLOG_MAX}")
    module_cache_mb = _typed(caps, "module_cache_mb", int, "limits")
    if module_cache_mb < 0:
        raise _bad("limits.module_cache_mb", "must be 0 or more (0 keeps no compiled module)")
    blob_store_mb = _typed(caps, "blob_store_mb", int, "limits")
    blob_store_peer_mb = _typed(caps, "blob_store_peer_mb", int, "limits")
    if not 1 <= blob_store_peer_mb <= blob_store_mb:
        raise _bad("limits.blob_store_peer_mb", "must be at least 1 and at most blob_store_mb")
    transfer = {key: _typed(caps, key, int, "limits") for key in TRANSFER_KEYS}
    for key, value in transfer.items():
        if not 1 <= value <= TRANSFER_MAX[key]:
            raise _bad(f"limits.{key}", f"must be from 1 to {TRANSFER_MAX[key]}")
    log_mb = _typed(caps, "log_mb", int, "limits")
    if log_mb < 1:
        raise _bad("limits.log_mb", "must be at least 1 (node.log is rotated at this size)")
    port = _typed(node, "port", int, "node")
    if not 0 <= port <= 65535:
        raise _bad("node.port", "must be 0-65535")
    solar = _typed(energy, "solar_surplus_hours", list, "energy")
    if not all(isinstance(h, int) and 0 <= h <= 23 for h in solar):
        raise _bad("energy.solar_surplus_hours", "expected a list of hours 0-23")
    power_w = _typed(energy, "power_w", int, "energy")
    margin_pct = _typed(energy, "margin_pct", int, "energy")
    wear = _typed(energy, "wear_mc_per_tfuel", int, "energy")
    if power_w < 0 or margin_pct < 0 or wear < 0 or min(tariff) < 0:
        raise _bad("energy", "power, tariffs, margin and wear must not be negative")
    return NodeConfig(
        credit=_credit(merged["credit"]),
        host=_typed(node, "host", str, "node"),
        port=port,
        bootstrap=tuple(str(b) for b in _typed(node, "bootstrap", list, "node")),
        operator=_typed(node, "operator", str, "node"),
        network_group_prefix_v4=_prefix(_typed(node, "network_group_prefix_v4", int, "node")),
        directed_invitations=_typed(node, "directed_invitations", bool, "node"),
        cores=cores,
        backlog=backlog,
        memory_mb=memory_mb,
        module_cache_mb=module_cache_mb,
        blob_store_mb=blob_store_mb,
        blob_store_peer_mb=blob_store_peer_mb,
        **transfer,
        log_mb=log_mb,
        runtimes=runtimes,
        energy_source=source,
        energy_sensor=parse_sensor(energy),
        energy_policy=parse_policy(energy, cores),
        owner=parse_owner(merged["owner"]),
        availability_hours_mask=mask,
        pricing=PricingConfig(
            power_w=power_w,
            tariff_mc_per_kwh_by_hour=tuple(tariff),
            solar_surplus_hours=frozenset(solar),
            utc_offset_min=utc_offset_min,
            margin_pct=margin_pct,
            wear_mc_per_tfuel=wear,
        ),
    )


def _credit(section: dict[str, Any]) -> CreditConfig:
    amounts = {
        key: _typed(section, key, float, "credit")
        for key in ("unknown_payer", "unknown_total", "history_max")
    }
    counts = {
        key: _typed(section, key, int, "credit")
        for key in ("unknown_payer_receipts", "unknown_total_receipts")
    }
    if min(amounts.values()) < 0 or min(counts.values()) < 0:
        raise _bad("credit", "credit lines and receipt counts must not be negative")
    return CreditConfig(
        unknown_payer_mc=_mc(amounts["unknown_payer"]),
        unknown_payer_receipts=counts["unknown_payer_receipts"],
        unknown_total_mc=_mc(amounts["unknown_total"]),
        unknown_total_receipts=counts["unknown_total_receipts"],
        history_mc_max=_mc(amounts["history_max"]),
    )


def load(path: Path) -> NodeConfig:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise CommandError(f"no config at {path}; run `hearth init` first") from None
    return parse(text)
