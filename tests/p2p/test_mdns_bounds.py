"""A LAN full of mDNS announcements costs a bounded queue and a bounded number of dials."""

from __future__ import annotations

import pytest
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from hearth.p2p import mdns
from hearth.p2p.dialing import AddressBook
from hearth.p2p.host import open_transport
from hearth.protocol.identity import Identity
from tests.p2p.helpers import config, seed

pytestmark = pytest.mark.integration

NOBODY = "/ip4/127.0.0.9/tcp/9"  # nothing listens there


def fake(index: int) -> PeerInfo:
    peer = ID.from_base58(Identity(seed(f"lan-{index}")).peer_id)
    return PeerInfo(peer, [Multiaddr(NOBODY), Multiaddr(f"/ip4/127.0.0.9/tcp/{10 + index}")])


async def test_announcements_beyond_the_queue_are_dropped_and_dials_are_budgeted() -> None:
    async with open_transport(config("lan", "127.0.0.2")) as node:
        finder = mdns.MdnsFinder(node.host, AddressBook(), psk=None)
        for index in range(mdns.FOUND_QUEUE_MAX + 36):
            finder._enqueue(fake(index))
        assert (finder.found, finder.dropped) == (mdns.FOUND_QUEUE_MAX + 36, 36)
        for index in range(100):
            await finder.consider(fake(index))
        await finder.consider(fake(0))  # tried lately: not again
        assert finder.attempts == mdns.DIALS[0]
        assert finder.dialled == 0


def test_private_networks_announce_their_own_service() -> None:
    assert mdns.fingerprint(None) is None
    tag = mdns.fingerprint(b"k" * 32)
    assert tag is not None and len(tag) == 8 and tag != mdns.fingerprint(b"j" * 32)
