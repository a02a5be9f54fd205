"""What a developer expects of the CLI, on real node processes: `testnet up` nodes on a chosen
loopback range that run replicated jobs together, id prefixes, `job list --worked`,
`ledger verify --json`, `--version`, and shipped scenarios by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.node import calibrate
from hearth.node.commands.testnet import scenario_file
from hearth.node.config import parse
from hearth.testnet import launch
from tests.e2e.network import ECHO, hearth

START_S = 300.0


def cli(
    *args: str, home: Path | None = None, timeout_s: float = START_S
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ} | ({"HEARTH_HOME": str(home)} if home else {})
    return subprocess.run(
        [sys.executable, "-m", "hearth", *args], env=env, capture_output=True, text=True,
        timeout=timeout_s,
    )  # fmt: skip


def test_version_names_the_installed_distribution() -> None:
    done = cli("--version", timeout_s=120)
    assert done.returncode == 0 and done.stdout.startswith("hearth 0."), done


def test_shipped_scenarios_are_found_by_name(tmp_path: Path) -> None:
    assert scenario_file(Path("cheaters")).read_text().startswith("#")
    assert scenario_file(Path("cheaters")).name == "cheaters.toml"
    given = tmp_path / "mine.toml"
    assert scenario_file(given) == given  # a path stays a path, even one that does not exist


def test_testnet_nodes_are_each_their_own_network_group() -> None:
    assert parse(launch.default_config()).network_group_prefix_v4 == 32


def test_a_testnet_home_gets_the_calibration_its_node_reads(tmp_path: Path) -> None:
    """`launch.up` gives the nodes after node 0 the fuel rate node 0 measured, so no other node
    of the testnet measures it again at start."""
    first, second = tmp_path / "node0", tmp_path / "node1"
    launch.prepare_home(first, b"k" * 32, None)
    assert launch.calibration_of(first) is None
    measured = calibrate.fuel_per_s(first)  # what node 0 does at its start
    launch.prepare_home(second, b"k" * 32, None, launch.calibration_of(first))
    (first / calibrate.CALIBRATION_FILE).write_text(json.dumps({"fuel_per_s": 12345}))
    assert calibrate.fuel_per_s(second) == measured  # read, not measured again
    assert calibrate.fuel_per_s(first) == 12345


def test_a_base_outside_loopback_is_refused() -> None:
    with pytest.raises(launch.TestnetError, match="within 127/8"):
        launch.check_base("10.0.0.1", 3)
    with pytest.raises(launch.TestnetError, match="within 127/8"):
        launch.check_base("127.255.255.253", 3)
    launch.check_base("127.0.5.1", 250)
    assert launch.host_for(3, "127.0.5.254") == "127.0.6.1"


@pytest.mark.integration
@pytest.mark.slow
def test_testnet_up_on_a_chosen_range_runs_a_replicated_job(tmp_path: Path) -> None:
    root = tmp_path / "tn"
    up = cli("testnet", "up", "-n", "3", "--dir", str(root), "--base", "127.0.5.1", "--json")
    try:
        assert up.returncode == 0, up.stderr
        nodes = json.loads(up.stdout)
        assert [n["name"] for n in nodes] == ["node0", "node1", "node2"]
        assert all("/ip4/127.0.5." in n["multiaddrs"][0] for n in nodes)
        publisher = root / "node1"
        out = tmp_path / "out.bin"
        (tmp_path / "in.bin").write_bytes(b"hello hearth")
        run = hearth(
            publisher, "job", "run", str(ECHO), "--input", str(tmp_path / "in.bin"),
            "--output", str(out), "--json", timeout_s=START_S,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout + run.stderr
        report = json.loads(run.stdout)
        assert out.read_bytes() == b"hello hearth" and len(report["replicas"]) == 2
        job_id = report["job_id"]

        listed = hearth(publisher, "job", "list", timeout_s=120)
        assert job_id[:12] in listed.stdout, listed
        shown = hearth(publisher, "job", "show", job_id[:12], "--json", timeout_s=120)
        assert shown.returncode == 0 and json.loads(shown.stdout)["job_id"] == job_id, shown
        wrong = hearth(publisher, "job", "show", "ffff" if job_id[:4] != "ffff" else "0000")
        assert wrong.returncode != 0 and len(wrong.stderr.splitlines()) == 1, wrong

        def worked_by_two() -> bool:  # both paid replicas, each on a different node
            ran = 0
            for node in nodes:
                home = Path(node["home"])
                worked = hearth(home, "job", "list", "--worked", "--json", timeout_s=120)
                assert worked.returncode == 0, worked.stderr
                ran += sum(1 for j in json.loads(worked.stdout)["jobs"] if j["job_id"] == job_id)
            return ran == 2

        launch.wait_for(worked_by_two, START_S, "both workers to record their pay")

        quoted = hearth(
            publisher, "job", "quote", str(ECHO), "--input", str(tmp_path / "in.bin"), "--json",
            timeout_s=START_S,
        )  # fmt: skip
        assert quoted.returncode == 0, quoted.stderr
        price = json.loads(quoted.stdout)
        assert price["fuel_used"] == report["fuel_used"] and len(price["market"]) >= 2
        assert 0 < price["cost_mc_min"] <= price["cost_mc_max"]

        budget_mc = 40
        capped = hearth(
            publisher, "job", "run", str(ECHO), "--input", str(tmp_path / "in.bin"),
            "--output", str(out), "--budget", str(budget_mc / 1000), "--replicas-max", "2",
            "--fuel", "100000000", "--json", timeout_s=START_S,
        )  # fmt: skip
        assert capped.returncode == 0, capped.stdout + capped.stderr
        assert 0 < json.loads(capped.stdout)["paid_mc"] <= budget_mc
        broke = hearth(publisher, "job", "run", str(ECHO), "--output", str(out), "--budget", ".001")
        assert broke.returncode != 0 and "raise --budget" in broke.stderr, broke

        verified = hearth(publisher, "ledger", "verify", "--json", timeout_s=120)
        assert verified.returncode == 0, verified.stderr
        verdict = json.loads(verified.stdout)
        assert verdict["ok"] and verdict["problems"] == [] and verdict["entries"] >= 2
    finally:
        if (root / launch.STATE_FILE).exists():
            launch.down(root)
