"""The node's energy service: reads the source, follows the owner, tells the engine.

Theory of operation
-------------------
``run`` loops every ``poll_s`` (or at once when an MQTT value arrives, or on pause/resume): it
reads the source, lets protocol/energy.py judge the reading (garbage and implausible jumps are
logged and ignored; the last good reading is kept) and decide the energy state, adds the owner's
reasons (a pause asked for with ``hearth node pause``, idle-only, the temperature cap), and when
the result differs from what the engine last heard, submits one ``EnergyChanged``. The engine
republishes its ad within the gossip rate limit and bids on nothing while paused; jobs already
running are left to finish within their lease. ``history`` keeps one sample a minute for 24 h
for ``GET /api/energy``.

What must never happen: a source failure ends the node; a paused node bids; the engine is told
the same state twice in a row (ads would churn).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from hearth.node.clock import Clock
from hearth.node.energy.config import OwnerConfig, SensorConfig
from hearth.node.energy.owner import (
    CpuMeter,
    HeatTracker,
    IdleTracker,
    read_battery,
    temperature_c,
    unplugged_reason,
    yield_sandbox,
)
from hearth.node.energy.sources import CommandSource, FileSource, Source, SourceError
from hearth.node.logs import LogLimiter, log
from hearth.protocol.energy import (
    EnergyPolicy,
    EnergyState,
    ReadingError,
    ReadingFilter,
    cap_cores,
    decide,
    parse_reading,
)
from hearth.protocol.events import EnergyChanged

if TYPE_CHECKING:
    from hearth.node.energy.mqtt import MqttSource

HISTORY_MS = 24 * 3_600_000
HISTORY_STEP_MS = 60_000  # one sample a minute: at most 1440 in the history
HISTORY_SAMPLES_MAX = HISTORY_MS // HISTORY_STEP_MS
OWNER_POLL_S = 5.0


@dataclasses.dataclass
class ManualPause:
    until_ms: int | None  # None: until `hearth node resume`


class EnergyService:
    def __init__(
        self,
        sensor: SensorConfig,
        policy: EnergyPolicy,
        owner: OwnerConfig,
        clock: Clock,
        submit: Callable[[EnergyChanged], object],
        cores_cap: Callable[[], int] | None = None,
    ) -> None:
        self.sensor = sensor
        self.policy = policy
        self.owner = owner
        self.clock = clock
        self._submit = submit
        # The configured core cap as the engine holds it now (the settings may change it).
        self._cores_cap = cores_cap or (lambda: policy.cores_max)
        self.filter = ReadingFilter(policy)
        # Without a sensor the node runs on the grid, within the power cap if one is set.
        self.state = EnergyState(
            "grid", cap_cores(policy), "", power_cap_w=policy.power_cap_w or None
        )
        self.paused = ""  # the reason the engine was last told, "" when working
        self.manual: ManualPause | None = None
        self.owner_reason = ""
        self.told: EnergyChanged | None = None
        self.history: collections.deque[dict[str, Any]] = collections.deque(
            maxlen=HISTORY_SAMPLES_MAX
        )
        self.limiter = LogLimiter()
        self._wake = trio.Event()
        self._idle = IdleTracker(owner.cpu_busy_pct, int(owner.idle_min * 60_000))
        self._heat = HeatTracker(owner.temperature_max_c)
        self.source: Source | None = None
        self._mqtt: MqttSource | None = None
        # Called after every update with the service (e.g. the metrics' set_energy, runtime.py).
        self.observers: list[Callable[[EnergyService], None]] = []

    @property
    def source_name(self) -> str | None:
        return None if self.sensor.kind == "none" else self.sensor.kind

    def wake(self) -> None:
        self._wake.set()

    def pause(self, for_ms: int | None) -> None:
        now_ms = self.clock.now_ms()
        self.manual = ManualPause(None if for_ms is None else now_ms + for_ms)
        self.update()

    def resume(self) -> None:
        self.manual = None
        self.update()

    def _make_source(self) -> Source | None:
        kind = self.sensor.kind
        if kind == "command":
            return CommandSource(self.sensor.command, self.clock, max(1.0, self.sensor.poll_s))
        if kind == "file":
            return FileSource(self.sensor.file)
        if kind == "mqtt":
            # paho (and the DNS library it loads) costs a tenth of a second at every node
            # start; only a home with an MQTT sensor pays it.
            from hearth.node.energy.mqtt import MqttSource

            self._mqtt = MqttSource(self.sensor, self.clock, self.wake)
            return self._mqtt
        return None

    async def run(self) -> None:
        self.source = self._make_source()
        if self._mqtt is not None:
            self._mqtt.start()
        try:
            async with trio.open_nursery() as nursery:
                if self.owner.watches():
                    nursery.start_soon(self._watch_owner)
                while True:
                    self._wake = trio.Event()
                    await self.read_once()
                    with trio.move_on_after(self.sensor.poll_s):
                        await self._wake.wait()
        finally:
            if self._mqtt is not None:
                self._mqtt.stop()

    async def read_once(self) -> None:
        now_ms = self.clock.now_ms()
        if self.source is not None:
            try:
                raw, at_ms = await self.source.read()
                why = self.filter.offer(parse_reading(raw, min(at_ms, now_ms)))
            except (SourceError, ReadingError) as exc:
                why = str(exc)
            if why:
                self.limiter.log(
                    "energy-reading-ignored", now_ms / 1000, "warning", "energy-reading-ignored",
                    source=self.source.name, reason=why, kept="the last good state",
                )  # fmt: skip
                self.limiter.flush(now_ms / 1000)
            self.state = decide(self.policy, self.filter.last, now_ms)
        self.update()

    async def _watch_owner(self) -> None:
        meter = CpuMeter() if self.owner.idle_only else None
        while True:
            await trio.sleep(OWNER_POLL_S)
            now_ms = self.clock.now_ms()
            reasons = []
            if meter is not None:
                reasons.append(self._idle.update(meter.owner_pct(), now_ms))
            if self.owner.temperature_max_c > 0:
                celsius = await trio.to_thread.run_sync(
                    temperature_c, self.owner.temperature_sensor
                )
                reasons.append(self._heat.update(celsius))
            if self.owner.on_battery_never:
                reasons.append(unplugged_reason(await trio.to_thread.run_sync(read_battery)))
            reason = "; ".join(r for r in reasons if r)
            if bool(reason) != bool(self.owner_reason):
                changed = await trio.to_thread.run_sync(yield_sandbox, bool(reason))
                log("info", "owner-first", paused=reason, sandbox_workers_reniced=changed)
            self.owner_reason = reason
            self.update()

    def _manual_reason(self, now_ms: int) -> str:
        if self.manual is None:
            return ""
        until_ms = self.manual.until_ms
        if until_ms is None:
            return "paused by the owner"
        if now_ms >= until_ms:
            self.manual = None
            return ""
        return f"paused by the owner for {-(-(until_ms - now_ms) // 1000)} s more"

    def update(self) -> None:
        """Tell the engine if what it may offer changed; record the state in the history."""
        now_ms = self.clock.now_ms()
        manual = self._manual_reason(now_ms)
        self.paused = manual or self.owner_reason or self.state.paused
        if self.paused:
            event = EnergyChanged("paused", 0, self.paused)
        else:
            event = EnergyChanged(self.state.mode, self.state.cores_offered, "")
        if event != self.told:
            self._submit(event)
            self.told = event
        self._record(now_ms)
        for observer in self.observers:
            observer(self)

    def metrics_values(self) -> dict[str, Any]:
        """The keyword arguments of ``NodeMetrics.set_energy`` (node/metrics.py)."""
        state = self.state_json()
        keys = ("battery_pct", "solar_w", "available_w", "power_cap_w", "cores_offered")
        return {**{key: state[key] for key in keys}, "paused": bool(self.paused)}

    def state_json(self) -> dict[str, Any]:
        """The state as ``GET /api/energy`` gives it (floats in percent and watts)."""
        reading = self.state.reading  # None while there is no fresh reading

        def watts(value: int | None) -> float | None:
            return None if value is None else float(value)

        battery = None if reading is None else reading.battery_pml
        return {
            "battery_pct": None if battery is None else battery / 10,
            "solar_w": watts(reading.solar_w if reading else None),
            "load_w": watts(reading.load_w if reading else None),
            "grid_w": watts(reading.grid_w if reading else None),
            "available_w": watts(self.state.available_w),
            "power_cap_w": None if not self.policy.power_cap_w else float(self.policy.power_cap_w),
            "cores_offered": self.cores_offered(),
            "paused": self.paused or None,
        }

    def cores_offered(self) -> int:
        """What the ad offers: the configured cap bounded by the home's power, 0 while paused."""
        if self.told is None or self.paused:
            return 0
        return min(self._cores_cap(), self.told.cores_offered)

    def status_json(self) -> dict[str, Any]:
        return {
            "source": self.source_name,
            "mode": self.told.mode if self.told else self.state.mode,
            **self.state_json(),
        }

    def _record(self, now_ms: int) -> None:
        sample = {"t_ms": now_ms, **self.state_json()}
        last = self.history[-1] if self.history else None
        if last is not None and now_ms // HISTORY_STEP_MS == last["t_ms"] // HISTORY_STEP_MS:
            self.history[-1] = sample  # one sample a minute: the latest of that minute
        else:
            self.history.append(sample)
        while self.history and self.history[0]["t_ms"] < now_ms - HISTORY_MS:
            self.history.popleft()

    def api_json(self) -> dict[str, Any]:
        return {
            "source": self.source_name,
            "state": self.state_json(),
            "history": list(self.history),
        }
