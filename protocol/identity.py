"""One Ed25519 key per node: it signs every message and ledger entry, and names the libp2p peer.

I/O: none. Key generation from OS entropy happens in node/; here a key comes from its 32-byte seed.
The libp2p peer ID is derived exactly as libp2p does it for Ed25519 keys: the protobuf-encoded
public key (KeyType=Ed25519, Data=key) wrapped in an identity multihash, in base58btc.
"""

from __future__ import annotations

import functools
from typing import Final, NewType

import nacl.bindings
import nacl.exceptions
import nacl.signing

from hearth.protocol.errors import LocalProtocolError

PeerId = NewType("PeerId", str)  # base58btc, "12D3KooW..." for Ed25519 keys
PublicKey = NewType("PublicKey", bytes)  # 32 raw Ed25519 bytes: the author field everywhere

PUBLIC_KEY_BYTES: Final = 32
SIGNATURE_BYTES: Final = 64
SEED_BYTES: Final = 32

# protobuf PublicKey{Type: Ed25519(=1), Data: <32 bytes>} then multihash identity (code 0, len 36)
_PROTOBUF_ED25519_PREFIX: Final = b"\x08\x01\x12\x20"
_IDENTITY_MULTIHASH_PREFIX: Final = b"\x00\x24"
_B58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rem = divmod(number, 58)
        out.append(_B58_ALPHABET[rem])
    leading_zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * leading_zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        index = _B58_ALPHABET.find(char)
        if index < 0:
            raise ValueError(f"not base58: {char!r}")
        number = number * 58 + index
    leading_zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * leading_zeros + body


# Every received envelope names its author by key; base58 costs more than the rest of opening a
# small message, so the IDs of recently seen authors are kept (bounded, pure).
@functools.lru_cache(maxsize=1 << 17)
def peer_id_from_public_key(public_key: bytes) -> PeerId:
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise LocalProtocolError(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    return PeerId(_b58encode(_IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX + public_key))


def public_key_from_peer_id(peer_id: str) -> PublicKey:
    """Invert ``peer_id_from_public_key``; raises ValueError for IDs that are not Ed25519."""
    raw = _b58decode(peer_id)
    prefix = _IDENTITY_MULTIHASH_PREFIX + _PROTOBUF_ED25519_PREFIX
    if len(raw) != len(prefix) + PUBLIC_KEY_BYTES or not raw.startswith(prefix):
        raise ValueError(f"not an Ed25519 peer ID: {peer_id}")
    return PublicKey(raw[len(prefix) :])


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``public_key``'s Ed25519 signature of exactly ``message``."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError, ValueError):
        return False
    return True


class Identity:
    """A node's signing key. The same key is the libp2p identity and the ledger author."""

    __slots__ = ("_signing_key", "peer_id", "public_key")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise LocalProtocolError(f"identity seed must be 32 bytes, got {len(seed)}")
        self._signing_key = nacl.signing.SigningKey(seed)
        self.public_key = PublicKey(bytes(self._signing_key.verify_key))
        self.peer_id = peer_id_from_public_key(self.public_key)

    @property
    def seed(self) -> bytes:
        return bytes(self._signing_key)

    def sign(self, message: bytes) -> bytes:
        signature = self._signing_key.sign(message).signature
        assert len(signature) == SIGNATURE_BYTES
        return bytes(signature)

    def __repr__(self) -> str:
        return f"Identity({self.peer_id})"
