"""`hearth testnet ...`: many real nodes on this machine, for trying Hearth and for research."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from node import paths
from node.commands.common import JSON_OPTION, fail, print_json
from node.commands.market import short
from testnet import launch
from testnet.observe import ask, market_complete

app = typer.Typer(help="Run a local testnet of real node processes.", no_args_is_help=True)
DIR_OPTION = typer.Option(None, "--dir", help="Testnet folder (default: <data dir>/testnet).")


def testnet_dir(directory: Path | None) -> Path:
    return directory or paths.data_dir() / "testnet"


@app.command("up")
def up(
    n: int = typer.Option(3, "-n", help="How many nodes."),
    directory: Path = DIR_OPTION,
    json_output: bool = JSON_OPTION,
) -> None:
    """Start N nodes on 127.0.0.2, .3, ... sharing a private-network key."""
    try:
        nodes = launch.up(testnet_dir(directory), n)
    except launch.TestnetError as exc:
        fail(str(exc))
    if json_output:
        print_json([{"name": x.name, **x.info} for x in nodes])
        return
    for node in nodes:
        typer.echo(f"{node.name}  {node.host}  {node.info['peer_id']}  HEARTH_HOME={node.home}")


@app.command("down")
def down(directory: Path = DIR_OPTION) -> None:
    """Stop exactly the processes `up` started."""
    try:
        count = launch.down(testnet_dir(directory))
    except launch.TestnetError as exc:
        fail(str(exc))
    typer.echo(f"stopped {count} nodes")


@app.command("status")
def status(directory: Path = DIR_OPTION, json_output: bool = JSON_OPTION) -> None:
    """One row per node: alive, peers, price."""
    try:
        nodes = launch.load(testnet_dir(directory))
    except launch.TestnetError as exc:
        fail(str(exc))
    rows = []
    for node in nodes:
        alive = launch.is_alive(node.pid, node.home)
        row: dict[str, Any] = {
            "name": node.name,
            "host": node.host,
            "pid": node.pid,
            "alive": alive,
        }
        if alive and node.info:
            info = ask(node, "/v1/status")
            row |= {
                "peer_id": info["peer_id"],
                "peers": info["peers_connected"],
                "price_mc_per_tfuel": info["ad"]["price_mc_per_tfuel"],
            }
        rows.append(row)
    if json_output:
        print_json(rows)
        return
    table = Table(title=f"Testnet in {testnet_dir(directory)}")
    for column in ("node", "host", "alive", "peers", "price now"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["name"],
            row["host"],
            "yes" if row["alive"] else "NO",
            str(row.get("peers", "-")),
            str(row.get("price_mc_per_tfuel", "-")),
        )
    Console().print(table)


@app.command("demo")
def demo(n: int = typer.Option(3, "-n", help="How many nodes.")) -> None:
    """Start a few nodes, show the market each one sees, and stop them all."""
    console = Console()
    started_s = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="hearth-demo-") as tmp:
        root = Path(tmp)
        console.print(f"starting {n} nodes in {root} ...")
        nodes = launch.up(root, n)
        try:
            launch.wait_for(lambda: market_complete(nodes), 30, "every node to see every other")
            names = {x.info["peer_id"]: x.name for x in nodes}
            table = Table(title="What each node sees (prices in mc per 10^12 fuel)")
            table.add_column("node")
            for other in nodes:
                table.add_column(f"price of {other.name}")
            for node in nodes:
                view = ask(node, "/v1/market")
                prices = {o["peer_id"]: o["price_mc_per_tfuel"] for o in view["offers"]}
                prices[view["self"]["peer_id"]] = view["self"]["price_mc_per_tfuel"]
                table.add_row(
                    f"{node.name} ({short(node.info['peer_id'])})",
                    *(str(prices.get(o.info["peer_id"], "-")) for o in nodes),
                )
            console.print(table)
            console.print(
                f"{len(names)} nodes agreed on the market in {time.monotonic() - started_s:.1f} s"
            )
        finally:
            launch.stop(nodes)
