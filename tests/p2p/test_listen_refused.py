"""Two hosts never listen on one address and port: py-libp2p's SO_REUSEPORT is not set, and a
host that cannot listen says why instead of running without an address."""

from __future__ import annotations

import socket

import pytest

from hearth.p2p.host import open_transport
from hearth.p2p.transport import ListenError
from tests.p2p.helpers import config

pytestmark = pytest.mark.integration


async def test_a_second_host_on_a_taken_port_is_refused() -> None:
    async with open_transport(config("first", "127.0.0.1")) as first:
        port = int(first.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        with pytest.raises(BaseException) as refused:  # a group, from the nurseries
            async with open_transport(config("second", "127.0.0.1", port=port)):
                pytest.fail("a second host listens on a port the first holds")
        errors = _leaves(refused.value)
        assert any(isinstance(e, ListenError) for e in errors), errors
        message = str(next(e for e in errors if isinstance(e, ListenError)))
        assert message == f"cannot listen on 127.0.0.1:{port}: address already in use"


async def test_the_listen_socket_does_not_allow_port_sharing() -> None:
    async with open_transport(config("only", "127.0.0.1")) as only:
        port = int(only.listen_addrs[0].split("/tcp/")[1].split("/")[0])
        with socket.socket() as sharer:  # what a second py-libp2p listener would do
            sharer.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError, match="in use"):
                sharer.bind(("127.0.0.1", port))


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
