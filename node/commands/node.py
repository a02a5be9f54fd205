"""`hearth node ...`: run the daemon in the foreground and ask it how it is."""

from __future__ import annotations

import ipaddress
from typing import Any

import typer

from hearth.node import paths
from hearth.node.client import NodeClient
from hearth.node.commands.common import JSON_OPTION, CommandError, fail, print_json
from hearth.node.home import load_config, load_token
from hearth.node.logs import setup as setup_logs

LOG_LEVELS = ("debug", "info", "warning", "error")
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
    check_start_flags(host, bootstrap or list(config.bootstrap), log_level)
    load_token(home)  # so does an API token others could read, or an empty one
    setup_logs(home, log_level, bytes_max=config.log_mb << 20)
    options = NodeOptions(
        home=home, host=host, port=port, bootstrap=tuple(bootstrap), api_port=api_port
    )
    trio.run(run_until_signalled, options)


def check_start_flags(host: str | None, bootstrap: list[str], log_level: str) -> None:
    """Flags the daemon would trip over deep inside its nurseries, refused here in one line."""
    from hearth.p2p.discovery import parse_peer_addr

    if log_level.lower() not in LOG_LEVELS:
        fail(f"--log-level {log_level!r}: choose one of {', '.join(LOG_LEVELS)}", exit_code=2)
    if host is not None:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            fail(f"--host {host!r}: expected an IP address such as 127.0.0.2", exit_code=2)
    for addr in bootstrap:
        try:
            parse_peer_addr(addr)
        except ValueError:
            fail(
                f"bootstrap {addr!r} is not a peer address; expected "
                "/ip4/<address>/tcp/<port>/p2p/<peer id> (see another node's node.json)",
                exit_code=2,
            )


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
    reach = info.get("reachability") or {}
    if reach:
        relay = ", relaying for others" if reach.get("relay_hop") else ""
        typer.echo(f"reach:    {reach['state']}{relay}")
        for addr in reach.get("advertised", []):
            typer.echo(f"  advertised {addr}")
    typer.echo(f"price:    {info['ad']['price_mc_per_tfuel']} mc per 10^12 fuel")
    energy = info.get("energy") or {}
    if energy:
        typer.echo(f"energy:   {_energy_line(energy)}")
        if energy.get("paused"):
            typer.echo(f"paused:   {energy['paused']}")
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


DURATION_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> int:
    """Seconds in "90s", "30m", "2h", "1h30m" or a bare number of seconds."""
    import re

    spec = text.strip().lower()
    if spec.isdigit():
        total = int(spec)
    else:
        parts = re.fullmatch(r"(?:\d+[smhd])+", spec) and re.findall(r"(\d+)([smhd])", spec)
        if not parts:
            raise CommandError(f'--for: {text!r} is not a duration like "90s", "30m" or "1h30m"')
        total = sum(int(n) * DURATION_UNITS_S[unit] for n, unit in parts)
    if total <= 0:
        raise CommandError("--for: the duration must be more than 0 seconds")
    return total


def _energy_line(energy: dict[str, Any]) -> str:
    parts = [f"{energy.get('mode')}", f"{energy.get('cores_offered')} cores offered"]
    for key, unit in (("battery_pct", "% battery"), ("solar_w", " W solar"),
                      ("available_w", " W available"), ("power_cap_w", " W cap")):  # fmt: skip
        if energy.get(key) is not None:
            parts.append(f"{energy[key]:g}{unit}")
    source = energy.get("source")
    return ", ".join(parts) + (f" (source: {source})" if source else "")


@app.command("pause")
def pause(
    duration: str = typer.Option(
        None, "--for", help='How long, e.g. "30m" or "2h" (default: until resume).'
    ),
    json_output: bool = JSON_OPTION,
) -> None:
    """Take no new work (running jobs finish) until `hearth node resume` or --for has passed."""
    body = {"for_s": None if duration is None else parse_duration_s(duration)}
    energy = NodeClient().post("/v1/node/pause", json=body)
    if json_output:
        print_json(energy)
        return
    typer.echo(f"paused: {energy.get('paused')}")


@app.command("resume")
def resume(json_output: bool = JSON_OPTION) -> None:
    """Take work again (unless the home's energy or the owner's use still pause the node)."""
    energy = NodeClient().post("/v1/node/resume")
    if json_output:
        print_json(energy)
        return
    paused = energy.get("paused")
    typer.echo(f"still paused: {paused}" if paused else "resumed")
