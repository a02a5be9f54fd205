"""A 200 MiB push that ignores the yamux receive window, against a real node process.

The attacker does real handshakes with the testnet's key and a fresh identity each time the
node hangs up on it, and pushes DATA frames past the window until 200 MiB have left its
sockets. The node's RSS (VmRSS in /proc) must rise by less than 32 MB, and it must go on
serving honest peers: a new peer connects, and a job it publishes is verified and paid.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from hearth import Client
from hearth.client import JobResult
from hearth.node.runtime import read_psk
from hearth.protocol.messages import PROTOCOLS
from hearth.testnet import launch
from tests.e2e.hostile import hostile_peer
from tests.e2e.network import ECHO, assert_books_balance, config, start
from tests.p2p import raw_peer

pytestmark = pytest.mark.integration

PUSH_BYTES = 200 * 1024 * 1024
RSS_RISE_BYTES_MAX = 32 * 1000 * 1000
RSS_SAMPLE_S = 0.02


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class PeakRss:
    """The highest VmRSS of a process, sampled in a thread while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = rss_bytes(pid)
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.wait(RSS_SAMPLE_S):
            self.peak = max(self.peak, rss_bytes(self.pid))

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))


@pytest.fixture
def three(tmp_path: Path) -> Iterator[list[launch.LaunchedNode]]:
    nodes = start(tmp_path / "net", [config(60), config(70), config(80)])
    try:
        yield nodes
    finally:
        launch.stop(nodes)


async def push(addr: str, psk: bytes | None, total_bytes: int) -> tuple[int, int]:
    """Push ``total_bytes`` past the window, a fresh identity per connection the node closes."""
    written = connections = 0
    protocol = PROTOCOLS[0]
    while written < total_bytes:
        connections += 1
        async with raw_peer.connected(addr, source_ip="127.0.0.70", psk=psk) as muxed:
            stream = await raw_peer.open_protocol_stream(muxed, protocol)
            written += await raw_peer.push_past_window(muxed, stream, total_bytes - written)
    return written, connections


def run_echo(node: launch.LaunchedNode, data: bytes) -> JobResult:
    with Client(node.home) as client:
        return client.run(ECHO, data, replicas=2)


async def test_a_200_mib_push_past_the_window_leaves_rss_bounded(three) -> None:  # type: ignore[no-untyped-def]
    victim, honest, _ = three
    addr, psk = victim.info["multiaddrs"][0], read_psk(victim.home)
    baseline = rss_bytes(victim.pid)
    with PeakRss(victim.pid) as rss, trio.fail_after(120):
        written, connections = await push(addr, psk, PUSH_BYTES)
    rise = rss.peak - baseline
    print(
        f"pushed {written / 2**20:.0f} MiB over {connections} connections: victim RSS "
        f"{baseline / 1e6:.0f} MB -> peak {rss.peak / 1e6:.0f} MB (+{rise / 1e6:.1f} MB)"
    )
    assert written >= PUSH_BYTES
    assert rise < RSS_RISE_BYTES_MAX
    # The node still serves honest peers: a new one connects and is answered, the old one stays.
    async with hostile_peer(victim, host="127.0.0.71") as newcomer:
        assert await newcomer.transport.ping(victim.info["peer_id"]) > 0
    async with hostile_peer(honest, host="127.0.0.72") as probe:
        assert await probe.transport.ping(honest.info["peer_id"]) > 0
    assert launch.is_alive(victim.pid, victim.home)
    data = b"published by the node that was pushed 200 MiB"
    result = await trio.to_thread.run_sync(run_echo, victim, data)
    assert result.ok, result.reason
    assert result.output == data and result.paid_mc > 0
    await trio.to_thread.run_sync(assert_books_balance, three)
