"""The energy gauges: the one function the energy code calls, and how unknowns read."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from hearth.node.metrics import NodeMetrics, verdict_label


def energy(metrics: NodeMetrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith("hearth_energy_")
    }


def test_energy_gauges_are_unknown_until_set_then_follow_each_call() -> None:
    metrics = NodeMetrics()
    before = energy(metrics)
    assert before["hearth_energy_paused"] == 0
    assert all(math.isnan(v) for k, v in before.items() if k != "hearth_energy_paused")
    metrics.set_energy(
        battery_pct=55.5, solar_w=120, available_w=80, power_cap_w=30, cores_offered=3, paused=True
    )
    assert energy(metrics) == {
        "hearth_energy_battery_pct": 55.5,
        "hearth_energy_solar_w": 120,
        "hearth_energy_available_w": 80,
        "hearth_energy_power_cap_w": 30,
        "hearth_energy_cores_offered": 3,
        "hearth_energy_paused": 1,
    }
    metrics.set_energy(solar_w=0, cores_offered=0)  # no battery known any more
    after = energy(metrics)
    assert math.isnan(after["hearth_energy_battery_pct"]) and after["hearth_energy_solar_w"] == 0
    assert after["hearth_energy_paused"] == 0


def test_two_nodes_in_one_process_keep_their_numbers_apart() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.bids_sent.inc(3)
    assert b"hearth_bids_sent_total 3.0" in first.render()
    assert b"hearth_bids_sent_total 0.0" in second.render()


def test_a_dropped_replicas_reason_never_becomes_a_label_of_its_own() -> None:
    assert verdict_label("match") == "match" and verdict_label("mismatch") == "mismatch"
    assert verdict_label("declined:anything a worker cares to say") == "declined"
    assert verdict_label("lease-expired") == "dropped"
