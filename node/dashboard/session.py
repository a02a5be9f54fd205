"""Browser sessions for the dashboard: the API token is exchanged once for a session cookie.

As Jupyter does, the token (or a one-time code from ``hearth dashboard``) is given once, at
``/login``; the browser then holds an HttpOnly, SameSite=Strict cookie named after the API port
(several nodes on one machine share 127.0.0.1's cookie jar). A request that changes state also
needs the session's CSRF token in ``X-CSRF-Token`` and an ``Origin`` that is this server, and
every cookie request must name this server in ``Host`` (so a rebound DNS name gets nothing).
See docs/adr/0027-dashboard-sessions.md.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from typing import Final

SESSION_MS_MAX: Final = 7 * 24 * 3_600_000
SESSIONS_MAX: Final = 64  # the oldest is logged out past this
LOGIN_CODE_MS_MAX: Final = 120_000
LOGIN_CODES_MAX: Final = 16
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
LOCAL_HOSTS: Final = ("127.0.0.1", "localhost")


@dataclasses.dataclass(frozen=True, slots=True)
class Session:
    csrf: str
    expires_ms: int


class Sessions:
    """Live sessions and unused one-time login codes, both bounded and expiring."""

    def __init__(self, token: str, now_ms: Callable[[], int]) -> None:
        self._token = token.encode()
        self._now_ms = now_ms
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._codes: OrderedDict[str, int] = OrderedDict()  # code -> expires_ms
        self.port = 0  # set once the server listens; names the cookie

    @property
    def cookie_name(self) -> str:
        return f"hearth_session_{self.port}"

    def token_ok(self, supplied: str) -> bool:
        return hmac.compare_digest(supplied.encode(), self._token)

    def new_login_code(self) -> str:
        code = secrets.token_urlsafe(24)
        self._codes[code] = self._now_ms() + LOGIN_CODE_MS_MAX
        while len(self._codes) > LOGIN_CODES_MAX:
            self._codes.popitem(last=False)
        return code

    def use_login_code(self, code: str) -> bool:
        """True once for a code that is known and unexpired; the code is gone after."""
        expires_ms = self._codes.pop(code, None)
        return expires_ms is not None and self._now_ms() <= expires_ms

    def open(self) -> tuple[str, Session]:
        session_id = secrets.token_urlsafe(32)
        session = Session(secrets.token_urlsafe(32), self._now_ms() + SESSION_MS_MAX)
        self._sessions[session_id] = session
        while len(self._sessions) > SESSIONS_MAX:
            self._sessions.popitem(last=False)
        return session_id, session

    def close(self, session_id: str) -> None:
        self._sessions.pop(session_id, None)

    def find(self, cookie_header: bytes) -> tuple[str, Session] | None:
        cookies: SimpleCookie = SimpleCookie()
        try:
            cookies.load(cookie_header.decode("latin-1"))
        except CookieError:  # a malformed Cookie header is no session, never an error
            return None
        morsel = cookies.get(self.cookie_name)
        if morsel is None:
            return None
        session = self._sessions.get(morsel.value)
        if session is None:
            return None
        if session.expires_ms < self._now_ms():
            self.close(morsel.value)
            return None
        return morsel.value, session

    def set_cookie_header(self, session_id: str) -> str:
        max_age_s = SESSION_MS_MAX // 1000
        return (
            f"{self.cookie_name}={session_id}; Path=/; HttpOnly; SameSite=Strict; "
            f"Max-Age={max_age_s}"
        )

    def clear_cookie_header(self) -> str:
        return f"{self.cookie_name}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"

    def own_origin(self, host_header: str) -> str | None:
        """``http://<host>`` if ``host_header`` names this server, else None."""
        if host_header not in {f"{name}:{self.port}" for name in LOCAL_HOSTS}:
            return None
        return f"http://{host_header}"

    def refusal(self, method: str, headers: dict[bytes, bytes]) -> tuple[int, str] | None:
        """Why a cookie request is refused (status, reason), or None if it may go on."""
        found = self.find(headers.get(b"cookie", b""))
        if found is None:
            return 401, "not logged in: open the link `hearth dashboard` prints"
        origin = self.own_origin(headers.get(b"host", b"").decode("latin-1"))
        if origin is None:
            return 403, "the Host header does not name this node's dashboard"
        if method in SAFE_METHODS:
            return None
        if headers.get(b"origin", b"").decode("latin-1") != origin:
            return 403, "cross-origin request refused (Origin must be this dashboard)"
        supplied = headers.get(b"x-csrf-token", b"").decode("latin-1")
        if not hmac.compare_digest(supplied.encode(), found[1].csrf.encode()):
            return 403, "missing or wrong CSRF token (reload the dashboard)"
        return None
