"""The simulated network: latency by link class, loss, a healing partition, gossip reach.

Time: integer ms. Randomness: the one ``random.Random`` it is given (derived from the run seed).

Latency between two nodes is the sum of both access links' one-way delays plus a little jitter,
because in a home network the last mile dominates. Gossip is modelled so that it costs O(1) per
message, not O(N): the periodic gossip (capacity ads, ledger heads) reaches the first
``gossip_fanout`` of the sender's ``mesh_degree`` neighbours in a fixed circulant mesh (gossipsub
keeps a mesh of D peers), and a call for bids ``call_fanout`` nodes drawn at random, as the first
hosts to hear a flooded call would; a call answered by a bounded number of bids is what the
auction's own limit allows anyway.

A capacity ad reaching two nodes leaves every market view with two hosts, and since directed
invitations (ADR 0031) a publisher invites only hosts of its view: ``ad_reach`` (0 keeps the
mesh's fanout) makes each ad reach that many nodes, the ones after the sender on a ring, so
that each view holds the ``ad_reach`` hosts before it; at ``size - 1`` or more every node hears
every ad, as gossipsub delivers every message to every subscriber of a small network.
"""

from __future__ import annotations

import array
import dataclasses
import random
from typing import Final

# One-way delay of an access link, (min, max) in ms; bandwidth in bytes per ms.
LINK_DELAY_MS: Final = {"fibre": (3, 10), "dsl": (12, 30), "distant": (50, 110)}
LINK_BYTES_PER_MS: Final = {"fibre": 50_000, "dsl": 2_000, "distant": 500}
LINK_CLASSES: Final = tuple(LINK_DELAY_MS)
JITTER_MS_MAX: Final = 3


@dataclasses.dataclass(frozen=True)
class NetworkConfig:
    mesh_degree: int = 4
    gossip_fanout: int = 2  # periodic gossip: ledger heads, and ads unless ``ad_reach``
    call_fanout: int = 16
    ad_reach: int = 0  # nodes each capacity ad reaches (module docstring); 0: gossip_fanout
    loss_pct: int = 0


class Network:
    """Who hears whom, how late, and whether at all. Per node: one byte and one short."""

    def __init__(
        self, links: list[str], ips: list[str], config: NetworkConfig, rng: random.Random
    ) -> None:
        self.size = len(links)
        self.config = config
        self.ips = ips
        self._rng = rng
        self._link = bytes(LINK_CLASSES.index(link) for link in links)
        self._delay_ms = array.array("H", (rng.randint(*LINK_DELAY_MS[link]) for link in links))
        self._side = bytearray(self.size)  # 1: beyond the partition
        self.partitioned = False
        self.loss_pct = config.loss_pct
        degree = min(config.mesh_degree, self.size - 1)
        self._offsets = tuple(rng.sample(range(1, self.size), degree)) if degree > 0 else ()

    def link_of(self, node: int) -> str:
        return LINK_CLASSES[self._link[node]]

    def rtt_ms(self, a: int, b: int) -> int:
        return 2 * (self._delay_ms[a] + self._delay_ms[b])

    def latency_ms(self, a: int, b: int) -> int:
        return self._delay_ms[a] + self._delay_ms[b] + self._rng.randrange(JITTER_MS_MAX + 1)

    def transfer_ms(self, a: int, b: int, size_bytes: int) -> int:
        """Time to move ``size_bytes`` from ``a`` to ``b``: round trip plus the slower link."""
        rate = min(LINK_BYTES_PER_MS[self.link_of(a)], LINK_BYTES_PER_MS[self.link_of(b)])
        return self.rtt_ms(a, b) + size_bytes // rate

    def reachable(self, a: int, b: int) -> bool:
        return not self.partitioned or self._side[a] == self._side[b]

    def delivers(self, a: int, b: int) -> bool:
        """Whether one message from ``a`` reaches ``b`` (partition, then random loss)."""
        if self.partitioned and self._side[a] != self._side[b]:
            return False
        return not self.loss_pct or self._rng.randrange(100) >= self.loss_pct

    def mesh(self, node: int) -> list[int]:
        return [(node + offset) % self.size for offset in self._offsets]

    def gossip_targets(self, node: int) -> list[int]:
        return self.mesh(node)[: self.config.gossip_fanout]

    def ad_targets(self, node: int) -> list[int]:
        reach = min(self.config.ad_reach, self.size - 1)
        if reach <= 0:
            return self.gossip_targets(node)
        return [(node + step) % self.size for step in range(1, reach + 1)]

    def call_targets(self, node: int) -> list[int]:
        count = min(self.config.call_fanout + 1, self.size)
        return [t for t in self._rng.sample(range(self.size), count) if t != node][
            : self.config.call_fanout
        ]

    def partition(self, far_pct: int) -> None:
        """Put ``far_pct`` percent of nodes, chosen at random, beyond a partition."""
        far = self._rng.sample(range(self.size), self.size * far_pct // 100)
        self._side = bytearray(self.size)
        for node in sorted(far):
            self._side[node] = 1
        self.partitioned = True

    def heal(self) -> None:
        self.partitioned = False
        self.loss_pct = 0
