"""The dashboard's settings: read from and saved to ``config.toml`` with tomlkit (comments kept).

A save is validated as a whole by the same parser ``hearth node start`` uses, plus a core cap no
larger than the machine's; a bad value gives one line and the file stays as it was. The new caps,
hours, tariff and energy source then reach the engine as one ``HostSettingsChanged`` event, so
the node's next ad carries them without a restart.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final

import tomlkit
from tomlkit.exceptions import TOMLKitError

from hearth.node import config as node_config
from hearth.node import paths
from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE, NodeConfig, parse
from hearth.protocol.events import HostSettingsChanged

# (section, key, type) of each setting the page edits; anything else in the file is left alone.
FIELDS: Final = {
    "cores": ("limits", "cores", int),
    "memory_mb": ("limits", "memory_mb", int),
    "availability_hours": ("availability", "hours", list),
    "tariff_per_kwh": ("energy", "tariff_per_kwh", float),
    "tariff_hours": ("energy", "tariff_hours", dict),
    "solar_surplus_hours": ("energy", "solar_surplus_hours", list),
    "power_w": ("energy", "power_w", int),
    "source": ("energy", "source", str),
}


class SettingsError(ValueError):
    """A setting the node refuses, with the one line that says why."""


def read(home: Path) -> dict[str, Any]:
    """The editable settings as the file holds them (defaults where it is silent)."""
    text = paths.config_path(home).read_text()
    document = tomlkit.parse(text).unwrap()
    defaults = tomlkit.parse(TEMPLATE).unwrap()
    out: dict[str, Any] = {}
    for name, (section, key, _kind) in FIELDS.items():
        out[name] = document.get(section, {}).get(key, defaults[section][key])
    out["cores_max"] = node_config.machine_cores()
    return out


def _checked(name: str, value: Any) -> Any:
    kind = FIELDS[name][2]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise SettingsError(f"{name}: expected {kind.__name__}, got {value!r}")
    return value


def apply(home: Path, changes: Any) -> tuple[NodeConfig, dict[str, Any]]:
    """Validate ``changes`` against the whole file, then save it; the file is untouched on error.

    Returns the parsed config of the saved file and the settings as now saved.
    """
    if not isinstance(changes, dict) or not changes:
        raise SettingsError("send a JSON object of settings to change")
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise SettingsError(f"unknown settings: {', '.join(unknown)}; expected {sorted(FIELDS)}")
    path = paths.config_path(home)
    try:
        document = tomlkit.parse(path.read_text())
    except (OSError, TOMLKitError) as exc:
        raise SettingsError(f"could not read {path}: {exc}") from None
    current = read(home)
    for name, value in changes.items():
        section, key, kind = FIELDS[name]
        value = _checked(name, value)
        if value == current[name]:
            continue  # the form sends every field: rewrite only what changed, as it was typed
        if section not in document:
            document[section] = tomlkit.table()
        if kind is dict:
            table = tomlkit.inline_table()
            table.update(value)
            value = table
        document[section][key] = value
    text = tomlkit.dumps(document)
    try:
        config = parse(text)
    except CommandError as exc:
        raise SettingsError(str(exc).removeprefix("config: ")) from None
    partial = path.with_suffix(".toml.partial")
    partial.write_text(text)
    os.replace(partial, path)
    return config, read(home)


def settings_event(config: NodeConfig) -> HostSettingsChanged:
    return HostSettingsChanged(
        cores_offered=config.cores,
        memory_mb_offered=config.memory_mb,
        availability_hours_mask=config.availability_hours_mask,
        energy_source=config.energy_source,
        pricing=config.pricing,
    )
