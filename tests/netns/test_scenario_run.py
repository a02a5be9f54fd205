"""`hearth testnet run internet-homes`: NAT homes doing every job, shaped links, a partition that
heals, relay loss. `internet-homes` is `internet` with the public nodes taking no jobs (and a
fourth home), so every job crosses NAT and the connections plot shows relayed and hole-punched
pairs; the Ctrl-C test runs `internet` itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hearth.node.commands.testnet import shipped_scenarios
from hearth.testnet.netns.lab import list_namespaces
from tests.netns_lab import require_netns

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# The shipped internet-homes scenario on a shorter clock (60 s, not 90: the suite's slowest test):
# the same lab, links and faults, the partition 15 s instead of 25, 15 s after the relay is back.
QUICKER = (
    ("duration_s = 90", "duration_s = 60"),
    ("jobs = 12", "jobs = 8"),
    ("at_s = 20\nheal_s = 45", "at_s = 12\nheal_s = 27"),
    ("at_s = 55\nheal_s = 75", "at_s = 33\nheal_s = 45"),
)


def quicker_internet(folder: Path) -> Path:
    text = shipped_scenarios()["internet-homes"].read_text()
    assert "public_jobs = false" in text
    for old, new in QUICKER:
        assert old in text, f"internet-homes.toml no longer has {old!r}"
        text = text.replace(old, new)
    path = folder / "internet-homes.toml"
    path.write_text(text)
    return path


def test_internet_scenario_is_safe_through_partition_and_relay_loss(tmp_path: Path) -> None:
    require_netns()
    out = tmp_path / "report"
    env = {**os.environ, "HEARTH_HOME": str(tmp_path / "home")}
    scenario = quicker_internet(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "hearth", "testnet", "run", str(scenario), "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert done.returncode == 0, (done.stderr[-2000:], summary["checks"])
    assert summary["wrong_results_accepted"] == 0
    assert summary["credits_sum_mc"] == 0
    assert summary["jobs_verified"] >= 1
    kinds = [json.loads(line)["kind"] for line in (out / "events.jsonl").open()]
    assert {"lab_built", "partition", "partition_healed", "node_killed"} <= set(kinds)
    lab = summary["lab"]
    homes = [n for n in lab["nodes"].values() if n["kind"] == "home"]
    assert {n["address"] for n in homes} == {"192.168.1.10"}
    assert {n["router"] for n in homes} == {"port-restricted", "symmetric"}
    assert {"connections.png", "link_latency.png"} <= set(summary["plots"])
    assert all((out / name).stat().st_size > 10_000 for name in summary["plots"])
    final = summary["connections"]["final"]
    assert final["direct"] + final["hole-punched"] + final["relayed"] >= 4
    # port-restricted homes punch through to each other; the symmetric one stays relayed
    assert final["hole-punched"] >= 1 and final["relayed"] >= 1, final
    for pair, figures in summary["rtt_ms_by_link_pair"].items():
        assert figures["p50"] >= figures["configured_ms"], pair  # shaping adds what it says
    assert not [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab['id']}-")]


def test_ctrl_c_during_a_lab_run_removes_the_lab(tmp_path: Path) -> None:
    require_netns()
    out = tmp_path / "report"
    env = {**os.environ, "HEARTH_HOME": str(tmp_path / "home")}
    run = subprocess.Popen(
        [sys.executable, "-m", "hearth", "testnet", "run", "internet", "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lab_id = _wait_for_lab(out / "events.jsonl", run)
        assert [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab_id}-")]
        run.send_signal(signal.SIGINT)
        assert run.wait(timeout=120) == 130
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert not [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab_id}-")]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and summary["lab"]["id"] == lab_id


def _wait_for_lab(events: Path, run: subprocess.Popen[str]) -> str:
    """The lab's id once the runner has built it (events.jsonl says lab_built)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert run.poll() is None, run.stderr.read() if run.stderr else ""
        if events.exists():
            for line in events.read_text().splitlines():
                event = json.loads(line)
                if event["kind"] == "lab_built":
                    return str(event["lab"])
        time.sleep(0.2)
    raise AssertionError("the runner never built its lab")
