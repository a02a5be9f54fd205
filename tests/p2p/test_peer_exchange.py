"""Peer-exchange poisoning on real hosts: a hostile peer names hundreds of addresses.

Before ADR 0014 a node dialled up to 8 named peers a round (132 connections to
attacker-chosen addresses in 10 s); now it dials hearsay only within budgets and passes on
only addresses it has seen work.
"""

from __future__ import annotations

import pytest
import trio
from libp2p.abc import INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from hearth.p2p import dialing
from hearth.p2p.discovery import PEER_EXCHANGE_PROTOCOL, exchange_reply
from hearth.p2p.host import open_transport
from hearth.p2p.streams import encode_frame, read_frame
from hearth.protocol.identity import Identity
from tests.p2p.helpers import config, connected_ids, seed, wait_until

pytestmark = pytest.mark.integration

VICTIM_HOST = "127.0.0.9"
NOBODY_HOST = "127.0.0.10"
NAMED_ADDRS = 300
WATCH_S = 3.0


def poisoned_reply(victim_port: int) -> bytes:
    """Hundreds of made-up peers: half at a victim's port, half at ports where nobody listens."""
    lines = []
    for index in range(NAMED_ADDRS):
        peer = Identity(seed(f"made-up-{index}")).peer_id
        if index % 2:
            lines.append(f"/ip4/{VICTIM_HOST}/tcp/{victim_port}/p2p/{peer}")
        else:
            lines.append(f"/ip4/{NOBODY_HOST}/tcp/{1 + index}/p2p/{peer}")
    return "\n".join(lines).encode()


async def count_accepts(listeners: list[trio.SocketListener], accepted: list[int]) -> None:
    async def take(stream: trio.SocketStream) -> None:
        accepted.append(1)
        await stream.aclose()

    await trio.serve_listeners(take, listeners)


async def test_a_poisoned_exchange_costs_a_bounded_number_of_dials() -> None:
    accepted: list[int] = []
    victim = await trio.open_tcp_listeners(0, host=VICTIM_HOST)
    victim_port = victim[0].socket.getsockname()[1]

    async def poison(stream: INetStream) -> None:
        await read_frame(stream, frame_bytes_max=0)
        await stream.write(encode_frame(poisoned_reply(victim_port)))
        await stream.close()

    async with (
        trio.open_nursery() as nursery,
        open_transport(config("a", "127.0.0.2")) as a,
        open_transport(config("c", "127.0.0.4", bootstrap=(a.listen_addrs[0],))) as c,
        open_transport(config("hostile", "127.0.0.3")) as hostile,
    ):
        nursery.start_soon(count_accepts, victim, accepted)
        hostile.host.set_stream_handler(TProtocol(PEER_EXCHANGE_PROTOCOL), poison)
        await wait_until(lambda: c.peer_id in connected_ids(a))
        async with open_transport(config("n", "127.0.0.5", bootstrap=(a.listen_addrs[0],))) as n:
            await hostile.connect(n.listen_addrs[0])
            # The node still finds the honest peer it learns of through a...
            await wait_until(lambda: c.peer_id in connected_ids(n))
            await trio.sleep(WATCH_S)  # ...and keeps refusing the hostile list round after round
            stats = n.statistics()
            burst = dialing.DIALS_PER_SOURCE_PEER[0]
            # At most one budget's worth of dials to named addresses, plus the one to c.
            assert stats.exchange_dials <= burst + 1, stats
            assert stats.exchange_dials_refused > 0
            # n passes the hostile peer on (it does listen where it says), so a and c meet it
            # and are poisoned too: each of the three spends at most its own target budget.
            assert len(accepted) <= 3 * dialing.DIALS_PER_TARGET_IP[0]
            # Nothing it could not connect to is passed on.
            print(f"n: {stats.exchange_dials} dials, {stats.exchange_dials_refused} refused; ")
            print(f"victim: {len(accepted)} connections from all three honest nodes")
            reply = exchange_reply(n.host, n._book, ID.from_base58(hostile.peer_id), "127.0.0.3")
            assert VICTIM_HOST not in reply.decode() and NOBODY_HOST not in reply.decode()
            assert c.peer_id in reply.decode()
        nursery.cancel_scope.cancel()
