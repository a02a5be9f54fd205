"""`hearth node ...`: run the daemon in the foreground and ask it how it is."""

from __future__ import annotations

import typer

from hearth.node import paths
from hearth.node.client import NodeClient
from hearth.node.commands.common import JSON_OPTION, print_json
from hearth.node.home import load_config, load_token
from hearth.node.logs import setup as setup_logs

BOOTSTRAP_OPTION = typer.Option([], help="Multiaddr of a peer to join through (repeatable).")
app = typer.Typer(help="Run this machine's node.", no_args_is_help=True)


@app.command("start")
def start(
    host: str = typer.Option(None, help="Address to listen on, e.g. 127.0.0.2."),
    port: int = typer.Option(None, help="TCP port (0 picks a free one)."),
    bootstrap: list[str] = BOOTSTRAP_OPTION,
    api_port: int = typer.Option(0, help="Port of the local API on 127.0.0.1 (0: any)."),
    log_level: str = typer.Option("info", help="debug, info, warning or error."),
) -> None:
    """Run the node in the foreground until Ctrl-C or SIGTERM."""
    import trio  # the daemon's imports (libp2p) are heavy; other commands should not pay them

    from hearth.node.runtime import NodeOptions, run_until_signalled

    home = paths.data_dir()
    config = load_config(home)  # a wrong config stops here with its one-line reason
    load_token(home)  # so does an API token others could read, or an empty one
    setup_logs(home, log_level, bytes_max=config.log_mb << 20)
    options = NodeOptions(
        home=home, host=host, port=port, bootstrap=tuple(bootstrap), api_port=api_port
    )
    trio.run(run_until_signalled, options)


@app.command("status")
def status(json_output: bool = JSON_OPTION) -> None:
    """What the running node says of itself."""
    info = NodeClient().get("/v1/status")
    if json_output:
        print_json(info)
        return
    typer.echo(f"peer id:  {info['peer_id']}")
    typer.echo(f"api:      {info['api']}")
    typer.echo(f"peers:    {info['peers_connected']}")
    typer.echo(f"price:    {info['ad']['price_mc_per_tfuel']} mc per 10^12 fuel")
    degraded = info.get("degraded", [])
    typer.echo(f"health:   {'degraded, taking no work' if degraded else 'ok'}")
    for reason in degraded:
        typer.echo(f"  because {reason}")
    for name, runtime in info.get("runtimes", {}).items():
        if runtime["offered"]:
            typer.echo(f"runtime:  {name} offered")
            continue
        line = f"runtime:  {name} not offered ({runtime['state']}): {runtime['reason']}"
        if runtime["retry_in_s"] is not None:
            line += f"; retrying within {runtime['retry_in_s']:g} s"
        typer.echo(line)
    for addr in info["multiaddrs"]:
        typer.echo(f"listen:   {addr}")
