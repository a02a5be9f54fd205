"""A host's bid policy: whether to bid on a call for bids, and at what price.

I/O: none. Time: ``now_ms`` argument. A pure function of the call, the host's profile and what
the worker knows of the publisher, in the spirit of Bacalhau's tiny bidding interface: the
worker component gathers the facts, this module decides.

A host never bids on a job it cannot finish: when ``fuel_max`` at the host's measured fuel rate
needs longer than is left between the bid deadline and the job's deadline, the job could be run
to its end and still be late, for nothing ("cannot-finish").

The price bid is the host's cost floor at the hour the job would run (protocol.pricing), never
less; the auction pays a uniform clearing price at or above every winner's bid (ADR 0006), so
bidding one's true cost is the sensible strategy.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from hearth.protocol import limits
from hearth.protocol.energy import energy_price
from hearth.protocol.job_messages import CallForBids
from hearth.protocol.lease import run_ms_max
from hearth.protocol.pricing import cost_mc

if TYPE_CHECKING:
    from hearth.protocol.engine import HostProfile


@dataclasses.dataclass(frozen=True)
class WorkerConfig:
    """The host's own rules for taking jobs, beyond its HostProfile."""

    bidding: bool = True  # False: never bid (a node that only publishes)
    publisher_score_min: int = -100  # refuse publishers whose local reputation is below this
    credit_limit_mc: int = limits.CREDIT_LIMIT_MC  # unpaid work we carry for one publisher
    capabilities: frozenset[str] = frozenset()  # requirement labels this host satisfies
    bid_ttl_ms: int = 30_000
    # Jobs taken beyond the cores, waiting in this host's queue (ADR 0031): a host bids while
    # it can start a job within its deadline, stating when it can start.
    backlog: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class PublisherStanding:
    """What this worker knows of a publisher: local reputation and what it owes us."""

    reputation_score: int
    owed_mc: int


@dataclasses.dataclass(frozen=True, slots=True)
class BidDecision:
    """A price to bid, or a reason (a stable code) for not bidding."""

    price_mc_per_tfuel: int = -1
    refusal: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class HostLoad:
    """What this host is doing: jobs it runs or holds, and how long until a core is free."""

    tasks: int
    wait_ms: int  # 0 while a core is free; else the queue ahead, per core, at worst


def host_load(run_ms_by_task: list[int], cores: int) -> HostLoad:
    """The load from the worst-case run times of the tasks this host holds (protocol.lease)."""
    if len(run_ms_by_task) < max(1, cores):
        return HostLoad(len(run_ms_by_task), 0)
    return HostLoad(len(run_ms_by_task), sum(run_ms_by_task) // max(1, cores))


def host_requirements(profile: HostProfile, config: WorkerConfig) -> frozenset[str]:
    """Labels a call's requirements may name: configured ones plus runtime and energy facts."""
    derived = {f"runtime:{runtime}" for runtime in profile.runtimes}
    derived.add(f"energy:{profile.energy_source}")
    return config.capabilities | derived


def can_finish(call: CallForBids, fuel_per_s: int, now_ms: int, wait_ms: int = 0) -> bool:
    """Whether all of ``fuel_max`` runs at ``fuel_per_s`` between the award and the deadline,
    after ``wait_ms`` in this host's queue."""
    time_left_ms = call.deadline_ms - max(now_ms, call.bid_deadline_ms) - wait_ms
    return run_ms_max(call.fuel_max, fuel_per_s) <= time_left_ms


def decide_bid(
    call: CallForBids,
    profile: HostProfile,
    config: WorkerConfig,
    standing: PublisherStanding,
    load: HostLoad,
    now_ms: int,
) -> BidDecision:
    """Bid our cost floor on ``call``, or say why not. Checks run cheapest first."""
    refusal = _refusal(call, profile, config, standing, load, now_ms)
    if refusal:
        return BidDecision(refusal=refusal)
    at_ms = max(now_ms, call.bid_deadline_ms)
    price = energy_price(profile.pricing, profile.fuel_per_s, at_ms, profile.energy_mode)
    if price > call.max_price_mc_per_tfuel:
        # The price goes with the refusal: the publisher is told how far to raise its max.
        return BidDecision(price_mc_per_tfuel=price, refusal="price-floor-above-max")
    if standing.owed_mc + cost_mc(price, call.fuel_max) > config.credit_limit_mc:
        return BidDecision(refusal="publisher-credit")
    return BidDecision(price_mc_per_tfuel=price)


def _refusal(
    call: CallForBids,
    profile: HostProfile,
    config: WorkerConfig,
    standing: PublisherStanding,
    load: HostLoad,
    now_ms: int,
) -> str:
    if not config.bidding:
        return "not-bidding"
    if profile.paused:
        return "paused"  # the home's energy or its owner (ADR 0026)
    if call.bid_deadline_ms <= now_ms:
        return "bid-deadline-passed"
    if call.runtime not in profile.runtimes:
        return "runtime"
    if call.memory_mb_max > profile.memory_mb_offered:
        return "memory"
    if not set(call.requirements) <= host_requirements(profile, config):
        return "requirements"
    cores = profile.cores_now()
    if cores == 0 or load.tasks >= cores + config.backlog:
        return "busy"
    if not can_finish(call, profile.fuel_per_s, now_ms, load.wait_ms):
        return "cannot-finish"
    hour_utc = (max(now_ms, call.bid_deadline_ms) // 3_600_000) % 24
    if not profile.availability_hours_mask >> hour_utc & 1:
        return "unavailable"
    if standing.reputation_score < config.publisher_score_min:
        return "publisher-reputation"
    if standing.owed_mc >= config.credit_limit_mc:
        return "publisher-credit"
    return ""
