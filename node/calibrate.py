"""Measure this machine's fuel rate (fuel per second) once, at first start, and remember it.

The price floor divides energy cost by the fuel rate, so the rate must be measured on this
machine rather than guessed. The measurement runs a fixed integer loop under wasmtime with fuel
metering on and times it; the result is kept in ``calibration.json`` in the data directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import wasmtime

CALIBRATION_FILE = "calibration.json"
LOOP_WAT = """
(module
  (func (export "spin") (param $n i64) (result i64)
    (local $acc i64)
    (block $done
      (loop $again
        (br_if $done (i64.eqz (local.get $n)))
        (local.set $acc (i64.add (local.get $acc) (i64.mul (local.get $n) (local.get $n))))
        (local.set $n (i64.sub (local.get $n) (i64.const 1)))
        (br $again)))
    (local.get $acc)))
"""
LOOP_ITERATIONS = 100_000_000
FUEL_BUDGET = 10**12


def measure_fuel_per_s() -> int:
    config = wasmtime.Config()
    config.consume_fuel = True
    engine = wasmtime.Engine(config)
    module = wasmtime.Module(engine, LOOP_WAT)
    store = wasmtime.Store(engine)
    store.set_fuel(FUEL_BUDGET)
    spin = wasmtime.Instance(store, module, []).exports(store)["spin"]
    assert isinstance(spin, wasmtime.Func)
    started = time.perf_counter()
    spin(store, LOOP_ITERATIONS)
    elapsed_s = time.perf_counter() - started
    fuel_used = FUEL_BUDGET - store.get_fuel()
    return max(1, int(fuel_used / elapsed_s))


def fuel_per_s(home: Path) -> int:
    """The remembered fuel rate, measuring it first if this node has never done so."""
    path = home / CALIBRATION_FILE
    try:
        value = json.loads(path.read_text())["fuel_per_s"]
        if isinstance(value, int) and value > 0:
            return value
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        pass
    value = measure_fuel_per_s()
    path.write_text(json.dumps({"fuel_per_s": value, "measured_at_s": int(time.time())}) + "\n")
    return value
