"""The daemon's local HTTP API on 127.0.0.1, guarded by the token in the data directory.

The CLI, the Python SDK and the dashboard all speak to it. Handlers read the engine's state
directly: they run on the daemon's trio loop, between engine steps, so they see a consistent view.

Every request is checked before its body is read: the token (or, for the dashboard, a session
cookie with its CSRF checks: dashboard/session.py) first (401/403), then the body's size
(413): a declared ``Content-Length`` over ``BODY_BYTES_MAX`` is refused unread, and a body
without one is read only up to the cap, so no request makes the node hold more than one blob.
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
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from hearth.node.commands.common import CommandError, first_leaf
from hearth.node.dashboard.session import Sessions
from hearth.protocol import limits
from hearth.protocol.market import MarketEntry
from hearth.protocol.messages import CapacityAd

Handler = Callable[[Request], Awaitable[Response]]
BODY_BYTES_MAX = limits.BLOB_BYTES_MAX  # the largest body any endpoint takes: one blob
PUBLIC_PATHS = frozenset({"/", "/login"})  # the way in to the dashboard: a redirect, the login
PUBLIC_PREFIX = "/dashboard/static/"  # the page's own scripts, styles and the chart library

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
    """ASGI middleware: every request must carry ``Authorization: Bearer <token>`` (or, when the
    dashboard is served, its session cookie under the checks of ``Sessions.refusal``; ADR 0027),
    and a body of at most ``body_bytes_max`` bytes (checked before it is read, then while it is
    read)."""

    def __init__(
        self,
        app: Any,
        token: str,
        body_bytes_max: int = BODY_BYTES_MAX,
        sessions: Sessions | None = None,
    ) -> None:
        self._app = app
        self._token = token.encode()
        self._body_bytes_max = body_bytes_max
        self.sessions = sessions  # the dashboard's cookie sessions, if it is served

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = dict(scope.get("headers") or [])
            refusal = self._auth_refusal(scope, headers)
            if refusal is not None:
                if refusal[0] == 401 and scope["path"] == "/dashboard":
                    await RedirectResponse("/login", 303)(scope, receive, send)
                    return
                await _refuse(*refusal, scope, receive, send)
                return
            refusal = self._declared_size_refusal(headers.get(b"content-length"))
            if refusal is None:
                first = await self._read_body(receive)
                if first is None:
                    refusal = self._too_large()
                else:
                    receive = _replay(first, receive)
            if refusal is not None:
                await _refuse(*refusal, scope, receive, send)
                return
        await self._app(scope, receive, send)

    def _auth_refusal(self, scope: Any, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """The bearer token, or else (for the dashboard) a session cookie; None if either holds."""
        supplied = headers.get(b"authorization", b"")
        if hmac.compare_digest(supplied, b"Bearer " + self._token):
            return None
        if self.sessions is None:
            return 401, "missing or wrong API token"
        if scope["path"] in PUBLIC_PATHS or scope["path"].startswith(PUBLIC_PREFIX):
            return None
        if supplied or b"cookie" not in headers:
            return 401, "missing or wrong API token, and no dashboard session"
        return self.sessions.refusal(scope["method"], headers)

    def _too_large(self) -> tuple[int, str]:
        return 413, f"the request body is over {self._body_bytes_max} bytes"

    def _declared_size_refusal(self, header: bytes | None) -> tuple[int, str] | None:
        if header is None:
            return None
        try:
            declared = int(header)
        except ValueError:
            return 400, "Content-Length is not a number"
        return self._too_large() if declared > self._body_bytes_max else None

    async def _read_body(self, receive: Any) -> dict[str, Any] | None:
        """The whole body as one ASGI message (or the client's disconnect), or None as soon as
        it passes the cap: the rest is never read."""
        parts: list[bytes] = []
        size = 0
        while True:
            message: dict[str, Any] = await receive()
            if message["type"] != "http.request":
                return message  # the client went away: the app sees that, and nothing is kept
            size += len(message.get("body", b""))
            if size > self._body_bytes_max:
                return None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return {"type": "http.request", "body": b"".join(parts), "more_body": False}


def _replay(first: dict[str, Any], receive: Any) -> Any:
    """A ``receive`` that gives the app the message already read, then what the server sends."""
    pending = [first]

    async def replay() -> dict[str, Any]:
        if pending:
            return pending.pop()
        message: dict[str, Any] = await receive()
        return message

    return replay


async def _refuse(status: int, reason: str, scope: Any, receive: Any, send: Any) -> None:
    await JSONResponse({"error": reason}, status_code=status)(scope, receive, send)


def build_app(
    routes: list[Route],
    token: str,
    body_bytes_max: int = BODY_BYTES_MAX,
    sessions: Sessions | None = None,
) -> TokenGuard:
    return TokenGuard(Starlette(routes=routes), token, body_bytes_max, sessions)


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
        try:
            binds = await nursery.start(serve, app, config)
        except* OSError as refused:
            reason = first_leaf(refused)
            raise CommandError(
                f"cannot serve the API on 127.0.0.1:{port}: "
                f"{getattr(reason, 'strerror', None) or reason}; choose another --api-port"
            ) from None
        task_status.started(binds[0])
