"""The owner first: idle-only mode (the owner's own CPU load) and a temperature cap.

``IdleTracker`` and ``HeatTracker`` decide from numbers and ``now_ms`` (tested without psutil);
``owner_cpu_pct`` and ``temperature_c`` measure with psutil or a file.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

TEMPERATURE_HYSTERESIS_C = 3.0  # resume this far below the cap, so a node does not flap
NICE_YIELDING = 19  # the lowest CPU priority: a running job takes only what the owner leaves


class IdleTracker:
    """Busy while the owner's CPU load is above ``busy_pct``; idle again ``idle_ms`` after."""

    def __init__(self, busy_pct: int, idle_ms: int) -> None:
        self._busy_pct = busy_pct
        self._idle_ms = idle_ms
        self._last_busy_ms: int | None = None
        self._last_pct = 0.0

    def update(self, owner_pct: float, now_ms: int) -> str:
        """Why the node must leave the machine to its owner now, or ""."""
        if owner_pct > self._busy_pct:
            self._last_busy_ms = now_ms
            self._last_pct = owner_pct
        if self._last_busy_ms is None or now_ms - self._last_busy_ms >= self._idle_ms:
            return ""
        return (
            f"owner busy: CPU {self._last_pct:.0f}% > {self._busy_pct}%, "
            f"idle {self._idle_ms // 60_000} min before resuming"
        )


class HeatTracker:
    def __init__(self, max_c: float) -> None:
        self._max_c = max_c
        self.hot = False

    def update(self, celsius: float | None) -> str:
        if celsius is None or self._max_c <= 0:
            return ""
        limit = self._max_c - TEMPERATURE_HYSTERESIS_C if self.hot else self._max_c
        self.hot = celsius > limit
        return f"temperature {celsius:.0f} C above {self._max_c:g} C" if self.hot else ""


class CpuMeter:
    """The CPU load of everything but this node and its sandbox workers, in % of the machine."""

    def __init__(self) -> None:
        self._self = psutil.Process(os.getpid())
        self._procs: dict[int, psutil.Process] = {}
        psutil.cpu_percent(None)
        self._ours_pct()

    def _ours_pct(self) -> float:
        try:
            procs = [self._self, *self._self.children(recursive=True)]
        except psutil.Error:
            procs = [self._self]
        total = 0.0
        seen = {}
        for proc in procs:
            known = self._procs.get(proc.pid, proc)
            seen[proc.pid] = known
            try:
                total += known.cpu_percent(None)
            except psutil.Error:
                continue
        self._procs = seen
        return total / (psutil.cpu_count() or 1)

    def owner_pct(self) -> float:
        system = float(psutil.cpu_percent(None))
        return max(0.0, system - self._ours_pct())


def yield_sandbox(yielding: bool) -> int:
    """Lower (or restore) the CPU priority of the node's sandbox workers; how many it changed.

    Running jobs are not stopped: a stopped job would miss its lease for nothing (ADR 0026).
    Restoring a priority needs privilege on most systems; without it the workers stay low.
    """
    changed = 0
    try:
        workers = psutil.Process(os.getpid()).children(recursive=True)
    except psutil.Error:
        return 0
    for worker in workers:
        try:
            worker.nice(NICE_YIELDING if yielding else 0)
            changed += 1
        except (psutil.Error, OSError):
            continue
    return changed


def unplugged_reason(battery: object | None) -> str:
    """Why a laptop on its own battery must not work, from ``psutil.sensors_battery()``;
    "" when it is plugged in, or has no battery, or cannot tell."""
    if battery is None or getattr(battery, "power_plugged", None) is not False:
        return ""
    return f"on its own battery ({getattr(battery, 'percent', 0):.0f}%), unplugged"


def read_battery() -> object | None:
    read = getattr(psutil, "sensors_battery", None)
    try:
        return read() if read is not None else None
    except (OSError, RuntimeError):
        return None


def temperature_c(sensor: str) -> float | None:
    """The named psutil sensor (its hottest reading), a file of degrees, or the hottest of all."""
    if sensor.startswith("/"):
        try:
            value = float(Path(sensor).read_text().strip())
        except (OSError, ValueError):
            return None
        return value / 1000 if value > 1000 else value  # sysfs thermal zones: millidegrees
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:
        return None
    found = read() or {}
    readings = found.get(sensor, []) if sensor else [r for rs in found.values() for r in rs]
    return max((r.current for r in readings), default=None)
