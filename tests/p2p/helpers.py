"""Shared helpers for the p2p tests: seeds, configs and condition waits (never fixed sleeps)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import trio

from hearth.p2p.transport import HostConfig, Inbound, Transport

TOPIC = "hearth/test/1"
ECHO = "/hearth/test-echo/1"
SILENT = "/hearth/test-silent/1"


def seed(name: str) -> bytes:
    return hashlib.sha256(f"hearth-p2p-test:{name}".encode()).digest()


def config(name: str, host: str, **overrides: object) -> HostConfig:
    fields: dict[str, object] = {
        "seed": seed(name),
        "listen_host": host,
        "topics": (TOPIC,),
        "protocols": (ECHO, SILENT),
        "discovery_interval_s": 0.25,
    }
    fields.update(overrides)
    return HostConfig(**fields)  # type: ignore[arg-type]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Poll a condition until it holds; fail the test after ``timeout_s``.

    Polling, because py-libp2p raises no event for "peer connected" or "mesh grafted".
    """
    with trio.fail_after(timeout_s):
        while not condition():  # noqa: ASYNC110
            await trio.sleep(0.02)


def connected_ids(transport: Transport) -> set[str]:
    return {p.peer_id for p in transport.peers() if p.connected}


async def serve_echo(transport: Transport, seen: list[Inbound]) -> None:
    """Answer requests on ECHO with b"echo:" + data; record everything; never answer SILENT."""
    async for item in transport.inbound:
        seen.append(item)
        if item.channel == ECHO and item.reply is not None:
            await item.reply(b"echo:" + item.data)
