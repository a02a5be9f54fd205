"""The local API refuses oversize bodies before reading them, and the CLI refuses a loose token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hearth.client import Client, HearthError
from hearth.node import paths
from hearth.node.api import build_app, serve_api
from hearth.node.commands.common import CommandError
from hearth.node.home import init_home, load_token

TOKEN = "t" * 64
CAP_BYTES = 256 * 1024
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


async def size_of_body(request: Request) -> Response:
    body = await request.body()
    return JSONResponse({"bytes": len(body)})


async def exchange(url: str, head: str, body_parts: list[bytes]) -> bytes:
    """Send raw HTTP/1.1 (headers, then the body parts); return the response's first line."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head.encode() + b"\r\n")
        try:
            for part in body_parts:
                await stream.send_all(part)
        except trio.BrokenResourceError:
            pass  # the server answered and closed before taking all of it: what we want
        answer = b""
        while b"\r\n" not in answer:
            chunk = await stream.receive_some()
            if not chunk:
                break
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def chunked(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    parts = [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces]
    return [*parts, b"0\r\n\r\n"]


async def test_bodies_over_the_cap_are_refused_before_or_while_read() -> None:
    app = build_app([Route("/size", size_of_body, methods=["PUT"])], TOKEN, CAP_BYTES)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, app)
        put = "PUT /size HTTP/1.1\r\nHost: x\r\n"
        # 300 MiB declared, a few bytes sent: refused at once, nothing read.
        declared = f"{put}{AUTH}Content-Length: {300 << 20}\r\n"
        with trio.fail_after(5):
            assert b" 413 " in await exchange(url, declared, [b"x" * 1000])
        # No length declared: read only up to the cap, then refused.
        streamed = f"{put}{AUTH}Transfer-Encoding: chunked\r\n"
        with trio.fail_after(10):
            assert b" 413 " in await exchange(url, streamed, chunked(b"y" * (4 * CAP_BYTES)))
        # Within the cap, both ways: the handler gets the whole body.
        with trio.fail_after(5):
            assert b" 200 " in await exchange(url, streamed, chunked(b"z" * CAP_BYTES))
            small = f"{put}{AUTH}Content-Length: 5\r\n"
            assert b" 200 " in await exchange(url, small, [b"hello"])
            unauthorised = f"{put}Content-Length: {300 << 20}\r\n"
            assert b" 401 " in await exchange(url, unauthorised, [b"x"])
            bad_length = f"{put}{AUTH}Content-Length: lots\r\n"
            assert b" 400 " in await exchange(url, bad_length, [])
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("mode", "content", "says"),
    [(0o644, None, "chmod 600"), (0o640, None, "chmod 600"), (0o600, "", "is empty")],
)
def test_a_token_others_can_read_or_an_empty_one_is_refused(
    tmp_path: Path, mode: int, content: str | None, says: str
) -> None:
    home = tmp_path / "home"
    init_home(home)
    token_path = paths.token_path(home)
    assert token_path.stat().st_mode & 0o777 == 0o600 and load_token(home)
    if content is not None:
        token_path.write_text(content)
    os.chmod(token_path, mode)
    with pytest.raises(CommandError, match=says):
        load_token(home)
    paths.node_info_path(home).write_text('{"api": "http://127.0.0.1:1"}')
    with pytest.raises(HearthError, match=says):
        Client(home)


@pytest.mark.integration  # two real CLI processes
def test_the_cli_and_the_node_say_what_is_wrong_with_the_token_in_one_line(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    init_home(home)
    os.chmod(paths.token_path(home), 0o644)
    paths.node_info_path(home).write_text('{"api": "http://127.0.0.1:1"}')
    env = {**os.environ, "HEARTH_HOME": str(home)}
    says = f"run chmod 600 {paths.token_path(home)}"
    for command in (["node", "status"], ["node", "start"]):
        result = subprocess.run(
            [sys.executable, "-m", "hearth.node", *command], env=env, capture_output=True, text=True
        )
        assert result.returncode == 1
        assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr
