"""Finding the network again and beyond the bootstrap list: the peer store, mDNS and the DHT.

`start_finding` runs, beside the bootstrap dialler and the peer exchange of `p2p.discovery`:
the peer store keeper (dial the best known peers at once on start, keep what works on disk),
mDNS on a home LAN (`p2p.mdns`) and the Kademlia DHT under ``/hearth`` (`p2p.dht`). ADR 0036.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import multiaddr
import trio
from libp2p.abc import IHost
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from hearth.p2p import discovery
from hearth.p2p.dht import HearthDht, choose_mode
from hearth.p2p.dialing import AddressBook
from hearth.p2p.finding_config import DiscoveryConfig
from hearth.p2p.mdns import MdnsFinder
from hearth.p2p.peerstore import KnownAddr, PeerStore, may_store

logger = logging.getLogger(__name__)

RECONNECT_DIALS_PARALLEL: Final = 8
FLUSH_INTERVAL_S: Final = 2.0
TOUCH_INTERVAL_S: Final = 60.0  # connected peers' addresses marked as seen
PRUNE_INTERVAL_S: Final = 3600.0
PENDING_MAX: Final = 4096


def wall_ms() -> int:
    return int(time.time() * 1000)


class PeerStoreKeeper:
    """Dials known peers on start; writes first-hand working addresses to the store in batches."""

    def __init__(self, host: IHost, store: PeerStore, own_ips: tuple[str, ...]) -> None:
        self._host = host
        self._store = store
        self._own_ips = own_ips
        self._pending: dict[tuple[str, str], None] = {}
        self.reconnected = 0
        self.reconnect_ms: int | None = None  # how long the dials on start took, once done
        self.write_failures = 0  # store writes refused (a full disk, a damaged file)

    def note_working(self, peer_id: str, addr: str) -> None:
        """An address that worked (``AddressBook.on_working``); kept if the rules allow."""
        if len(self._pending) < PENDING_MAX and may_store(addr, self._own_ips):
            self._pending[(peer_id, addr)] = None

    async def reconnect(self) -> int:
        """Dial the best known peers, several at once; returns how many answered."""
        started_s = trio.current_time()
        best = self._store.best(wall_ms())
        limiter = trio.CapacityLimiter(RECONNECT_DIALS_PARALLEL)
        async with trio.open_nursery() as nursery:
            for entry in best:
                nursery.start_soon(self._dial_known, entry, limiter)
        self.reconnect_ms = round((trio.current_time() - started_s) * 1000)
        logger.log(
            logging.INFO if best else logging.DEBUG,  # a first start knows nobody: say nothing
            "reconnected to %d of %d known peers in %d ms",
            self.reconnected,
            len(best),
            self.reconnect_ms,
        )
        return self.reconnected

    async def _dial_known(self, entry: KnownAddr, limiter: trio.CapacityLimiter) -> None:
        try:
            info = PeerInfo(ID.from_base58(entry.peer_id), [multiaddr.Multiaddr(entry.addr)])
        except Exception as error:  # a damaged row: prune will drop it as it keeps failing
            logger.debug("unusable peer store entry %r: %r", entry, error)
            self._write(self._store.record_failure, entry.peer_id, entry.addr)
            return
        if info.peer_id in self._host.get_connected_peers():
            return
        async with limiter:
            if await discovery.dial(self._host, info, fresh=True):
                self.reconnected += 1
                self.note_working(entry.peer_id, entry.addr)
            else:
                self._write(self._store.record_failure, entry.peer_id, entry.addr)

    def flush(self, book: AddressBook | None = None) -> None:
        """Write what worked since the last flush (and, with ``book``, every connected peer)."""
        if book is not None:
            for peer in self._host.get_connected_peers():
                text = peer.to_base58()
                for addr in book.verified(text):
                    self.note_working(text, addr)
        pending = list(self._pending)
        if pending and self._write(self._store.record_success, pending, wall_ms()):
            self._pending = {}  # written; a refused write keeps them for the next flush

    def _write(self, write: Callable[..., object], *args: object) -> bool:
        """One write to the peer store. The store is a cache that makes restarts faster: a
        full disk or a damaged file must never stop the node, so a refused write is logged
        (once until writes work again) and the work goes on without it."""
        try:
            write(*args)
        except (sqlite3.Error, OSError) as error:
            if not self.write_failures:
                logger.warning("peer store not written (%s); it is tried again later", error)
            self.write_failures += 1
            return False
        self.write_failures = 0
        return True

    async def run(self, book: AddressBook) -> None:
        """Flush every few seconds, mark connected peers as seen, prune now and then."""
        touched_s = pruned_s = trio.current_time()
        self._write(self._store.prune, wall_ms())
        try:
            while True:
                await trio.sleep(FLUSH_INTERVAL_S)
                now_s = trio.current_time()
                touch = now_s - touched_s >= TOUCH_INTERVAL_S
                self.flush(book if touch else None)
                touched_s = now_s if touch else touched_s
                if now_s - pruned_s >= PRUNE_INTERVAL_S:
                    self._write(self._store.prune, wall_ms())
                    pruned_s = now_s
        finally:
            self.flush()


@dataclass
class Finding:
    """What `start_finding` started (None: not asked for), for status and tests."""

    keeper: PeerStoreKeeper | None = None
    dht: HearthDht | None = None
    mdns: MdnsFinder | None = None


async def start_finding(
    nursery: trio.Nursery,
    host: IHost,
    book: AddressBook,
    config: DiscoveryConfig,
    own_ips: tuple[str, ...],
    psk: bytes | None,
) -> Finding:
    """Start what ``config`` asks for in ``nursery``."""
    found = Finding()
    mode = choose_mode(config.dht_mode, own_ips[0] if own_ips else "")
    if mode is not None:
        found.dht = HearthDht(host, mode)
        nursery.start_soon(found.dht.run)
    if config.mdns:
        found.mdns = MdnsFinder(host, book, psk)
        nursery.start_soon(found.mdns.run)
    if config.peerstore_path:
        store = PeerStore(Path(config.peerstore_path))
        found.keeper = PeerStoreKeeper(host, store, own_ips)
        book.on_working = found.keeper.note_working
        nursery.start_soon(_keep, found.keeper, store, book)
    return found


async def _keep(keeper: PeerStoreKeeper, store: PeerStore, book: AddressBook) -> None:
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(keeper.reconnect)
            await keeper.run(book)
    finally:
        store.close()
