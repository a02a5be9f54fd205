"""`hearth dashboard`: open the running node's web dashboard with a one-time login link."""

from __future__ import annotations

import webbrowser

import typer

from hearth.node.client import NodeClient
from hearth.node.commands.common import JSON_OPTION, print_json


def register(app: typer.Typer) -> None:
    @app.command("dashboard")
    def dashboard(
        no_browser: bool = typer.Option(False, "--no-browser", help="Print the link only."),
        json_output: bool = JSON_OPTION,
    ) -> None:
        """Open the dashboard; the link logs in once and expires in two minutes."""
        client = NodeClient()
        try:
            url = client.post("/v1/dashboard/link")["url"]
        finally:
            client.close()
        if json_output:
            print_json({"url": url})
            return
        typer.echo(f"dashboard: {url}")
        typer.echo("(the link logs in once and expires in two minutes)")
        if not no_browser and not webbrowser.open(url):
            typer.echo("no browser found here: open the link yourself")
