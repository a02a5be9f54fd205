"""The winner rule of a job's sealed-bid auction (ADR 0006): rank, pick diverse winners, price.

I/O: none. Pure functions of the bids, the publisher's preference and a seed; integers only.

Each bid gets a cost score (lower is better) from four parts, each scaled to 0..1000 and
weighted by the publisher's preference: price (as a share of the max price), measured RTT,
reputation and energy source. Scores are cut into buckets of ``NEAR_EQUAL_SCORE``; inside a
bucket the order is a hash of the seed and the bidder, so near-equals are chosen at random but
reproducibly. Winners are taken greedily down that order, skipping a bid whose operator label or
network group is already among the winners, and taking at most ``newcomers_max`` bidders with
no valid result yet while proven ones remain. The clearing price is uniform: the larger of the
highest winning bid and the best losing bid, capped at the max price; with no losing bid, the
market view's next ask, at most twice the highest winning bid (ADR 0031).
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from typing import Final

from hearth.protocol.identity import PeerId

SCALE: Final = 1000
RTT_MS_CAP: Final = 2000  # an RTT beyond this scores as bad as it gets
RTT_MS_UNKNOWN: Final = 500  # an unmeasured peer is assumed middling, neither near nor far
REPUTATION_NEUTRAL: Final = 500  # the part an unknown identity gets
REPUTATION_POINTS_PER_SCORE: Final = 10  # 50 net valid results reach the best reputation part
THIN_MARKET_PREMIUM_MAX: Final = 2  # no loser: at most this times the highest winning bid
NEAR_EQUAL_SCORE: Final = 2000  # 2% of the total weight x SCALE: bids this close are equals
GREEN_SCORE: Final = {"solar": 0, "battery": 300, "mixed": 500, "grid": 1000}
# (price, rtt, reputation, green) weights in percent; reputation always counts a quarter.
WEIGHTS: Final = {
    "cheapest": (60, 15, 25, 0),
    "fastest": (20, 55, 25, 0),
    "greenest": (20, 10, 25, 45),
}


@dataclasses.dataclass(frozen=True, slots=True)
class BidView:
    """One bid, with what the publisher measured about the bidder."""

    worker: PeerId
    price_mc_per_tfuel: int
    rtt_ms: int  # -1 when not measured
    reputation_score: int
    results_valid: int
    energy_source: str
    operator: str  # self-declared; "" counts as a label of its own
    network_group: str
    wait_ms: int = 0  # until the host can start, by its bid: its queue (ADR 0031)

    @property
    def newcomer(self) -> bool:
        return self.results_valid == 0


@dataclasses.dataclass(frozen=True, slots=True)
class Selection:
    winners: tuple[BidView, ...]
    clearing_price_mc_per_tfuel: int
    ranked: tuple[BidView, ...]  # every bid, best first: the candidates after the winners


def network_group(ip: str, prefix_v4: int, prefix_v6: int) -> str:
    """The IP prefix a peer shares with its neighbours; an unparsable address is its own group."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return f"?{ip}"
    prefix = prefix_v4 if address.version == 4 else prefix_v6
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def score(bid: BidView, prefer: str, max_price_mc_per_tfuel: int) -> int:
    """Cost score of a bid, 0..100_000; lower is better. Raising the price never lowers it."""
    w_price, w_rtt, w_reputation, w_green = WEIGHTS[prefer]
    price_part = bid.price_mc_per_tfuel * SCALE // max(1, max_price_mc_per_tfuel)
    # Expected completion (ADR 0031): the round trip plus the wait in the host's queue.
    rtt_ms = min((RTT_MS_UNKNOWN if bid.rtt_ms < 0 else bid.rtt_ms) + bid.wait_ms, RTT_MS_CAP)
    rtt_part = rtt_ms * SCALE // RTT_MS_CAP
    reputation_part = min(
        SCALE, max(0, REPUTATION_NEUTRAL - bid.reputation_score * REPUTATION_POINTS_PER_SCORE)
    )
    green_part = GREEN_SCORE.get(bid.energy_source, SCALE)
    return (
        w_price * min(price_part, SCALE)
        + w_rtt * rtt_part
        + w_reputation * reputation_part
        + w_green * green_part
    )


def _tiebreak(seed: bytes, worker: PeerId) -> bytes:
    return hashlib.sha256(seed + worker.encode()).digest()


def rank(
    bids: Iterable[BidView], prefer: str, max_price_mc_per_tfuel: int, seed: bytes
) -> list[BidView]:
    """Best first: by score bucket, then a seeded hash (random among near-equals), then price."""

    def key(bid: BidView) -> tuple[int, bytes, int, str]:
        bucket = score(bid, prefer, max_price_mc_per_tfuel) // NEAR_EQUAL_SCORE
        return (bucket, _tiebreak(seed, bid.worker), bid.price_mc_per_tfuel, bid.worker)

    return sorted(bids, key=key)


def conflicts(bid: BidView, chosen: Iterable[BidView]) -> bool:
    """True when ``bid`` shares an operator label or a network group with a chosen bid."""
    for other in chosen:
        if bid.network_group == other.network_group:
            return True
        if bid.operator and bid.operator == other.operator:
            return True
    return False


def pick(
    ranked: Sequence[BidView],
    count: int,
    chosen: Sequence[BidView],
    excluded: frozenset[PeerId],
    newcomers_max: int,
) -> list[BidView]:
    """Up to ``count`` more bids, diverse among themselves and with ``chosen``.

    First pass: down the ranking, newcomers only while fewer than ``newcomers_max`` are chosen.
    Second pass (only if the first left places): newcomers deferred by the cap, in rank order,
    so that a young network with no proven hosts still runs jobs.
    """
    taken: list[BidView] = []
    deferred: list[BidView] = []
    newcomers = sum(1 for bid in chosen if bid.newcomer)
    for bid in ranked:
        if len(taken) == count:
            break
        if bid.worker in excluded or conflicts(bid, [*chosen, *taken]):
            continue
        if bid.newcomer and newcomers >= newcomers_max:
            deferred.append(bid)
            continue
        taken.append(bid)
        newcomers += bid.newcomer
    for bid in deferred:
        if len(taken) == count:
            break
        if not conflicts(bid, [*chosen, *taken]):
            taken.append(bid)
    # Replica diversity is what stops one operator or subnet from forming a quorum (ADR 0006).
    assert len(taken) <= count and not any(bid.worker in excluded for bid in taken)
    assert _diverse(taken, chosen), "winners share an operator or a network group"
    return taken


def _diverse(taken: Sequence[BidView], chosen: Sequence[BidView]) -> bool:
    """Each taken bid apart from every chosen and earlier taken one (checked apart from
    ``conflicts``, so that a fault there cannot hide itself)."""
    for i, bid in enumerate(taken):
        for other in [*chosen, *taken[:i]]:
            same_operator = bool(bid.operator) and bid.operator == other.operator
            if same_operator or bid.network_group == other.network_group:
                return False
    return True


def clearing_price(
    winners: Sequence[BidView],
    ranked: Sequence[BidView],
    max_price_mc_per_tfuel: int,
    asks: Sequence[tuple[PeerId, int]] = (),
) -> int:
    """Uniform price: max(highest winning bid, best losing bid), capped at the max price.

    A thin market (no losing bid, ADR 0031): the best ask of another host in the market view
    stands in for the losing bid, never above ``THIN_MARKET_PREMIUM_MAX`` times the highest
    winning bid; with no such ask the highest winning bid is the price. Never the max price
    only because nobody lost.
    """
    assert winners, "a price needs a winner"
    names = {bid.worker for bid in winners}
    losers = [bid for bid in ranked if bid.worker not in names]
    highest = max(bid.price_mc_per_tfuel for bid in winners)
    if losers:
        runner_up = losers[0].price_mc_per_tfuel
    else:
        others = [price for worker, price in asks if worker not in names]
        runner_up = min([*others, THIN_MARKET_PREMIUM_MAX * highest]) if others else highest
    price = min(max_price_mc_per_tfuel, max(highest, runner_up))
    assert all(bid.price_mc_per_tfuel <= price for bid in winners)
    return price


def choose_winners(
    bids: Iterable[BidView],
    count: int,
    prefer: str,
    max_price_mc_per_tfuel: int,
    seed: bytes,
    newcomers_max: int,
    asks: Sequence[tuple[PeerId, int]] = (),
) -> Selection:
    """The whole rule: rank, pick ``count`` diverse winners, price them. Deterministic.

    Bids above the max price are the caller's to drop; any left here are ignored. ``asks``:
    (host, advertised price) of the market view, for a market too thin to price from the bids.
    """
    eligible = [bid for bid in bids if bid.price_mc_per_tfuel <= max_price_mc_per_tfuel]
    ranked = rank(eligible, prefer, max_price_mc_per_tfuel, seed)
    winners = pick(ranked, count, (), frozenset(), newcomers_max)
    price = clearing_price(winners, ranked, max_price_mc_per_tfuel, asks) if winners else 0
    return Selection(tuple(winners), price, tuple(ranked))
