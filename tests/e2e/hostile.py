"""A hostile peer for attack tests: a real py-libp2p host, built exactly as a node builds one.

It joins a real testnet with the testnet's private-network key and its own fresh key, and can
send anything a node could: signed envelopes of any message, raw frames, gossip.
"""

from __future__ import annotations

import dataclasses
import random
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from hearth.node.runtime import read_psk
from hearth.p2p.host import open_transport
from hearth.p2p.transport import HostConfig, Transport
from hearth.protocol.envelope import seal
from hearth.protocol.identity import Identity
from hearth.protocol.messages import PROTOCOLS, TOPICS
from hearth.testnet import launch

CONNECT_TIMEOUT_S = 15.0


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclasses.dataclass
class Hostile:
    identity: Identity
    transport: Transport
    rng: random.Random = dataclasses.field(default_factory=lambda: random.Random(0))

    def seal(self, body: object, *, ttl_ms: int = 30_000) -> bytes:
        """``body`` signed by this peer's own key, exactly as a node signs."""
        return seal(self.identity, body, now_ms=now_ms(), ttl_ms=ttl_ms, rng=self.rng)

    async def send(self, peer_id: str, protocol: str, body: object) -> None:
        await self.transport.send(peer_id, protocol, self.seal(body))

    def connected(self, peer_id: str) -> bool:
        return any(p.peer_id == peer_id and p.connected for p in self.transport.peers())


@asynccontextmanager
async def hostile_peer(
    node: launch.LaunchedNode, host: str = "127.0.0.60", seed: bytes | None = None
) -> AsyncIterator[Hostile]:
    """A peer with a fresh identity, connected to ``node`` (and through it to the testnet)."""
    identity = Identity(seed or secrets.token_bytes(32))
    config = HostConfig(
        seed=identity.seed,
        listen_host=host,
        bootstrap=(node.info["multiaddrs"][0],),
        topics=TOPICS,
        protocols=PROTOCOLS,
        psk=read_psk(node.home),
    )
    async with open_transport(config) as transport:
        hostile = Hostile(identity, transport)
        with trio.fail_after(CONNECT_TIMEOUT_S):
            while not hostile.connected(node.info["peer_id"]):  # noqa: ASYNC110
                await trio.sleep(0.05)
        yield hostile
