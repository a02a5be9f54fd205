"""One-way direct messages between two loopback hosts: a new stream each vs one long-lived stream.

Usage: python bench/wire.py [--messages 500] [--burst 2000] [--bytes 256] [--senders 32].
Opens two real py-libp2p hosts (TCP, Noise, yamux) on 127.0.0.2 and 127.0.0.3 in this process,
a fresh pair for each way of sending, both in the same run. Latency: from the `send` call to the
frame reaching the receiver's inbound queue, one message at a time. Throughput: a burst of
messages sent by concurrent tasks, until the last one arrives. Failures: sends that raised. And
what the receiver held against the sender: streams refused over the per-peer cap, its score.
CPU: process time per message in the burst, sender and receiver together. Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable

import trio

from hearth.p2p.host import Libp2pTransport, open_transport
from hearth.p2p.transport import HostConfig, TransportError

PROTOCOL = "/hearth/bench-wire/1"

Send = Callable[[str, str, bytes], Awaitable[None]]


def _config(name: str, host: str) -> HostConfig:
    seed = hashlib.sha256(f"hearth-bench-wire:{name}".encode()).digest()
    return HostConfig(seed=seed, listen_host=host, protocols=(PROTOCOL,))


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Receiver:
    """Counts arrivals and records each one's one-way latency from the stamp in its first bytes."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.arrived = 0
        self.changed = trio.Event()

    async def run(self, transport: Libp2pTransport) -> None:
        async for item in transport.inbound:
            (sent_s,) = struct.unpack_from("!d", item.data)
            self.latencies_ms.append((trio.current_time() - sent_s) * 1000)
            self.arrived += 1
            self.changed.set()

    async def wait_for(self, count: int, timeout_s: float) -> bool:
        with trio.move_on_after(timeout_s):
            while self.arrived < count:
                self.changed = trio.Event()
                await self.changed.wait()
            return True
        return False


async def _measure(
    send: Send, peer: str, receiver: Receiver, options: argparse.Namespace
) -> dict[str, float | int]:
    padding = bytes(max(0, options.bytes - 8))
    failed = 0

    async def one() -> None:
        nonlocal failed
        try:
            await send(peer, PROTOCOL, struct.pack("!d", trio.current_time()) + padding)
        except TransportError:
            failed += 1

    receiver.latencies_ms.clear()
    receiver.arrived = 0
    for index in range(options.messages):
        await one()
        await receiver.wait_for(index + 1 - failed, 10)
    latencies = list(receiver.latencies_ms)

    receiver.arrived = 0
    failed_before = failed
    started_s = trio.current_time()
    cpu_started_s = time.process_time()
    queue_send, queue_receive = trio.open_memory_channel[None](options.burst)
    for _ in range(options.burst):
        queue_send.send_nowait(None)
    queue_send.close()

    async def worker() -> None:
        async for _ in queue_receive:
            await one()

    async with trio.open_nursery() as nursery:
        for _ in range(options.senders):
            nursery.start_soon(worker)
    await receiver.wait_for(options.burst - (failed - failed_before), 30)
    elapsed_s = trio.current_time() - started_s
    cpu_s = time.process_time() - cpu_started_s
    return {
        "p50_ms": round(statistics.median(latencies), 3) if latencies else None,
        "p99_ms": round(_percentile(latencies, 0.99), 3) if latencies else None,
        "messages_per_s": round(receiver.arrived / elapsed_s, 1),
        "failed_sends": failed,
        # Both hosts run in this process: CPU of sending and receiving one message, together.
        "cpu_us_per_message": round(cpu_s * 1e6 / max(receiver.arrived, 1), 1),
    }


async def _one_way(long_lived: bool, options: argparse.Namespace) -> dict[str, object]:
    """Measure one way of sending on a fresh pair of hosts, so that what the first way costs
    the sender (a burst of streams over the peer's cap is penalised, ADR 0014) stays its own."""
    receiver = Receiver()
    name = "long-lived" if long_lived else "new-stream"
    async with (
        open_transport(_config(f"receiver-{name}", "127.0.0.2")) as server,
        open_transport(_config(f"sender-{name}", "127.0.0.3")) as client,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(receiver.run, server)
        await client.connect(server.listen_addrs[0])
        send = client.send if long_lived else client._send_on_own_stream
        figures: dict[str, object] = dict(await _measure(send, server.peer_id, receiver, options))
        received = server.statistics()
        figures["streams_refused_by_receiver"] = received.streams_refused
        figures["sender_score_at_receiver"] = server.reputation.score(client.peer_id)
        if long_lived:
            figures["wire_streams_opened"] = client.statistics().wire_streams_opened
            figures["wire_sends_dropped"] = client.statistics().wire_sends_dropped
        nursery.cancel_scope.cancel()
    return figures


async def run(options: argparse.Namespace) -> dict[str, object]:
    return {
        "bench": "wire",
        "messages": options.messages,
        "burst": options.burst,
        "message_bytes": options.bytes,
        "senders": options.senders,
        "new_stream": await _one_way(False, options),
        "long_lived": await _one_way(True, options),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=500, help="latency samples per way")
    parser.add_argument("--burst", type=int, default=2000, help="messages in the throughput burst")
    parser.add_argument("--bytes", type=int, default=256, help="message size (at least 8)")
    parser.add_argument(
        "--senders",
        type=int,
        default=32,
        help="concurrent tasks in the burst (the driver runs one task per Send effect)",
    )
    options = parser.parse_args()
    if min(options.messages, options.burst, options.senders) < 1 or options.bytes < 8:
        parser.error("--messages, --burst and --senders must be positive, --bytes at least 8")
    figures = trio.run(run, options)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
