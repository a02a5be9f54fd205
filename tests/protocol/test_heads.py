"""Forks: two signed heads with one seq convict their author, everywhere the proof reaches."""

from __future__ import annotations

import random

from hearth.ledger.audit import HeadGossip
from hearth.ledger.entry import ForkProof, Kind
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.effects import Log, Penalise, Publish
from hearth.protocol.envelope import seal
from hearth.protocol.events import MessageReceived, Started
from hearth.protocol.identity import Identity
from hearth.protocol.messages import TOPIC_HEADS
from tests.protocol.harness import T0_MS, Cluster, step_committing


def forked_heads(identity: Identity) -> tuple[bytes, bytes]:
    """Two different genesis entries (seq 0) signed by one key: the simplest fork."""
    first = MemoryLedger(identity, now_ms=T0_MS)
    second = MemoryLedger(identity, now_ms=T0_MS + 1)
    return first.entry_at(0).wire, second.entry_at(0).wire


def gossip(identity: Identity, body: object, now_ms: int, tag: int) -> bytes:
    return seal(identity, body, now_ms=now_ms, ttl_ms=60_000, rng=random.Random(tag))


def test_two_heads_with_one_seq_convict_the_author_who_is_then_refused() -> None:
    cluster = Cluster(3, ledgers=True)
    forker = cluster.nodes[0]
    watcher, store = cluster.nodes[1].engine, cluster.nodes[1].ledger
    assert store is not None
    head_a, head_b = forked_heads(forker.engine.identity)
    now_ms = cluster.now_ms
    for tag, head in enumerate((head_a, head_b)):
        data = gossip(forker.engine.identity, HeadGossip(head), now_ms, tag)
        event = MessageReceived(forker.peer_id, TOPIC_HEADS, data)
        effects = step_committing(watcher.step, store, event, now_ms)
    assert forker.engine.identity.public_key in watcher.refused_authors
    assert any(isinstance(e, Log) and e.event == "fork-detected" for e in effects)
    [proof_gossip] = [e for e in effects if isinstance(e, Publish)]
    assert watcher.payments is not None
    assert Kind.FORK_EVIDENCE in [e.kind for e in store.entries()]  # committed
    # The gossiped proof alone convinces a node that saw neither head.
    third = cluster.nodes[2].engine
    third.step(MessageReceived(cluster.nodes[1].peer_id, TOPIC_HEADS, proof_gossip.data), now_ms)
    assert forker.engine.identity.public_key in third.refused_authors
    # From then on the forker's messages are dropped.
    later = gossip(forker.engine.identity, HeadGossip(head_a), now_ms + 1, 9)
    refused = third.step(MessageReceived(forker.peer_id, TOPIC_HEADS, later), now_ms + 1)
    assert ("reason", "refused-author") in refused[0].fields


def test_a_forged_proof_convicts_nobody_and_costs_its_sender() -> None:
    cluster = Cluster(3, ledgers=True)
    victim, liar = cluster.nodes[0], cluster.nodes[2]
    honest_head = MemoryLedger(victim.engine.identity, now_ms=T0_MS).entry_at(0).wire
    other_head = MemoryLedger(liar.engine.identity, now_ms=T0_MS).entry_at(0).wire
    forged = ForkProof(*sorted((honest_head, other_head)))
    data = gossip(liar.engine.identity, forged, cluster.now_ms, 1)
    effects = cluster.nodes[1].engine.step(
        MessageReceived(liar.peer_id, TOPIC_HEADS, data), cluster.now_ms
    )
    assert victim.engine.identity.public_key not in cluster.nodes[1].engine.refused_authors
    assert any(isinstance(e, Penalise) and e.reason == "bad-fork-proof" for e in effects)


def test_honest_heads_are_gossiped_and_convict_nobody() -> None:
    cluster = Cluster(4, ledgers=True)
    for node in cluster.nodes:
        cluster.inject(node.index, Started())
    job_id = cluster.publish_job(3, b"\0asm fake module", b"hello")
    cluster.run_until(cluster.finished(3, job_id))
    cluster.run_for(60_000)
    heads = [e for n in cluster.nodes for _, e in n.effects
             if isinstance(e, Publish) and e.topic == TOPIC_HEADS]  # fmt: skip
    assert len(heads) >= 4 * 6
    assert all(not n.engine.refused_authors for n in cluster.nodes)
