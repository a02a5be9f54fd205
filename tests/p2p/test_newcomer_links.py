"""What a newcomer does with its first few links, on real hosts (issue 14: 50 nodes on one
machine, where one node in 50 sat with a busy bootstrap node as its only peer for a minute).

- A node asks a few of its peers per exchange round, not all of them; with few peers, all.
  A round's asks, and its dials, run at once, not one after another.
- A node asks any connected peer for the market while none is known to be in the topic.
- A dial-back's handshake probe vouches for the address in the peer exchange, as the
  exchange's own probe would, so a bootstrap node does not handshake with each newcomer twice.
"""

from __future__ import annotations

import random

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID

from hearth.p2p.dialing import AddressBook, Hearsay
from hearth.p2p.discovery import EXCHANGE_ASKS_PER_ROUND, PeerExchange
from hearth.p2p.host import open_transport
from hearth.p2p.transport import TransportStatistics
from hearth.protocol import limits
from hearth.protocol.identity import Identity
from hearth.protocol.messages import TOPIC_CAPACITY
from tests.p2p.helpers import TOPIC, config, connected_ids, seed, wait_until

pytestmark = pytest.mark.integration


async def test_a_round_asks_a_few_peers_and_all_of_them_when_there_are_few() -> None:
    async with open_transport(config("hub", "127.0.0.2")) as hub:
        boot = (hub.listen_addrs[0],)
        async with (
            open_transport(config("p1", "127.0.0.3", bootstrap=boot)) as p1,
            open_transport(config("p2", "127.0.0.4", bootstrap=boot)) as p2,
            open_transport(config("p3", "127.0.0.5", bootstrap=boot)) as p3,
            open_transport(config("p4", "127.0.0.6", bootstrap=boot)) as p4,
        ):
            leaves = {p.peer_id for p in (p1, p2, p3, p4)}
            await wait_until(lambda: leaves <= connected_ids(hub))
            asked: list[str] = []

            async def request(peer: str, protocol: str, data: bytes, timeout_ms: int) -> bytes:
                # Each ask waits for the round's others: asks one after another never finish.
                asked.append(peer)
                await wait_until(lambda: len(asked) >= EXCHANGE_ASKS_PER_ROUND, timeout_s=5)
                return await hub.request(peer, protocol, data, timeout_ms)

            exchange = PeerExchange(
                hub.host, request, hub.reputation, TransportStatistics(), AddressBook(),
                hub._remote_ip, rng=random.Random(1),
            )  # fmt: skip
            peers = {ID.from_base58(p) for p in leaves}
            await exchange._ask(peers)
            assert len(asked) == len(set(asked)) == EXCHANGE_ASKS_PER_ROUND < len(peers)
            assert set(asked) <= leaves
            asked.clear()
            few = set(sorted(peers, key=str)[:EXCHANGE_ASKS_PER_ROUND])
            await exchange._ask(few)
            assert sorted(asked) == sorted(p.to_base58() for p in few)


async def test_the_market_is_asked_of_any_peer_until_one_is_known_in_the_topic() -> None:
    market = (TOPIC_CAPACITY,)
    async with (
        open_transport(config("a", "127.0.0.2", topics=market)) as a,
        open_transport(config("other", "127.0.0.3", topics=(TOPIC,))) as other,
    ):
        assert a._market_peers() == []  # alone: nobody to ask
        await other.connect(a.listen_addrs[0])
        await wait_until(lambda: a._market_peers() == [other.peer_id])
        async with open_transport(config("b", "127.0.0.4", topics=market)) as b:
            await b.connect(a.listen_addrs[0])
            # Once a peer is known in the topic, only such peers are asked.
            await wait_until(lambda: a._market_peers() == [b.peer_id])


async def test_a_dial_back_probe_that_worked_vouches_for_the_address() -> None:
    async with (
        open_transport(config("a", "127.0.0.2")) as a,
        open_transport(config("b", "127.0.0.3")) as b,
    ):
        await b.connect(a.listen_addrs[0])
        book = AddressBook()
        a._book = book  # a fresh book: only what the probe records is in it
        where = b.listen_addrs[0].split("/p2p/")[0]
        b_id = ID.from_base58(b.peer_id)
        assert await a._probe(b_id, multiaddr.Multiaddr(where))
        assert book.verified(b.peer_id) == [where]
        nobody = "/ip4/127.0.0.3/tcp/1"
        assert not await a._probe(ID.from_base58(a.peer_id), multiaddr.Multiaddr(nobody))
        assert book.verified(a.peer_id) == []


async def test_a_rounds_dials_run_at_once() -> None:
    """Four named peers that accept TCP and never answer: each dial runs to its timeout, and
    the round lasts about one timeout, not four."""
    listeners = [await trio.open_tcp_listeners(0, host=f"127.0.0.{20 + i}") for i in range(4)]
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery, open_transport(config("a", "127.0.0.2")) as a:
        for listener in listeners:
            nursery.start_soon(trio.serve_listeners, hold, listener)
        named = [
            Hearsay(
                Identity(seed(f"silent-{i}")).peer_id,
                f"/ip4/127.0.0.{20 + i}/tcp/{listener[0].socket.getsockname()[1]}",
                f"127.0.0.{20 + i}", "teller", "127.0.0.9",
            )
            for i, listener in enumerate(listeners)
        ]  # fmt: skip
        book = AddressBook()
        exchange = PeerExchange(
            a.host, a.request, a.reputation, TransportStatistics(), book, a._remote_ip
        )
        started_s = trio.current_time()
        assert await exchange._dial(named, set()) == 0
        took_s = trio.current_time() - started_s
        assert len(held) == len(named)
        assert took_s < 2 * limits.DIAL_TIMEOUT_MS / 1000, took_s
        assert all(book.in_backoff(h.addr, int(trio.current_time() * 1000)) for h in named)
        nursery.cancel_scope.cancel()
