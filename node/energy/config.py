"""The ``[energy]`` sensor keys and the ``[owner]`` section of config.toml, validated.

Each wrong value gives one line naming the key and the fix (``config: energy.poll_s: ...``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hearth.node.commands.common import CommandError
from hearth.protocol.energy import FALLBACKS, QUANTITIES, EnergyPolicy

SENSORS = ("none", "command", "file", "mqtt")

TEMPLATE_ENERGY = """\
# A sensor of the home's energy, read every poll_s seconds: "none", "command" (prints JSON),
# "file" (holds JSON) or "mqtt". Its quantities: battery_pct, solar_w, load_w, grid_w
# (grid_w positive when importing). See docs/adr/0026-energy-that-follows-the-home.md.
sensor = "none"
sensor_command = ""
sensor_file = ""
poll_s = 5
# MQTT broker, and the topic of each quantity ("" for none); a payload is a number or JSON,
# read at the dotted path in mqtt_paths (e.g. battery_pct = "value" or "Dc.Battery.Soc").
mqtt_host = "127.0.0.1"
mqtt_port = 1883
mqtt_username = ""
mqtt_password = ""
mqtt_topics = { battery_pct = "", solar_w = "", load_w = "", grid_w = "" }
mqtt_paths = {}
# Battery charge kept for the home (below it with no solar surplus the node takes no work),
# and the battery's capacity in Wh (its charge above the reserve powers jobs).
reserve_pct = 20
battery_capacity_wh = 0
# Panel or circuit limit in watts (0: none) and what one busy core draws: cores offered are at
# most power_cap_w / watts_per_core.
power_cap_w = 0
watts_per_core = 10
# A sensor silent this long counts as none; then, as below the reserve: "pause" or "grid".
stale_s = 60
fallback = "pause"
"""

TEMPLATE_OWNER = """\
[owner]
# Idle-only: take no work while the owner's own CPU load is above cpu_busy_pct, and resume
# after idle_min minutes below it.
idle_only = false
cpu_busy_pct = 25
idle_min = 5
# Take no work above this temperature in degrees C (0: off). temperature_sensor is a psutil
# sensor name (see `sensors`), or a file holding degrees or millidegrees; "" takes the hottest.
temperature_max_c = 0
temperature_sensor = ""
# A laptop: take no work while this machine runs on its own battery (unplugged).
on_battery_never = false
"""


@dataclasses.dataclass(frozen=True)
class SensorConfig:
    kind: str = "none"
    command: str = ""
    file: str = ""
    poll_s: float = 5.0
    mqtt_host: str = "127.0.0.1"
    mqtt_port: int = 1883
    mqtt_username: str = ""
    mqtt_password: str = ""
    mqtt_topics: tuple[tuple[str, str], ...] = ()  # (quantity, topic), only those set
    mqtt_paths: tuple[tuple[str, str], ...] = ()  # (quantity, dotted JSON path)
    stale_s: int = 60


@dataclasses.dataclass(frozen=True)
class OwnerConfig:
    idle_only: bool = False
    cpu_busy_pct: int = 25
    idle_min: float = 5.0
    temperature_max_c: float = 0.0
    temperature_sensor: str = ""
    on_battery_never: bool = False

    def watches(self) -> bool:
        """Whether anything of the owner's is to be watched at all."""
        return self.idle_only or self.temperature_max_c > 0 or self.on_battery_never


def _bad(key: str, fix: str) -> CommandError:
    return CommandError(f"config: {key}: {fix}")


def _get(section: dict[str, Any], key: str, kind: type, where: str) -> Any:
    value = section[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind in (int, float) and isinstance(value, bool)):
        raise _bad(f"{where}.{key}", f"expected {kind.__name__}, got {value!r}")
    return value


def _quantity_table(section: dict[str, Any], key: str) -> tuple[tuple[str, str], ...]:
    table = _get(section, key, dict, "energy")
    for name, value in table.items():
        if name not in QUANTITIES:
            raise _bad(f"energy.{key}.{name}", f"unknown quantity; expected one of {QUANTITIES}")
        if not isinstance(value, str):
            raise _bad(f"energy.{key}.{name}", f"expected a string, got {value!r}")
    return tuple((name, value) for name, value in sorted(table.items()) if value)


def parse_sensor(energy: dict[str, Any]) -> SensorConfig:
    kind = _get(energy, "sensor", str, "energy")
    if kind not in SENSORS:
        raise _bad("energy.sensor", f"choose one of {list(SENSORS)}")
    poll_s = _get(energy, "poll_s", float, "energy")
    if not 0.1 <= poll_s <= 3600:
        raise _bad("energy.poll_s", "must be between 0.1 and 3600 seconds")
    config = SensorConfig(
        kind=kind,
        command=_get(energy, "sensor_command", str, "energy"),
        file=_get(energy, "sensor_file", str, "energy"),
        poll_s=poll_s,
        mqtt_host=_get(energy, "mqtt_host", str, "energy"),
        mqtt_port=_get(energy, "mqtt_port", int, "energy"),
        mqtt_username=_get(energy, "mqtt_username", str, "energy"),
        mqtt_password=_get(energy, "mqtt_password", str, "energy"),
        mqtt_topics=_quantity_table(energy, "mqtt_topics"),
        mqtt_paths=_quantity_table(energy, "mqtt_paths"),
        stale_s=_get(energy, "stale_s", int, "energy"),
    )
    if kind == "command" and not config.command.strip():
        raise _bad("energy.sensor_command", 'sensor = "command" needs the command to run')
    if kind == "file" and not config.file:
        raise _bad("energy.sensor_file", 'sensor = "file" needs the path of the JSON file')
    if kind == "mqtt" and not config.mqtt_topics:
        raise _bad("energy.mqtt_topics", 'sensor = "mqtt" needs a topic for at least one quantity')
    if not 1 <= config.mqtt_port <= 65535:
        raise _bad("energy.mqtt_port", "must be 1-65535")
    if config.stale_s < 1:
        raise _bad("energy.stale_s", "must be at least 1 second")
    return config


def parse_policy(energy: dict[str, Any], cores_max: int) -> EnergyPolicy:
    values = {
        key: _get(energy, key, int, "energy")
        for key in ("reserve_pct", "battery_capacity_wh", "power_cap_w", "watts_per_core")
    }
    fallback = _get(energy, "fallback", str, "energy")
    if fallback not in FALLBACKS:
        raise _bad("energy.fallback", f"choose one of {list(FALLBACKS)}")
    if not 0 <= values["reserve_pct"] <= 100:
        raise _bad("energy.reserve_pct", "must be 0-100")
    if values["battery_capacity_wh"] < 0 or values["power_cap_w"] < 0:
        raise _bad("energy", "battery_capacity_wh and power_cap_w must not be negative")
    if values["watts_per_core"] < 1:
        raise _bad("energy.watts_per_core", "must be at least 1")
    return EnergyPolicy(
        cores_max=cores_max,
        fallback=fallback,
        stale_ms=_get(energy, "stale_s", int, "energy") * 1000,
        **values,
    )


def parse_owner(owner: dict[str, Any]) -> OwnerConfig:
    config = OwnerConfig(
        idle_only=_get(owner, "idle_only", bool, "owner"),
        cpu_busy_pct=_get(owner, "cpu_busy_pct", int, "owner"),
        idle_min=_get(owner, "idle_min", float, "owner"),
        temperature_max_c=_get(owner, "temperature_max_c", float, "owner"),
        temperature_sensor=_get(owner, "temperature_sensor", str, "owner"),
        on_battery_never=_get(owner, "on_battery_never", bool, "owner"),
    )
    if not 1 <= config.cpu_busy_pct <= 100:
        raise _bad("owner.cpu_busy_pct", "must be 1-100")
    if not 0 <= config.idle_min <= 24 * 60:
        raise _bad("owner.idle_min", "must be 0-1440 minutes")
    if not 0 <= config.temperature_max_c <= 150:
        raise _bad("owner.temperature_max_c", "must be 0 (off) to 150")
    return config
