"""The yamux receive window, enforced below py-libp2p (p2p/patches/yamux.py), on real hosts.

Each test also runs with the patch left out, and there asserts py-libp2p 0.8.1's defect: if
upstream fixes it, the unpatched case fails and says the patch can go.
"""

from __future__ import annotations

import itertools
import struct
from types import SimpleNamespace

import pytest
import trio
import trio.testing
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from hearth.p2p.host import Libp2pTransport, open_transport
from hearth.p2p.patches import yamux as yamux_patch
from tests.p2p import raw_peer
from tests.p2p.helpers import config, connected_ids, wait_until

pytestmark = pytest.mark.integration

SINK = "/hearth/test-sink/1"
PUSH_BYTES = 8 * 1024 * 1024
WINDOW_BYTES = 256 * 1024  # yamux's initial window; a stream nobody reads never grants more


async def _sink(stream: object) -> None:
    await trio.sleep_forever()  # accepts a stream and never reads it


def _buffered(node: Libp2pTransport, peer: str) -> int:
    conns = node.host.get_network().connections.get(ID.from_base58(peer), [])
    return sum(len(b) for c in conns for b in c.muxed_conn.stream_buffers.values())


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "upstream"])
async def test_a_push_past_the_window_closes_the_connection(
    patched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not patched:
        monkeypatch.setattr(yamux_patch, "install", lambda *args: None)
    async with (
        open_transport(config("victim", "127.0.0.2")) as victim,
        open_transport(config("honest", "127.0.0.4")) as honest,
    ):
        victim.host.set_stream_handler(TProtocol(SINK), _sink)  # type: ignore[arg-type]
        addr = victim.listen_addrs[0]
        async with raw_peer.connected(addr, source_ip="127.0.0.3") as muxed:
            attacker = muxed.peer_id  # the victim's id; ours is the key the handshake made
            stream = await raw_peer.open_protocol_stream(muxed, SINK)
            written = await raw_peer.push_past_window(muxed, stream, PUSH_BYTES)
            own = next(p for p in connected_ids(victim) if p != honest.peer_id)
            if patched:
                await wait_until(lambda: own not in connected_ids(victim))
                assert written < PUSH_BYTES  # the socket closed under the push
                assert victim.statistics().windows_exceeded == 1
                assert victim.reputation.score(own) == yamux_patch.PENALTY_WINDOW_EXCEEDED
                assert _buffered(victim, own) == 0
            else:
                # py-libp2p 0.8.1 buffers all of it and keeps the connection.
                await wait_until(lambda: _buffered(victim, own) >= PUSH_BYTES - WINDOW_BYTES)
                assert own in connected_ids(victim)
                assert victim.statistics().windows_exceeded == 0
            assert attacker == ID.from_base58(victim.peer_id)
        # The victim still serves an honest peer.
        await honest.connect(addr)
        assert await honest.ping(victim.peer_id) > 0


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "upstream"])
async def test_streams_over_the_per_peer_cap_are_reset(
    patched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not patched:
        monkeypatch.setattr(yamux_patch, "install", lambda *args: None)
    limits = config("x", "127.0.0.2").connection_limits
    cap = 4
    limits = type(limits)(streams_per_peer_max=cap)
    async with open_transport(config("victim", "127.0.0.2", connection_limits=limits)) as victim:
        victim.host.set_stream_handler(TProtocol(SINK), _sink)  # type: ignore[arg-type]
        async with raw_peer.connected(victim.listen_addrs[0], source_ip="127.0.0.3") as muxed:
            opened = 0
            for _ in range(3 * cap):
                try:
                    with trio.fail_after(5):
                        await raw_peer.open_protocol_stream(muxed, SINK)
                    opened += 1
                except Exception:
                    pass
            if patched:
                assert opened <= cap
                assert victim.statistics().streams_refused >= 2 * cap
            else:
                assert opened == 3 * cap


class _Recorder:
    def __init__(self) -> None:
        self.frames: list[tuple[int, int, int]] = []

    def check_data_frame(self, stream_id: int, flags: int, length: int) -> None:
        self.frames.append((stream_id, flags, length))


def test_frame_headers_are_seen_however_the_reads_split_them() -> None:
    from libp2p.stream_muxer.yamux.yamux import (
        TYPE_DATA,
        TYPE_WINDOW_UPDATE,
        YAMUX_HEADER_FORMAT,
    )

    stream = (
        struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_WINDOW_UPDATE, 1, 3, 5000)  # no body
        + struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, 3, 7)
        + b"payload"
        + struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 4, 5, 2)
        + b"ok"
    )
    for step in (1, 5, 12, 13, len(stream)):
        recorder = _Recorder()
        frames = yamux_patch._InboundFrames(None, recorder)  # type: ignore[arg-type]
        for offset in range(0, len(stream), step):
            frames._scan(stream[offset : offset + step])
        assert recorder.frames == [(3, 0, 7), (5, 4, 2)], step


async def test_a_connection_measures_its_round_trip_every_two_minutes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Upstream's loop, run on a stand-in connection whose PING is answered at once: it pings
    every `YAMUX_RTT_MEASURE_INTERVAL_S`, not upstream's 30 s (about one frame in ten an idle
    node of a 50-node network sent: issue 14)."""
    yamux_patch.apply_window_cap()
    sent_s: list[float] = []
    conn = SimpleNamespace(event_shutting_down=trio.Event(), _ping_id=0, _ping_sent_time=0.0)

    async def write_frame(header: bytes) -> None:
        sent_s.append(trio.current_time())
        conn._ping_event.set()

    conn._write_frame = write_frame
    with trio.move_on_after(3 * yamux_patch.YAMUX_RTT_MEASURE_INTERVAL_S):
        await Yamux._measure_rtt_loop(conn)  # type: ignore[arg-type]
    gaps_s = [later - earlier for earlier, later in itertools.pairwise(sent_s)]
    assert len(gaps_s) == 2
    assert all(gap == pytest.approx(yamux_patch.YAMUX_RTT_MEASURE_INTERVAL_S) for gap in gaps_s)
