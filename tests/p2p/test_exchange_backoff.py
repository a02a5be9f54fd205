"""The peer exchange backs off once a node knows the peers around it, and resets on a change."""

from __future__ import annotations

import pytest
import trio

from hearth.p2p.dialing import AddressBook
from hearth.p2p.discovery import (
    EXCHANGE_INTERVAL_S_MAX,
    EXCHANGE_INTERVAL_S_MAX_FEW_PEERS,
    EXCHANGE_PEERS_FEW,
    ExchangeBackoff,
    keep_bootstrap_connected,
)
from hearth.p2p.host import open_transport
from tests.p2p.helpers import config, connected_ids, wait_until

A, B, C = frozenset({"a"}), frozenset({"a", "b"}), frozenset({"a", "b", "c"})
MANY = frozenset(f"p{i}" for i in range(EXCHANGE_PEERS_FEW))


def test_quiet_rounds_double_the_wait_up_to_the_cap() -> None:
    backoff = ExchangeBackoff(1.0)
    assert backoff.after_round(MANY, dialled=0) == 1.0  # the set changed since the last round
    waits = [backoff.after_round(MANY, dialled=0) for _ in range(10)]
    assert waits[:6] == [2.0, 4.0, 8.0, 16.0, 32.0, 64.0]
    assert max(waits) == EXCHANGE_INTERVAL_S_MAX


def test_a_node_with_few_peers_keeps_asking_them_every_few_seconds() -> None:
    """Its one peer (a bootstrap hub) meets and verifies others after a quiet round."""
    backoff = ExchangeBackoff(1.0)
    waits = [backoff.after_round(A, dialled=0) for _ in range(10)]
    assert waits[:5] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert max(waits) == EXCHANGE_INTERVAL_S_MAX_FEW_PEERS


def test_a_lost_or_new_peer_or_a_fruitful_round_resets_it() -> None:
    backoff = ExchangeBackoff(0.5)
    for _ in range(5):
        backoff.after_round(B, dialled=0)
    assert backoff.interval_s == 8.0
    assert backoff.changed(A) and backoff.changed(C) and not backoff.changed(B)
    assert backoff.after_round(A, dialled=0) == 0.5  # a peer lost
    backoff.after_round(A, dialled=0)
    assert backoff.after_round(A, dialled=1) == 0.5  # a round that found someone
    assert backoff.after_round(frozenset(), dialled=0) == 0.5  # alone: keep asking


@pytest.mark.integration
async def test_a_settled_node_stops_asking_every_round_and_wakes_on_a_change() -> None:
    async with open_transport(config("a", "127.0.0.2")) as a:
        boot = (a.listen_addrs[0],)
        async with (
            open_transport(config("b", "127.0.0.3", bootstrap=boot)) as b,
            open_transport(config("c", "127.0.0.4", bootstrap=boot)) as c,
        ):
            await wait_until(lambda: connected_ids(b) == {a.peer_id, c.peer_id})
            backoff = b.exchange.backoff
            assert backoff is not None
            await wait_until(lambda: backoff.interval_s >= 8 * backoff.base_s)
            rounds = b.statistics().exchange_rounds
            await trio.sleep(1.5)  # six base intervals (0.25 s): at most one backed-off round
            assert b.statistics().exchange_rounds - rounds <= 1
            # A newcomer reaches b through a's exchange: b asks again at once.
            async with open_transport(config("d", "127.0.0.5", bootstrap=boot)) as d:
                await wait_until(lambda: d.peer_id in connected_ids(b))
                await wait_until(lambda: b.statistics().exchange_rounds > rounds + 1, 1.0)


class _Network:
    """Records the dials `keep_bootstrap_connected` makes; each one fails."""

    def __init__(self) -> None:
        self.dials = 0

    def unblock_peer(self, peer: object) -> None:
        pass

    async def dial_addr(self, addr: object, peer: object) -> None:
        self.dials += 1
        raise OSError("refused")


class _Host:
    def __init__(self, peers: int) -> None:
        self.network = _Network()
        self.peers = [object() for _ in range(peers)]

    def get_connected_peers(self) -> list[object]:
        return self.peers

    def get_network(self) -> _Network:
        return self.network


BOOT = "/ip4/127.0.0.9/tcp/4001/p2p/12D3KooWE6JobxV3HQFWPwcmv7R1RfanJmfyS3CJbM42gu3daio6"


@pytest.mark.parametrize(("peers", "redials"), [(EXCHANGE_PEERS_FEW - 1, True),
                                                (EXCHANGE_PEERS_FEW, False)])  # fmt: skip
async def test_a_lost_bootstrap_is_redialled_only_by_a_node_with_few_peers(
    autojump_clock: trio.abc.Clock, peers: int, redials: bool
) -> None:
    """A hub sheds the peers that dialled it once they have others (issue 14): a node with
    enough peers must not dial it straight back."""
    host = _Host(peers)
    failures: list[None] = []
    with trio.move_on_after(60):
        await keep_bootstrap_connected(
            host,  # type: ignore[arg-type]
            AddressBook(),
            BOOT,
            1.0,
            lambda: failures.append(None),
        )
    assert (host.network.dials > 0) is redials
    assert len(failures) == host.network.dials
