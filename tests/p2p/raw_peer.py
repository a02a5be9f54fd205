"""A hostile peer below the host API: real handshakes (TCP, pnet, Noise, yamux) with fresh keys.

Used in-process (`handshake`, `push_past_window`) and as a child process that cycles many fresh
identities against one node (`python -m tests.p2p.raw_peer --help`), so a connection flood does
not have to build a whole py-libp2p host per identity. The muxer is upstream's plain `Yamux`:
the attacker obeys no window.
"""

from __future__ import annotations

import argparse
import struct
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import multiaddr
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.pnet.protector import new_protected_conn
from libp2p.stream_muxer.yamux.yamux import (
    HEADER_SIZE,
    MAX_MESSAGE_SIZE,
    TYPE_DATA,
    YAMUX_HEADER_FORMAT,
    Yamux,
    YamuxStream,
)
from libp2p.stream_muxer.yamux.yamux import (
    PROTOCOL_ID as YAMUX_PROTOCOL,
)
from libp2p.transport.tcp.tcp import TCP
from libp2p.transport.upgrader import TransportUpgrader

CHUNK_BYTES = MAX_MESSAGE_SIZE - HEADER_SIZE


class HandshakeStopped(Exception):
    """A ``secure_only`` handshake completed Noise and hung up, as asked."""


def split_addr(addr: str) -> tuple[multiaddr.Multiaddr, ID]:
    """A /p2p/ multiaddr as (transport address, peer id)."""
    transport, peer = addr.split("/p2p/", 1)
    return multiaddr.Multiaddr(transport), ID.from_base58(peer)


async def handshake(
    addr: str,
    *,
    source_ip: str,
    psk: bytes | None = None,
    timeout_s: float = 10,
    secure_only: bool = False,
) -> Yamux:
    """Connect to ``addr`` from ``source_ip`` as a fresh identity; return the (unstarted) yamux.

    ``secure_only``: stop after the Noise handshake (close, and raise `HandshakeStopped`).
    """
    target, peer_id = split_addr(addr)
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    upgrader = TransportUpgrader(
        {TProtocol(NOISE_PROTOCOL): noise}, {TProtocol(YAMUX_PROTOCOL): Yamux}
    )
    with trio.fail_after(timeout_s):
        raw = await TCP().dial_with_source(target, (source_ip, 0))
        if psk is not None:
            raw = new_protected_conn(raw, psk.hex())
        secured = await upgrader.upgrade_security(raw, True, peer_id)
        if secure_only:
            await secured.close()
            raise HandshakeStopped
        muxed = await upgrader.upgrade_connection(secured, peer_id)
    assert isinstance(muxed, Yamux)
    return muxed


@asynccontextmanager
async def connected(addr: str, *, source_ip: str, psk: bytes | None = None) -> AsyncIterator[Yamux]:
    """A running yamux connection to ``addr``, closed on exit."""
    muxed = await handshake(addr, source_ip=source_ip, psk=psk)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(muxed.start)
        await muxed.event_started.wait()
        try:
            yield muxed
        finally:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await muxed.close()
            nursery.cancel_scope.cancel()


async def open_protocol_stream(muxed: Yamux, protocol_id: str) -> YamuxStream:
    stream = await muxed.open_stream()
    communicator = MultiselectCommunicator(stream)
    await MultiselectClient().select_one_of([TProtocol(protocol_id)], communicator)
    return stream


async def push_past_window(muxed: Yamux, stream: YamuxStream, total_bytes: int) -> int:
    """Write DATA frames on ``stream`` ignoring its send window; return the bytes written.

    Stops early (without raising) when the other side closes the connection.
    """
    chunk = bytes(CHUNK_BYTES)
    header = struct.pack(YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, stream.stream_id, CHUNK_BYTES)
    written = 0
    try:
        while written < total_bytes:
            await muxed.secured_conn.write(header + chunk)
            written += CHUNK_BYTES
    except Exception:
        pass
    return written


async def cycle(
    addr: str, source_ips: list[str], count: int, psk: bytes | None, hold: bool, secure_only: bool
) -> None:
    """``count`` handshakes with fresh keys, round robin over ``source_ips``.

    ``hold``: keep every connection open until stdin closes; otherwise close each at once.
    ``secure_only``: hang up after Noise, before the muxer (counted as succeeded).
    Prints one line: ``done <succeeded> <failed>``, and for ``hold`` waits for stdin to close.
    """
    succeeded = failed = 0
    held: list[Yamux] = []
    for index in range(count):
        source_ip = source_ips[index % len(source_ips)]
        try:
            muxed = await handshake(addr, source_ip=source_ip, psk=psk, secure_only=secure_only)
        except HandshakeStopped:
            succeeded += 1
            continue
        except Exception:
            failed += 1
            continue
        succeeded += 1
        if hold:
            held.append(muxed)
        else:
            await muxed.secured_conn.close()
    print(f"done {succeeded} {failed}", flush=True)
    if hold:
        await trio.to_thread.run_sync(sys.stdin.read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("addr", help="the node's /p2p/ multiaddr")
    parser.add_argument("--source", action="append", required=True, help="source IP (repeat)")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--psk", help="private-network key, hex")
    parser.add_argument("--hold", action="store_true", help="keep connections open")
    parser.add_argument("--secure-only", action="store_true", help="hang up after Noise")
    args = parser.parse_args()
    psk = bytes.fromhex(args.psk) if args.psk else None
    trio.run(cycle, args.addr, args.source, args.count, psk, args.hold, args.secure_only)


if __name__ == "__main__":
    main()
