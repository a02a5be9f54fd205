"""The Kademlia DHT under /hearth on real hosts: its protocol, its modes, strangers' records and
query floods (ADR 0036)."""

from __future__ import annotations

import pytest
import trio
from libp2p.kad_dht.kad_dht import DHTMode
from libp2p.peer.id import ID

from hearth.p2p.dht import KAD_PROTOCOL, choose_mode
from hearth.p2p.dialing import TokenBuckets
from hearth.p2p.finding_config import DiscoveryConfig
from hearth.p2p.host import open_transport
from tests.p2p.helpers import config, connected_ids, wait_until

SERVER = DiscoveryConfig(dht_mode="server")


def test_auto_mode_serves_only_from_a_public_address() -> None:
    assert choose_mode("auto", "203.0.113.5") == DHTMode.SERVER
    assert choose_mode("auto", "192.168.1.10") == DHTMode.CLIENT
    assert choose_mode("auto", "127.0.0.2") == DHTMode.CLIENT
    assert choose_mode("auto", "0.0.0.0") == DHTMode.CLIENT
    assert choose_mode("server", "127.0.0.2") == DHTMode.SERVER
    assert choose_mode("client", "203.0.113.5") == DHTMode.CLIENT
    assert choose_mode("off", "203.0.113.5") is None
    with pytest.raises(ValueError, match="dht_mode"):
        DiscoveryConfig(dht_mode="sometimes")


@pytest.mark.integration
async def test_servers_fill_their_tables_under_hearth_and_find_peers() -> None:
    async with open_transport(config("a", "127.0.0.2", discovery=SERVER)) as a:
        boot = (a.listen_addrs[0],)
        async with (
            open_transport(config("b", "127.0.0.3", bootstrap=boot, discovery=SERVER)) as b,
            open_transport(
                config(
                    "c", "127.0.0.4", bootstrap=boot, discovery=DiscoveryConfig("", False, "client")
                )
            ) as c,
        ):
            dht_a, dht_c = a.finding.dht, c.finding.dht
            assert dht_a is not None and dht_c is not None
            assert KAD_PROTOCOL in a.host.get_mux().get_protocols()
            assert "/ipfs/kad/1.0.0" not in a.host.get_mux().get_protocols()
            assert KAD_PROTOCOL not in c.host.get_mux().get_protocols()  # a client serves none
            await wait_until(lambda: b.peer_id in connected_ids(a))
            await wait_until(lambda: b.peer_id in connected_ids(c))

            async def fed() -> bool:
                return await dht_a.feed() >= 1 and await dht_c.feed() >= 2

            with trio.fail_after(10):
                while not await fed():  # noqa: ASYNC110 (the table fills as identify runs)
                    await trio.sleep(0.1)
            table_a = {p.to_base58() for p in dht_a.dht.routing_table.get_peer_ids()}
            assert b.peer_id in table_a and c.peer_id not in table_a  # clients are not servers
            found = await dht_c.dht.find_peer(ID.from_base58(b.peer_id))
            assert found is not None and found.peer_id.to_base58() == b.peer_id


@pytest.mark.integration
async def test_records_from_strangers_are_validated_and_query_floods_bounded() -> None:
    async with open_transport(config("a", "127.0.0.2", discovery=SERVER)) as a:
        boot = (a.listen_addrs[0],)
        async with open_transport(config("f", "127.0.0.3", bootstrap=boot)) as flooder:
            await wait_until(lambda: a.peer_id in connected_ids(flooder))
            dht_a = a.finding.dht
            assert dht_a is not None
            # A record in no validated namespace is refused, not stored.
            with pytest.raises(Exception, match=r"(?i)namespace|invalid|validator"):
                await dht_a.dht.put_value("/anything/goes", b"junk")
            burst = 8
            dht_a.queries = TokenBuckets(burst, 600_000)  # no refill within the test
            opened = 0
            for _ in range(burst * 4):
                try:
                    stream = await flooder.host.new_stream(a.host.get_id(), [KAD_PROTOCOL])
                    opened += 1
                    await stream.close()
                except Exception:
                    pass  # the server reset it, or refused past its stream cap
            assert opened > burst
            await wait_until(lambda: dht_a.queries_served + dht_a.queries_refused >= opened, 30)
            assert dht_a.queries_served == burst
            # A stream reset at once may fail on the flooder's side after the server saw it.
            assert opened - burst <= dht_a.queries_refused <= burst * 3
