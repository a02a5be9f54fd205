"""`hearth init`: create the data directory, an identity key, an API token and a config file."""

from __future__ import annotations

import typer

from hearth.node import paths
from hearth.node.commands.common import JSON_OPTION, print_json
from hearth.node.home import init_home, load_identity


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(json_output: bool = JSON_OPTION) -> None:
        """Create this node's data directory ($HEARTH_HOME or the platform default)."""
        home = paths.data_dir()
        created = init_home(home)
        identity = load_identity(home)
        if json_output:
            print_json({"home": str(home), "peer_id": identity.peer_id, "created": created})
            return
        typer.echo(f"data directory: {home}")
        typer.echo(f"peer id:        {identity.peer_id}")
        typer.echo(f"created:        {', '.join(created) or 'nothing (already set up)'}")
        typer.echo(f"edit {paths.config_path(home)} to set caps, power and tariff")
