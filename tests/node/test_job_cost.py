"""`--budget` becomes a price cap under which no set of awards can cost more than the budget;
`job quote` prices a measured fuel against the offers on the market."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearth.client import JobOptions
from hearth.node.commands.common import CommandError
from hearth.node.commands.job_cost import price_cap_for_budget, quote, within_budget
from hearth.protocol.pricing import cost_mc


@given(
    budget_mc=st.integers(1, 10**9),
    replicas_max=st.integers(1, 9),
    fuel_max=st.integers(1, 10**13),
    fuel_used_pct=st.integers(0, 100),
)
def test_no_award_within_the_cap_exceeds_the_budget(
    budget_mc: int, replicas_max: int, fuel_max: int, fuel_used_pct: int
) -> None:
    options = JobOptions(replicas=1, replicas_max=replicas_max, fuel_max=fuel_max)
    try:
        cap = price_cap_for_budget(budget_mc, options)
    except CommandError as refused:
        assert "raise --budget" in str(refused)
        assert replicas_max * cost_mc(1, fuel_max) > budget_mc or budget_mc // replicas_max < 1
        return
    fuel_used = fuel_max * fuel_used_pct // 100
    assert replicas_max * cost_mc(cap, fuel_used) <= budget_mc
    # and the cap is not needlessly low: one more mc per Tfuel overspends a replica's share
    assert cost_mc(cap + 1, fuel_max) > budget_mc // replicas_max


def test_a_budget_only_ever_lowers_the_max_price() -> None:
    options = JobOptions(replicas_max=4, fuel_max=10**10, max_price_mc_per_tfuel=1000)
    assert within_budget(options, None) == options
    assert within_budget(options, 1000.0).max_price_mc_per_tfuel == 1000  # the flag is lower
    capped = within_budget(options, 0.02)  # 20 mc: 5 mc for each of 4 replicas of 10^10 fuel
    assert capped.max_price_mc_per_tfuel == 500
    assert dataclasses.replace(capped, max_price_mc_per_tfuel=1000) == options
    with pytest.raises(CommandError, match="more than 0"):
        within_budget(options, 0)


def test_a_quote_ranges_from_the_cheapest_agreeing_replicas_to_the_dearest_retries() -> None:
    options = JobOptions(replicas=2, replicas_max=3, max_price_mc_per_tfuel=500)
    priced = quote(10**12, options, [100, 300, 200, 900])
    assert priced["hosts_within_max_price"] == 3 and priced["hosts_offering"] == 4
    assert priced["cost_mc_min"] == 2 * 200 and priced["cost_mc_max"] == 3 * 300
    too_few = quote(10**12, options, [100, 900])
    assert too_few["cost_mc_min"] is None
