"""`hearth market` and `hearth peers`: what the running node knows of the network."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from hearth.node.client import NodeClient
from hearth.node.commands.common import JSON_OPTION, print_json


def short(peer_id: str) -> str:
    return f"{peer_id[:8]}…{peer_id[-6:]}"


def register(app: typer.Typer) -> None:
    @app.command("market")
    def market(json_output: bool = JSON_OPTION) -> None:
        """Capacity and prices offered by the hosts this node has heard from."""
        view = NodeClient().get("/v1/market")
        if json_output:
            print_json(view)
            return
        table = Table(title="Hearth market (prices in mc per 10^12 fuel)")
        for column in ("peer", "price now", "cores", "memory MB", "runtimes", "energy", "open"):
            table.add_column(column)
        for offer in [
            {**view["self"], "peer_id": view["self"]["peer_id"] + " (self)"},
            *view["offers"],
        ]:
            table.add_row(
                short(offer["peer_id"]) if "(self)" not in offer["peer_id"] else "this node",
                str(offer["price_mc_per_tfuel"]),
                str(offer["cores_offered"]),
                str(offer["memory_mb_offered"]),
                ",".join(offer["runtimes"]),
                offer["energy_source"],
                "yes" if offer["available_now"] else "no",
            )
        Console().print(table)

    @app.command("peers")
    def peers(json_output: bool = JSON_OPTION) -> None:
        """Peers this node is connected to, their round trip and reputation."""
        view = NodeClient().get("/v1/peers")
        if json_output:
            print_json(view)
            return
        table = Table(title="Peers")
        for column in ("peer", "connection", "rtt ms", "reputation", "address"):
            table.add_column(column)
        for peer in view["peers"]:
            table.add_row(
                short(peer["peer_id"]),
                peer.get("connection") or ("yes" if peer["connected"] else "no"),
                "-" if peer["rtt_ms"] is None else f"{peer['rtt_ms']:.1f}",
                str(peer["reputation"]),
                peer["addrs"][0] if peer["addrs"] else "",
            )
        Console().print(table)
