"""Listening sockets that no other process may share.

Upstream defect fixed here (py-libp2p 0.8.1, `libp2p/transport/tcp/tcp.py`): every TCP listen
socket gets SO_REUSEPORT (`_set_reuse_flags`), for hole punching that dials from the listen
port. On Linux that lets a second process listen on the same address and port, and the kernel
then splits inbound connections between the two nodes. We never dial from the listen port
(`SourceBoundTCP` binds the source address with port 0), so SO_REUSEADDR alone is kept: a
restart may still bind while old connections linger in TIME_WAIT, and a taken port fails with
EADDRINUSE.
"""

from __future__ import annotations

import logging
import socket

import libp2p.transport.tcp.tcp as upstream
import trio

_LISTEN_FAILED = "Failed to start TCP listener"


def _set_reuse_addr_only(sock: trio.socket.SocketType) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def _not_a_listen_failure(record: logging.LogRecord) -> bool:
    # `p2p.host` refuses to run without a listen address and says why in one line.
    return not str(record.msg).startswith(_LISTEN_FAILED)


def install() -> None:
    """Process-wide and idempotent: upstream looks the function up in its module each time."""
    upstream._set_reuse_flags = _set_reuse_addr_only
    logger = logging.getLogger(upstream.__name__)
    if _not_a_listen_failure not in logger.filters:
        logger.addFilter(_not_a_listen_failure)


def why_not_listening(host: str, port: int) -> str:
    """What binding ``host:port`` says now (after upstream gave up listening on it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return (exc.strerror or str(exc)).lower()
    return "the listener did not start"
