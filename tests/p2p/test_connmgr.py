"""The connection manager's pure policy: admission per IP and in total, and trimming order."""

from __future__ import annotations

import pytest

from hearth.p2p.connmgr import ConnectionView, InboundGate, PeerAsks, choose_trim
from hearth.p2p.transport import ConnectionLimits

LIMITS = ConnectionLimits(
    connections_low=2,
    connections_high=4,
    connections_max=6,
    connections_per_ip_max=2,
    connections_per_peer_max=1,
    trim_grace_ms=1000,
)


def view(key: int, *, peer: str = "", outbound: bool = False, opened_ms: int = 0,
         protected: bool = False, score: int = 0, relayed: bool = False,
         needy: bool = False) -> ConnectionView:  # fmt: skip
    return ConnectionView(
        key, peer or f"p{key}", outbound, opened_ms, protected, score, relayed, needy
    )


def test_gate_caps_each_ip_and_the_total_and_gives_slots_back() -> None:
    gate = InboundGate(LIMITS)
    assert gate.try_admit("10.0.0.1", 0) and gate.try_admit("10.0.0.1", 0)
    assert not gate.try_admit("10.0.0.1", 0)  # per-IP cap
    assert gate.try_admit("10.0.0.2", 0)
    assert not gate.try_admit("10.0.0.3", LIMITS.connections_max)  # the node is full
    gate.release("10.0.0.1")
    assert gate.try_admit("10.0.0.1", 3)
    assert gate.per_ip() == {"10.0.0.1": 2, "10.0.0.2": 1}
    for ip in ("10.0.0.1", "10.0.0.1", "10.0.0.2"):
        gate.release(ip)
    assert gate.held == 0 and gate.per_ip() == {}


def test_gate_slots_are_reusable_forever() -> None:
    gate = InboundGate(LIMITS)
    for _ in range(10_000):  # upstream held each slot until the swarm stopped
        assert gate.try_admit("10.0.0.1", 0)
        gate.release("10.0.0.1")


def test_nothing_is_trimmed_at_or_below_high_water() -> None:
    views = [view(k, opened_ms=0) for k in range(4)]
    assert choose_trim(views, LIMITS, now_ms=10_000) == []


def test_trim_to_low_water_least_valuable_first() -> None:
    views = [
        view(1, score=-50, opened_ms=0),  # penalised: first out
        view(2, outbound=True, opened_ms=0),  # we chose it: kept over inbound
        view(3, opened_ms=100),  # newer inbound goes before older inbound
        view(4, opened_ms=0),
        view(5, protected=True, score=-500),  # bootstrap: never
        view(6, opened_ms=9_500),  # in its grace period: never
    ]
    # Six connections, low water two: four go, in this order; 5 and 6 stay whatever they are.
    assert choose_trim(views, LIMITS, now_ms=10_000) == [1, 3, 4, 2]


def test_a_peers_extra_connections_go_first_and_without_grace() -> None:
    views = [view(1, peer="a", opened_ms=5), view(2, peer="a", opened_ms=9_999), view(3)]
    assert choose_trim(views, LIMITS, now_ms=10_000) == [2]


def test_a_hole_punched_connection_outlives_older_relayed_ones() -> None:
    relayed = [view(k, peer="home", opened_ms=k, relayed=True) for k in (1, 2)]
    punched = view(3, peer="home", opened_ms=3)
    assert choose_trim([*relayed, punched], LIMITS, now_ms=10) == [1, 2]  # one per peer


def test_limits_are_validated() -> None:
    with pytest.raises(ValueError):
        ConnectionLimits(connections_low=10, connections_high=5)
    with pytest.raises(ValueError):
        ConnectionLimits(connections_per_ip_max=0)
    with pytest.raises(ValueError):
        ConnectionLimits(peers_low=10, peers_high=5)


HUB = ConnectionLimits(trim_grace_ms=1000, peers_low=3, peers_high=5)


def test_a_hub_sheds_inbound_peers_above_peers_high_oldest_first() -> None:
    views = [view(k, opened_ms=k) for k in range(1, 6)]
    assert choose_trim(views, HUB, now_ms=10_000) == []  # at peers_high: nothing
    views.append(view(6, opened_ms=6))
    # Six peers, three kept: the three connected longest go, they have had time to meet others.
    assert choose_trim(views, HUB, now_ms=10_000) == [1, 2, 3]


def test_a_hub_keeps_peers_it_dialled_bootstraps_new_and_needy_ones() -> None:
    views = [
        view(1, outbound=True),  # our own exchange chose it
        view(2, protected=True),  # a bootstrap node
        view(3, needy=True),  # asked us for peers lately: it may have no other
        view(4, opened_ms=9_500),  # in its grace period
        view(5, opened_ms=5, score=-10),  # penalised: first out
        view(6, opened_ms=6),
        view(7, opened_ms=7),
    ]
    assert choose_trim(views, HUB, now_ms=10_000) == [5, 6, 7]
    # When too few may go, fewer go: never one that is kept.
    assert choose_trim(views[:6], HUB, now_ms=10_000) == [5, 6]


def test_shedding_a_peer_closes_all_its_connections() -> None:
    views = [view(k, opened_ms=k) for k in range(1, 6)]
    views += [view(6, peer="p1", opened_ms=6), view(7, peer="p9", opened_ms=7)]
    assert choose_trim(views, HUB, now_ms=10_000) == [1, 6, 2, 3]


def test_peer_asks_mark_a_peer_needy_for_a_window_and_are_bounded() -> None:
    asks = PeerAsks(window_ms=24_000, peers_max=2)
    asks.asked("a", now_ms=1_000)
    assert asks.needy("a", now_ms=24_999) and not asks.needy("a", now_ms=25_000)
    assert not asks.needy("b", now_ms=1_000)
    asks.asked("b", now_ms=2_000)
    asks.asked("c", now_ms=3_000)  # "a" is forgotten: at most two peers
    assert not asks.needy("a", now_ms=3_000) and asks.needy("b", now_ms=3_000)
