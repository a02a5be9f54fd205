"""The `hearth` command: mounts the command groups and turns failures into one line and exit 1."""

from __future__ import annotations

import sys

import typer

try:  # typer 0.2x carries its own copy of click; older releases use click itself
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_errors  # type: ignore[no-redef]

from hearth.node.commands.common import CommandError
from hearth.node.lifeline import die_with_parent, sigterm_like_ctrl_c

app = typer.Typer(
    name="hearth",
    help="Hearth: peer-to-peer compute for home data centres.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def version() -> str:
    """The installed distribution's version (a checkout without metadata says so)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("hearthnet")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"hearth {version()}")
        raise typer.Exit()


VERSION_OPTION = typer.Option(
    False, "--version", callback=_print_version, is_eager=True, help="Print the version and exit."
)


@app.callback()
def _root(show_version: bool = VERSION_OPTION) -> None:
    """Hearth: peer-to-peer compute for home data centres."""


# Each group lives in node/commands/<module>.py and exposes `app` (a group) or `register(app)`
# (top-level commands). The first word on the command line names the one module to import, so
# `hearth ledger balance` does not load wasmtime, rich or the SDK: a command starts in a fraction
# of the time. Help, `--version` and unknown words mount everything.
# tests/node/test_cli_mount.py checks this table against a full mount.
COMMAND_MODULES = {
    "init": "init",
    "invite": "init",
    "node": "node",
    "market": "market",
    "peers": "market",
    "ledger": "ledger",
    "job": "job",
    "testnet": "testnet",
    "sim": "sim",
    "runtime": "runtime",
    "dashboard": "dashboard",
}


_mounted: set[str] = set()


def mount(argv: list[str] | None = None) -> typer.Typer:
    """``app`` with the command modules ``argv`` needs (all of them when ``argv`` is None)."""
    import importlib

    first = next((word for word in argv or [] if not word.startswith("-")), None)
    wanted = COMMAND_MODULES.get(first or "")
    names = [wanted] if wanted else list(dict.fromkeys(COMMAND_MODULES.values()))
    for name in names:
        if name in _mounted:
            continue
        _mounted.add(name)
        module = importlib.import_module(f"hearth.node.commands.{name}")
        if hasattr(module, "register"):
            module.register(app)
        else:
            app.add_typer(module.app, name=name)
    return app


def main() -> None:
    mount(sys.argv[1:])
    die_with_parent()
    sigterm_like_ctrl_c()
    try:
        code = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError:  # the group's help is already printed
        sys.exit(2)
    except click_errors.UsageError as exc:  # a bad flag, value or command: one line, exit 2
        where = exc.ctx.command_path if exc.ctx else "hearth"
        message = " ".join(exc.format_message().split())
        sys.stderr.write(f"hearth: {message} (see `{where} --help`)\n")
        sys.exit(2)
    except click_errors.ClickException as exc:
        sys.stderr.write(f"hearth: {' '.join(exc.format_message().split())}\n")
        sys.exit(exc.exit_code)
    except typer.Abort:  # Ctrl-C at a prompt
        sys.stderr.write("hearth: interrupted\n")
        sys.exit(130)
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
    sys.exit(code if isinstance(code, int) else 0)


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
