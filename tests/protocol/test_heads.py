"""Forks: two signed heads with one seq convict their author, everywhere the proof reaches."""

from __future__ import annotations

import itertools
import random

from hearth.ledger.audit import HeadGossip
from hearth.ledger.entry import ForkProof, Kind, parse_entry
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.codec import decode, decode_as
from hearth.protocol.effects import Log, Penalise, Publish
from hearth.protocol.envelope import EnvelopeWire, SignedWire, seal
from hearth.protocol.events import MessageReceived, Started
from hearth.protocol.heads import HEADS_INTERVAL_MS, HEADS_REFRESH_MS
from hearth.protocol.identity import Identity
from hearth.protocol.messages import TOPIC_HEADS
from hearth.testnet.sim.faults import forged_heads
from tests.protocol.harness import T0_MS, Cluster, Node, step_committing


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
    assert len(heads) >= 4 * 3  # each: the head at start, repeated after 10 s and 30 s
    assert all(not n.engine.refused_authors for n in cluster.nodes)
    # Every committed entry was gossiped (the head and those since the last gossip: ADR 0030).
    for node in cluster.nodes:
        assert node.ledger is not None
        seqs = []
        for _, effect in node.effects:
            if isinstance(effect, Publish) and effect.topic == TOPIC_HEADS:
                seqs.append(_head_seq(effect.data))
        assert sorted(set(seqs)) == list(range(node.ledger.committed_seq + 1))
    assert cluster.nodes[3].ledger is not None and cluster.nodes[3].ledger.committed_seq >= 2


def test_a_forker_that_moves_on_is_convicted_by_the_peer_that_holds_its_twin() -> None:
    """The forker shows one peer a twin of its head, then commits several entries before its
    next gossip: that peer never sees another entry at the twin's seq, but the gossip carries
    the real successor, which does not link to the twin (ADR 0030)."""
    cluster = Cluster(4, ledgers=True)
    forker, watcher = cluster.nodes[0], cluster.nodes[1].engine
    for node in cluster.nodes:
        cluster.inject(node.index, Started())
    ledger = forker.ledger
    assert ledger is not None
    first = cluster.publish_job(0, b"\0asm fake module", b"hello")
    cluster.run_until(lambda: ledger.committed_seq > 0)  # the heads of 0 s said seq 0
    twin_seq = ledger.committed_seq
    _, twin = forged_heads(ledger)
    data = gossip(forker.engine.identity, HeadGossip(twin), cluster.now_ms, 1)
    cluster.inject(1, MessageReceived(forker.peer_id, TOPIC_HEADS, data))
    job_id = cluster.publish_job(0, b"\0asm fake module", b"again")
    cluster.run_until(lambda: cluster.finished(0, first)() and cluster.finished(0, job_id)())
    assert ledger.committed_seq > twin_seq + 1  # the forker moved on by several entries
    assert forker.engine.identity.public_key not in watcher.refused_authors  # not yet
    cluster.run_for(2 * HEADS_INTERVAL_MS)
    assert forker.engine.identity.public_key in watcher.refused_authors
    for other in cluster.nodes[2:]:  # the proof spread to nodes that never saw the twin
        assert forker.engine.identity.public_key in other.engine.refused_authors


def _head_seq(data: bytes) -> int:
    body = decode(decode_as(decode_as(data, EnvelopeWire).signed, SignedWire).body)
    return parse_entry(body.entry).seq


def _heads_published(node: Node, since_ms: int) -> list[int]:
    """The times at which ``node`` gossiped on the heads topic from ``since_ms`` on."""
    return [
        at_ms
        for at_ms, effect in node.effects
        if at_ms >= since_ms and isinstance(effect, Publish) and effect.topic == TOPIC_HEADS
    ]


def test_an_unmoved_head_is_repeated_at_doubling_gaps_up_to_the_refresh_interval() -> None:
    """A settled head carries no news (issue 14: at 50 idle nodes the repeats every 10 s were
    five in six of all gossip messages); a fresh one is repeated within seconds, so that a peer
    that missed it has it while it is news (ADR 0030)."""
    cluster = Cluster(4, ledgers=True)
    for node in cluster.nodes:
        cluster.inject(node.index, Started())
    cluster.run_for(0)
    idle = cluster.nodes[2]
    started_ms = cluster.now_ms
    cluster.run_for(4 * HEADS_REFRESH_MS)
    published = _heads_published(idle, started_ms)
    gaps_ms = [later - earlier for earlier, later in itertools.pairwise(published)]
    assert published[0] == started_ms
    doubling = [HEADS_INTERVAL_MS * 2**i for i in range(5)]  # 10, 20, 40, 80, 160 s
    assert all(gap < HEADS_REFRESH_MS for gap in doubling)
    assert gaps_ms[:5] == doubling
    assert gaps_ms[5:] == [HEADS_REFRESH_MS] * (len(gaps_ms) - 5)
    assert len(gaps_ms) >= 7  # settled: once per refresh interval, at least twice
    # A node whose chain moves gossips it at the next tick, however long its head had settled.
    publisher = cluster.nodes[0]
    ledger = publisher.ledger
    assert ledger is not None
    seq_before = ledger.committed_seq
    cluster.publish_job(0, b"\0asm fake module", b"hello")
    cluster.run_until(lambda: ledger.committed_seq > seq_before)
    moved_ms, moved_seq = cluster.now_ms, ledger.committed_seq
    cluster.run_for(HEADS_INTERVAL_MS)
    seqs = [
        _head_seq(e.data)
        for at_ms, e in publisher.effects
        if moved_ms <= at_ms <= moved_ms + HEADS_INTERVAL_MS
        and isinstance(e, Publish) and e.topic == TOPIC_HEADS
    ]  # fmt: skip
    assert moved_seq in seqs
