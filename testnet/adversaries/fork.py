"""The ``fork`` adversary: works honestly, and keeps gossiping a head that contradicts its own.

Time: the node's Clock (through the plug-in context) for the entry and the envelope, and trio's
clock for the interval, so a test on a virtual clock drives it instantly.
"""

from __future__ import annotations

import contextlib
from typing import Final

import trio

from hearth.ledger.audit import HeadGossip
from hearth.ledger.base import LedgerBase
from hearth.ledger.entry import Kind, MismatchBody, sign_entry
from hearth.node.plugins import PluginContext
from hearth.p2p.transport import TransportError
from hearth.protocol.heads import HEADS_TTL_MS
from hearth.protocol.identity import Identity
from hearth.protocol.messages import TOPIC_HEADS
from hearth.testnet.adversaries.results import Honest

FORK_GOSSIP_INTERVAL_S: Final = 10.0


def forked_head(ledger: LedgerBase, identity: Identity, now_ms: int) -> bytes:
    """A second entry at the head's seq that contradicts the real one (never stored)."""
    head = ledger.entry_at(ledger.head().seq)
    body = MismatchBody(job_id=b"fork", worker=identity.public_key, evidence_hashes=())
    twin = sign_entry(identity, seq=head.seq, prev_hash=head.prev_hash, kind=Kind.MISMATCH,
                      body=body, created_ms=max(now_ms, head.created_ms + 1))  # fmt: skip
    return twin.wire


class Forker(Honest):
    name = "fork"

    async def run(self, context: PluginContext) -> None:
        engine = context.engine
        while True:
            now_ms = context.clock.now_ms()
            gossip = HeadGossip(forked_head(context.ledger, engine.identity, now_ms))
            data = engine.seal(gossip, now_ms=now_ms, ttl_ms=HEADS_TTL_MS)
            with contextlib.suppress(TransportError):
                await context.transport.publish(TOPIC_HEADS, data)
            await trio.sleep(FORK_GOSSIP_INTERVAL_S)
