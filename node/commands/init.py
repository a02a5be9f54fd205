"""`hearth init`: create the data directory, an identity key, an API token and a config file.

Also `hearth invite`, which prints the line that `hearth init --join LINE` takes (ADR 0036).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from hearth.node import invite as invites
from hearth.node import paths
from hearth.node.commands.common import JSON_OPTION, CommandError, print_json
from hearth.node.home import init_home, load_config, load_identity
from hearth.node.profiles import PROFILES, render

PROFILE_OPTION = typer.Option(
    None, "--profile", help=f"Start config.toml from a host profile: {', '.join(PROFILES)}."
)

JOIN_OPTION = typer.Option(
    None, "--join", help="Join a network: the line another node's `hearth invite` printed."
)


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        profile: str | None = PROFILE_OPTION,
        join: str | None = JOIN_OPTION,
        json_output: bool = JSON_OPTION,
    ) -> None:
        """Create this node's data directory ($HEARTH_HOME or the platform default)."""
        home = paths.data_dir()
        invite = None if join is None else invites.decode(join)  # a bad line creates nothing
        config = None if profile is None else render(profile)
        if config is not None and paths.config_path(home).exists():
            raise CommandError(
                f"{paths.config_path(home)} exists; move it away to start from profile {profile}"
            )
        created = init_home(home, config)
        identity = load_identity(home)
        if invite is not None:
            invites.join(home, invite)
        joined = list(invite.bootstrap) if invite else []
        if json_output:
            print_json(
                {
                    "home": str(home),
                    "peer_id": identity.peer_id,
                    "created": created,
                    "profile": profile,
                    "joined": joined,
                    "private_network": invites.read_swarm_key(home) is not None,
                }
            )
            return
        typer.echo(f"data directory: {home}")
        typer.echo(f"peer id:        {identity.peer_id}")
        typer.echo(f"created:        {', '.join(created) or 'nothing (already set up)'}")
        if profile is not None:
            typer.echo(f"profile:        {profile}")
        for addr in joined:
            typer.echo(f"bootstrap:      {addr}")
        typer.echo(f"edit {paths.config_path(home)} to set caps, power and tariff")

    @app.command("invite")
    def invite(json_output: bool = JSON_OPTION) -> None:
        """Print one line another machine passes to `hearth init --join` to join this network."""
        home = paths.data_dir()
        config = load_config(home)
        line = invites.encode(invites.invite_for(home, _running_addrs(home), config.bootstrap))
        if json_output:
            decoded = invites.decode(line)
            print_json(
                {
                    "invite": line,
                    "bootstrap": list(decoded.bootstrap),
                    "private_network": decoded.psk is not None,
                }
            )
            return
        typer.echo(line)


def _running_addrs(home: Path) -> list[str]:
    """The running node's own multiaddrs from node.json ([] if it is not running)."""
    try:
        info = json.loads(paths.node_info_path(home).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(a) for a in info.get("multiaddrs", [])]
