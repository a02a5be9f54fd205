"""Properties of the winner rule (ADR 0006), checked with hypothesis."""

from __future__ import annotations

import dataclasses

from hypothesis import given, settings
from hypothesis import strategies as st

from hearth.protocol.auction import BidView, choose_winners, conflicts, network_group, score
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import PREFERENCES

MAX_PRICE = 10_000


@st.composite
def bid_sets(draw: st.DrawFn) -> list[BidView]:
    count = draw(st.integers(min_value=0, max_value=14))
    bids = []
    for i in range(count):
        bids.append(
            BidView(
                worker=PeerId(f"peer{i:02d}"),
                price_mc_per_tfuel=draw(st.integers(0, MAX_PRICE)),
                rtt_ms=draw(st.integers(-1, 3_000)),
                reputation_score=draw(st.integers(-200, 200)),
                results_valid=draw(st.integers(0, 3)),
                energy_source=draw(st.sampled_from(("grid", "solar", "battery", "mixed"))),
                operator=draw(st.sampled_from(("", "alice", "bob", "carol", "dave"))),
                network_group=draw(
                    st.sampled_from(
                        (
                            "10.0.0.0/24",
                            "10.0.1.0/24",
                            "10.0.2.0/24",
                            "10.0.3.0/24",
                            "10.0.4.0/24",
                            "10.0.5.0/24",
                        )
                    )
                ),
            )
        )
    return bids


COMMON = {
    "bids": bid_sets(),
    "count": st.integers(1, 5),
    "prefer": st.sampled_from(PREFERENCES),
    "seed": st.binary(min_size=16, max_size=16),
    "newcomers_max": st.integers(1, 3),
}


@settings(max_examples=150, deadline=None)
@given(**COMMON, order=st.randoms(use_true_random=False))
def test_the_rule_is_deterministic_and_ignores_input_order(
    bids: list[BidView], count: int, prefer: str, seed: bytes, newcomers_max: int, order: object
) -> None:
    first = choose_winners(bids, count, prefer, MAX_PRICE, seed, newcomers_max)
    shuffled = list(bids)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    again = choose_winners(shuffled, count, prefer, MAX_PRICE, seed, newcomers_max)
    assert first == again


@settings(max_examples=150, deadline=None)
@given(**COMMON)
def test_winners_are_diverse_and_the_price_is_between_every_bid_and_the_max(
    bids: list[BidView], count: int, prefer: str, seed: bytes, newcomers_max: int
) -> None:
    selection = choose_winners(bids, count, prefer, MAX_PRICE, seed, newcomers_max)
    winners = selection.winners
    assert len(winners) <= count
    for i, bid in enumerate(winners):
        assert not conflicts(bid, winners[:i])  # no shared operator label or network group
    groups = [bid.network_group for bid in winners]
    assert len(groups) == len(set(groups))
    labels = [bid.operator for bid in winners if bid.operator]
    assert len(labels) == len(set(labels))
    if winners:
        price = selection.clearing_price_mc_per_tfuel
        assert price <= MAX_PRICE
        assert all(bid.price_mc_per_tfuel <= price for bid in winners)
    # A diverse winner is left out only when the places are full.
    if len(winners) < count:
        for bid in bids:
            assert bid in winners or conflicts(bid, winners)


@settings(max_examples=150, deadline=None)
@given(**COMMON)
def test_newcomers_take_no_more_than_their_share_while_proven_hosts_remain(
    bids: list[BidView], count: int, prefer: str, seed: bytes, newcomers_max: int
) -> None:
    winners = choose_winners(bids, count, prefer, MAX_PRICE, seed, newcomers_max).winners
    newcomers = [bid for bid in winners if bid.newcomer]
    if len(newcomers) > newcomers_max:
        # Allowed only when no proven bid could have taken a place instead.
        for bid in bids:
            if not bid.newcomer and bid not in winners:
                assert conflicts(bid, winners)


@settings(max_examples=300, deadline=None)
@given(**COMMON, who=st.integers(0, 13), raise_by=st.integers(1, MAX_PRICE))
def test_raising_a_bid_never_helps_it_win_and_a_winner_is_never_paid_below_its_bid(
    bids: list[BidView],
    count: int,
    prefer: str,
    seed: bytes,
    newcomers_max: int,
    who: int,
    raise_by: int,
) -> None:
    if not bids:
        return
    me = bids[who % len(bids)]
    higher = dataclasses.replace(
        me, price_mc_per_tfuel=min(MAX_PRICE, me.price_mc_per_tfuel + raise_by)
    )
    others = [bid for bid in bids if bid is not me]
    low = choose_winners([*others, me], count, prefer, MAX_PRICE, seed, newcomers_max)
    high = choose_winners([*others, higher], count, prefer, MAX_PRICE, seed, newcomers_max)
    won_low = any(bid.worker == me.worker for bid in low.winners)
    won_high = any(bid.worker == me.worker for bid in high.winners)
    assert won_low or not won_high  # raising the bid never turns a loss into a win
    if won_low:  # lowering the bid to win never pays less than the bid
        assert low.clearing_price_mc_per_tfuel >= me.price_mc_per_tfuel


@given(prefer=st.sampled_from(PREFERENCES), bid=bid_sets().filter(bool), extra=st.integers(1, 500))
def test_the_score_never_falls_as_the_price_rises(
    prefer: str, bid: list[BidView], extra: int
) -> None:
    one = bid[0]
    dearer = dataclasses.replace(one, price_mc_per_tfuel=one.price_mc_per_tfuel + extra)
    assert score(dearer, prefer, MAX_PRICE) >= score(one, prefer, MAX_PRICE)


def test_sybils_on_one_subnet_take_one_replica_however_low_they_bid() -> None:
    sybils = [
        BidView(PeerId(f"sybil{i}"), 0, 5, 0, 0, "solar", f"s{i}", "10.6.6.0/24") for i in range(50)
    ]
    honest = [
        BidView(PeerId(f"host{i}"), 5_000, 40, 30, 30, "grid", f"h{i}", f"10.0.{i}.0/24")
        for i in range(3)
    ]
    for seed in range(20):
        selection = choose_winners(
            [*sybils, *honest], 3, "cheapest", MAX_PRICE, bytes([seed]) * 16, 1
        )
        assert sum(bid.worker.startswith("sybil") for bid in selection.winners) <= 1
        assert len(selection.winners) == 3


def test_newcomer_sybils_on_many_subnets_cannot_fill_a_quorum_alone() -> None:
    sybils = [
        BidView(PeerId(f"sybil{i}"), 0, 5, 0, 0, "solar", "", f"10.6.{i}.0/24") for i in range(50)
    ]
    honest = [
        BidView(PeerId(f"host{i}"), 5_000, 40, 30, 30, "grid", f"h{i}", f"10.0.{i}.0/24")
        for i in range(3)
    ]
    for seed in range(20):
        selection = choose_winners(
            [*sybils, *honest], 2, "cheapest", MAX_PRICE, bytes([seed]) * 16, 1
        )
        assert [bid.worker.startswith("host") for bid in selection.winners].count(True) >= 1


def test_near_equal_bids_are_chosen_at_random_but_reproducibly() -> None:
    bids = [
        BidView(PeerId(f"host{i}"), 1_000 + i, 50, 0, 1, "grid", f"h{i}", f"10.0.{i}.0/24")
        for i in range(10)
    ]
    firsts = {
        choose_winners(bids, 1, "cheapest", MAX_PRICE, bytes([s]) * 16, 1).winners[0].worker
        for s in range(40)
    }
    assert len(firsts) > 3  # not always the one that is cheapest by a hair


def test_network_groups_follow_the_configured_prefix() -> None:
    assert network_group("192.168.1.77", 24, 48) == "192.168.1.0/24"
    assert network_group("127.0.0.3", 32, 48) == "127.0.0.3/32"
    assert network_group("2001:db8:1:2::5", 24, 48) == "2001:db8:1::/48"
    assert network_group("not an ip", 24, 48) == "?not an ip"


def test_with_no_losing_bid_the_next_ask_in_the_view_sets_the_price_within_twice_the_bids() -> None:
    bids = [
        BidView(PeerId("a"), 90, 20, 10, 5, "grid", "", "g1"),
        BidView(PeerId("b"), 93, 20, 10, 5, "grid", "", "g2"),
    ]
    plain = choose_winners(bids, 2, "cheapest", 100_000, b"s" * 16, 1)
    assert plain.clearing_price_mc_per_tfuel == 93  # no ask known: the highest winning bid
    near = choose_winners(bids, 2, "cheapest", 100_000, b"s" * 16, 1, [(PeerId("c"), 120)])
    assert near.clearing_price_mc_per_tfuel == 120
    far = choose_winners(bids, 2, "cheapest", 100_000, b"s" * 16, 1, [(PeerId("c"), 5_000)])
    assert far.clearing_price_mc_per_tfuel == 2 * 93
    # The winners' own asks never count as the next one.
    own = choose_winners(bids, 2, "cheapest", 100_000, b"s" * 16, 1, [(PeerId("a"), 150)])
    assert own.clearing_price_mc_per_tfuel == 93
