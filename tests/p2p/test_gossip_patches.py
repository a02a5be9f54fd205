"""The idle-cost fixes to py-libp2p's gossipsub (p2p/patches/gossipsub.py, ADR 0032)."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.envelope import unmarshal_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub import gossipsub as upstream_gossipsub
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2

from hearth.p2p.gossip import (
    GOSSIP_MESSAGES_PER_S_PER_PEER_TOPIC_MAX,
    GOSSIP_PROTOCOLS,
    MESH_DEGREE,
    MESH_DEGREE_HIGH,
    MESH_DEGREE_LOW,
    router_settings,
)
from hearth.p2p.patches import gossipsub as patch
from hearth.p2p.patches.gossipsub import HearthGossipSub, OwnRecordMemo, RecordMemo

TOPIC = "hearth/capacity/1"


def peer(seed: int) -> ID:
    return ID.from_pubkey(create_new_key_pair(bytes([seed]) * 32).public_key)


def rpc_with_record(record: bytes) -> rpc_pb2.RPC:
    rpc = rpc_pb2.RPC()
    rpc.senderRecord = record
    return rpc


def router(cls: type[GossipSub], own: ID, peers: list[ID]) -> Any:
    gossip = cls(**router_settings(heartbeat_s=1))
    gossip.pubsub = SimpleNamespace(my_id=own, peer_topics={TOPIC: set(peers)})
    gossip.mesh[TOPIC] = set(peers)
    for p in peers:
        gossip.peer_protocol[p] = TProtocol(GOSSIP_PROTOCOLS[0])
    return gossip


def test_a_peer_record_is_checked_once_until_it_changes() -> None:
    checked: list[bytes] = []

    def consume(msg: rpc_pb2.RPC, host: Any, peer_id: ID) -> bool:
        checked.append(msg.senderRecord)
        return msg.senderRecord != b"forged"

    memo = RecordMemo(consume)
    alice, bob = peer(1), peer(2)
    for _ in range(5):
        assert memo(rpc_with_record(b"alice-v1"), None, alice)  # type: ignore[arg-type]
    assert checked == [b"alice-v1"] and memo.skipped == 4
    assert memo(rpc_with_record(b"alice-v1"), None, bob)  # type: ignore[arg-type]
    assert memo(rpc_with_record(b"alice-v2"), None, alice)  # type: ignore[arg-type]
    assert checked == [b"alice-v1", b"alice-v1", b"alice-v2"]
    # A record that fails is never remembered: each copy is checked (and refused) again.
    assert not memo(rpc_with_record(b"forged"), None, alice)  # type: ignore[arg-type]
    assert not memo(rpc_with_record(b"forged"), None, alice)  # type: ignore[arg-type]
    assert checked.count(b"forged") == 2
    # An RPC without a record has nothing to check.
    assert memo(rpc_pb2.RPC(), None, alice)  # type: ignore[arg-type]


def test_a_remembered_record_is_consumed_again_after_the_recheck_interval() -> None:
    calls = []
    memo = RecordMemo(lambda msg, host, peer_id: calls.append(1) is None)
    alice = peer(1)
    memo(rpc_with_record(b"r"), None, alice)  # type: ignore[arg-type]
    memo._accepted[alice] = (b"r", time.monotonic() - patch.PEER_RECORD_RECHECK_S - 1)
    memo(rpc_with_record(b"r"), None, alice)  # type: ignore[arg-type]
    assert len(calls) == 2


def test_our_own_record_is_looked_up_once_per_reuse_interval() -> None:
    host = new_host(key_pair=create_new_key_pair(b"\x01" * 32))
    issued: list[bytes] = []

    def issue(h: Any) -> tuple[bytes, bool]:
        record, fresh = env_to_send_in_RPC(h)
        issued.append(record)
        return record, fresh

    memo = OwnRecordMemo(issue)
    first = memo(host)[0]
    assert [memo(host)[0] for _ in range(50)] == [first] * 50
    assert issued == [first]  # one look-up of the host's addresses, not one per RPC
    assert unmarshal_envelope(first).record().peer_id == host.get_id()
    memo._last[host] = (first, time.monotonic() - patch.OWN_RECORD_REUSE_S - 1)
    memo(host)
    assert len(issued) == 2
    patch.install()
    assert upstream_gossipsub.env_to_send_in_RPC is patch._own_record


def test_a_heartbeat_prune_sets_a_backoff_so_the_peer_is_not_grafted_again_at_once() -> None:
    own = peer(0)
    peers = [peer(i) for i in range(1, MESH_DEGREE_HIGH + 4)]
    # Upstream prunes down to D without a backoff (the GRAFT-flood cascade of ADR 0032).
    upstream = router(GossipSub, own, peers)
    _, pruned_upstream = upstream.mesh_heartbeat()
    assert len(pruned_upstream) == len(peers) - MESH_DEGREE
    assert not any(upstream._check_back_off(p, TOPIC) for p in pruned_upstream)

    fixed = router(HearthGossipSub, own, peers)
    _, pruned = fixed.mesh_heartbeat()
    assert len(pruned) == len(peers) - MESH_DEGREE
    assert all(fixed._check_back_off(p, TOPIC) for p in pruned)
    # Below D_lo, the next heartbeat grafts only peers it did not just prune.
    fixed.mesh[TOPIC] = set(list(fixed.mesh[TOPIC])[: MESH_DEGREE_LOW - 1])
    grafted, _ = fixed.mesh_heartbeat()
    assert not set(grafted) & set(pruned)


def test_own_publications_are_never_rate_limited_and_others_are_at_the_set_limit() -> None:
    own, other = peer(0), peer(1)
    gossip = router(HearthGossipSub, own, [other])
    message = rpc_pb2.Message(data=b"ad", topicIDs=[TOPIC])
    burst = GOSSIP_MESSAGES_PER_S_PER_PEER_TOPIC_MAX + 50
    assert all(gossip._check_spam_protection(own, message) for _ in range(burst))
    accepted = sum(gossip._check_spam_protection(other, message) for _ in range(burst))
    assert accepted == GOSSIP_MESSAGES_PER_S_PER_PEER_TOPIC_MAX


def test_idontwant_goes_out_only_for_large_messages_of_others() -> None:
    own, other = peer(0), peer(1)
    gossip = router(HearthGossipSub, own, [other])
    sent: list[bytes] = []

    async def emit_idontwant(ids: list[bytes], to: ID) -> None:
        sent.extend(ids)

    gossip.emit_idontwant = emit_idontwant
    gossip.pubsub.get_message_id = lambda m: m.data[:8]
    gossip.pubsub.host = SimpleNamespace()
    gossip.pubsub.peers = {}
    gossip._get_peers_to_send = lambda *a, **k: iter(())
    small = rpc_pb2.Message(data=b"s" * 100, topicIDs=[TOPIC], from_id=other.to_bytes(), seqno=b"1")
    large = rpc_pb2.Message(
        data=b"L" * patch.IDONTWANT_MESSAGE_BYTES_MIN,
        topicIDs=[TOPIC],
        from_id=other.to_bytes(),
        seqno=b"2",
    )
    mine = rpc_pb2.Message(
        data=b"M" * patch.IDONTWANT_MESSAGE_BYTES_MIN, topicIDs=[TOPIC], from_id=own.to_bytes()
    )

    import trio

    async def run() -> None:
        for message, forwarder in ((small, other), (large, other), (mine, own)):
            await gossip.publish(forwarder, message)

    trio.run(run)
    assert sent == [b"L" * 8]


def test_own_messages_flood_to_every_topic_peer_and_forwarded_ones_go_to_the_mesh() -> None:
    own, mesh_peer, pruned = peer(0), peer(1), [peer(i) for i in range(2, 6)]
    gossip = router(HearthGossipSub, own, [mesh_peer, *pruned])
    gossip.mesh[TOPIC] = {mesh_peer}
    everyone = {mesh_peer, *pruned}
    assert set(gossip._get_peers_to_send([TOPIC], own, own)) == everyone
    author = pruned[0]
    assert set(gossip._get_peers_to_send([TOPIC], author, author)) == {mesh_peer}
    upstream = router(GossipSub, own, [mesh_peer, *pruned])
    upstream.mesh[TOPIC] = {mesh_peer}
    assert set(upstream._get_peers_to_send([TOPIC], own, own)) == {mesh_peer}


def test_ihave_goes_to_two_peers_outside_the_mesh_however_many_there_are() -> None:
    gossip = HearthGossipSub(**router_settings(heartbeat_s=1))
    upstream = GossipSub(**router_settings(heartbeat_s=1))
    for others in (10, 40):
        assert gossip._get_adaptive_gossip_peers_count(TOPIC, others) == patch.GOSSIP_PEERS_LAZY
        assert upstream._get_adaptive_gossip_peers_count(TOPIC, others) >= 6


def test_ihave_goes_out_every_third_heartbeat_naming_every_id_of_the_window() -> None:
    """IHAVE rounds every `GOSSIP_EVERY_HEARTBEATS` heartbeats, each naming the ids of the
    window, which spans as many heartbeats: an id put in the cache at any heartbeat between two
    rounds is named by the next one (issue 14)."""
    own, mesh_peer = peer(0), peer(1)
    others = [peer(i) for i in range(2, 12)]

    def cut(cls: type[GossipSub]) -> Any:
        gossip = router(cls, own, [mesh_peer, *others])
        gossip.mesh[TOPIC] = {mesh_peer}
        return gossip

    assert router_settings(heartbeat_s=1)["gossip_window"] == patch.GOSSIP_EVERY_HEARTBEATS
    fixed, upstream = cut(HearthGossipSub), cut(GossipSub)
    rounds: list[dict[ID, dict[str, list[bytes]]]] = []
    for beat in range(2 * patch.GOSSIP_EVERY_HEARTBEATS):
        message = rpc_pb2.Message(data=bytes([beat]), topicIDs=[TOPIC], seqno=bytes([beat]))
        message.from_id = own.to_bytes()
        for gossip in (fixed, upstream):
            gossip.mcache.put(message)
        rounds.append(fixed.gossip_heartbeat())
        assert upstream.gossip_heartbeat()  # upstream: every heartbeat
        for gossip in (fixed, upstream):
            gossip.mcache.shift()
    emitting = [i for i, r in enumerate(rounds) if r]
    every = patch.GOSSIP_EVERY_HEARTBEATS
    assert emitting == [every - 1, 2 * every - 1]
    for i in emitting:
        assert len(rounds[i]) == patch.GOSSIP_PEERS_LAZY
        assert mesh_peer not in rounds[i]
        named = {mid for topics in rounds[i].values() for mid in topics[TOPIC]}
        assert len(named) == every  # the ids of the three heartbeats since the last round
