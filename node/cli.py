"""The `hearth` command: mounts the command groups and turns failures into one line and exit 1."""

from __future__ import annotations

import sys

import typer

from hearth.node.commands.common import CommandError

app = typer.Typer(
    name="hearth",
    help="Hearth: peer-to-peer compute for home data centres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Hearth: peer-to-peer compute for home data centres."""


def _mount() -> None:
    # Each group lives in node/commands/<group>.py and exposes `app` (a group) or `register(app)`.
    import importlib

    for name in ("init", "node", "market", "ledger", "job", "testnet", "sim", "runtime"):
        try:
            module = importlib.import_module(f"hearth.node.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"hearth.node.commands.{name}":
                continue  # group not built yet
            raise
        if hasattr(module, "register"):
            module.register(app)
        else:
            app.add_typer(module.app, name=name)


_mount()


def main() -> None:
    try:
        app()
    except CommandError as exc:
        sys.stderr.write(f"hearth: {exc}\n")
        sys.exit(exc.exit_code)
    except BaseExceptionGroup as group:  # a CommandError raised inside the daemon's nurseries
        error = command_error_in(group)
        if error is None:
            raise
        sys.stderr.write(f"hearth: {error}\n")
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("hearth: interrupted\n")
        sys.exit(130)


def command_error_in(group: BaseExceptionGroup[BaseException]) -> CommandError | None:
    """The ``CommandError`` a trio nursery wrapped, if that is all the group holds (with the
    cancellations it caused); anything else is a bug and keeps its traceback."""
    errors, rest = group.split(CommandError)
    if errors is None:
        return None
    if rest is not None and rest.split(_is_cancellation)[1] is not None:
        return None
    first: BaseException = errors
    while isinstance(first, BaseExceptionGroup):
        first = first.exceptions[0]
    assert isinstance(first, CommandError)
    return first


def _is_cancellation(exc: BaseException) -> bool:
    import trio  # only reached when a nursery raised, so trio is already imported

    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)
