"""What every command shares: one-line failures with a non-zero exit, and JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON.")


class CommandError(Exception):
    """A failure the user can act on: printed as one line, exit code ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def first_leaf(error: BaseException) -> BaseException:
    """The first exception a (nested) group holds: the cause trio's nurseries wrapped."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def fail(message: str, exit_code: int = 1) -> NoReturn:
    raise CommandError(message, exit_code)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
