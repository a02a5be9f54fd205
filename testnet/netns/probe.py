"""Measure a lab's links from inside its namespaces: echo round trips, loss, throughput, NAT.

``serve`` answers on TCP and UDP ``--port``: a TCP client first gets the address it came from
(``ip:port``, what a NAT router made of it), then ``E`` echoes one byte back, ``S<n>`` swallows n
bytes and answers ``done``; every UDP datagram is echoed. The client commands print one JSON line.
I/O: sockets; used by the lab's tests and ``docs/testnet-netns.md``.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time

CHUNK_BYTES = 65536


def _serve_tcp(conn: socket.socket, peer: tuple[str, int]) -> None:
    with conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(f"{peer[0]}:{peer[1]}\n".encode())
        reader = conn.makefile("rb")
        while command := reader.read(1):
            if command == b"E":
                conn.sendall(b"e")
            elif command == b"S":
                remaining = int(reader.readline())
                while remaining > 0:
                    chunk = reader.read(min(remaining, CHUNK_BYTES))
                    if not chunk:
                        return
                    remaining -= len(chunk)
                conn.sendall(b"done\n")


def serve(host: str, port: int) -> None:
    tcp = socket.create_server((host, port), reuse_port=True)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))

    def echo_udp() -> None:
        while True:
            data, peer = udp.recvfrom(2048)
            udp.sendto(data, peer)

    threading.Thread(target=echo_udp, daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, peer = tcp.accept()
        threading.Thread(target=_serve_tcp, args=(conn, peer), daemon=True).start()


def _open(host: str, port: int, local_port: int, timeout_s: float) -> tuple[socket.socket, str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if local_port:
        sock.bind(("0.0.0.0", local_port))
    sock.settimeout(timeout_s)
    sock.connect((host, port))
    seen = b""
    while not seen.endswith(b"\n"):
        seen += sock.recv(64)
    return sock, seen.decode().strip()


def connect(host: str, port: int, local_port: int, timeout_s: float) -> dict[str, object]:
    """Try a TCP connection: how it ended, how long it took, and the address the server saw."""
    started = time.monotonic()
    try:
        sock, seen = _open(host, port, local_port, timeout_s)
    except TimeoutError:
        return {"result": "timeout", "ms": (time.monotonic() - started) * 1000}
    except ConnectionRefusedError:
        return {"result": "refused", "ms": (time.monotonic() - started) * 1000}
    except OSError as exc:
        return {"result": "error", "error": str(exc)}
    sock.close()
    return {"result": "connected", "seen": seen, "ms": (time.monotonic() - started) * 1000}


def rtt(host: str, port: int, count: int) -> dict[str, object]:
    sock, seen = _open(host, port, 0, 10.0)
    rtts_ms = []
    with sock:
        for _ in range(count):
            started = time.monotonic()
            sock.sendall(b"E")
            if sock.recv(1) != b"e":
                raise ConnectionError("echo server answered something else")
            rtts_ms.append((time.monotonic() - started) * 1000)
            time.sleep(0.01)
    return {"seen": seen, "rtts_ms": rtts_ms}


def udp_echo(host: str, port: int, count: int) -> dict[str, object]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    sock.settimeout(0.002)
    received: set[int] = set()

    def drain() -> None:
        while True:
            try:
                received.add(int(sock.recv(64)))
            except (TimeoutError, BlockingIOError):
                return

    for index in range(count):
        sock.send(str(index).encode())
        drain()
    sock.settimeout(3.0)  # the last echoes, on a loaded machine
    drain()
    return {"sent": count, "echoed": len(received)}


def send(host: str, port: int, size_bytes: int) -> dict[str, object]:
    sock, _ = _open(host, port, 0, 30.0)
    with sock:
        started = time.monotonic()
        sock.sendall(b"S%d\n" % size_bytes)
        payload = b"x" * CHUNK_BYTES
        remaining = size_bytes
        while remaining > 0:
            remaining -= sock.send(payload[: min(remaining, CHUNK_BYTES)])
        answer = sock.recv(16)
        seconds = time.monotonic() - started
    return {
        "bytes": size_bytes,
        "s": seconds,
        "kbit_per_s": size_bytes * 8 / 1000 / seconds,
        "answer": answer.decode().strip(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("serve", "connect", "rtt", "udp", "send"):
        command = sub.add_parser(name)
        command.add_argument("host")
        command.add_argument("port", type=int)
        command.add_argument("--count", type=int, default=20)
        command.add_argument("--bytes", type=int, default=1_000_000)
        command.add_argument("--local-port", type=int, default=0)
        command.add_argument("--timeout-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.command == "serve":
        serve(args.host, args.port)
        return 0
    result = {
        "connect": lambda: connect(args.host, args.port, args.local_port, args.timeout_s),
        "rtt": lambda: rtt(args.host, args.port, args.count),
        "udp": lambda: udp_echo(args.host, args.port, args.count),
        "send": lambda: send(args.host, args.port, args.bytes),
    }[args.command]()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
