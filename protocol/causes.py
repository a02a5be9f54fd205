"""Why a job could not run, or ended in failure: one typed cause each, with the fix (ADR 0023).

I/O: none. Pure functions of what the publisher knows: the declines hosts sent (``BidDecline``),
the bids, the market view and the revealed results. Each returns a ``CouldNotRun``: the cause
(a stable string the CLI and the SDK compare) and one line for the user that says what to do.

The exit codes of ``hearth job run`` live here too, so that the CLI, the SDK and the docs read
one table: 10-19 are a job's own failures and the causes it could not run; 1 and 2 stay the
CLI's generic and usage errors.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Final


class Cause(enum.StrEnum):
    NO_RUNTIME = "no-runtime"  # no host offers the job's runtime
    PRICE = "price"  # every host asks more than the max price
    ONE_NETWORK_GROUP = "one-network-group"  # bidders too alike to make diverse replicas
    HOSTS_BUSY = "hosts-busy"  # hosts that could run it are running other jobs
    PUBLISHER_REFUSED = "publisher-refused"  # hosts refuse this publisher (credit, reputation)
    NO_FIT = "no-fit"  # memory, requirements, time or availability rule every host out
    NO_HOSTS = "no-hosts"  # no host answered at all
    REPLICAS_DISAGREE = "replicas-disagree"  # no result won a majority
    AWARDS_FAILED = "awards-failed"  # winners accepted and kept failing
    DEADLINE = "deadline"  # the job's deadline passed first
    CANCELLED = "cancelled"  # its publisher cancelled it (hearth job cancel)


@dataclasses.dataclass(frozen=True, slots=True)
class CouldNotRun:
    cause: Cause
    message: str  # one line: what happened and the fix


# Reasons a host gives in a BidDecline (protocol.bidding refusals), by the cause they show.
DECLINE_CAUSES: Final = {
    "runtime": Cause.NO_RUNTIME,
    "price-floor-above-max": Cause.PRICE,
    "busy": Cause.HOSTS_BUSY,
    "publisher-reputation": Cause.PUBLISHER_REFUSED,
    "publisher-credit": Cause.PUBLISHER_REFUSED,
    "memory": Cause.NO_FIT,
    "requirements": Cause.NO_FIT,
    "cannot-finish": Cause.NO_FIT,
    "unavailable": Cause.NO_FIT,
}
# When hosts decline for different reasons, the cause reported first is the one whose fix
# would bring in a host soonest.
_PRIORITY: Final = (
    Cause.PRICE,
    Cause.HOSTS_BUSY,
    Cause.PUBLISHER_REFUSED,
    Cause.NO_FIT,
    Cause.NO_RUNTIME,
)
# Causes that may clear up by themselves: the publisher keeps calling for bids while it can.
# NO_FIT is among them: a host outside its availability hours or short of energy now may take
# the job an hour later, and a host with more memory may join (the cause is still shown at once).
TRANSIENT_CAUSES: Final = frozenset({Cause.HOSTS_BUSY, Cause.NO_HOSTS, Cause.NO_FIT})

# `hearth job run` exit codes (docs/job-failures.md). A job that ran and failed, by error kind:
EXIT_CODE_BY_ERROR_KIND: Final = {
    "exit": 10,
    "trap": 11,
    "out-of-fuel": 12,
    "memory-limit": 13,
    "deadline": 14,
}
EXIT_CODE_JOB_FAILED_OTHER: Final = 15  # invalid-module, output-too-large and any new kind
# A job that could not run or could not be verified, by cause:
EXIT_CODE_BY_CAUSE: Final = {
    Cause.DEADLINE: 14,
    Cause.NO_RUNTIME: 16,
    Cause.PRICE: 16,
    Cause.ONE_NETWORK_GROUP: 16,
    Cause.HOSTS_BUSY: 16,
    Cause.PUBLISHER_REFUSED: 16,
    Cause.NO_FIT: 16,
    Cause.NO_HOSTS: 16,
    Cause.AWARDS_FAILED: 16,
    Cause.REPLICAS_DISAGREE: 17,
    Cause.CANCELLED: 16,
}


def exit_code_for(error_kind: str, cause: str) -> int:
    """The exit code of ``hearth job run`` for a job that did not give a successful result."""
    if error_kind:
        return EXIT_CODE_BY_ERROR_KIND.get(error_kind, EXIT_CODE_JOB_FAILED_OTHER)
    try:
        return EXIT_CODE_BY_CAUSE[Cause(cause)]
    except ValueError:
        return 16


def from_declines(
    declines: Mapping[str, tuple[str, int]], runtime: str, max_price_mc_per_tfuel: int
) -> CouldNotRun | None:
    """What the hosts' declines say, or None if no host declined for a reason we know.

    ``declines`` maps a host to (reason, the price it would ask, 0 if it did not say).
    """
    by_cause: dict[Cause, list[tuple[str, int]]] = {}
    for reason, price in declines.values():
        cause = DECLINE_CAUSES.get(reason.split(":", 1)[0])
        if cause is not None:
            by_cause.setdefault(cause, []).append((reason, price))
    if not by_cause:
        return None
    primary = next(cause for cause in _PRIORITY if cause in by_cause)
    lines = [_decline_line(primary, by_cause[primary], runtime, max_price_mc_per_tfuel)]
    for cause in _PRIORITY:
        if cause in by_cause and cause is not primary:
            lines.append(_decline_line(cause, by_cause[cause], runtime, max_price_mc_per_tfuel))
    return CouldNotRun(primary, "; ".join(lines))


def _hosts(count: int) -> str:
    return f"{count} host{'s' if count != 1 else ''}"


def _decline_line(
    cause: Cause, declines: list[tuple[str, int]], runtime: str, max_price_mc_per_tfuel: int
) -> str:
    n = _hosts(len(declines))
    if cause is Cause.PRICE:
        floor = min(price for _, price in declines)
        return (
            f"{n} ask more than the max price of {max_price_mc_per_tfuel} mc/Tfuel: "
            f"raise --max-price to at least {floor}"
        )
    if cause is Cause.HOSTS_BUSY:
        return f"{n} busy with other jobs: wait, or give a later --deadline-s"
    if cause is Cause.PUBLISHER_REFUSED:
        why = sorted({reason for reason, _ in declines})
        return (
            f"{n} refuse this publisher ({', '.join(why)}): settle what this node owes "
            "(hearth ledger balance) or publish from another node"
        )
    if cause is Cause.NO_FIT:
        listed = ", ".join(f"{reason} x{count}" for reason, count in _counts(declines))
        fix = "lower --memory-mb or --fuel, or raise --deadline-s"
        return f"{n} cannot take the job ({listed}): {fix}"
    return f"{n} do not offer the {runtime} runtime: {_runtime_fix(runtime)}"


def _counts(declines: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    counts = Counter(reason.split(":", 1)[0] for reason, _ in declines)
    return sorted(counts.items())


def _runtime_fix(runtime: str) -> str:
    if runtime == "python":
        return 'hosts need runtimes = ["wasm", "python"] in their config and a prepared runtime'
    return f"publish to hosts that list {runtime!r} in their runtimes"


def from_market(
    offers: Sequence[tuple[tuple[str, ...], int]], runtime: str, max_price_mc_per_tfuel: int
) -> CouldNotRun | None:
    """What the market view says when no host answered: ``offers`` holds each other host's
    (runtimes, ad price). None if some host offers the runtime at an acceptable price."""
    if not offers:
        return CouldNotRun(
            Cause.NO_HOSTS,
            "no other host is known: check this node's --bootstrap and `hearth market`",
        )
    prices = [price for runtimes, price in offers if runtime in runtimes]
    if not prices:
        return CouldNotRun(
            Cause.NO_RUNTIME,
            f"none of the {_hosts(len(offers))} in the market offers the {runtime} runtime: "
            f"{_runtime_fix(runtime)}",
        )
    if min(prices) > max_price_mc_per_tfuel:
        return CouldNotRun(
            Cause.PRICE,
            f"{_hosts(len(prices))} offer {runtime}, all above the max price of "
            f"{max_price_mc_per_tfuel} mc/Tfuel: raise --max-price to at least {min(prices)}",
        )
    return None


def not_diverse(groups: Sequence[tuple[str, str]], needed: int) -> CouldNotRun | None:
    """Bidders (network group, operator) too alike to give ``needed`` diverse replicas, or None.

    Two replicas never share a network group or a non-empty operator label (ADR 0006).
    """
    network_groups = sorted({group for group, _ in groups})
    if len(network_groups) < needed:
        shown = ", ".join(network_groups[:4])
        return CouldNotRun(
            Cause.ONE_NETWORK_GROUP,
            f"{_hosts(len(groups))} bid, in only {len(network_groups)} network group(s) "
            f"({shown}) for {needed} replicas that must be in different ones: add hosts on "
            "other networks, lower --replicas, or for a testnet on one machine set "
            "network_group_prefix_v4 = 32 in every node's config",
        )
    operators = {operator for _, operator in groups if operator}
    unlabelled = sum(1 for _, operator in groups if not operator)
    if len(operators) + unlabelled < needed:
        return CouldNotRun(
            Cause.ONE_NETWORK_GROUP,
            f"{_hosts(len(groups))} bid under {len(operators)} operator label(s) for {needed} "
            "replicas that must have different operators: add hosts of other operators",
        )
    return None


def disagreement(results: Sequence[tuple[str, str, str, int]]) -> CouldNotRun:
    """Replicas that could not agree, with the evidence: (worker, output hash hex, error kind,
    fuel) of each revealed result."""
    parts = [
        f"{worker[-8:]}: output {output_hash[:12]} {kind or 'ok'} fuel {fuel}"
        for worker, output_hash, kind, fuel in results
    ]
    return CouldNotRun(
        Cause.REPLICAS_DISAGREE,
        f"unverifiable: replicas disagree, no result holds a majority ({'; '.join(parts)}): "
        "a job that reads the clock, randomness or the host is not deterministic; "
        "`hearth job show` has each replica",
    )
