"""The signed envelope every application message travels in, and the replay guard.

I/O: none. Time: ``now_ms`` argument.

Wire form (ADR 0002): ``Envelope = [1, 1, signed, signature]`` where ``signed`` is the canonical
bytes of ``Signed = [2, 1, author, nonce, created_ms, expires_ms, body]`` and ``body`` is the
canonical bytes of the inner message. The signature covers ``signed`` exactly as received: a
receiver verifies the bytes it was given and never re-serialises anything to check them.

A receiver accepts an envelope only when, in this order: it fits the size bound, it parses, the
signature verifies against ``author``, it has not expired, it was not created too far in the
future, its lifetime is within bounds, and (author, nonce) has not been seen before it expires.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import OrderedDict
from typing import Any, Final

from hearth.protocol import limits
from hearth.protocol.codec import decode, decode_as, encode, message
from hearth.protocol.errors import (
    DecodeError,
    ExpiredError,
    LocalProtocolError,
    ReplayError,
    SignatureError,
)
from hearth.protocol.identity import (
    PUBLIC_KEY_BYTES,
    Identity,
    PeerId,
    PublicKey,
    peer_id_from_public_key,
    verify_signature,
)

NONCE_MAX: Final = 2**63 - 1


@message(1)
@dataclasses.dataclass(frozen=True)
class EnvelopeWire:
    signed: bytes
    signature: bytes


@message(2)
@dataclasses.dataclass(frozen=True)
class SignedWire:
    author: bytes
    nonce: int
    created_ms: int
    expires_ms: int
    body: bytes


@dataclasses.dataclass(frozen=True)
class Envelope:
    """An opened, verified envelope: who said what, when, and until when it holds."""

    author: PublicKey
    nonce: int
    created_ms: int
    expires_ms: int
    body: Any
    body_bytes: bytes
    signed_bytes: bytes
    signature: bytes

    @property
    def peer_id(self) -> PeerId:
        return peer_id_from_public_key(self.author)


def seal(
    identity: Identity,
    body: object,
    *,
    now_ms: int,
    ttl_ms: int,
    rng: random.Random,
) -> bytes:
    """Sign ``body`` as ``identity``; the result is the exact bytes to send."""
    if not 0 < ttl_ms <= limits.ENVELOPE_TTL_MS_MAX:
        raise LocalProtocolError(f"ttl_ms {ttl_ms} outside (0, {limits.ENVELOPE_TTL_MS_MAX}]")
    signed = encode(
        SignedWire(
            author=identity.public_key,
            nonce=rng.randrange(NONCE_MAX),
            created_ms=now_ms,
            expires_ms=now_ms + ttl_ms,
            body=encode(body),
        )
    )
    return encode(EnvelopeWire(signed=signed, signature=identity.sign(signed)))


def open_envelope(
    data: bytes,
    *,
    now_ms: int,
    bytes_max: int = limits.MESSAGE_BYTES_MAX,
    verify: bool = True,
) -> Envelope:
    """Parse and check an envelope; raise a ``RemoteProtocolError`` saying why it is refused.

    ``verify=False`` skips only the signature check, for the largest simulator runs, which say so.
    """
    wire = decode_as(data, EnvelopeWire, bytes_max=bytes_max)
    signed = decode_as(wire.signed, SignedWire, bytes_max=bytes_max)
    if len(signed.author) != PUBLIC_KEY_BYTES:
        raise DecodeError(f"author must be a {PUBLIC_KEY_BYTES}-byte Ed25519 key")
    if verify and not verify_signature(signed.author, wire.signed, wire.signature):
        raise SignatureError("envelope signature does not match its author")
    if signed.expires_ms <= now_ms:
        raise ExpiredError(f"expired {now_ms - signed.expires_ms} ms ago")
    if signed.created_ms > now_ms + limits.CLOCK_SKEW_MS_MAX:
        raise ExpiredError(f"created {signed.created_ms - now_ms} ms in the future")
    lifetime_ms = signed.expires_ms - signed.created_ms
    if not 0 < lifetime_ms <= limits.ENVELOPE_TTL_MS_MAX:
        raise ExpiredError(f"lifetime of {lifetime_ms} ms is out of bounds")
    return Envelope(
        author=PublicKey(signed.author),
        nonce=signed.nonce,
        created_ms=signed.created_ms,
        expires_ms=signed.expires_ms,
        body=decode(signed.body, bytes_max=bytes_max),
        body_bytes=signed.body,
        signed_bytes=wire.signed,
        signature=wire.signature,
    )


class ReplayGuard:
    """Remembers (author, nonce) until the envelope expires; a second sighting is a replay.

    Theory of operation (ADR 0013). Bounded twice: ``entries_max`` in all, and
    ``author_entries_max`` for any one author, so that one identity flooding validly signed
    messages fills its own share and no more. An author at its share has its new envelopes
    refused (``busy``) until its own entries expire; nobody else is affected. When the whole
    cache is full (many authors at once), the heaviest author gives up its oldest entry to an
    author holding fewer, so a fresh author is never refused because of others; only when every
    author holds an equal share is the newcomer refused. Forgetting an entry before it expires
    would let that one envelope be replayed, so it is done only to the author taking the most.
    """

    def __init__(
        self,
        entries_max: int = limits.REPLAY_CACHE_ENTRIES_MAX,
        author_entries_max: int = limits.REPLAY_CACHE_AUTHOR_ENTRIES_MAX,
    ) -> None:
        assert entries_max >= 1 and author_entries_max >= 1
        self._entries_max = entries_max
        self._author_entries_max = min(author_entries_max, entries_max)
        self._seen: dict[tuple[bytes, int], int] = {}  # (author, nonce) -> expires_ms
        self._expiry: list[tuple[int, bytes, int]] = []  # may hold evicted keys: checked on pop
        self._by_author: dict[bytes, OrderedDict[int, None]] = {}  # nonces, oldest first
        self._authors_by_count: dict[int, set[bytes]] = {}
        self._count_max = 0
        self.evicted = 0
        self.refused_busy = 0

    def __len__(self) -> int:
        return len(self._seen)

    def author_entries(self, author: bytes) -> int:
        return len(self._by_author.get(author, ()))

    def has_seen(self, envelope: Envelope, *, now_ms: int) -> bool:
        """Whether (author, nonce) is held and unexpired; changes nothing (the edge check)."""
        expires_ms = self._seen.get((bytes(envelope.author), envelope.nonce))
        return expires_ms is not None and expires_ms > now_ms

    def check(self, envelope: Envelope, *, now_ms: int) -> None:
        """Record the envelope, or raise ``ReplayError`` if it was seen (or no room is fair)."""
        self._forget_expired(now_ms)
        author = bytes(envelope.author)
        key = (author, envelope.nonce)
        if key in self._seen:
            raise ReplayError(f"nonce {envelope.nonce} from this author was already seen")
        held = self.author_entries(author)
        if held >= self._author_entries_max:
            self.refused_busy += 1
            raise ReplayError(
                "replay budget of this author is full; refusing it until its entries expire",
                reason="busy",
            )
        if len(self._seen) >= self._entries_max and not self._evict_from_heaviest(held):
            self.refused_busy += 1
            raise ReplayError("replay cache full; refusing until entries expire", reason="busy")
        self._add(author, envelope.nonce, envelope.expires_ms)

    def _add(self, author: bytes, nonce: int, expires_ms: int) -> None:
        self._seen[(author, nonce)] = expires_ms
        heapq.heappush(self._expiry, (expires_ms, author, nonce))
        nonces = self._by_author.setdefault(author, OrderedDict())
        self._recount(author, len(nonces), len(nonces) + 1)
        nonces[nonce] = None

    def _remove(self, author: bytes, nonce: int) -> None:
        del self._seen[(author, nonce)]
        nonces = self._by_author[author]
        del nonces[nonce]
        self._recount(author, len(nonces) + 1, len(nonces))
        if not nonces:
            del self._by_author[author]

    def _recount(self, author: bytes, old: int, new: int) -> None:
        """Keep authors bucketed by entry count, so the heaviest is found in O(1)."""
        if old:
            bucket = self._authors_by_count[old]
            bucket.discard(author)
            if not bucket:
                del self._authors_by_count[old]
        if new:
            self._authors_by_count.setdefault(new, set()).add(author)
        if new > self._count_max:
            self._count_max = new
        while self._count_max and self._count_max not in self._authors_by_count:
            self._count_max -= 1

    def _evict_from_heaviest(self, held: int) -> bool:
        if self._count_max <= held + 1:
            return False  # every author holds no more than the newcomer would: a fair share
        heaviest = min(self._authors_by_count[self._count_max])  # min: deterministic choice
        oldest = next(iter(self._by_author[heaviest]))
        self._remove(heaviest, oldest)
        self.evicted += 1
        return True

    def _forget_expired(self, now_ms: int) -> None:
        while self._expiry and self._expiry[0][0] <= now_ms:
            expires_ms, author, nonce = heapq.heappop(self._expiry)
            if self._seen.get((author, nonce)) == expires_ms:  # not evicted (or re-added) since
                self._remove(author, nonce)

    def statistics(self) -> dict[str, int]:
        return {
            "entries": len(self._seen),
            "authors": len(self._by_author),
            "author_entries_most": self._count_max,
            "evicted": self.evicted,
            "refused_busy": self.refused_busy,
        }
