"""Circuit relay v2 and dial-back on real hosts over loopback (ADR 0035).

A node told it is private reserves a slot on a relay as soon as it is connected and advertises
its /p2p-circuit address; a third node reaches it through the relay only and request/response
works over that relayed connection, under a private-network key as in every testnet. Hole
punching is off here: on loopback DCUtR would turn the connection direct at once.
"""

from __future__ import annotations

import pytest
import trio
from multiaddr import Multiaddr

from hearth.p2p.host import open_transport
from hearth.p2p.reachability import Answer, State
from hearth.p2p.relay import RelaySettings
from hearth.p2p.transport import Inbound
from tests.p2p.helpers import ECHO, config, connected_ids, serve_echo, wait_until

pytestmark = pytest.mark.integration

PSK = bytes(range(32))
QUIET_S = 3600.0  # no peer exchange rounds: the test decides every connection itself


def nat_config(name: str, host: str, relay: RelaySettings, **more: object):  # type: ignore[no-untyped-def]
    return config(name, host, relay=relay, psk=PSK, discovery_interval_s=QUIET_S, **more)


RELAY = RelaySettings(hop="on", reachability="public", hole_punch=False)
PRIVATE = RelaySettings(hop="off", reachability="private", hole_punch=False)


async def test_a_private_node_is_reached_through_its_relay_and_serves_requests() -> None:
    seen: list[Inbound] = []
    async with (
        trio.open_nursery() as nursery,
        open_transport(nat_config("relay", "127.0.0.21", RELAY)) as relay,
        open_transport(nat_config("home", "127.0.0.22", PRIVATE)) as home,
        open_transport(nat_config("other", "127.0.0.23", PRIVATE)) as other,
    ):
        nursery.start_soon(serve_echo, home, seen)
        await home.connect(relay.listen_addrs[0])
        await wait_until(lambda: bool(home.reachability()["reservations"]))
        circuit = [a for a in home.advertised_addrs if "/p2p-circuit" in a]
        assert circuit, home.advertised_addrs
        assert home.reachability()["state"] == "private"
        assert relay.reachability()["relay_hop"] and not home.reachability()["relay_hop"]

        await other.connect(relay.listen_addrs[0])
        await other.connect(circuit[0])
        assert home.peer_id in connected_ids(other)
        kinds = {p.peer_id: p.connection for p in other.peers() if p.connected}
        assert kinds[home.peer_id] == "relayed" and kinds[relay.peer_id] == "direct", kinds
        opened = {p.peer_id: p.connections_opened for p in other.peers() if p.connected}
        assert opened[home.peer_id] == ("relayed",) and opened[relay.peer_id] == ("direct",)
        reply = await other.request(home.peer_id, ECHO, b"bid", timeout_ms=5000)
        assert reply == b"echo:bid"
        big = bytes(range(256)) * 1024  # a blob-sized frame crosses the relay intact
        assert await other.request(home.peer_id, ECHO, big, timeout_ms=10_000) == b"echo:" + big
        # The home learns nothing about the other's IP from a relayed connection.
        assert {p.peer_id: p.remote_ip for p in home.peers() if p.connected}[other.peer_id] == ""
        nursery.cancel_scope.cancel()


async def test_a_node_that_listens_is_public_by_dialback_and_a_closed_port_is_private() -> None:
    auto = RelaySettings(hole_punch=False)
    async with (
        open_transport(nat_config("server-1", "127.0.0.24", auto)) as server_1,
        open_transport(nat_config("server-2", "127.0.0.25", auto)) as server_2,
        open_transport(nat_config("asker", "127.0.0.26", auto)) as asker,
    ):
        await asker.connect(server_1.listen_addrs[0])
        await asker.connect(server_2.listen_addrs[0])
        # The node asks by itself as soon as it has peers to ask.
        await wait_until(lambda: asker.reachability()["state"] == "public", 60)
        assert asker.reachability()["confirmed_addrs"] == [asker.listen_addrs[0].split("/p2p/")[0]]
        # The same question for a port where nothing listens: a fresh dial fails, unlike
        # AutoNAT v1's reuse of the open connection. (Its own loop now waits minutes.)
        asker.nat._listen = lambda: ["/ip4/127.0.0.26/tcp/1"]
        asker.nat.reachability.answers.clear()
        asker.nat.reachability.state = State.UNKNOWN
        assert await asker.nat.check_reachability() == 2
        assert asker.reachability()["state"] == "private"
        assert asker.reachability()["confirmed_addrs"] == []


async def test_hole_punch_addresses_are_public_and_leave_from_the_punch_port() -> None:
    """What DCUtR sends and dials: never a private or loopback address (in a NAT lab every home
    is 192.168.1.10, so a peer dialling it reaches its own home), and only TCP, not circuits."""
    punching = RelaySettings(hop="off", reachability="private", hole_punch=True)
    async with open_transport(nat_config("home", "127.0.0.24", punching)) as home:
        nat = home.nat
        dcutr = nat._dcutr
        assert dcutr is not None
        assert await dcutr._get_observed_addrs() == []  # nothing public known: nothing to punch
        nat.reachability.record("server", Answer("198.51.100.7", (), ("/ip4/198.51.100.7/tcp/1",)))
        port = nat.punch_port("127.0.0.24")
        listen_port = int(home.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        assert port != listen_port  # the listen socket stays exclusive (patches/tcp.py)
        sent = [str(Multiaddr(a)) for a in await dcutr._get_observed_addrs()]
        assert sent == [f"/ip4/198.51.100.7/tcp/{port}"]
        offered = [
            "/ip4/192.168.1.10/tcp/4001",
            "/ip4/127.0.0.1/tcp/4001",
            f"/ip4/203.0.113.10/tcp/4001/p2p/{home.peer_id}/p2p-circuit",
            "/ip4/198.51.100.9/udp/5000",
            "/ip4/198.51.100.9/tcp/5000",
        ]
        kept = dcutr._decode_observed_addrs([Multiaddr(a).to_bytes() for a in offered])
        assert [str(a) for a in kept] == ["/ip4/198.51.100.9/tcp/5000"]
