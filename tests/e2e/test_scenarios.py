"""`hearth testnet run` end to end: a small scenario on real processes, Ctrl-C, and bad files."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.testnet import launch, report

pytestmark = pytest.mark.integration

# Five nodes, one of them a liar (seed 40 makes it node3, the only panel box: at a fifth of a
# gaming PC's power it bids lowest, so it wins replicas), two publishers, six jobs in about
# fifteen seconds and one honest worker killed and restarted.
SMALL = """\
[run]
name = "small"
seed = 40
nodes = 5
jobs = 6
duration_s = 15
job_rate_per_s = 1

[hosts]
gaming_pc = 80
panel_box = 20

[adversaries]
wrong_result = 20

[churn]
down_pct_per_min = 80
downtime_s = 5

[testnet]
publishers = 2
"""

# Long enough that Ctrl-C always lands mid-run.
LONG = """\
[run]
name = "interrupted"
seed = 5
nodes = 3
jobs = 50
duration_s = 120

[hosts]
gaming_pc = 100

[testnet]
job_rate_per_min = 30
publishers = 1
"""


def hearth_run(scenario: Path, out: Path, timeout_s: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "hearth.node",
                "testnet",
                "run",
                str(scenario),
                "--out",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    finally:  # a runner killed by the timeout leaves its nodes; stop exactly those
        if (out / "testnet" / launch.STATE_FILE).exists():
            launch.down(out / "testnet")


def events(out: Path) -> list[dict[str, object]]:
    lines = (out / report.EVENTS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def started_pids(out: Path) -> list[int]:
    state = json.loads((out / "testnet" / launch.STATE_FILE).read_text())
    return [entry["pid"] for entry in state["nodes"]]


def test_a_small_scenario_outvotes_the_liar_survives_a_kill_and_balances(tmp_path: Path) -> None:
    scenario = tmp_path / "small.toml"
    scenario.write_text(SMALL)
    out = tmp_path / "out"
    result = hearth_run(scenario, out, timeout_s=150)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert summary["jobs_published"] == summary["jobs_verified"] == 6, summary["jobs"]
    assert summary["wrong_results_accepted"] == 0
    assert summary["credits_sum_mc"] == 0 and summary["ledgers_settled"]
    [liar] = [n for n in summary["nodes"] if n["role"] == "wrong_result"]
    assert liar["balance_mc"] == 0 and summary["cheaters_earned_mc"] == 0
    assert summary["cheater_replicas_rejected"] >= 1, "the liar never ran a replica"
    assert summary["cheater_replicas_paid"] == 0
    assert summary["nodes_killed"] == summary["nodes_restarted"] == 1
    assert liar["name"] == "node3" and liar["profile"] == "panel_box"
    assert summary["seed"] == 40 and summary["scenario_text"] == SMALL
    assert {"hearthnet", "libp2p", "wasmtime"} <= set(summary["versions"])
    kinds = [e["kind"] for e in events(out)]
    for kind in ("job_published", "job_verified", "node_killed", "node_restarted"):
        assert kind in kinds
    assert kinds.index("node_killed") < kinds.index("node_restarted")
    with (out / report.METRICS_FILE).open() as metrics:
        rows = list(csv.DictReader(metrics))
    assert rows and rows[-1]["jobs_verified"] == "6"
    for plot in report.PLOTS:
        assert (out / plot).read_bytes().startswith(b"\x89PNG"), plot
    assert not any(launch.is_running(pid) for pid in started_pids(out))


def test_ctrl_c_stops_every_node_and_still_writes_the_report(tmp_path: Path) -> None:
    scenario = tmp_path / "long.toml"
    scenario.write_text(LONG)
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "hearth.node", "testnet", "run", str(scenario), "--out", str(out)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:

        def published() -> bool:
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            path = out / report.EVENTS_FILE
            return path.exists() and '"job_published"' in path.read_text()

        launch.wait_for(published, 90, "the first job to be published")
        pids = started_pids(out)
        assert all(launch.is_running(pid) for pid in pids)
        os.kill(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            process.kill()
    summary = json.loads((out / report.SUMMARY_FILE).read_text())
    assert summary["interrupted"] and summary["jobs_published"] >= 1
    assert summary["jobs_planned"] == 50
    assert "run_interrupted" in [e["kind"] for e in events(out)]
    assert not any(launch.is_running(pid) for pid in pids)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[testnet]\nnodez = 3\n", "unknown key 'nodez' in [testnet]"),
        ("[testnet]\nnodes = 1\n", "testnet.nodes is 1; a testnet has 2 to 250 real nodes"),
        ('[testnet]\njobs = "many"\n', "testnet.jobs must be a whole number"),
    ],
)
def test_a_bad_scenario_names_its_line_and_starts_nothing(
    tmp_path: Path, extra: str, message: str
) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[run]\nname = "bad"\n\n' + extra)
    result = hearth_run(scenario, tmp_path / "out", timeout_s=60)
    assert result.returncode == 2
    assert f"bad.toml:5: {message}" in result.stderr + result.stdout
    assert not (tmp_path / "out" / "testnet").exists()


def test_too_many_cheaters_for_an_honest_majority_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "mostly-liars.toml"
    scenario.write_text("[run]\nnodes = 4\n\n[adversaries]\nwrong_result = 75\n")
    result = hearth_run(scenario, tmp_path / "out", timeout_s=60)
    assert result.returncode == 2
    assert "3 of 4 nodes would cheat" in result.stderr + result.stdout
    assert "raise [testnet] nodes so at least half are honest" in result.stderr + result.stdout
    assert not (tmp_path / "out").exists()
