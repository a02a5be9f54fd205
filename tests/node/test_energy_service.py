"""The node's energy service with real files and commands: sources, owner checks, pause."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import psutil
import pytest
import trio

import hearth.node.config
from hearth.node.api import build_app, serve_api
from hearth.node.commands.common import CommandError
from hearth.node.commands.node import parse_duration_s
from hearth.node.config import parse
from hearth.node.energy.config import OwnerConfig, SensorConfig, parse_owner
from hearth.node.energy.mqtt import payload_value
from hearth.node.energy.owner import (
    NICE_YIELDING,
    HeatTracker,
    IdleTracker,
    temperature_c,
    unplugged_reason,
    yield_sandbox,
)
from hearth.node.energy.routes import build_energy_routes
from hearth.node.energy.service import HISTORY_STEP_MS, EnergyService
from hearth.node.profiles import render
from hearth.protocol.energy import EnergyPolicy
from hearth.protocol.events import EnergyChanged

POLICY = EnergyPolicy(cores_max=8, watts_per_core=10, power_cap_w=30, battery_capacity_wh=1000)


class Clock:
    def __init__(self) -> None:
        self.ms = 1_700_000_000_000

    def now_ms(self) -> int:
        return self.ms


def service(sensor: SensorConfig, clock: Clock, told: list[EnergyChanged]) -> EnergyService:
    energy = EnergyService(sensor, POLICY, OwnerConfig(), clock, told.append)
    energy.source = energy._make_source()
    return energy


async def test_a_file_source_drives_the_engine_and_garbage_keeps_the_last_state(
    tmp_path: Path,
) -> None:
    path = tmp_path / "energy.json"
    path.write_text(json.dumps({"battery_pct": 80, "solar_w": 500, "load_w": 100}))
    clock, told = Clock(), []
    energy = service(SensorConfig(kind="file", file=str(path), stale_s=60), clock, told)
    clock.ms = path.stat().st_mtime_ns // 1_000_000 + 1000
    await energy.read_once()
    assert told == [EnergyChanged("surplus", 3, "")]
    path.write_text("{not json")
    await energy.read_once()
    path.unlink()
    await energy.read_once()
    assert told == [EnergyChanged("surplus", 3, "")]  # the last good state, not a crash
    assert energy.state_json()["battery_pct"] == 80.0
    clock.ms += 61_000  # the source has been silent past stale_s: pause, as configured
    await energy.read_once()
    assert told[-1].mode == "paused" and "silent for 6" in told[-1].paused


async def test_a_command_source_and_its_failures(tmp_path: Path) -> None:
    clock, told = Clock(), []
    script = tmp_path / "read.py"
    script.write_text("import json; print(json.dumps({'battery_pct': 10, 'solar_w': 0}))")
    energy = service(
        SensorConfig(kind="command", command=f"{sys.executable} {script}"), clock, told
    )
    await energy.read_once()
    assert told[-1].mode == "paused" and "battery 10 %" in told[-1].paused
    script.write_text("import sys; sys.exit(3)")
    await energy.read_once()  # logged; the state stays
    assert len(told) == 1 and energy.state.mode == "paused"


async def test_pause_for_a_while_then_resume_and_history_is_one_sample_a_minute() -> None:
    clock, told = Clock(), []
    energy = service(SensorConfig(), clock, told)
    energy.update()
    assert told == [EnergyChanged("grid", 3, "")]  # no sensor: the grid, within the 30 W cap
    energy.pause(60_000)
    assert told[-1] == EnergyChanged("paused", 0, "paused by the owner for 60 s more")
    clock.ms += 60_000
    energy.update()
    assert told[-1] == EnergyChanged("grid", 3, "")
    energy.pause(None)
    energy.resume()
    assert energy.api_json()["state"]["paused"] is None
    samples = energy.api_json()["history"]
    assert len(samples) == len({s["t_ms"] // HISTORY_STEP_MS for s in samples}) == 2


def test_mqtt_payloads_are_numbers_or_json_at_a_path() -> None:
    assert payload_value(b"87.5", "") == 87.5
    assert payload_value(b'{"value": 42}', "") == 42
    assert payload_value(b'{"Dc": {"Battery": [{"Soc": 55}]}}', "Dc.Battery.0.Soc") == 55
    assert payload_value(b"on", "") == "on"  # protocol/energy.py calls it not a number
    with pytest.raises(ValueError, match=r"no 'a\.b'"):
        payload_value(b'{"a": 1}', "a.b")
    with pytest.raises(ValueError, match="too large"):
        payload_value(b"1" * 20_000, "")


def test_idle_only_waits_idle_minutes_and_heat_has_hysteresis(tmp_path: Path) -> None:
    idle = IdleTracker(busy_pct=25, idle_ms=5 * 60_000)
    assert idle.update(10, 0) == ""
    assert idle.update(80, 1000).startswith("owner busy: CPU 80% > 25%")
    assert idle.update(5, 1000 + 4 * 60_000) != ""
    assert idle.update(5, 1000 + 5 * 60_000) == ""
    heat = HeatTracker(max_c=80)
    assert heat.update(79) == "" and heat.update(81) == "temperature 81 C above 80 C"
    assert heat.update(78) != "" and heat.update(76) == ""
    zone = tmp_path / "temp"
    zone.write_text("72500\n")
    assert temperature_c(str(zone)) == 72.5
    assert temperature_c(str(tmp_path / "missing")) is None


@dataclasses.dataclass
class Battery:  # the fields of psutil.sensors_battery() that matter here
    percent: float
    power_plugged: bool | None


def test_a_laptop_never_on_battery_pauses_only_while_unplugged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hearth.node.config, "machine_cores", lambda: 64)
    assert unplugged_reason(Battery(64, False)) == "on its own battery (64%), unplugged"
    assert unplugged_reason(Battery(64, True)) == ""  # on the charger
    assert unplugged_reason(Battery(64, None)) == ""  # cannot tell: the owner set hours
    assert unplugged_reason(None) == ""  # no battery: a desktop
    profile = load_profile_owner("laptop")
    assert profile.on_battery_never and profile.watches()


def load_profile_owner(name: str) -> OwnerConfig:
    return parse_owner(tomllib.loads(render(name, cpu_count=2))["owner"])


def test_durations_and_energy_config_errors_are_one_line() -> None:
    assert [parse_duration_s(t) for t in ("90", "90s", "30m", "1h30m", "2d")] == [
        90, 90, 1800, 5400, 172800,
    ]  # fmt: skip
    with pytest.raises(CommandError, match="--for"):
        parse_duration_s("soon")
    for text, key in [
        ('[energy]\nsensor = "command"', "energy.sensor_command"),
        ("[energy]\nreserve_pct = 120", "energy.reserve_pct"),
        ("[energy]\npower_cap_w = -1", "energy: battery_capacity_wh and power_cap_w"),
        ("[energy]\npoll_s = 0", "energy.poll_s"),
        ("[owner]\nidle_only = 1", "owner.idle_only"),
        ("[owner]\nnap = 1", "owner.nap"),
    ]:
        with pytest.raises(CommandError, match=key.replace(".", r"\.")) as caught:
            parse(text)
        assert "\n" not in str(caught.value)
    config = parse('[energy]\nsensor = "file"\nsensor_file = "/run/e.json"\npower_cap_w = 30\n')
    assert config.energy_sensor.file == "/run/e.json" and config.energy_policy.power_cap_w == 30


def test_the_sandbox_yields_to_the_owner_without_being_stopped() -> None:
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert yield_sandbox(True) >= 1
        assert psutil.Process(worker.pid).nice() == NICE_YIELDING
        assert psutil.Process(worker.pid).status() != psutil.STATUS_STOPPED
        yield_sandbox(False)
        if psutil.Process().uids().effective == 0:  # only privilege may raise a priority again
            assert psutil.Process(worker.pid).nice() == 0
    finally:
        worker.kill()
        worker.wait()


def test_the_config_in_docs_energy_md_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hearth.node.config, "machine_cores", lambda: 64)  # it offers 8
    text = (Path(__file__).resolve().parents[2] / "docs" / "energy.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    config = parse(block)
    assert config.energy_sensor.kind == "mqtt" and len(config.energy_sensor.mqtt_topics) == 3
    assert config.energy_policy.power_cap_w // config.energy_policy.watts_per_core == 3
    assert config.owner.idle_only


async def test_the_pause_routes_refuse_bad_bodies_and_need_the_token() -> None:
    told: list[EnergyChanged] = []
    energy = service(SensorConfig(), Clock(), told)
    app = build_app(build_energy_routes(energy), "secret-token")
    auth = {"Authorization": "Bearer secret-token"}
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve_api, app)
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            assert (await client.get("/api/energy")).status_code == 401
            for body in ('{"for_s": -1}', '{"for_s": "1h"}', "[1]", "{oops", '{"for_s": true}'):
                refused = await client.post("/v1/node/pause", content=body, headers=auth)
                assert refused.status_code == 400 and "error" in refused.json(), body
            assert told == []  # nothing changed that was not asked for
            paused = await client.post("/v1/node/pause", json={"for_s": 90}, headers=auth)
            assert paused.json()["paused"] == "paused by the owner for 90 s more"
            resumed = await client.post("/v1/node/resume", headers=auth)
            assert resumed.json()["paused"] is None
            assert (await client.get("/api/energy", headers=auth)).json()["source"] is None
        nursery.cancel_scope.cancel()


def test_a_core_cap_changed_in_the_settings_composes_with_the_power_bound() -> None:
    cap = [8]
    told: list[EnergyChanged] = []
    policy = EnergyPolicy(cores_max=4096, watts_per_core=10, power_cap_w=30)
    energy = EnergyService(SensorConfig(), policy, OwnerConfig(), Clock(), told.append,
                           cores_cap=lambda: cap[0])  # fmt: skip
    energy.update()
    assert told == [EnergyChanged("grid", 3, "")] and energy.cores_offered() == 3
    cap[0] = 2  # the owner lowered the cap in the dashboard
    assert energy.state_json()["cores_offered"] == 2
    no_cap = dataclasses.replace(policy, power_cap_w=0)
    unbounded = EnergyService(SensorConfig(), no_cap, OwnerConfig(), Clock(), told.append,
                              cores_cap=lambda: cap[0])  # fmt: skip
    unbounded.update()
    cap[0] = 6  # raised: no sensor and no power cap, so the engine's cap alone decides
    assert told[-1] == EnergyChanged("grid", 4096, "") and unbounded.cores_offered() == 6
