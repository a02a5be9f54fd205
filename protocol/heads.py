"""Ledger heads gossip: expose forks, keep the proof, spread it, and refuse the forker.

I/O: none. It stages proofs in the engine's ``ChainView``; the shell commits them (ADR 0019).
Time: now_ms.

Theory of operation
-------------------
Every ``HEADS_INTERVAL_MS`` a node whose chain grew gossips the entries it committed since its
last gossip (at most ``HEADS_CATCHUP_MAX``), then its head, on ``hearth/heads/1``, so that a
peer sees each entry's successor. A head is then repeated at growing gaps: one interval after
it was gossiped, then two, four, ... up to ``HEADS_REFRESH_MS`` (Trickle, RFC 6206): a peer
that missed a fresh head (a lost message, a restart) has it again within seconds, and a head
that has not moved for minutes, which is all an idle network has to say, goes out once per
``HEADS_REFRESH_MS``, for peers met since. Repeating every head every 10 s was five in six of
all gossip messages of 50 idle nodes (issue 14, ADR 0032).

Each node remembers the entries it saw per (author, seq) in a bounded ``ForkWatch``. Two validly
signed entries with one author and one seq, or an entry and one at the next seq that does not link
to it, are a fork: a proof that needs no context (ADR 0030: a forker that showed a twin of its head
to one peer and then moved on is convicted by that peer when the real successor arrives). The node
records it in its own ledger (a fork-evidence entry, so the refusal survives restarts), refuses the
author in the engine from then on, and gossips the proof so that nodes which saw only one of the two
entries refuse the author too.

What must never happen: an author refused on a forged proof (every proof is verified first), or
a forker's messages acted on after its proof was recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from hearth.ledger.audit import HeadGossip
from hearth.ledger.entry import ForkProof, parse_entry
from hearth.ledger.errors import ChainError, ForkProofError
from hearth.ledger.proofs import ForkWatch, verify_fork_proof
from hearth.protocol.effects import Log, Publish, SetTimer
from hearth.protocol.envelope import Envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.identity import PeerId, PublicKey, peer_id_from_public_key, verify_signature
from hearth.protocol.messages import TOPIC_HEADS
from hearth.protocol.timers import HeadsTimer, TimerKey

if TYPE_CHECKING:
    from hearth.ledger.view import ChainView
    from hearth.protocol.effects import Effect
    from hearth.protocol.engine import Engine, MessageHandler

HEADS_INTERVAL_MS: Final = 10_000
# The longest gap between two repeats of a head that has not moved (ADR 0032, fourth amendment):
# the capacity ad's life, the other keep-alive that a newcomer waits for.
HEADS_REFRESH_MS: Final = 180_000
HEADS_TTL_MS: Final = 60_000
HEADS_CATCHUP_MAX: Final = 16  # entries gossiped per interval besides the head


class HeadsComponent:
    name = "heads"

    def __init__(self, engine: Engine, ledger: ChainView) -> None:
        self._engine = engine
        self.ledger = ledger
        self.watch = ForkWatch()
        self.forks_detected = 0
        self._gossiped_seq = -1  # the last own entry gossiped in this life
        self._repeat_gap_ms = HEADS_INTERVAL_MS  # doubles at each repeat of an unmoved head
        self._repeat_at_ms = 0  # when the head is due again
        for author in sorted(ledger.state.refused):
            engine.refused_authors.add(PublicKey(author))

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        channel = frozenset({TOPIC_HEADS})
        return {HeadGossip: (channel, self._on_head), ForkProof: (channel, self._on_proof)}

    def on_started(self, now_ms: int) -> list[Effect]:
        return self._publish_head(now_ms)

    def on_timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        assert isinstance(key, HeadsTimer), key
        return self._publish_head(now_ms)

    def _publish_head(self, now_ms: int) -> list[Effect]:
        # Only durable entries are gossiped: one taken back and signed anew would read as a fork.
        # A head that moved goes with the entries since the last gossip before it, oldest first,
        # so that a twin shown to a peer meets its real successor; one that did not is repeated
        # when due, at gaps that double from one heads interval to `HEADS_REFRESH_MS`.
        head_seq = self.ledger.committed_seq
        timer = SetTimer(HeadsTimer(), now_ms + HEADS_INTERVAL_MS)
        if head_seq == self._gossiped_seq:
            if now_ms < self._repeat_at_ms:
                return [timer]
            self._repeat_gap_ms = min(2 * self._repeat_gap_ms, HEADS_REFRESH_MS)
        else:
            self._repeat_gap_ms = HEADS_INTERVAL_MS
        self._repeat_at_ms = now_ms + self._repeat_gap_ms
        first = head_seq if self._gossiped_seq < 0 else self._gossiped_seq + 1
        first = min(head_seq, max(first, head_seq - HEADS_CATCHUP_MAX))
        self._gossiped_seq = head_seq
        effects: list[Effect] = []
        for seq in range(first, head_seq + 1):
            wire = self.ledger.entry_at(seq).wire
            data = self._engine.seal(HeadGossip(wire), now_ms=now_ms, ttl_ms=HEADS_TTL_MS)
            effects.append(Publish(TOPIC_HEADS, data))
        effects.append(timer)
        return effects

    def _on_head(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        try:
            entry = parse_entry(envelope.body.entry)
        except ChainError as exc:
            raise RemoteProtocolError(f"head does not parse: {exc}", reason=exc.reason) from None
        if not verify_signature(entry.author, entry.signed, entry.signature):
            raise RemoteProtocolError("head is not signed by its author", reason="bad-head")
        proof = self.watch.observe(entry)
        if proof is None:
            return []
        return self._convict(proof, now_ms, gossip=True)

    def _on_proof(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        try:
            verify_fork_proof(envelope.body)
        except ForkProofError as exc:
            raise RemoteProtocolError(str(exc), reason="bad-fork-proof") from None
        return self._convict(envelope.body, now_ms, gossip=False)

    def _convict(self, proof: ForkProof, now_ms: int, *, gossip: bool) -> list[Effect]:
        author = verify_fork_proof(proof)
        if author == self._engine.identity.public_key or author in self._engine.refused_authors:
            return []
        self._engine.refused_authors.add(author)
        self.forks_detected += 1
        effects: list[Effect] = [
            Log("warning", "fork-detected", (("author", peer_id_from_public_key(author)),))
        ]
        if self.ledger.record_fork(proof, now_ms=now_ms):
            self._engine.after_commit(self.ledger.head().seq, None, _not_recorded)
        if gossip:
            # Spread the proof itself: nodes that saw only one of the two heads can check it alone.
            data = self._engine.seal(proof, now_ms=now_ms, ttl_ms=HEADS_TTL_MS)
            effects.append(Publish(TOPIC_HEADS, data))
        return effects


def _not_recorded(reason: str, now_ms: int) -> list[Effect]:
    """The author stays refused in memory; a restart forgets it unless the proof comes again."""
    return [Log("error", "fork-not-recorded", (("reason", reason),))]
