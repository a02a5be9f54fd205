"""mDNS on a home LAN: announce this node, and dial the nodes found (py-libp2p only records them).

py-libp2p 0.8.1's `MDNSDiscovery` runs zeroconf in its own threads: it fills the peerstore and
calls the process-wide ``peerDiscovery`` handlers from a zeroconf thread. We hand each find to
trio through a bounded channel (a full channel drops it) and dial it here, within a dial budget
and a per-peer backoff, so a LAN full of announcements costs a bounded number of dials. A
private network announces a service of its own (``_p2p-<fingerprint>``), so two testnets on one
LAN do not even try each other. ADR 0036.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
from typing import Final

import multiaddr
import psutil
import trio
from libp2p.abc import IHost
from libp2p.discovery.events.peerDiscovery import peerDiscovery
from libp2p.discovery.mdns.mdns import MDNSDiscovery, create_mdns_discovery
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from hearth.p2p import discovery
from hearth.p2p.dialing import AddressBook, TokenBuckets

logger = logging.getLogger(__name__)

FOUND_QUEUE_MAX: Final = 64
ADDRS_PER_FIND_MAX: Final = 4
REDIAL_S_MIN: Final = 30.0  # a found peer that failed (or left) is not dialled again sooner
DIALS: Final = (16, 4_000)  # burst, ms per token: dials of peers found by mDNS


def fingerprint(psk: bytes | None) -> str | None:
    """The private network's mDNS tag (8 hex characters, fits a DNS-SD service label)."""
    return None if psk is None else hashlib.sha256(b"hearth-mdns:" + psk).hexdigest()[:8]


def announced_addrs(host: IHost) -> list[str]:
    """Our listen addresses, with an unspecified one (0.0.0.0) spelled out per LAN address."""
    out: list[str] = []
    for addr in host.get_addrs():
        text = discovery.transport_addr(addr)
        if not text.startswith(("/ip4/0.0.0.0/", "/ip6/::/")):
            out.append(text)
            continue
        port = text.rsplit("/", 1)[1]
        for ip in _lan_ips():
            out.append(f"/ip4/{ip}/tcp/{port}")
    return out


def _lan_ips() -> list[str]:
    found = []
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if (
                entry.family.name == "AF_INET"
                and not ipaddress.ip_address(entry.address).is_loopback
            ):
                found.append(entry.address)
    return sorted(found)


def _dialable(addr: multiaddr.Multiaddr) -> bool:
    parts = str(addr).split("/")
    return len(parts) == 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp"


class MdnsFinder:
    """Announce, listen, and dial what is found; `run` until cancelled."""

    def __init__(self, host: IHost, book: AddressBook, psk: bytes | None) -> None:
        self._host = host
        self._book = book
        self._psk = psk
        self._send, self._receive = trio.open_memory_channel[PeerInfo](FOUND_QUEUE_MAX)
        self._token: trio.lowlevel.TrioToken | None = None
        self._last_tried_s: dict[ID, float] = {}
        self._budget = TokenBuckets(*DIALS)
        self.found = 0
        self.dropped = 0
        self.dialled = 0
        self.attempts = 0

    def _on_found(self, info: PeerInfo) -> None:
        """Called from a zeroconf thread: hand over to trio, never block, never raise."""
        token = self._token
        if token is None:
            return
        try:
            token.run_sync_soon(self._enqueue, info)
        except trio.RunFinishedError:
            return

    def _enqueue(self, info: PeerInfo) -> None:
        """In trio's thread: queue a find for `run`, or drop and count it when the queue is full."""
        self.found += 1
        try:
            self._send.send_nowait(info)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self.dropped += 1

    async def run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        peerDiscovery.register_peer_discovered_handler(self._on_found)
        service = await trio.to_thread.run_sync(self._open)
        try:
            await trio.to_thread.run_sync(service.broadcaster.register)
            async for info in self._receive:
                await self.consider(info)
        finally:
            peerDiscovery.unregister_peer_discovered_handler(self._on_found)
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_close, service)

    def _open(self) -> MDNSDiscovery:
        addrs = announced_addrs(self._host)
        port = int(addrs[0].rsplit("/", 1)[1]) if addrs else 0
        peer = self._host.get_id().to_base58()
        return create_mdns_discovery(
            self._host.get_network(),
            port=port,
            listen_addrs=[f"{a}/p2p/{peer}" for a in addrs],
            private_network_fingerprint=fingerprint(self._psk),
        )

    async def consider(self, info: PeerInfo) -> None:
        """Dial one find, unless it is us, connected, tried lately, or over the budget."""
        peer = info.peer_id
        now_s = trio.current_time()
        if peer == self._host.get_id() or peer in self._host.get_connected_peers():
            return
        if now_s - self._last_tried_s.get(peer, -REDIAL_S_MIN) < REDIAL_S_MIN:
            return
        if not self._budget.available("mdns", int(now_s * 1000)):
            return
        self._budget.take("mdns", int(now_s * 1000))
        self._last_tried_s[peer] = now_s
        self.attempts += 1
        if len(self._last_tried_s) > 4 * FOUND_QUEUE_MAX:  # bounded: forget the oldest
            oldest = min(self._last_tried_s, key=lambda p: self._last_tried_s[p])
            del self._last_tried_s[oldest]
        for addr in [a for a in info.addrs if _dialable(a)][:ADDRS_PER_FIND_MAX]:
            if await discovery.dial(self._host, PeerInfo(peer, [addr]), fresh=True):
                self.dialled += 1
                self._book.record_working(peer.to_base58(), str(addr))
                logger.info("connected to %s found by mDNS at %s", peer, addr)
                return


def _close(service: MDNSDiscovery) -> None:
    service.broadcaster.unregister()
    service.listener.stop()
    service.zeroconf.close()
