"""Deliberate misbehaviour for research testnets: a node told to cheat, cheats in a known way.

Only a testnet launcher writes ``adversary.toml`` into a node's data directory; a node without
that file is honest. The behaviours are the ones the verification and auction rules must defeat:

- ``wrong-result``: returns a corrupted output (its own, so two liars disagree with each other);
- ``collude``: returns the same wrong output as every other colluder, to try to win the vote;
- ``lazy``: skips the work and returns a guess, as a worker that hopes it is not checked would;
- ``stall``: accepts awards and never delivers, as a bid spammer holding replicas hostage does;
- ``fork``: works honestly but also signs a second, contradicting entry at its ledger's head and
  gossips it, as a node showing different histories to different peers would.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import tomllib
from pathlib import Path

import trio

from ledger.audit import HeadGossip
from ledger.base import LedgerBase
from ledger.entry import Kind, MismatchBody, sign_entry
from node.commands.common import CommandError
from p2p.transport import Transport, TransportError
from protocol.effects import RunJob
from protocol.engine import Engine
from protocol.heads import HEADS_TTL_MS
from protocol.identity import Identity
from protocol.messages import TOPIC_HEADS

ADVERSARY_FILE = "adversary.toml"
BEHAVIOURS = ("honest", "wrong-result", "collude", "lazy", "stall", "fork")
FORK_GOSSIP_INTERVAL_S = 10.0


class Adversary:
    def __init__(self, behaviour: str = "honest", secret: bytes = b"") -> None:
        if behaviour not in BEHAVIOURS:
            raise CommandError(f"{ADVERSARY_FILE}: behaviour must be one of {list(BEHAVIOURS)}")
        self.behaviour = behaviour
        self._secret = secret

    @property
    def honest(self) -> bool:
        return self.behaviour == "honest"

    @property
    def delivers(self) -> bool:
        return self.behaviour != "stall"

    def output(self, run: RunJob, honest_output: bytes) -> bytes:
        """What this node claims the job produced."""
        if self.behaviour == "wrong-result":
            return b"wrong:" + hashlib.sha256(self._secret + honest_output).digest()
        if self.behaviour == "collude":
            # Every colluder derives the same lie from the job alone.
            return b"agreed:" + hashlib.sha256(run.module_hash + run.input_hash).digest()
        if self.behaviour == "lazy":
            return b""
        return honest_output


def forked_head(ledger: LedgerBase, identity: Identity, now_ms: int) -> bytes:
    """A second entry at the head's seq that contradicts the real one (never stored)."""
    head = ledger.entry_at(ledger.head().seq)
    body = MismatchBody(job_id=b"fork", worker=identity.public_key, evidence_hashes=())
    twin = sign_entry(identity, seq=head.seq, prev_hash=head.prev_hash, kind=Kind.MISMATCH,
                      body=body, created_ms=max(now_ms, head.created_ms + 1))  # fmt: skip
    return twin.wire


async def gossip_forks(ledger: LedgerBase, engine: Engine, transport: Transport) -> None:
    """The ``fork`` behaviour: keep gossiping a contradicting head beside the real one."""
    while True:
        now_ms = time.time_ns() // 1_000_000
        gossip = HeadGossip(forked_head(ledger, engine.identity, now_ms))
        data = engine.seal(gossip, now_ms=now_ms, ttl_ms=HEADS_TTL_MS)
        with contextlib.suppress(TransportError):
            await transport.publish(TOPIC_HEADS, data)
        await trio.sleep(FORK_GOSSIP_INTERVAL_S)


def load(home: Path, secret: bytes) -> Adversary:
    path = home / ADVERSARY_FILE
    if not path.exists():
        return Adversary()
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"{path}: not valid TOML ({exc})") from None
    return Adversary(str(raw.get("behaviour", "honest")), secret)
