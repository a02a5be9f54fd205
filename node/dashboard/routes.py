"""The dashboard's routes on the node's API server: login, the page, its data and settings.

``/login`` is the only way in without a session (it takes the API token, by query or form, or
a one-time code from ``hearth dashboard``); the guard in node/api.py checks everything else.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from hearth.node.dashboard import settings, views
from hearth.node.dashboard.session import Sessions
from hearth.node.logs import log

if TYPE_CHECKING:
    from hearth.node.runtime import Node

STATIC_DIR: Final = Path(__file__).parent / "static"
STATIC_TYPES: Final = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
LOGIN_FORM_BYTES_MAX: Final = 4096
SECURITY_HEADERS: Final = {
    # Everything the page loads is served by the node itself: no network access at run time.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # no-referrer would make a form's Origin "null"
    "Cache-Control": "no-store",
}
LOGIN_PAGE: Final = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Hearth: log in</title><link rel="stylesheet" href="/dashboard/static/app.css"></head>
<body class="login"><form method="post" action="/login"><h1>Hearth</h1>
<p>Paste the node's API token (<code>api.token</code> in the data directory), or run
<code>hearth dashboard</code> for a one-time link.</p>{message}
<input type="password" name="token" id="token" autocomplete="off" autofocus>
<button type="submit" id="login">Log in</button></form></body></html>"""


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _login_page(message: str = "", status: int = 200) -> HTMLResponse:
    shown = f'<p class="error" id="login-error">{html.escape(message)}</p>' if message else ""
    return HTMLResponse(
        LOGIN_PAGE.format(message=shown), status_code=status, headers=SECURITY_HEADERS
    )


def _logged_in(sessions: Sessions) -> Response:
    session_id, _ = sessions.open()
    response = RedirectResponse("/dashboard", 303)
    response.headers["Set-Cookie"] = sessions.set_cookie_header(session_id)
    return response


def build_dashboard_routes(node: Node, sessions: Sessions) -> list[Route]:
    ledger_views = views.LedgerViews()

    async def root(request: Request) -> Response:
        return RedirectResponse("/dashboard", 303)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            code = request.query_params.get("code")
            token = request.query_params.get("token")
            if code is not None:
                if sessions.use_login_code(code):
                    return _logged_in(sessions)
                return _login_page("That link was used or has expired: run `hearth dashboard`", 401)
            if token is not None:
                if sessions.token_ok(token):
                    return _logged_in(sessions)
                return _login_page("Wrong token.", 401)
            return _login_page()
        origin = sessions.own_origin(request.headers.get("host", ""))
        if origin is None or request.headers.get("origin") != origin:
            return _login_page("Refused: the form must be sent from this dashboard.", 403)
        body = await request.body()
        if len(body) > LOGIN_FORM_BYTES_MAX:
            return _login_page("Refused: the form is too large.", 413)
        supplied = parse_qs(body.decode("latin-1")).get("token", [""])[0].strip()
        if not sessions.token_ok(supplied):
            log("warning", "dashboard-login-refused")
            return _login_page("Wrong token.", 401)
        return _logged_in(sessions)

    async def logout(request: Request) -> Response:
        found = sessions.find(request.headers.get("cookie", "").encode("latin-1"))
        if found is not None:
            sessions.close(found[0])
        response = JSONResponse({"logged_out": True})
        response.headers["Set-Cookie"] = sessions.clear_cookie_header()
        return response

    async def page(request: Request) -> Response:
        found = sessions.find(request.headers.get("cookie", "").encode("latin-1"))
        csrf = found[1].csrf if found else ""
        text = (STATIC_DIR / "index.html").read_text()
        text = text.replace("{{csrf}}", html.escape(csrf))
        return HTMLResponse(text, headers=SECURITY_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        path = STATIC_DIR / name
        if "/" in name or name.startswith(".") or not path.is_file():
            return _error("no such file", 404)
        media = STATIC_TYPES.get(path.suffix, "application/octet-stream")
        return FileResponse(path, media_type=media, headers=SECURITY_HEADERS)

    async def data(request: Request) -> Response:
        name = request.path_params["page"]
        if name == "overview":
            return JSONResponse(views.overview(node, ledger_views.entries(node)))
        if name == "market":
            return JSONResponse(views.market(node))
        if name == "jobs":
            return JSONResponse(views.jobs(node))
        if name == "ledger":
            return JSONResponse(ledger_views.page(node))
        if name == "settings":
            return JSONResponse(settings.read(node.options.home))
        return _error(f"no dashboard page {name!r}", 404)

    async def save_settings(request: Request) -> Response:
        try:
            changes: Any = json.loads(await request.body())
        except ValueError:
            return _error("the body must be JSON")
        try:
            config, saved = settings.apply(node.options.home, changes)
        except settings.SettingsError as exc:
            return _error(str(exc))
        await node.driver.call(settings.settings_event(config))
        await node.jobs.pool.resize(config.cores)  # as many sandbox workers as cores offered
        log("info", "settings-saved", changed=",".join(sorted(changes)), cores=config.cores)
        return JSONResponse({"saved": saved})

    async def login_link(request: Request) -> Response:
        return JSONResponse({"url": f"{node.api_url}/login?code={sessions.new_login_code()}"})

    return [
        Route("/", root),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/dashboard", page),
        Route("/dashboard/static/{name}", static),
        Route("/dashboard/api/settings", save_settings, methods=["POST"]),
        Route("/dashboard/api/{page}", data),
        Route("/v1/dashboard/link", login_link, methods=["POST"]),
    ]
