"""Connection manager policy: inbound admission per IP and in total, and which connections to trim.

Pure: the libp2p glue in `p2p.patches.swarm` feeds it what it sees and carries out its
decisions. Time: ``now_ms`` arguments.

Theory of operation. An inbound connection takes a slot in `InboundGate` before its handshake
(refused at once if its IP already holds `connections_per_ip_max`, or the node holds
`connections_max`) and gives it back when the connection closes, never later: py-libp2p 0.8.1
kept each slot until the swarm stopped, so 250 connections in a node's life eclipsed it.
Above high water, `choose_trim` closes the least valuable connections down to low water: a
peer's connections beyond `connections_per_peer_max` first (relayed before direct), then by
reputation, inbound before outbound, newest before oldest. Bootstrap peers and connections in
their grace period stay.

Below high water, a node with more than `peers_high` peers (a bootstrap hub: every newcomer's
first link) sheds peers that dialled it down to `peers_low` (issue 14: a hub with 49 connections
on a 2-core machine fell behind on gossip and listed 3-15 of 49). It keeps the peers it dialled
itself (its own exchange chose them), bootstrap peers, connections in their grace period, and
any peer that asked it for peers lately (`PeerAsks`): a node with few peers asks every few
seconds, so a hub never cuts the last link of a peer that has few others. Of the rest, the
longest connected go first: they have had the most time to meet others.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from hearth.p2p.transport import ConnectionLimits


@dataclass(frozen=True)
class ConnectionView:
    """One live connection as the policy sees it. ``key`` identifies it to the caller."""

    key: int
    peer_id: str
    outbound: bool
    opened_ms: int
    protected: bool  # a bootstrap peer: never trimmed
    score: int  # the peer's reputation
    relayed: bool = False  # through a circuit relay: a peer's first to go (ADR 0035)
    needy: bool = False  # the peer asked us for peers lately: it may have few others


class InboundGate:
    """Inbound slots per IP and in total, held from before the handshake until the close."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self._limits = limits
        self._per_ip: Counter[str] = Counter()

    @property
    def held(self) -> int:
        return sum(self._per_ip.values())

    def try_admit(self, ip: str, connections_live: int) -> bool:
        """Take a slot for a connection from ``ip``; False if a cap refuses it."""
        if self._per_ip[ip] >= self._limits.connections_per_ip_max:
            return False
        if max(connections_live, self.held) >= self._limits.connections_max:
            return False
        self._per_ip[ip] += 1
        return True

    def release(self, ip: str) -> None:
        assert self._per_ip[ip] > 0, f"release without admit for {ip}"
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    def per_ip(self) -> dict[str, int]:
        return dict(self._per_ip)


def choose_trim(
    connections: list[ConnectionView], limits: ConnectionLimits, now_ms: int
) -> list[int]:
    """Keys of the connections to close now, least valuable first."""
    chosen: list[ConnectionView] = []
    by_peer: dict[str, list[ConnectionView]] = {}
    for view in connections:
        by_peer.setdefault(view.peer_id, []).append(view)
    for views in by_peer.values():
        # keep a peer's direct connections, then its oldest: a hole-punched connection is
        # newer than the relayed ones it replaces
        views.sort(key=lambda v: (v.relayed, v.opened_ms, v.key))
        chosen.extend(views[limits.connections_per_peer_max :])
    remaining = len(connections) - len(chosen)
    if remaining > limits.connections_high:
        taken = {v.key for v in chosen}
        candidates = [
            v
            for v in connections
            if v.key not in taken
            and not v.protected
            and now_ms - v.opened_ms >= limits.trim_grace_ms
        ]
        candidates.sort(key=lambda v: (v.score, v.outbound, -v.opened_ms, v.key))
        chosen.extend(candidates[: remaining - limits.connections_low])
    else:
        chosen.extend(_shed_peers(connections, {v.key for v in chosen}, limits, now_ms))
    return [v.key for v in chosen]


def _shed_peers(
    connections: list[ConnectionView], taken: set[int], limits: ConnectionLimits, now_ms: int
) -> list[ConnectionView]:
    """All connections of the inbound peers to shed above `peers_high`, down to `peers_low`."""
    by_peer: dict[str, list[ConnectionView]] = {}
    for view in connections:
        if view.key not in taken:
            by_peer.setdefault(view.peer_id, []).append(view)
    if len(by_peer) <= limits.peers_high:
        return []
    sheddable = [
        views
        for views in by_peer.values()
        if not any(
            v.outbound or v.protected or v.needy or now_ms - v.opened_ms < limits.trim_grace_ms
            for v in views
        )
    ]
    sheddable.sort(key=lambda views: (min(v.score for v in views), min(v.opened_ms for v in views)))
    return [v for views in sheddable[: len(by_peer) - limits.peers_low] for v in views]


class PeerAsks:
    """When each peer last asked us for peers (pure; time: ``now_ms``).

    A node with fewer than a mesh's worth of peers asks each of them at least every 8 s
    (`p2p.discovery`), so a peer that asked within ``window_ms`` may depend on us: the trimmer
    keeps it. At most ``peers_max`` peers are remembered, the least recent forgotten first.
    """

    def __init__(self, window_ms: int, peers_max: int) -> None:
        assert window_ms > 0 and peers_max > 0
        self._window_ms = window_ms
        self._peers_max = peers_max
        self._last_ms: OrderedDict[str, int] = OrderedDict()

    def asked(self, peer_id: str, now_ms: int) -> None:
        self._last_ms[peer_id] = now_ms
        self._last_ms.move_to_end(peer_id)
        while len(self._last_ms) > self._peers_max:
            self._last_ms.popitem(last=False)

    def needy(self, peer_id: str, now_ms: int) -> bool:
        last_ms = self._last_ms.get(peer_id)
        return last_ms is not None and now_ms - last_ms < self._window_ms
