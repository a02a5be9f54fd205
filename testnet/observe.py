"""Ask a testnet's nodes what they see, through each node's own local API."""

from __future__ import annotations

from typing import Any

from hearth.node.client import NodeClient
from hearth.node.commands.common import CommandError
from hearth.testnet.launch import LaunchedNode


def ask(node: LaunchedNode, path: str) -> Any:
    client = NodeClient(node.home, timeout_s=10)
    try:
        return client.get(path)
    finally:
        client.close()


def market_complete(nodes: list[LaunchedNode]) -> bool:
    """True once every node's market lists every other node."""
    everyone = {n.info["peer_id"] for n in nodes}
    for node in nodes:
        try:
            view = ask(node, "/v1/market")
        except CommandError:
            return False
        seen = {offer["peer_id"] for offer in view["offers"]}
        if seen != everyone - {node.info["peer_id"]}:
            return False
    return True


CONNECTION_KINDS = ("direct", "hole-punched", "relayed")


def connection_kind(peer: dict[str, Any]) -> str:
    """How this node reaches a connected peer, from `/v1/peers` (`hearth peers --json`): the
    ``connection`` field ("direct", "hole-punched" or "relayed"); nodes that do not report it
    have only direct connections."""
    kind = peer.get("connection") or "direct"
    return str(kind) if kind in CONNECTION_KINDS else "direct"
