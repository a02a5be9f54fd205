"""Envelopes: signatures over the exact bytes, expiry, replay, and the peer ID derivation."""

from __future__ import annotations

import random

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from hearth.protocol import limits
from hearth.protocol.codec import decode, encode
from hearth.protocol.envelope import EnvelopeWire, ReplayGuard, SignedWire, open_envelope, seal
from hearth.protocol.errors import ExpiredError, RemoteProtocolError, ReplayError, SignatureError
from hearth.protocol.identity import Identity, peer_id_from_public_key, public_key_from_peer_id
from hearth.protocol.messages import CapacityAd

NOW_MS = 1_800_000_000_000
ALICE = Identity(b"\x01" * 32)
MALLORY = Identity(b"\x02" * 32)


def ad() -> CapacityAd:
    return CapacityAd(2, 2048, 10**9, ("wasm",), 2**24 - 1, True, "grid", 7, (7,) * 24, 0, "")


def sealed(identity: Identity = ALICE, *, ttl_ms: int = 10_000, seed: int = 1) -> bytes:
    return seal(identity, ad(), now_ms=NOW_MS, ttl_ms=ttl_ms, rng=random.Random(seed))


def test_peer_id_matches_libp2p() -> None:
    key_pair = create_new_key_pair(b"\x05" * 32)
    expected = ID.from_pubkey(key_pair.public_key).to_base58()
    ours = peer_id_from_public_key(key_pair.public_key.to_bytes())
    assert ours == expected
    assert public_key_from_peer_id(ours) == key_pair.public_key.to_bytes()


def test_open_returns_the_body_and_its_author() -> None:
    envelope = open_envelope(sealed(), now_ms=NOW_MS + 1)
    assert envelope.body == ad()
    assert envelope.peer_id == ALICE.peer_id
    assert envelope.expires_ms == NOW_MS + 10_000


def test_a_flipped_bit_anywhere_in_the_signed_part_fails() -> None:
    wire = decode(sealed())
    for i in range(len(wire.signed)):
        tampered = bytearray(wire.signed)
        tampered[i] ^= 0x01
        data = encode(EnvelopeWire(bytes(tampered), wire.signature))
        with pytest.raises(RemoteProtocolError):
            open_envelope(data, now_ms=NOW_MS)


def test_a_signature_by_another_key_fails() -> None:
    wire = decode(sealed())
    forged = encode(EnvelopeWire(wire.signed, MALLORY.sign(wire.signed)))
    with pytest.raises(SignatureError):
        open_envelope(forged, now_ms=NOW_MS)


def test_author_swap_fails() -> None:
    wire = decode(sealed(MALLORY))
    signed = decode(wire.signed)
    claimed = encode(
        SignedWire(
            ALICE.public_key, signed.nonce, signed.created_ms, signed.expires_ms, signed.body
        )
    )
    with pytest.raises(SignatureError):
        open_envelope(encode(EnvelopeWire(claimed, wire.signature)), now_ms=NOW_MS)


def test_expired_and_future_envelopes_are_refused() -> None:
    with pytest.raises(ExpiredError, match="expired"):
        open_envelope(sealed(ttl_ms=100), now_ms=NOW_MS + 100)
    with pytest.raises(ExpiredError, match="future"):
        open_envelope(sealed(), now_ms=NOW_MS - limits.CLOCK_SKEW_MS_MAX - 1)


def test_replays_are_refused_until_expiry_then_forgotten() -> None:
    guard = ReplayGuard()
    envelope = open_envelope(sealed(), now_ms=NOW_MS)
    guard.check(envelope, now_ms=NOW_MS)
    with pytest.raises(ReplayError):
        guard.check(envelope, now_ms=NOW_MS + 5)
    other = open_envelope(sealed(seed=2), now_ms=NOW_MS)
    guard.check(other, now_ms=NOW_MS + 5)
    guard.check(open_envelope(sealed(seed=3), now_ms=NOW_MS), now_ms=NOW_MS + 10_000)
    assert len(guard) == 1  # the first two expired and were forgotten


def test_a_full_replay_guard_refuses_rather_than_forgets() -> None:
    guard = ReplayGuard(entries_max=2)
    for seed in (1, 2):
        guard.check(open_envelope(sealed(seed=seed), now_ms=NOW_MS), now_ms=NOW_MS)
    with pytest.raises(ReplayError, match="full"):
        guard.check(open_envelope(sealed(seed=3), now_ms=NOW_MS), now_ms=NOW_MS)


def flood(guard: ReplayGuard, identity: Identity, count: int, *, first_seed: int = 100) -> int:
    """Offer ``count`` fresh envelopes by ``identity``; return how many the guard refused."""
    refused = 0
    for seed in range(first_seed, first_seed + count):
        try:
            guard.check(open_envelope(sealed(identity, seed=seed), now_ms=NOW_MS), now_ms=NOW_MS)
        except ReplayError as exc:
            assert exc.reason == "busy"
            refused += 1
    return refused


def test_one_flooding_author_cannot_get_another_authors_fresh_message_refused() -> None:
    guard = ReplayGuard(entries_max=100, author_entries_max=10)
    assert flood(guard, MALLORY, 500) == 490  # only its own share is taken, the rest refused
    assert guard.author_entries(MALLORY.public_key) == 10
    guard.check(open_envelope(sealed(ALICE), now_ms=NOW_MS), now_ms=NOW_MS)  # not refused
    assert guard.statistics()["refused_busy"] == 490


def test_many_flooding_authors_give_way_to_a_fresh_author() -> None:
    guard = ReplayGuard(entries_max=30, author_entries_max=10)
    sybils = [Identity(bytes([3 + i]) * 32) for i in range(3)]
    for sybil in sybils:
        assert flood(guard, sybil, 10) == 0
    assert len(guard) == 30  # full
    for seed in range(5):  # Alice still gets in: the heaviest authors give up their oldest
        guard.check(open_envelope(sealed(ALICE, seed=seed), now_ms=NOW_MS), now_ms=NOW_MS)
    assert len(guard) == 30 and guard.author_entries(ALICE.public_key) == 5
    assert guard.statistics()["evicted"] == 5
    assert all(guard.author_entries(s.public_key) >= 8 for s in sybils)


def test_a_full_cache_of_equal_shares_refuses_the_newcomer_and_still_catches_replays() -> None:
    guard = ReplayGuard(entries_max=4, author_entries_max=2)
    authors = [Identity(bytes([20 + i]) * 32) for i in range(4)]
    for author in authors:
        assert flood(guard, author, 1, first_seed=1) == 0
    with pytest.raises(ReplayError, match="full"):  # every share is equal: nobody gives way
        guard.check(open_envelope(sealed(ALICE), now_ms=NOW_MS), now_ms=NOW_MS)
    with pytest.raises(ReplayError, match="already seen"):
        guard.check(open_envelope(sealed(authors[0], seed=1), now_ms=NOW_MS), now_ms=NOW_MS)


def test_an_authors_share_frees_as_its_entries_expire() -> None:
    guard = ReplayGuard(entries_max=100, author_entries_max=3)
    assert flood(guard, MALLORY, 5) == 2
    later = NOW_MS + 10_000  # sealed() envelopes live 10 s
    fresh = seal(MALLORY, ad(), now_ms=later, ttl_ms=10_000, rng=random.Random(7))
    guard.check(open_envelope(fresh, now_ms=later), now_ms=later)
    assert len(guard) == 1 and guard.statistics()["authors"] == 1
