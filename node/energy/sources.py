"""Energy sources: a command that prints JSON, a JSON file, or MQTT topics (node/energy/mqtt.py).

Each gives a mapping of quantity -> value (``protocol.energy.QUANTITIES``) and the time it was
measured; protocol/energy.py judges the values. A source that fails raises ``SourceError`` with
one line: the service logs it and keeps the last good state.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import trio

from hearth.node.clock import Clock

OUTPUT_BYTES_MAX = 64 * 1024


class SourceError(Exception):
    """The source gave nothing usable this time; the message is one line."""


class Source(Protocol):
    name: str

    async def read(self) -> tuple[Mapping[str, Any], int]:
        """(quantities, measured at ms); raises ``SourceError``."""
        ...


def json_object(text: str | bytes, where: str) -> Mapping[str, Any]:
    try:
        value = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SourceError(f"{where}: not JSON ({str(exc)[:80]})") from None
    if not isinstance(value, dict):
        raise SourceError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


class CommandSource:
    """Runs a command each poll; its stdout is one JSON object (e.g. ``{"battery_pct": 80}``)."""

    def __init__(self, command: str, clock: Clock, timeout_s: float) -> None:
        self.name = "command"
        self._argv = shlex.split(command)
        self._clock = clock
        self._timeout_s = timeout_s

    async def read(self) -> tuple[Mapping[str, Any], int]:
        try:
            with trio.fail_after(self._timeout_s):
                done = await trio.run_process(self._argv, capture_stdout=True, check=False)
        except trio.TooSlowError:
            raise SourceError(f"command took longer than {self._timeout_s:g} s") from None
        except OSError as exc:
            raise SourceError(f"command could not start: {exc}") from None
        if done.returncode != 0:
            raise SourceError(f"command exited with status {done.returncode}")
        return json_object(done.stdout[:OUTPUT_BYTES_MAX], "command output"), self._clock.now_ms()


class FileSource:
    """Reads a JSON file each poll; its modification time is when it was measured."""

    def __init__(self, path: str) -> None:
        self.name = "file"
        self._path = Path(path).expanduser()

    async def read(self) -> tuple[Mapping[str, Any], int]:
        try:
            stat = await trio.to_thread.run_sync(self._path.stat)
            data = await trio.to_thread.run_sync(self._read)
        except OSError as exc:
            raise SourceError(f"{self._path}: {exc.strerror or exc}") from None
        return json_object(data, str(self._path)), stat.st_mtime_ns // 1_000_000

    def _read(self) -> bytes:
        with self._path.open("rb") as file:
            return file.read(OUTPUT_BYTES_MAX)
