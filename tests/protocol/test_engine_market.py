"""The engine's market: ads travel between engines; hostile input is dropped and penalised."""

from __future__ import annotations

import random

import pytest

from hearth.protocol import limits
from hearth.protocol.codec import encode
from hearth.protocol.effects import Log, Penalise, Publish, SetTimer
from hearth.protocol.engine import Engine, EngineConfig, HostProfile
from hearth.protocol.envelope import seal
from hearth.protocol.events import (
    HostSettingsChanged,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    Started,
    TimerFired,
)
from hearth.protocol.identity import Identity
from hearth.protocol.messages import PROTOCOL_BID, TOPIC_CAPACITY, CapacityAd
from hearth.protocol.pricing import PricingConfig
from hearth.protocol.timers import MarketAdTimer

NOW_MS = 1_800_000_000_000


def make_engine(seed: int, power_w: int = 120) -> Engine:
    profile = HostProfile(
        cores_offered=2,
        memory_mb_offered=2048,
        fuel_per_s=10**9,
        runtimes=("wasm",),
        availability_hours_mask=2**24 - 1,
        energy_source="grid",
        operator=f"op{seed}",
        pricing=PricingConfig(power_w, (300_000,) * 24),
    )
    return Engine(EngineConfig(Identity(bytes([seed]) * 32), profile), random.Random(seed))


def published(effects: list[object]) -> bytes:
    [data] = [e.data for e in effects if isinstance(e, Publish)]
    return data


def test_two_engines_see_each_others_price() -> None:
    a, b = make_engine(1, power_w=120), make_engine(2, power_w=240)
    ad_a = published(a.step(Started(), NOW_MS))
    ad_b = published(b.step(Started(), NOW_MS))
    assert b.step(MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, ad_a), NOW_MS + 5) == []
    assert a.step(MessageReceived(b.identity.peer_id, TOPIC_CAPACITY, ad_b), NOW_MS + 5) == []
    [seen_by_b] = b.market.snapshot(NOW_MS + 5)
    [seen_by_a] = a.market.snapshot(NOW_MS + 5)
    assert seen_by_b.peer_id == a.identity.peer_id
    assert seen_by_a.ad.price_mc_per_tfuel > seen_by_b.ad.price_mc_per_tfuel  # twice the power


def test_ads_repeat_on_a_timer_and_expire_without_renewal() -> None:
    a, b = make_engine(1), make_engine(2)
    effects = a.step(Started(), NOW_MS)
    assert SetTimer(MarketAdTimer(), NOW_MS + limits.CAPACITY_AD_INTERVAL_MS) in effects
    b.step(MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, published(effects)), NOW_MS)
    later = NOW_MS + limits.CAPACITY_AD_INTERVAL_MS
    b.step(
        MessageReceived(
            a.identity.peer_id,
            TOPIC_CAPACITY,
            published(a.step(TimerFired(MarketAdTimer()), later)),
        ),
        later,
    )
    assert b.market.snapshot(later)[0].created_ms == later
    assert b.market.snapshot(later + limits.CAPACITY_AD_TTL_MS) == []


def test_an_older_ad_never_replaces_a_newer_one() -> None:
    a, b = make_engine(1), make_engine(2)
    first = published(a.step(Started(), NOW_MS))
    second = published(a.step(TimerFired(MarketAdTimer()), NOW_MS + 10))
    b.step(MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, second), NOW_MS + 20)
    b.step(MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, first), NOW_MS + 20)
    assert b.market.snapshot(NOW_MS + 20)[0].created_ms == NOW_MS + 10


def hostile_corpus(a: Engine) -> dict[str, bytes]:
    good = published(a.step(Started(), NOW_MS))
    bad_ad = CapacityAd(2, 2048, 0, ("cobol",), 2**24 - 1, True, "coal", -5, (1,) * 3, 0, "")
    return {
        "truncated": good[:-7],
        "oversized": b"\x00" * (limits.MESSAGE_BYTES_MAX + 1),
        "wrong-type": encode(bad_ad),
        "bad-signature": good[:-1] + bytes([good[-1] ^ 1]),
        "expired": seal(
            a.identity,
            a.market_component.current_ad(NOW_MS - 60_000),
            now_ms=NOW_MS - 60_000,
            ttl_ms=1000,
            rng=random.Random(3),
        ),
        "invalid-ad": seal(a.identity, bad_ad, now_ms=NOW_MS, ttl_ms=1000, rng=random.Random(4)),
    }


@pytest.mark.parametrize(
    "case,reason",
    [
        ("truncated", "malformed"),
        ("oversized", "oversize"),
        ("wrong-type", "unknown-type"),
        ("bad-signature", "bad-signature"),
        ("expired", "expired"),
        ("invalid-ad", "invalid-ad"),
    ],
)
def test_hostile_messages_are_dropped_with_their_reason(case: str, reason: str) -> None:
    a, b = make_engine(1), make_engine(2)
    data = hostile_corpus(a)[case]
    effects = b.step(MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, data), NOW_MS)
    [log] = [e for e in effects if isinstance(e, Log)]
    assert dict(log.fields)["reason"] == reason
    assert any(isinstance(e, Penalise) for e in effects)
    assert b.market.snapshot(NOW_MS) == []
    assert b.reputation.get(a.identity.peer_id).score < 0


def test_replay_and_wrong_channel_are_dropped() -> None:
    a, b = make_engine(1), make_engine(2)
    good = published(a.step(Started(), NOW_MS))
    peer = a.identity.peer_id
    assert b.step(MessageReceived(peer, PROTOCOL_BID, good), NOW_MS)[0].fields[2] == (
        "reason",
        "wrong-channel",
    )
    assert b.step(MessageReceived(peer, TOPIC_CAPACITY, good), NOW_MS) == []
    replay = b.step(MessageReceived(peer, TOPIC_CAPACITY, good), NOW_MS + 1)
    assert dict(replay[0].fields)["reason"] == "replay"


def test_new_host_settings_go_out_at_once_in_the_next_ad() -> None:
    a, b = make_engine(1), make_engine(2)
    a.step(Started(), NOW_MS)
    cheaper = PricingConfig(60, (100_000,) * 24)
    changed = HostSettingsChanged(
        cores_offered=1,
        memory_mb_offered=512,
        availability_hours_mask=2**24 - 1,
        energy_source="solar",
        pricing=cheaper,
    )
    effects = a.step(changed, NOW_MS + 1)
    assert SetTimer(MarketAdTimer(), NOW_MS + 1 + limits.CAPACITY_AD_INTERVAL_MS) in effects
    b.step(MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, published(effects)), NOW_MS + 2)
    [seen] = b.market.snapshot(NOW_MS + 2)
    assert (seen.ad.cores_offered, seen.ad.memory_mb_offered) == (1, 512)
    assert seen.ad.energy_source == "solar"
    assert (
        seen.ad.price_mc_per_tfuel == a.market_component.current_ad(NOW_MS + 2).price_mc_per_tfuel
    )
    assert a.config.profile.runtimes == ("wasm",)  # what the settings do not name is kept


def test_a_peer_met_for_the_first_time_brings_the_next_ad_forward_once() -> None:
    a = make_engine(1)
    a.step(Started(), NOW_MS)
    newcomer, other = make_engine(2).identity.peer_id, make_engine(3).identity.peer_id
    soon_ms = NOW_MS + limits.CAPACITY_AD_AFTER_CONNECT_GAP_MS
    assert a.step(PeerConnected(newcomer, "127.0.0.3"), NOW_MS + 10) == [
        SetTimer(MarketAdTimer(), soon_ms)
    ]
    # A burst of new peers shares that ad; a peer met before brings nothing forward.
    assert a.step(PeerConnected(other, "127.0.0.4"), NOW_MS + 20) == []
    effects = a.step(TimerFired(MarketAdTimer()), soon_ms)
    assert SetTimer(MarketAdTimer(), soon_ms + limits.CAPACITY_AD_INTERVAL_MS) in effects
    assert a.step(PeerDisconnected(newcomer), soon_ms + 1) == []
    assert a.step(PeerConnected(newcomer, "127.0.0.3"), soon_ms + 2) == []


def test_only_the_first_ads_after_start_are_brought_forward_by_new_peers() -> None:
    """A node meeting new peers for a minute re-advertised every gap; after the first few the
    market sync hands its ad on, and its ads keep the interval (issue 14)."""
    a = make_engine(1)
    a.step(Started(), NOW_MS)
    now_ms, forwarded, soon_ms = NOW_MS, 0, limits.CAPACITY_AD_AFTER_CONNECT_MS
    for seed in range(2, 2 + 4 * limits.CAPACITY_AD_BROUGHT_FORWARD_MAX):
        now_ms += limits.CAPACITY_AD_AFTER_CONNECT_GAP_MS
        effects = a.step(PeerConnected(make_engine(seed).identity.peer_id, "127.0.0.3"), now_ms)
        if effects:
            assert effects == [SetTimer(MarketAdTimer(), now_ms + soon_ms)]
            forwarded += 1
            fired = a.step(TimerFired(MarketAdTimer()), now_ms + soon_ms)
            assert any(isinstance(e, Publish) for e in fired)
    assert forwarded == limits.CAPACITY_AD_BROUGHT_FORWARD_MAX
    assert a.market_component.next_ad_ms == (
        a.market_component.last_ad_ms + limits.CAPACITY_AD_INTERVAL_MS
    )


def test_an_ad_that_expired_in_our_own_queue_costs_its_sender_nothing() -> None:
    a, b = make_engine(1), make_engine(2)
    ad = published(a.step(Started(), NOW_MS))
    late_ms = NOW_MS + limits.CAPACITY_AD_TTL_MS + 1
    # Fresh when the edge checked it (verified), expired when the engine reached it.
    queued = MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, ad, verified=True)
    effects = b.step(queued, late_ms)
    assert not any(isinstance(e, Penalise) for e in effects)
    assert any(isinstance(e, Log) for e in effects)
    # Expired on arrival (never passed the edge): the sender is charged as before.
    arrived = MessageReceived(a.identity.peer_id, TOPIC_CAPACITY, ad)
    assert any(isinstance(e, Penalise) for e in b.step(arrived, late_ms))
