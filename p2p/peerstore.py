"""Known peers kept on disk (``peers.sqlite`` in HEARTH_HOME), so that a restart finds the network.

I/O: SQLite, in this module only (`PeerStore`); the rules for what is kept and what is dialled
first are pure functions (`may_store`, `rank`, `stale`). Time: ``now_ms`` arguments, wall clock
(entries outlive the process).

Theory of operation. An entry is one (peer, address) that *we* connected to and authenticated:
our own dial, or a handshake probe of an inbound peer's address (see `p2p.dialing`). Hearsay, an
address a peer only told us of, is never stored: that is how a node that was once told of
another home's 192.168.1.10 would keep dialling itself after every restart. Besides, a private
or loopback address is kept only when one of our own addresses is in the same scope (a public
node keeps no private address at all). Each entry counts successes and failures and when it was
last seen working. On start the node dials the best entries at once, a bounded number in
parallel (ADR 0036); entries that keep failing or were not seen for a long time are pruned, and
the table never holds more than `ENTRIES_MAX` rows.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hearth.p2p.addresses import Scope, ip_of, scope_of

logger = logging.getLogger(__name__)

ENTRIES_MAX: Final = 2048
ADDRS_PER_PEER_MAX: Final = 4
STALE_MS: Final = 14 * 24 * 3600 * 1000  # not seen working for two weeks: forgotten
FAILURES_MAX: Final = 8  # failures beyond successes before an entry is forgotten
RECONNECT_PEERS_MAX: Final = 16  # dialled on start
PEERSTORE_FILE: Final = "peers.sqlite"
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS known (
    peer_id TEXT NOT NULL,
    addr TEXT NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    successes INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (peer_id, addr)
)
"""


@dataclass(frozen=True)
class KnownAddr:
    peer_id: str
    addr: str  # transport multiaddr, without /p2p/
    last_seen_ms: int
    successes: int
    failures: int


def may_store(addr: str, own_ips: Iterable[str]) -> bool:
    """Whether a first-hand address may be kept: public, or in a scope one of ours is in.

    An unspecified own address (listening on 0.0.0.0) stands for every scope but loopback.
    """
    scope = scope_of(ip_of(addr))
    if scope is Scope.PUBLIC:
        return True
    if scope is Scope.UNUSABLE:
        return False
    own = {scope_of(ip) for ip in own_ips}
    if any(ip in ("0.0.0.0", "::") for ip in own_ips):
        own |= {Scope.PRIVATE, Scope.PUBLIC}
    return scope in own


def stale(entry: KnownAddr, now_ms: int) -> bool:
    too_old = now_ms - entry.last_seen_ms > STALE_MS
    return too_old or entry.failures - entry.successes > FAILURES_MAX


def rank(entries: Iterable[KnownAddr], now_ms: int, peers_max: int) -> list[KnownAddr]:
    """The best address of each of the best ``peers_max`` peers, best first.

    Best: fewest net failures, then most recently seen, then most successes; peer id and
    address break ties so the order is the same on every run.
    """
    best: dict[str, KnownAddr] = {}
    for entry in sorted(entries, key=lambda e: _order(e)):
        if not stale(entry, now_ms):
            best.setdefault(entry.peer_id, entry)
    return sorted(best.values(), key=_order)[:peers_max]


def _order(entry: KnownAddr) -> tuple[int, int, int, str, str]:
    net_failures = max(0, entry.failures - entry.successes)
    return (net_failures, -entry.last_seen_ms, -entry.successes, entry.peer_id, entry.addr)


class PeerStore:
    """The ``known`` table of one node. Writes are small upserts; WAL, synchronous NORMAL.

    Losing the last few writes on power loss costs nothing but a slower reconnect, so this store
    does not pay for synchronous FULL as the ledger does.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._db = self._open(path)
        except sqlite3.DatabaseError as error:
            # Only a cache of what worked: set a damaged file aside and start afresh.
            aside = path.with_name(path.name + ".damaged")
            logger.warning("peer store %s is damaged (%s); moved to %s", path, error, aside)
            path.replace(aside)
            self._db = self._open(path)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("SELECT peer_id, addr, last_seen_ms, successes, failures FROM known")
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self._db.close()

    def entries(self) -> list[KnownAddr]:
        rows = self._db.execute(
            "SELECT peer_id, addr, last_seen_ms, successes, failures FROM known"
        ).fetchall()
        return [KnownAddr(*row) for row in rows]

    def best(self, now_ms: int, peers_max: int = RECONNECT_PEERS_MAX) -> list[KnownAddr]:
        return rank(self.entries(), now_ms, peers_max)

    def record_success(self, pairs: Iterable[tuple[str, str]], now_ms: int) -> None:
        """``(peer id, address)`` pairs that worked just now (first-hand only)."""
        with self._transaction():
            for peer_id, addr in pairs:
                self._db.execute(
                    "INSERT INTO known (peer_id, addr, last_seen_ms, successes) VALUES (?,?,?,1) "
                    "ON CONFLICT (peer_id, addr) DO UPDATE SET "
                    "last_seen_ms = excluded.last_seen_ms, successes = successes + 1",
                    (peer_id, addr, now_ms),
                )
                self._trim_peer(peer_id)

    def record_failure(self, peer_id: str, addr: str) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE known SET failures = failures + 1 WHERE peer_id = ? AND addr = ?",
                (peer_id, addr),
            )

    def prune(self, now_ms: int) -> int:
        """Forget stale entries, then the worst beyond `ENTRIES_MAX`; returns how many went."""
        gone = [e for e in self.entries() if stale(e, now_ms)]
        kept = sorted((e for e in self.entries() if not stale(e, now_ms)), key=_order)
        gone += kept[ENTRIES_MAX:]
        with self._transaction():
            self._db.executemany(
                "DELETE FROM known WHERE peer_id = ? AND addr = ?",
                [(e.peer_id, e.addr) for e in gone],
            )
        return len(gone)

    def _trim_peer(self, peer_id: str) -> None:
        self._db.execute(
            "DELETE FROM known WHERE peer_id = ? AND addr NOT IN (SELECT addr FROM known "
            "WHERE peer_id = ? ORDER BY last_seen_ms DESC, addr LIMIT ?)",
            (peer_id, peer_id, ADDRS_PER_PEER_MAX),
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")
