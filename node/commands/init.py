"""`hearth init`: create the data directory, an identity key, an API token and a config file."""

from __future__ import annotations

import typer

from hearth.node import paths
from hearth.node.commands.common import JSON_OPTION, CommandError, print_json
from hearth.node.home import init_home, load_identity
from hearth.node.profiles import PROFILES, render

PROFILE_OPTION = typer.Option(
    None, "--profile", help=f"Start config.toml from a host profile: {', '.join(PROFILES)}."
)


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(profile: str | None = PROFILE_OPTION, json_output: bool = JSON_OPTION) -> None:
        """Create this node's data directory ($HEARTH_HOME or the platform default)."""
        home = paths.data_dir()
        config = None if profile is None else render(profile)
        if config is not None and paths.config_path(home).exists():
            raise CommandError(
                f"{paths.config_path(home)} exists; move it away to start from profile {profile}"
            )
        created = init_home(home, config)
        identity = load_identity(home)
        if json_output:
            print_json(
                {
                    "home": str(home),
                    "peer_id": identity.peer_id,
                    "created": created,
                    "profile": profile,
                }
            )
            return
        typer.echo(f"data directory: {home}")
        typer.echo(f"peer id:        {identity.peer_id}")
        typer.echo(f"created:        {', '.join(created) or 'nothing (already set up)'}")
        if profile is not None:
            typer.echo(f"profile:        {profile}")
        typer.echo(f"edit {paths.config_path(home)} to set caps, power and tariff")
