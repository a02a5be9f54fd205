"""The Kademlia DHT under ``/hearth``: a server when reachable, a client behind NAT. ADR 0036.

py-libp2p 0.8.1's `KadDHT` takes a ``protocol_prefix`` and ignores it: every module of it opens
and serves the fixed ``/ipfs/kad/1.0.0``. Hearth's DHT must not mix with IPFS's, so
`use_hearth_protocol` points those module constants at ``/hearth/kad/1.0.0`` (process-wide; a
process holds one node). Records are validated strictly: only namespaced keys with a validator
(``/pk/``, self-certifying public keys) are accepted, so a stranger cannot store arbitrary
values in us. Inbound queries are bounded per peer by a token bucket (beyond it the stream is
reset, as the Kademlia spec says for any error) on top of the library's 12 concurrent handlers.
The routing table is fed with connected peers that identify says serve the protocol, and on
servers random walks (the library's refresh manager) fill it further.
"""

from __future__ import annotations

import logging
from typing import Final

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.kad_dht import common, kad_dht, peer_routing, provider_store, value_store
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.records.pubkey import PublicKeyValidator
from libp2p.records.validator import NamespacedValidator
from libp2p.tools.anyio_service import background_trio_service

from hearth.p2p.addresses import Scope, scope_of
from hearth.p2p.dialing import TokenBuckets

logger = logging.getLogger(__name__)

KAD_PROTOCOL: Final = TProtocol("/hearth/kad/1.0.0")
KAD_PREFIX: Final = TProtocol("/hearth")
QUERIES_PER_PEER: Final = (32, 250)  # burst, ms per token: inbound DHT streams of one peer
FEED_INTERVAL_S: Final = 10.0
FEED_PEERS_MAX: Final = 64  # connected peers offered to the routing table per pass


def use_hearth_protocol() -> None:
    """Make every part of py-libp2p's Kademlia speak ``/hearth/kad/1.0.0``."""
    for module in (common, kad_dht, peer_routing, provider_store, value_store):
        module.PROTOCOL_ID = KAD_PROTOCOL  # type: ignore[attr-defined]


def choose_mode(setting: str, listen_host: str) -> DHTMode | None:
    """The DHT mode for a ``dht`` setting; "auto" serves only from a public address."""
    if setting == "off":
        return None
    if setting == "server" or (setting == "auto" and scope_of(listen_host) is Scope.PUBLIC):
        return DHTMode.SERVER
    return DHTMode.CLIENT


class HearthDht:
    """One node's DHT: built by `open`, run by `run` until cancelled."""

    def __init__(self, host: IHost, mode: DHTMode) -> None:
        use_hearth_protocol()
        validator = NamespacedValidator({"pk": PublicKeyValidator()}, strict_validation=True)
        self.host = host
        self.dht = KadDHT(
            host,
            mode,
            # Random walks (every 120 s) from servers only: a client behind NAT, or every node
            # of a loopback testnet, would walk tables with no server in them.
            enable_random_walk=mode == DHTMode.SERVER,
            validator=validator,
            validator_changed=True,
            protocol_prefix=KAD_PREFIX,
            strict_validation=True,
        )
        self.queries = TokenBuckets(*QUERIES_PER_PEER)  # inbound DHT streams, per peer
        self.queries_served = 0
        self.queries_refused = 0
        if mode == DHTMode.SERVER:
            host.set_stream_handler(KAD_PROTOCOL, self._handle)

    async def _handle(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id.to_base58()
        now_ms = int(trio.current_time() * 1000)
        if not self.queries.available(peer, now_ms):
            self.queries_refused += 1
            try:
                await stream.reset()
            except Exception as error:
                logger.debug("reset of a refused DHT stream failed: %r", error)
            return
        self.queries.take(peer, now_ms)
        self.queries_served += 1
        await self.dht.handle_stream(stream)

    async def feed(self) -> int:
        """Offer connected peers to the routing table; returns how many it holds."""
        table = self.dht.routing_table
        for peer in sorted(self.host.get_connected_peers(), key=str)[:FEED_PEERS_MAX]:
            if not table.peer_in_table(peer) and self._serves_kad(peer):
                try:
                    await self.dht.add_peer(peer)
                except Exception as error:  # the peer left, or does not speak Kademlia
                    logger.debug("DHT add of %s failed: %r", peer, error)
        return int(table.size())

    def _serves_kad(self, peer: ID) -> bool:
        """Whether identify said the peer serves our DHT (a peer not yet identified: no)."""
        try:
            protocols = self.host.get_peerstore().get_protocols(peer)
        except Exception:  # PeerStoreError: not in the peerstore (any more)
            return False
        return KAD_PROTOCOL in (protocols or [])

    async def run(self) -> None:
        async with background_trio_service(self.dht):
            while True:
                await self.feed()
                await trio.sleep(FEED_INTERVAL_S)
