"""Directed invitations: which hosts a publisher invites to bid on a call (ADR 0031).

I/O: none. Time: ``now_ms`` argument. Randomness: the caller's ``random.Random`` (the rotation).

The publisher's market view says which hosts can take a job: the runtime, enough memory,
available now with a core offered, an advertised price under the call's maximum, and not a peer
we refuse. Of those, a bounded sample is invited: most places go down the winner rule's own
ranking of the advertised terms (protocol.auction: price, round trip, reputation, energy), one
host per network group first so that the invitees can form a diverse set of winners; the rest
(``INVITEES_EXPLORE_PCT``) are drawn at random from the hosts left out, so that a cheap newcomer,
which the ranking puts behind proven hosts, is still invited now and then and can earn a record.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from hearth.protocol import limits
from hearth.protocol.auction import BidView, network_group, rank
from hearth.protocol.identity import PeerId
from hearth.protocol.job_messages import CallForBids
from hearth.protocol.market import MarketEntry
from hearth.protocol.reputation import Reputation


def invitees_wanted(target: int) -> int:
    """How many hosts to invite for ``target`` replicas: enough for spares, never unbounded."""
    return min(limits.INVITEES_PER_CALL_MAX, 2 * target + 2)


def can_take(entry: MarketEntry, call: CallForBids) -> bool:
    """Whether the host's advertised terms fit the call (its own bid policy has the last word)."""
    ad = entry.ad
    return (
        call.runtime in ad.runtimes
        and ad.memory_mb_offered >= call.memory_mb_max
        and ad.available_now
        and ad.cores_offered > 0
        and ad.price_mc_per_tfuel <= call.max_price_mc_per_tfuel
    )


def candidate_views(
    entries: Sequence[MarketEntry],
    call: CallForBids,
    excluded: frozenset[PeerId],
    reputation: Reputation,
    peer_ips: Mapping[PeerId, str],
    prefixes: tuple[int, int],
) -> list[BidView]:
    """The hosts of the view that can take ``call``, as the bids their ads promise."""
    views = []
    for entry in entries:
        peer = entry.peer_id
        record = reputation.get(peer)
        if peer in excluded or record.score <= limits.REPUTATION_BAN_SCORE:
            continue
        if not can_take(entry, call):
            continue
        ip = peer_ips.get(peer)
        group = f"peer:{peer}" if ip is None else network_group(ip, *prefixes)
        views.append(
            BidView(
                worker=peer,
                price_mc_per_tfuel=entry.ad.price_mc_per_tfuel,
                rtt_ms=record.rtt_ms,
                reputation_score=record.score,
                results_valid=record.results_valid,
                energy_source=entry.ad.energy_source,
                operator=entry.ad.operator,
                network_group=group,
            )
        )
    return views


def sample(
    views: Sequence[BidView],
    count: int,
    prefer: str,
    max_price_mc_per_tfuel: int,
    seed: bytes,
    rng: random.Random,
) -> list[PeerId]:
    """Up to ``count`` hosts to invite: the best-ranked, one per group first, plus a rotation."""
    ranked = rank(views, prefer, max_price_mc_per_tfuel, seed)
    if len(ranked) <= count:
        return [view.worker for view in ranked]
    explore = count * limits.INVITEES_EXPLORE_PCT // 100
    seen_groups: set[str] = set()
    spread: list[BidView] = []
    repeats: list[BidView] = []
    for view in ranked:
        (repeats if view.network_group in seen_groups else spread).append(view)
        seen_groups.add(view.network_group)
    ordered = spread + repeats
    chosen = ordered[: count - explore]
    rest = ordered[count - explore :]
    chosen += rng.sample(rest, min(explore, len(rest)))
    assert len(chosen) == count and len({v.worker for v in chosen}) == count
    return [view.worker for view in chosen]
