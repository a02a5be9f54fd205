"""What a job costs: `hearth job quote` (a local dry run for its fuel, the market for the price)
and `--budget`, turned into a price cap no award can exceed."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer

from hearth.client import JobOptions
from hearth.node.commands.common import CommandError, print_json
from hearth.protocol.pricing import FUEL_PER_TFUEL, cost_mc


def price_cap_for_budget(budget_mc: int, options: JobOptions) -> int:
    """The highest price (mc per 10^12 fuel) at which ``replicas_max`` replicas, each using at
    most ``fuel_max`` (the sandbox stops a job there), cost at most ``budget_mc`` together.

    A worker is paid ``cost_mc(price, fuel_used)`` and no bid above the job's max price wins an
    award, so with this cap the publisher never pays more than the budget."""
    per_replica_mc = budget_mc // options.replicas_max
    price = per_replica_mc * FUEL_PER_TFUEL // options.fuel_max
    if price < 1:
        raise CommandError(
            f"a budget of {budget_mc / 1000:g} credits cannot pay {options.replicas_max} replicas "
            f"of up to {options.fuel_max} fuel; raise --budget or lower --fuel or --replicas-max"
        )
    assert options.replicas_max * cost_mc(price, options.fuel_max) <= budget_mc
    return price


def within_budget(options: JobOptions, budget: float | None) -> JobOptions:
    if budget is None:
        return options
    if budget <= 0:
        raise CommandError("--budget must be more than 0 credits")
    cap = price_cap_for_budget(round(budget * 1000), options)
    return dataclasses.replace(
        options, max_price_mc_per_tfuel=min(cap, options.max_price_mc_per_tfuel)
    )


def quote(fuel_used: int, options: JobOptions, prices: list[int]) -> dict[str, Any]:
    """The cost range of a job that uses ``fuel_used``, given the prices on offer now."""
    usable = sorted(p for p in prices if p <= options.max_price_mc_per_tfuel)
    result: dict[str, Any] = {
        "fuel_used": fuel_used,
        "replicas": options.replicas,
        "replicas_max": options.replicas_max,
        "hosts_offering": len(prices),
        "hosts_within_max_price": len(usable),
    }
    if len(usable) < options.replicas:
        return result | {"cost_mc_min": None, "cost_mc_max": None}
    # Cheapest: the first replicas agree at the lowest prices; dearest: every extra replica runs
    # at the highest price within the cap.
    low = options.replicas * cost_mc(usable[options.replicas - 1], fuel_used)
    high = options.replicas_max * cost_mc(usable[-1], fuel_used)
    return result | {"cost_mc_min": low, "cost_mc_max": high}


def market_prices(runtime: str) -> list[int] | None:
    """Prices of the hosts offering ``runtime`` now, or None when no node is running here."""
    from hearth.node.client import NodeClient

    try:
        view = NodeClient().get("/v1/market")
    except CommandError:
        return None
    return [
        o["price_mc_per_tfuel"]
        for o in view["offers"]
        if runtime in o["runtimes"] and o["available_now"]
    ]


def print_quote(file: Path, result: dict[str, Any], json_output: bool) -> None:
    if json_output:
        print_json(result)
        return
    typer.echo(f"{file.name}: fuel {result['fuel_used']} (a local run on this input)")
    if result.get("market") is None:
        typer.echo("no node is running here, so no market prices; start one to price the job")
    elif result["cost_mc_min"] is None:
        typer.echo(
            f"only {result['hosts_within_max_price']} hosts offer it within the max price; "
            f"{result['replicas']} are needed"
        )
    else:
        typer.echo(
            f"cost: {result['cost_mc_min']} to {result['cost_mc_max']} mc "
            f"({result['replicas']} to {result['replicas_max']} replicas, "
            f"{result['hosts_within_max_price']} hosts within the max price)"
        )
