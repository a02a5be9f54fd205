"""The daemon's local HTTP API on 127.0.0.1, guarded by the token in the data directory.

The CLI, the Python SDK and the dashboard all speak to it. Handlers read the engine's state
directly: they run on the daemon's trio loop, between engine steps, so they see a consistent view.
"""

from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from protocol.market import MarketEntry
from protocol.messages import CapacityAd

Handler = Callable[[Request], Awaitable[Response]]

if TYPE_CHECKING:  # trio-typing's stubs (a py-libp2p dependency) shadow trio's own types
    from trio_typing import TaskStatus


def ad_json(ad: CapacityAd) -> dict[str, Any]:
    return {
        "cores_offered": ad.cores_offered,
        "memory_mb_offered": ad.memory_mb_offered,
        "fuel_per_s": ad.fuel_per_s,
        "runtimes": list(ad.runtimes),
        "availability_hours_mask": ad.availability_hours_mask,
        "available_now": ad.available_now,
        "energy_source": ad.energy_source,
        "price_mc_per_tfuel": ad.price_mc_per_tfuel,
        "price_curve_mc_per_tfuel": list(ad.price_curve_mc_per_tfuel),
        "curve_start_ms": ad.curve_start_ms,
        "operator": ad.operator,
    }


def market_entry_json(entry: MarketEntry, now_ms: int) -> dict[str, Any]:
    return {
        "peer_id": entry.peer_id,
        "created_ms": entry.created_ms,
        "expires_in_ms": entry.expires_ms - now_ms,
        **ad_json(entry.ad),
    }


def to_json(value: Any) -> Any:
    """Dataclasses, bytes (as hex), tuples and sets, made JSON-ready."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(to_json(v) for v in value)
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


class TokenGuard:
    """ASGI middleware: every request must carry ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self._app = app
        self._token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            supplied = headers.get(b"authorization", b"")
            if not hmac.compare_digest(supplied, b"Bearer " + self._token):
                response = JSONResponse({"error": "missing or wrong API token"}, status_code=401)
                await response(scope, receive, send)
                return
        await self._app(scope, receive, send)


def build_app(routes: list[Route], token: str) -> TokenGuard:
    return TokenGuard(Starlette(routes=routes), token)


async def serve_api(
    app: TokenGuard,
    *,
    port: int = 0,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve on 127.0.0.1 only; report the base URL once listening."""
    config = HypercornConfig()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0

    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        task_status.started(binds[0])
