"""The lab's latency stage: hold every packet nftables queues to it for delay +/- jitter.

This kernel has no netem qdisc, so delay is added in userspace. nftables sends each packet that
crosses a shaped link to NFQUEUE ``--queue``; this program gets the packet's id over a netfilter
netlink socket (no payload is copied) and gives the kernel the verdict "accept" once the packet's
time has come. The packet itself never leaves the kernel, so NAT, conntrack, TCP and UDP (QUIC,
hole punching) behave exactly as without the stage, only later. Verdicts are released in arrival
order (a packet is never released before one queued earlier), so jitter never reorders a flow;
under a steady stream it shows less than configured. Run in the namespace it shapes:
``ip netns exec NS python -m hearth.testnet.netns.delay --queue 0 --delay-ms 20 --jitter-ms 5``.
Prints ``ready`` once bound. I/O: one netlink socket; Linux only; needs CAP_NET_ADMIN.
"""

from __future__ import annotations

import argparse
import collections
import errno
import os
import random
import select
import signal
import socket
import struct
import sys
import time
from collections.abc import Iterator
from typing import Final

NETLINK_NETFILTER: Final = 12
SOL_NETLINK: Final = 270
NETLINK_NO_ENOBUFS: Final = 5
NLM_F_REQUEST: Final = 1
NLM_F_ACK: Final = 4
NLMSG_ERROR: Final = 2
NFNL_SUBSYS_QUEUE: Final = 3
NFQNL_MSG_PACKET: Final = 0
NFQNL_MSG_VERDICT: Final = 1
NFQNL_MSG_CONFIG: Final = 2
NFQA_PACKET_HDR: Final = 1
NFQA_VERDICT_HDR: Final = 2
NFQA_CFG_CMD: Final = 1
NFQA_CFG_PARAMS: Final = 2
NFQA_CFG_QUEUE_MAXLEN: Final = 3
NFQA_CFG_MASK: Final = 4
NFQA_CFG_FLAGS: Final = 5
NFQA_CFG_F_FAIL_OPEN: Final = 1
NFQNL_CFG_CMD_BIND: Final = 1
NFQNL_COPY_META: Final = 1
NF_ACCEPT: Final = 1
QUEUE_PACKETS_MAX: Final = 8192  # beyond it the kernel lets packets pass undelayed (fail-open)
RECV_BYTES: Final = 1 << 16
RCVBUF_BYTES: Final = 8 << 20
NLA_TYPE_MASK: Final = 0x3FFF


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _message(msg: int, queue: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    body = struct.pack("!BBH", socket.AF_UNSPEC, 0, queue) + attrs
    kind = (NFNL_SUBSYS_QUEUE << 8) | msg
    return struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body


def verdict(queue: int, packet_id: int) -> bytes:
    """The netlink message that accepts packet ``packet_id`` of ``queue``."""
    return _message(
        NFQNL_MSG_VERDICT, queue, _attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet_id))
    )


def config_messages(queue: int) -> list[bytes]:
    bind = _attr(NFQA_CFG_CMD, struct.pack("!BBH", NFQNL_CFG_CMD_BIND, 0, socket.AF_INET))
    params = _attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))
    params += _attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_PACKETS_MAX))
    params += _attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
    params += _attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN))
    flags = NLM_F_REQUEST | NLM_F_ACK
    return [
        _message(NFQNL_MSG_CONFIG, queue, bind, flags, 1),
        _message(NFQNL_MSG_CONFIG, queue, params, flags, 2),
    ]


def parse(buffer: bytes) -> Iterator[tuple[int, int | None]]:
    """(message type, packet id or error code) for each netlink message in ``buffer``."""
    offset = 0
    while offset + 16 <= len(buffer):
        length, kind = struct.unpack_from("=IH", buffer, offset)
        if length < 16:
            return
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", buffer, offset + 16)
            yield kind, code
        elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            yield kind, _packet_id(buffer[offset + 20 : offset + length])
        offset += (length + 3) & ~3


def _packet_id(attrs: bytes) -> int | None:
    offset = 0
    while offset + 4 <= len(attrs):
        length, kind = struct.unpack_from("=HH", attrs, offset)
        if length < 4:
            return None
        if kind & NLA_TYPE_MASK == NFQA_PACKET_HDR:
            (packet_id,) = struct.unpack_from("!I", attrs, offset + 4)
            return int(packet_id)
        offset += (length + 3) & ~3
    return None


class DelayStage:
    """Holds queued packets and releases them in order, each after delay +/- jitter."""

    def __init__(self, queue: int, delay_ms: int, jitter_ms: int, seed: int) -> None:
        self.queue = queue
        self.delay_s = delay_ms / 1000
        self.jitter_s = jitter_ms / 1000
        self.random = random.Random(seed)
        self.pending: collections.deque[tuple[float, int]] = collections.deque()
        self.last_release = 0.0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF_BYTES)  # SO_RCVBUFFORCE
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.sock.bind((0, 0))

    def configure(self) -> None:
        for message in config_messages(self.queue):
            self.sock.send(message)
            for kind, code in parse(self.sock.recv(RECV_BYTES)):
                if kind == NLMSG_ERROR and code:
                    raise OSError(
                        -int(code or 0),
                        f"binding NFQUEUE {self.queue}: {os.strerror(-int(code or 0))}",
                    )

    def on_packet(self, packet_id: int, now: float) -> None:
        offset = self.delay_s + self.random.uniform(-self.jitter_s, self.jitter_s)
        release = max(now + offset, self.last_release)
        self.last_release = release
        self.pending.append((release, packet_id))

    def due(self, now: float) -> list[int]:
        ids = []
        while self.pending and self.pending[0][0] <= now:
            ids.append(self.pending.popleft()[1])
        return ids

    def step(self) -> None:
        timeout = max(0.0, self.pending[0][0] - time.monotonic()) if self.pending else None
        readable, _, _ = select.select([self.sock], [], [], timeout)
        if readable:
            self._receive()
        ids = self.due(time.monotonic())
        if ids:
            self.sock.send(b"".join(verdict(self.queue, packet_id) for packet_id in ids))

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    continue
                raise
            now = time.monotonic()
            for kind, value in parse(data):
                if kind != NLMSG_ERROR and value is not None:
                    self.on_packet(value, now)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queue", type=int, default=0)
    parser.add_argument("--delay-ms", type=int, required=True)
    parser.add_argument("--jitter-ms", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.jitter_ms <= args.delay_ms:
        print("delay: --jitter-ms must be between 0 and --delay-ms", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        stage = DelayStage(args.queue, args.delay_ms, args.jitter_ms, args.seed)
        stage.configure()
    except OSError as exc:
        print(f"delay: cannot open NFQUEUE {args.queue}: {exc}", file=sys.stderr)
        return 1
    print("ready", flush=True)
    try:
        while True:
            stage.step()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
