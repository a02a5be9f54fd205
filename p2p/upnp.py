"""Ask the home router for a TCP port mapping with UPnP IGD (miniupnpc), behind a config switch.

Off by default (ADR 0035): it opens a port on the user's router. The mapping is a candidate
like any other address: it is advertised only once a dial-back confirms it, since many routers
accept the request and still do not forward. Blocking calls run in a worker thread.
"""

from __future__ import annotations

import logging
from typing import Final

import trio

logger = logging.getLogger(__name__)

DISCOVER_DELAY_MS: Final = 2000
DESCRIPTION: Final = "hearth"


def _map_port_blocking(port: int) -> str:
    import miniupnpc  # a C extension: imported only when the switch is on

    upnp = miniupnpc.UPnP()
    upnp.discoverdelay = DISCOVER_DELAY_MS
    if upnp.discover() < 1:
        raise OSError("no UPnP router answered")
    upnp.selectigd()
    external_ip = str(upnp.externalipaddress())
    if not upnp.addportmapping(port, "TCP", upnp.lanaddr, port, DESCRIPTION, ""):
        raise OSError(f"the router refused to map TCP port {port}")
    return f"/ip4/{external_ip}/tcp/{port}"


async def map_port(port: int) -> str:
    """The router's external address for ``port`` ("" if there is no UPnP router, or it refused)."""
    try:
        return await trio.to_thread.run_sync(_map_port_blocking, port, cancellable=True)
    except Exception as error:
        logger.info("UPnP: no port mapping for %d: %s", port, error)
        return ""
