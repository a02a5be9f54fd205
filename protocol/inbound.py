"""The edge check of an inbound message: may it enter the node (and, for gossip, travel on)?

I/O: none. Time: ``now_ms`` argument.

Theory of operation (ADR 0021). ``check_inbound`` runs the engine's admission checks on the
bytes alone, in the order the engine applies them: size and envelope (encoding, signature,
expiry), refused author, channel, replay. It changes no state: the replay guard is only asked
whether it has seen (author, nonce), and the engine records the nonce when it takes the message.
So the shell can run it before a message costs anything downstream: py-libp2p's gossipsub runs
it as the topic validator, before the message is forwarded to other peers, and the stream server
runs it before queueing a frame for the engine. The engine runs it again on what reaches it,
so a message that bypassed the edge (the simulator, a test, a future transport) is refused the
same way; a shell that passed the edge says so (``MessageReceived.verified``) and the engine
skips only the signature, the one costly step, which cannot change between the two checks.

The verdict follows gossipsub v1.1: ``REJECT`` when the message is invalid for anyone (bad bytes,
bad signature, a type on the wrong channel) and whoever sent it is at fault; ``IGNORE`` when it is
merely of no use to us now (expired, seen before, from an author we refuse) and the sender may be
honest; both are dropped and never forwarded.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from hearth.protocol import limits
from hearth.protocol.envelope import Envelope, open_envelope
from hearth.protocol.errors import RemoteProtocolError, ReplayError
from hearth.protocol.identity import PublicKey

if TYPE_CHECKING:
    from hearth.protocol.envelope import ReplayGuard


class Verdict(enum.Enum):
    ACCEPT = "accept"
    IGNORE = "ignore"  # drop, do not forward, do not blame the sender
    REJECT = "reject"  # drop, do not forward, the sender is at fault


# Reasons that say nothing against the peer that delivered the message: see the module docstring.
IGNORED_REASONS = frozenset({"expired", "replay", "busy", "refused-author"})


@dataclasses.dataclass(frozen=True)
class InboundRules:
    """What the edge check reads. The engine owns the objects; the check never changes them."""

    channels_by_type: Mapping[type, frozenset[str]]
    refused_authors: frozenset[PublicKey] | set[PublicKey]
    replay_guard: ReplayGuard
    owed: Callable[[object], bool]  # a body a refused author may still send us (it settles a debt)
    verify_signatures: bool = True
    bytes_max: int = limits.MESSAGE_BYTES_MAX


@dataclasses.dataclass(frozen=True)
class InboundCheck:
    """The outcome: the opened envelope when accepted, else the error saying why not."""

    verdict: Verdict
    envelope: Envelope | None = None
    error: RemoteProtocolError | None = None

    @property
    def reason(self) -> str:
        return "" if self.error is None else self.error.reason


def check_inbound(
    data: bytes, channel: str, *, now_ms: int, rules: InboundRules, verified: bool = False
) -> InboundCheck:
    """Check ``data`` arriving on ``channel``; never raises for anything a peer can send.

    ``verified``: the shell already checked these exact bytes' signature at the edge.
    """
    try:
        envelope = open_envelope(
            data,
            now_ms=now_ms,
            bytes_max=rules.bytes_max,
            verify=rules.verify_signatures and not verified,
        )
        if envelope.author in rules.refused_authors and not rules.owed(envelope.body):
            raise RemoteProtocolError("author is refused", reason="refused-author")
        channels = rules.channels_by_type.get(type(envelope.body))
        if channels is None or channel not in channels:
            raise RemoteProtocolError(
                f"{type(envelope.body).__name__} on {channel}", reason="wrong-channel"
            )
        if rules.replay_guard.has_seen(envelope, now_ms=now_ms):
            raise ReplayError(f"nonce {envelope.nonce} from this author was already seen")
    except RemoteProtocolError as exc:
        verdict = Verdict.IGNORE if exc.reason in IGNORED_REASONS else Verdict.REJECT
        return InboundCheck(verdict, error=exc)
    return InboundCheck(Verdict.ACCEPT, envelope=envelope)
