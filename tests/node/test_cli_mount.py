"""The CLI imports only the command module its first word needs (node/cli.py COMMAND_MODULES):
the table must name every top-level command, and a command must not pull in the rest."""

from __future__ import annotations

import subprocess
import sys

import typer.main

from hearth.node import cli


def test_the_table_names_every_top_level_command_of_a_full_mount() -> None:
    group = typer.main.get_command(cli.mount())
    assert isinstance(group, typer.core.TyperGroup)
    assert set(group.commands) == set(cli.COMMAND_MODULES)


def test_a_ledger_command_loads_neither_the_sandbox_nor_the_sdk() -> None:
    probe = (
        "import sys; from hearth.node import cli; cli.mount(['ledger', 'balance']); "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith(('wasmtime', 'httpx', "
        "'hearth.node.commands.job', 'hearth.client')))))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == []
