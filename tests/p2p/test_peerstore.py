"""The peer store's rules (what is kept, what is dialled first) and its SQLite table."""

from __future__ import annotations

from pathlib import Path
from typing import cast

from libp2p.abc import IHost

from hearth.p2p.addresses import Scope, scope_of
from hearth.p2p.finder import PeerStoreKeeper
from hearth.p2p.peerstore import (
    ADDRS_PER_PEER_MAX,
    ENTRIES_MAX,
    FAILURES_MAX,
    STALE_MS,
    KnownAddr,
    PeerStore,
    may_store,
    rank,
)

NOW_MS = 1_800_000_000_000


def test_scopes() -> None:
    assert scope_of("127.0.0.5") is Scope.LOOPBACK
    assert scope_of("192.168.1.10") is Scope.PRIVATE
    assert scope_of("100.64.0.1") is Scope.PRIVATE  # CGNAT
    assert scope_of("fd00::1") is Scope.PRIVATE
    assert scope_of("8.8.8.8") is Scope.PUBLIC
    assert scope_of("0.0.0.0") is Scope.UNUSABLE
    assert scope_of("not-an-ip") is Scope.UNUSABLE


def test_private_addresses_are_kept_only_by_a_node_in_that_scope() -> None:
    home = "/ip4/192.168.1.10/tcp/4001"
    assert may_store(home, ["192.168.1.20"])
    assert not may_store(home, ["203.0.113.7"])  # a public node keeps no home address
    assert not may_store("/ip4/127.0.0.3/tcp/1", ["192.168.1.20"])
    assert may_store("/ip4/127.0.0.3/tcp/1", ["127.0.0.2"])
    assert may_store("/ip4/203.0.113.9/tcp/1", ["127.0.0.2"])
    assert may_store(home, ["0.0.0.0"])  # listening everywhere: this home's LAN too
    assert not may_store("/dns4/example.org/tcp/1", ["0.0.0.0"])


def entry(peer: str, addr: str = "/ip4/8.8.8.8/tcp/1", **fields: int) -> KnownAddr:
    values = {"last_seen_ms": NOW_MS, "successes": 1, "failures": 0, **fields}
    return KnownAddr(peer, addr, **values)


def test_rank_prefers_working_then_recent_and_skips_stale() -> None:
    entries = [
        entry("failing", failures=3),
        entry("old", last_seen_ms=NOW_MS - 60_000),
        entry("fresh"),
        entry("stale", last_seen_ms=NOW_MS - STALE_MS - 1),
        entry("broken", failures=FAILURES_MAX + 2),
        entry("fresh", addr="/ip4/8.8.4.4/tcp/1", last_seen_ms=NOW_MS - 1),
    ]
    ranked = rank(entries, NOW_MS, peers_max=10)
    assert [e.peer_id for e in ranked] == ["fresh", "old", "failing"]
    assert ranked[0].addr == "/ip4/8.8.8.8/tcp/1"  # the peer's best address only
    assert len(rank(entries, NOW_MS, peers_max=1)) == 1


def test_the_store_counts_successes_and_failures_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    store = PeerStore(path)
    store.record_success([("a", "/ip4/8.8.8.8/tcp/1"), ("b", "/ip4/8.8.4.4/tcp/2")], NOW_MS)
    store.record_success([("a", "/ip4/8.8.8.8/tcp/1")], NOW_MS + 5)
    store.record_failure("b", "/ip4/8.8.4.4/tcp/2")
    store.record_failure("nobody", "/ip4/1.1.1.1/tcp/3")  # unknown: nothing to count
    store.close()
    reopened = PeerStore(path)
    by_peer = {e.peer_id: e for e in reopened.entries()}
    assert set(by_peer) == {"a", "b"}
    assert (by_peer["a"].successes, by_peer["a"].last_seen_ms) == (2, NOW_MS + 5)
    assert by_peer["b"].failures == 1
    assert [e.peer_id for e in reopened.best(NOW_MS + 5)] == ["a", "b"]
    reopened.close()


def test_the_store_is_bounded_per_peer_and_in_total(tmp_path: Path) -> None:
    store = PeerStore(tmp_path / "peers.sqlite")
    for index in range(ADDRS_PER_PEER_MAX + 3):
        store.record_success([("a", f"/ip4/8.8.8.8/tcp/{index + 1}")], NOW_MS + index)
    assert len(store.entries()) == ADDRS_PER_PEER_MAX
    store.record_success(
        [(f"p{index}", "/ip4/8.8.8.8/tcp/1") for index in range(ENTRIES_MAX + 10)], NOW_MS
    )
    store.record_success([("old", "/ip4/8.8.8.8/tcp/1")], NOW_MS - STALE_MS - 1)
    removed = store.prune(NOW_MS)
    assert removed == ADDRS_PER_PEER_MAX + 10 + 1
    assert len(store.entries()) == ENTRIES_MAX
    assert "old" not in {e.peer_id for e in store.entries()}
    store.close()


def test_a_damaged_store_is_set_aside_and_the_node_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "peers.sqlite"
    path.write_bytes(b"this is not a database, just noise" * 100)
    store = PeerStore(path)
    assert store.entries() == []
    store.record_success([("a", "/ip4/8.8.8.8/tcp/1")], NOW_MS)
    assert [e.peer_id for e in store.entries()] == ["a"]
    store.close()
    assert (tmp_path / "peers.sqlite.damaged").read_bytes().startswith(b"this is not")


def test_a_store_that_refuses_writes_never_stops_the_keeper(tmp_path: Path) -> None:
    """A full disk (here: SQLite refusing every write) costs the peer store its updates, not
    the node its life: the keeper logs it, keeps what worked for the next flush, and writes it
    once the store takes writes again."""
    store = PeerStore(tmp_path / "peers.sqlite")
    keeper = PeerStoreKeeper(cast(IHost, None), store, ("8.8.8.8",))
    keeper.note_working("a", "/ip4/8.8.4.4/tcp/1")
    store._db.execute("PRAGMA query_only = ON")  # every write now fails as on a full disk
    keeper.flush()
    keeper.flush()
    assert keeper.write_failures == 2
    assert store.entries() == []
    store._db.execute("PRAGMA query_only = OFF")
    keeper.flush()
    assert keeper.write_failures == 0
    assert [(e.peer_id, e.addr) for e in store.entries()] == [("a", "/ip4/8.8.4.4/tcp/1")]
    store.close()
