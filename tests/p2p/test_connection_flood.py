"""Connection floods from fresh identities against a real host: slots are released, caps hold.

The attackers are child processes (`tests/p2p/raw_peer.py`) that run real handshakes (TCP,
Noise, yamux) with a fresh key each, so a thousand identities cost a few seconds, not a
thousand py-libp2p hosts.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio

from hearth.p2p.host import Libp2pTransport, open_transport
from hearth.p2p.patches import swarm as swarm_patch
from hearth.p2p.transport import ConnectionLimits
from tests.p2p.helpers import ECHO, config, connected_ids, serve_echo, wait_until

pytestmark = pytest.mark.integration


@contextmanager
def attacker(
    addr: str, sources: list[str], count: int, *, hold: bool = False, secure_only: bool = False
) -> Iterator[subprocess.Popen[str]]:
    args = [sys.executable, "-m", "tests.p2p.raw_peer", addr, "--count", str(count)]
    args += [arg for source in sources for arg in ("--source", source)]
    args += ["--hold"] if hold else []
    args += ["--secure-only"] if secure_only else []
    child = subprocess.Popen(
        args,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        yield child
    finally:
        if child.stdin is not None:
            child.stdin.close()  # a holding child lets go of its connections and exits
        child.wait(timeout=30)


async def finished(child: subprocess.Popen[str]) -> tuple[int, int]:
    """Wait for the child's ``done <succeeded> <failed>`` line."""
    assert child.stdout is not None
    line = await trio.to_thread.run_sync(child.stdout.readline)
    word, succeeded, failed = line.split()
    assert word == "done", line
    return int(succeeded), int(failed)


async def honest_peer_is_served(node: Libp2pTransport, name: str, host: str) -> bool:
    async with open_transport(config(name, host)) as honest:
        try:
            with trio.fail_after(10):
                await honest.connect(node.listen_addrs[0])
                return await honest.request(node.peer_id, ECHO, b"hi", 5000) == b"echo:hi"
        except Exception:
            return False


def _loopbacks(prefix: str, count: int) -> list[str]:
    return [f"{prefix}.{index}" for index in range(1, count + 1)]


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "upstream"])
async def test_inbound_slots_are_released_when_connections_close(
    patched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not patched:
        monkeypatch.setattr(swarm_patch.ConnectionManager, "install", lambda self: None)
    limits = ConnectionLimits(connections_low=6, connections_high=9, connections_max=12)
    async with (
        open_transport(config("node", "127.0.0.2", connection_limits=limits)) as node,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, node, [])
        # The node's connection cap, one after another, each closed at once; then, once the
        # node has seen them all go, the cap again: only released slots let the second wave in.
        with attacker(node.listen_addrs[0], _loopbacks("127.0.1", 8), limits.connections_max) as c:
            first, _ = await finished(c)
        await wait_until(lambda: not connected_ids(node))
        with attacker(node.listen_addrs[0], _loopbacks("127.0.2", 8), limits.connections_max) as c:
            second, _ = await finished(c)
        await wait_until(lambda: not connected_ids(node))
        assert first == limits.connections_max
        if patched:
            assert second > 0  # slots came back when the first wave's connections closed
            assert await honest_peer_is_served(node, "honest", "127.0.0.5")
        else:
            # py-libp2p 0.8.1 kept every slot until the swarm stopped: eclipsed.
            assert second == 0
            assert not await honest_peer_is_served(node, "honest", "127.0.0.5")
        nursery.cancel_scope.cancel()


async def test_a_thousand_fresh_identities_leave_the_node_accepting_honest_peers() -> None:
    """400 full connections (Noise and yamux, then closed: each takes and must give back a slot;
    more than upstream's 250 and our 128), 500 that hang up after Noise, and 100 from one IP
    that stay open: 1,000 fresh identities."""
    limits = ConnectionLimits()
    # Nobody to discover here: a slow exchange keeps the node from asking each attacker.
    async with (
        open_transport(config("node", "127.0.0.2", discovery_interval_s=5.0)) as node,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(serve_echo, node, [])
        addr = node.listen_addrs[0]
        started_s = trio.current_time()
        with (
            attacker(addr, _loopbacks("127.0.1", 40), 200) as churn_a,
            attacker(addr, _loopbacks("127.0.2", 40), 200) as churn_b,
            attacker(addr, _loopbacks("127.0.4", 40), 500, secure_only=True) as churn_c,
            attacker(addr, ["127.0.3.1"], 100, hold=True) as holder,
        ):
            children = (churn_a, churn_b, churn_c, holder)
            results = [await finished(child) for child in children]
            elapsed_s = trio.current_time() - started_s
            per_ip = node._connections.gate.per_ip()
            # The single-IP flood holds at most its cap; the rest were refused before a handshake.
            assert per_ip.get("127.0.3.1", 0) <= limits.connections_per_ip_max
            assert results[3][0] == limits.connections_per_ip_max
            assert node.statistics().connections_refused >= 100 - limits.connections_per_ip_max
            assert sum(r[0] for r in results[:3]) >= 850  # the churn got in: slots came back
            assert await honest_peer_is_served(node, "honest", "127.0.0.5")
        # The holder's connections closed with its process; their slots came back with them.
        await wait_until(lambda: "127.0.3.1" not in node._connections.gate.per_ip())
        print(f"1000 connection attempts in {elapsed_s:.1f} s: {results}, per IP {per_ip}")
        assert await honest_peer_is_served(node, "honest-2", "127.0.0.6")
        nursery.cancel_scope.cancel()


async def test_the_trimmer_closes_connections_above_high_water_only() -> None:
    """The trimmer skips its per-connection work while no cap is exceeded (issue 14: it cost an
    idle node 3-4 % of its CPU), and still trims to low water once one is."""
    limits = ConnectionLimits(
        connections_low=1, connections_high=2, connections_max=12, trim_grace_ms=0
    )
    slow = {"discovery_interval_s": 5.0}
    async with (
        open_transport(config("node", "127.0.0.2", connection_limits=limits, **slow)) as node,
        open_transport(config("p1", "127.0.0.3", **slow)) as p1,
        open_transport(config("p2", "127.0.0.4", **slow)) as p2,
        open_transport(config("p3", "127.0.0.5", **slow)) as p3,
    ):
        for peer in (p1, p2):
            await peer.connect(node.listen_addrs[0])
        assert await node._connections.trim() == 0  # at high water: nothing to do
        await p3.connect(node.listen_addrs[0])
        await wait_until(lambda: node.statistics().connections_trimmed >= 2)
