"""Gossipsub topics as bounded channels of bytes: router settings, validation, delivery pumps.

Settings and why (see NOTES-DEPENDENCIES.md): a 1 s heartbeat with adaptive gossip off (py-libp2p
otherwise stretches it to 30-120 s on small nets); strict signing on (strict peers drop unsigned
messages either way); content-addressed message ids, because py-libp2p seeds the seqno from the
clock and a quick restart can reuse (from, seqno). Delivery to the node never blocks the router:
a full queue drops the message and counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final

import trio
from libp2p.abc import IHost, ISubscriptionAPI
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.pubsub.gossipsub import PROTOCOL_ID, PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pubsub import ContentAddressedMessageIDGenerator, Pubsub

from hearth.p2p.patches import gossipsub as gossipsub_patch
from hearth.p2p.patches.gossipsub import HearthGossipSub, HearthPubsub
from hearth.p2p.peers import PeerReputation
from hearth.p2p.transport import EdgeCheck, Inbound, TransportStatistics
from hearth.protocol import limits
from hearth.protocol.inbound import Verdict

logger = logging.getLogger(__name__)

GOSSIP_PROTOCOLS: Final = (PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID)

# Mesh degree and timing (ADR 0032, amended for issue 14): D=4, D_lo=3, D_hi=8 and a 1 s
# heartbeat. Each node receives every message about once per mesh peer and forwards it to each,
# so the degree multiplies the cost of every ad: with the spec's D=6/4/12, 50 nodes on one
# 2-core machine wanted more CPU than it had. D=4 still reaches 500 nodes in about
# log_4(500) = 5 hops; the market sync (ADR 0039) repairs what a thinner mesh misses. Gossip
# (IHAVE) goes to 2 peers outside the mesh every third heartbeat (`GOSSIP_PEERS_LAZY` and
# `GOSSIP_EVERY_HEARTBEATS` in p2p/patches/gossipsub.py), with the ids of the last 3 of 5
# history windows: the window spans the heartbeats between two IHAVE rounds, so every id is
# offered once.
MESH_DEGREE: Final = 4
MESH_DEGREE_LOW: Final = 3
MESH_DEGREE_HIGH: Final = 8
GOSSIP_WINDOW_HEARTBEATS: Final = gossipsub_patch.GOSSIP_EVERY_HEARTBEATS
GOSSIP_HISTORY_HEARTBEATS: Final = 5
# The spam limit per forwarding peer and topic (py-libp2p's default is 10). A forwarder may relay
# every ad of the network to us: 500 hosts each advertising every 10 s (ADR 0032; every 30 s
# since its amendment) make 50 ads/s, so the limit sits at 4 times that. Above it a peer is not
# forwarded (it is still delivered and checked); our own publications are never limited
# (p2p/patches/gossipsub.py).
GOSSIP_MESSAGES_PER_S_PER_PEER_TOPIC_MAX: Final = 200


def router_settings(heartbeat_s: int) -> dict[str, Any]:
    """The router's settings, in one place (the constructor takes two dozen)."""
    return {
        "protocols": [TProtocol(p) for p in GOSSIP_PROTOCOLS],
        "degree": MESH_DEGREE,
        "degree_low": MESH_DEGREE_LOW,
        "degree_high": MESH_DEGREE_HIGH,
        "heartbeat_initial_delay": 0.1,
        "heartbeat_interval": heartbeat_s,
        "gossip_window": GOSSIP_WINDOW_HEARTBEATS,
        "gossip_history": GOSSIP_HISTORY_HEARTBEATS,
        "adaptive_gossip_enabled": False,
        "spam_protection_enabled": True,
        "max_messages_per_topic_per_second": GOSSIP_MESSAGES_PER_S_PER_PEER_TOPIC_MAX,
    }


def build_gossip(host: IHost, heartbeat_s: int) -> tuple[Pubsub, GossipSub]:
    gossipsub_patch.install()
    router = HearthGossipSub(**router_settings(heartbeat_s))
    pubsub = HearthPubsub(
        host,
        router,
        strict_signing=True,
        msg_id_constructor=ContentAddressedMessageIDGenerator(),
    )
    return pubsub, router


class TopicGate:
    """The topic validator: refuses oversize messages, those a banned peer sent or forwarded, and
    those the node's edge check does not accept.

    py-libp2p 0.8.1 runs it in ``Pubsub.push_msg`` after the seen-cache and before the router
    forwards the message, so what it refuses is never forwarded (nor delivered to us). Its
    validators are boolean: IGNORE and REJECT both come back as False, which py-libp2p caches
    against the message id and counts as an invalid message of the forwarder in the router's
    score; the node charges a REJECT in its own book (node/edge.py). The validator is
    synchronous, so it never yields between the check and the decision.
    """

    def __init__(
        self, reputation: PeerReputation, stats: TransportStatistics, check: EdgeCheck | None
    ) -> None:
        self._reputation = reputation
        self._stats = stats
        self.check = check

    def validator(self, topic: str) -> Callable[[ID, rpc_pb2.Message], bool]:
        def validate(forwarder: ID, message: rpc_pb2.Message) -> bool:
            if self._admit(topic, forwarder, message):
                return True
            self._stats.gossip_refused += 1
            return False

        return validate

    def _admit(self, topic: str, forwarder: ID, message: rpc_pb2.Message) -> bool:
        author = ID(message.from_id).to_base58()
        sender = forwarder.to_base58()
        if len(message.data) > limits.GOSSIP_MESSAGE_BYTES_MAX:
            return False
        if self._reputation.is_banned(author) or self._reputation.is_banned(sender):
            return False
        if self.check is None:
            return True
        return self.check(sender, topic, bytes(message.data), gossip=True) is Verdict.ACCEPT


async def subscribe_topics(
    pubsub: Pubsub,
    topics: tuple[str, ...],
    gate: TopicGate,
    deliver: Callable[[Inbound], bool],
    stats: TransportStatistics,
    nursery: trio.Nursery,
    seen: Callable[[str, bytes], None] = lambda topic, data: None,
) -> None:
    """Subscribe to each topic and start a pump that moves its messages to ``deliver``.

    ``seen`` is told of every message the subscription yields, ours included (the market sync
    keeps the newest ad of each author for peers that ask: ADR 0039)."""
    own_id = pubsub.my_id.to_bytes()
    verified = gate.check is not None  # every message the subscription yields passed the gate
    for topic in topics:
        pubsub.set_topic_validator(topic, gate.validator(topic), is_async_validator=False)
        subscription = await pubsub.subscribe(topic)
        nursery.start_soon(_pump, topic, subscription, own_id, deliver, stats, verified, seen)


async def _pump(
    topic: str,
    subscription: ISubscriptionAPI,
    own_id: bytes,
    deliver: Callable[[Inbound], bool],
    stats: TransportStatistics,
    verified: bool,
    seen: Callable[[str, bytes], None],
) -> None:
    async for message in subscription:
        seen(topic, bytes(message.data))
        # py-libp2p hands our own publications back to us; the node already knows them.
        if message.from_id == own_id:
            continue
        author = ID(message.from_id).to_base58()
        if not deliver(Inbound(author, topic, bytes(message.data), verified=verified)):
            stats.inbound_dropped += 1
            logger.debug("inbound queue full; dropped gossip on %s from %s", topic, author)
