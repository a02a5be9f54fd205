"""Envelopes: signatures over the exact bytes, expiry, replay, and the peer ID derivation."""

from __future__ import annotations

import random

import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.id import ID

from protocol import limits
from protocol.codec import decode, encode
from protocol.envelope import EnvelopeWire, ReplayGuard, SignedWire, open_envelope, seal
from protocol.errors import ExpiredError, RemoteProtocolError, ReplayError, SignatureError
from protocol.identity import Identity, peer_id_from_public_key, public_key_from_peer_id
from protocol.messages import CapacityAd

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
