"""Gossipsub and yamux costs of an idle network, cut where py-libp2p 0.8.1 spends for nothing.

Measured with py-spy on an idle node of a 10-node loopback testnet (ADR 0032): a third of its
CPU went to four upstream behaviours, each fixed here.

- **Signed peer records verified on every RPC.** Every gossipsub RPC carries the sender's signed
  peer record (`senderRecord`), and `maybe_consume_signed_record` checks its Ed25519 signature and
  rewrites the peer's addresses on every one, twice for an RPC with control messages
  (`Pubsub.continuously_read_stream` and `GossipSub.handle_rpc`): 10 % of an idle node's CPU.
  `RecordMemo` remembers the last record it accepted from each peer and skips the same bytes
  again; a changed record is checked as before, and the same one is consumed again after
  `PEER_RECORD_RECHECK_S` so that the addresses' 2 h lifetime in the peer store is still renewed.
- **IDONTWANT for every message.** Gossipsub v1.2 sends IDONTWANT to every mesh peer for each
  message it receives or publishes, so a 500-byte ad costs D extra RPCs per hop. go-libp2p sends
  it only for messages of at least 1 KiB (`IDontWantMessageThreshold`), and never for its own
  publications; we do the same.
- **A heartbeat prune without backoff, then a GRAFT flood penalty.** When a mesh grows above
  D_hi, upstream's `mesh_heartbeat` prunes peers without adding the backoff that go-libp2p and
  the spec add, so the next heartbeat below D_lo may GRAFT the same peer again within seconds;
  that peer has recorded our PRUNE and charges the GRAFT as a flood (P7) and prunes us back.
  This was the 3-7.5k "GRAFT flood" penalties of a 30-node testnet. We add the backoff, also
  to every PRUNE we send (a refused GRAFT), as go-libp2p does.
- **The spam limit counts our own publications.** `_check_spam_protection` keys its
  10 messages/s per topic on the forwarder, which is the node itself for what it publishes, so
  a burst of a publisher's own calls for bids was dropped before it left. Our own messages are
  exempt; the limit for others is set on purpose in `p2p/gossip.py`.

- **No flood publishing.** A node's own messages went to its mesh only; a node whose only link
  is a hub that pruned it (the bootstrap node of a 50-node start) published into nothing. Our own
  messages go to every peer in the topic, as go-libp2p does by default (`floodPublish`).

- **Our own signed peer record looked up on every RPC we send.** Each outgoing gossipsub RPC
  carries our record, and `env_to_send_in_RPC` asks the host for its addresses each time to see
  whether the cached record still matches (ours are computed by the NAT service): 6 % of an idle
  node's CPU at 50 nodes (issue 14). `OwnRecordMemo` reuses the answer for
  `OWN_RECORD_REUSE_S`; a change of our addresses reaches peers that much later.

- **A peer's subscriptions forgotten when our stream to it fails.** When writing to a peer
  fails, `Pubsub._handle_dead_peer` forgets every topic the peer subscribed to and, if the peer
  is still connected, reopens our stream (with a backoff). But the peer announced its topics on
  its own stream to us, which is still open, and it never announces them again: the peer stays
  connected, outside every topic, for good. In a 50-node run the bootstrap hub's view of the
  capacity topic fell from 49 peers to 30 with all of them connected, and its market with it
  (issue 14). `HearthPubsub` keeps the topics of a peer that is still connected.

Yamux: upstream sends a WINDOW_UPDATE frame after every read
(`PY_YAMUX_RELEASE_ON_READ` defaults to on), one encrypted frame back for each small message;
go-yamux batches them until half the window is consumed. `install_yamux_batching` turns the
per-read update off, so updates follow go-yamux's half-window rule (11 % of idle CPU).
"""

from __future__ import annotations

import time
import weakref
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final

from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerstore import env_to_send_in_RPC
from libp2p.pubsub import gossipsub as upstream_gossipsub
from libp2p.pubsub import pubsub as upstream_pubsub
from libp2p.pubsub.gossipsub import GossipSub
from libp2p.pubsub.pb import rpc_pb2
from libp2p.pubsub.pb.rpc_pb2 import RPC
from libp2p.pubsub.pubsub import Pubsub
from libp2p.pubsub.utils import maybe_consume_signed_record
from libp2p.stream_muxer.yamux import yamux as upstream_yamux

# A record we accepted is consumed again after this long, so the peer store keeps its addresses
# (upstream gives them 2 h) while the peer stays connected.
PEER_RECORD_RECHECK_S: Final = 600.0
# Peers whose last record we remember; the oldest is forgotten beyond this.
PEER_RECORD_MEMO_PEERS_MAX: Final = 4096
# How long the record we attach to our RPCs is reused before the host's addresses are checked.
OWN_RECORD_REUSE_S: Final = 5.0
# IHAVE fan-out per heartbeat (issue 14). An IHAVE repairs what a mesh missed; our own messages
# already go to every topic peer (flood publishing) and the market sync repairs a market within
# 15-60 s (ADR 0039), so two peers suffice: with a 1 s heartbeat and ids kept 3 heartbeats, six
# peers hear of each message from each node that has it. At 4 per second they were a third of the
# RPCs of an idle node of a 50-node network.
GOSSIP_PEERS_LAZY: Final = 2
# IHAVE goes out every this many heartbeats, naming the ids of the gossip window, which spans
# as many heartbeats (p2p/gossip.py): each id is offered once by each node that has it, not on
# three heartbeats in a row. At 50 idle nodes an IHAVE was nearly every other RPC a node sent,
# and each costs a yamux frame, a Noise message and a send on every connection it goes out on
# (issue 14). An IHAVE answered late by up to two heartbeats is no loss: ads and heads are
# keep-alives, and our own messages already reach every topic peer (flood publishing).
GOSSIP_EVERY_HEARTBEATS: Final = 3
# go-libp2p's IDontWantMessageThreshold: smaller messages are cheaper to receive twice.
IDONTWANT_MESSAGE_BYTES_MIN: Final = 1024


class RecordMemo:
    """`maybe_consume_signed_record` that skips a record it accepted from that peer recently."""

    def __init__(self, consume: Callable[[RPC, IHost, ID], bool] = maybe_consume_signed_record):
        self._consume = consume
        self._accepted: OrderedDict[ID, tuple[bytes, float]] = OrderedDict()
        self.skipped = 0

    def __call__(self, msg: RPC, host: IHost, peer_id: ID) -> bool:
        if not msg.HasField("senderRecord"):
            return True
        record = msg.senderRecord
        now_s = time.monotonic()
        known = self._accepted.get(peer_id)
        if known is not None and known[0] == record and now_s - known[1] < PEER_RECORD_RECHECK_S:
            self.skipped += 1
            return True
        accepted = self._consume(msg, host, peer_id)
        if accepted:
            self._accepted[peer_id] = (record, now_s)
            self._accepted.move_to_end(peer_id)
            while len(self._accepted) > PEER_RECORD_MEMO_PEERS_MAX:
                self._accepted.popitem(last=False)
        else:
            self._accepted.pop(peer_id, None)
        return accepted


class OwnRecordMemo:
    """`env_to_send_in_RPC` that reuses its answer for a host for `OWN_RECORD_REUSE_S`."""

    def __init__(self, issue: Callable[[IHost], tuple[bytes, bool]] = env_to_send_in_RPC):
        self._issue = issue
        self._last: weakref.WeakKeyDictionary[IHost, tuple[bytes, float]] = (
            weakref.WeakKeyDictionary()
        )

    def __call__(self, host: IHost) -> tuple[bytes, bool]:
        now_s = time.monotonic()
        known = self._last.get(host)
        if known is not None and now_s - known[1] < OWN_RECORD_REUSE_S:
            return known[0], False
        record, issued = self._issue(host)
        self._last[host] = (record, now_s)
        return record, issued


_memo = RecordMemo()
_own_record = OwnRecordMemo()


def install() -> None:
    """Process-wide: the record memo in both upstream call sites, and go-yamux window updates."""
    for module in (upstream_pubsub, upstream_gossipsub):
        setattr(module, "maybe_consume_signed_record", _memo)  # noqa: B010 (not exported)
        setattr(module, "env_to_send_in_RPC", _own_record)  # noqa: B010 (not exported)
    install_yamux_batching()


def install_yamux_batching() -> None:
    """go-yamux's rule: no WINDOW_UPDATE until half the window has been read. Idempotent."""
    upstream_yamux._yamux_release_on_read = lambda: False
    stream_class: Any = upstream_yamux.YamuxStream
    if not getattr(stream_class, "_hearth_batched", False):
        stream_class._auto_tune_and_send_window_update = _batched(
            stream_class._auto_tune_and_send_window_update
        )
        stream_class._hearth_batched = True


def _batched(update: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """Upstream's update, called only once the bytes read since the last one reach its
    threshold (half the window): below it, upstream would credit every read ("partial slack").
    The sender can always fill the other half, so a reader never waits on a credit not sent."""

    async def batched(stream: Any, *, bytes_read: int = 0) -> None:
        if bytes_read > 0:
            async with stream.window_lock:
                buffered = len(stream.conn.stream_buffers.get(stream.stream_id, b""))
                unread_credit = stream.target_recv_window - (stream.recv_window + buffered)
                threshold = stream._grow_threshold()
                pending = stream._pending_recv_release + bytes_read
                if unread_credit < threshold and pending < threshold:
                    stream._pending_recv_release = pending
                    return
        await update(stream, bytes_read=bytes_read)

    return batched


class HearthGossipSub(GossipSub):
    """GossipSub with the three router fixes above; everything else is upstream's."""

    async def _emit_idontwant_for_message(self, msg_id: bytes, topic_ids: Iterable[str]) -> None:
        """Called by `publish` before it forwards; `_idontwant_wanted` decides (set there)."""
        if self._idontwant_wanted:
            await super()._emit_idontwant_for_message(msg_id, topic_ids)

    async def publish(self, msg_forwarder: ID, pubsub_msg: rpc_pb2.Message) -> None:
        own = self.pubsub is not None and msg_forwarder == self.pubsub.my_id
        self._idontwant_wanted = not own and len(pubsub_msg.data) >= IDONTWANT_MESSAGE_BYTES_MIN
        await super().publish(msg_forwarder, pubsub_msg)

    def mesh_heartbeat(self) -> tuple[Any, Any]:
        peers_to_graft, peers_to_prune = super().mesh_heartbeat()
        for peer, topics in peers_to_prune.items():
            for topic in topics:
                self._add_back_off(peer, topic, False)
        return peers_to_graft, peers_to_prune

    async def emit_prune(self, topic: str, to_peer: ID, do_px: bool, is_unsubscribe: bool) -> None:
        """A peer we prune (a GRAFT refused, a flood answered) is not grafted back before the
        backoff we announce to it ends; upstream grafts it again at the next heartbeat."""
        self._add_back_off(to_peer, topic, is_unsubscribe)
        await super().emit_prune(topic, to_peer, do_px, is_unsubscribe)

    def _get_peers_to_send(
        self,
        topic_ids: Iterable[str],
        msg_forwarder: ID,
        origin: ID,
        msg_id: bytes | None = None,
    ) -> Iterable[ID]:
        """Flood publishing (go-libp2p's default): our own messages go to every peer in the
        topic, not only the mesh, so a node whose one link is a busy hub's pruned peer still
        gets its ad out; what we forward goes to the mesh as before."""
        topics = list(topic_ids)
        peers = set(super()._get_peers_to_send(topics, msg_forwarder, origin, msg_id))
        if self.pubsub is None or origin != self.pubsub.my_id:
            return peers
        scorer = self.scorer
        for topic in topics:
            peers.update(
                p
                for p in self.pubsub.peer_topics.get(topic, ())
                if p in self.peer_protocol
                and (scorer is None or not scorer.is_graylisted(p, [topic]))
            )
        peers.discard(origin)
        return peers

    def gossip_heartbeat(self) -> Any:
        """Upstream's IHAVE choice every `GOSSIP_EVERY_HEARTBEATS` heartbeats, none between;
        the mesh and fanout upkeep of the other heartbeats is unchanged."""
        self._heartbeats_since_gossip += 1
        if self._heartbeats_since_gossip < GOSSIP_EVERY_HEARTBEATS:
            return defaultdict(dict)
        self._heartbeats_since_gossip = 0
        return super().gossip_heartbeat()

    def _get_adaptive_gossip_peers_count(self, topic: str, total_peers: int) -> int:
        """IHAVE goes to `GOSSIP_PEERS_LAZY` peers outside the mesh each heartbeat (go-libp2p's
        D_lazy, 6 there and in upstream's minimum, which also adds 25 % of the others)."""
        return GOSSIP_PEERS_LAZY

    def _check_spam_protection(self, peer_id: ID, msg: rpc_pb2.Message) -> bool:
        if self.pubsub is not None and peer_id == self.pubsub.my_id:
            return True
        return super()._check_spam_protection(peer_id, msg)

    _idontwant_wanted = True
    _heartbeats_since_gossip = 0


class HearthPubsub(Pubsub):
    """Pubsub that keeps a still-connected peer's topics when our stream to it dies."""

    def _handle_dead_peer(self, peer_id: ID) -> None:
        """Upstream's cleanup, then the peer's topics back if it is still connected: upstream
        reopens our stream to such a peer, and the topics it announced on its own stream (still
        open, so never announced again) must survive. A peer whose connection closed is
        forgotten as before; a fresh connection brings a fresh announcement."""
        topics = [t for t, peers in self.peer_topics.items() if peer_id in peers]
        super()._handle_dead_peer(peer_id)
        if not topics or not self._peer_is_connected(peer_id):
            return
        for topic in topics:
            self.peer_topics.setdefault(topic, set()).add(peer_id)
        self._peer_subscription_count[peer_id] = len(topics)
