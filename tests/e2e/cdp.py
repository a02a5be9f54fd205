"""A small Chrome DevTools Protocol client: headless Chromium driven over its websocket.

No browser is downloaded: the test hands in Debian's ``chromium``. One page, commands sent one at
a time (events the browser sends meanwhile are skipped), conditions awaited by evaluating a
JavaScript expression until it holds or the time runs out.
"""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1280,1000",
)
START_TIMEOUT_S = 30
MESSAGE_BYTES_MAX = 64 << 20  # a full-page screenshot, base64


class CdpError(Exception):
    pass


class Page:
    def __init__(self, ws: WebSocketConnection) -> None:
        self._ws = ws
        self._next_id = 0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        await self._ws.send_message(
            json.dumps({"id": self._next_id, "method": method, "params": params})
        )
        while True:
            message = json.loads(await self._ws.get_message())
            if message.get("id") != self._next_id:
                continue
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            result: dict[str, Any] = message["result"]
            return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in reply:
            raise CdpError(f"{expression}: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def navigate(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def wait_for(self, expression: str, timeout_s: float = 20, poll_s: float = 0.1) -> Any:
        """Evaluate ``expression`` until it is truthy; its value, or fail naming it."""
        last: Any = None
        with trio.move_on_after(timeout_s):
            while True:
                try:
                    last = await self.evaluate(expression)
                except CdpError as exc:  # the page is between documents
                    last = str(exc)
                else:
                    if last:
                        return last
                await trio.sleep(poll_s)
        raise AssertionError(f"timed out after {timeout_s} s waiting for {expression!r} ({last!r})")

    async def screenshot(self, path: Path) -> Path:
        reply = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await trio.Path(path).write_bytes(base64.b64decode(reply["data"]))
        return path


def _devtools_port(profile: Path, process: trio.Process) -> int:
    marker = profile / "DevToolsActivePort"
    if marker.exists():
        lines = marker.read_text().splitlines()
        if lines and lines[0].isdigit():
            return int(lines[0])
    if process.returncode is not None:
        raise CdpError(f"chromium exited with {process.returncode}")
    return 0


async def _first_page_url(http: httpx.AsyncClient, port: int) -> str:
    while True:
        listed = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        targets = [t for t in listed if t.get("type") == "page"]
        if targets:
            return str(targets[0]["webSocketDebuggerUrl"])
        await trio.sleep(0.05)


@asynccontextmanager
async def open_page(chromium: str, profile: Path, log_path: Path) -> AsyncIterator[Page]:
    """Start ``chromium`` headless with a new profile dir; yield its first page; stop it."""
    with log_path.open("wb") as log:
        process = await trio.lowlevel.open_process(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        port = 0
        with trio.fail_after(START_TIMEOUT_S):
            while not port:
                port = _devtools_port(profile, process)
                if not port:
                    await trio.sleep(0.05)
            async with httpx.AsyncClient(timeout=5) as http:
                url = await _first_page_url(http, port)
        async with open_websocket_url(url, max_message_size=MESSAGE_BYTES_MAX) as ws:
            page = Page(ws)
            await page.send("Page.enable")
            await page.send("Runtime.enable")
            yield page
    finally:
        process.terminate()
        with trio.move_on_after(10) as waited:
            await process.wait()
        if waited.cancelled_caught:
            process.kill()
            await process.wait()
