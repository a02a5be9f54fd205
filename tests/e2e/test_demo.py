"""`hearth testnet demo`, as a user runs it: every check passes and the last table shows each
host profile's earnings against its energy cost."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hearth.node.profiles import PROFILES

pytestmark = pytest.mark.integration

DEMO_TIMEOUT_S = 600  # under a minute on an idle machine; a shared CI runner is slower


def test_the_demo_ends_with_each_profiles_earnings_against_its_energy_cost() -> None:
    demo = subprocess.run(
        [sys.executable, "-m", "hearth", "testnet", "demo"],
        env={**os.environ, "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
    )
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "all checks passed" in demo.stdout
    earnings = demo.stdout[demo.stdout.index("Earnings against energy cost") :]
    rows = [line for line in earnings.splitlines() if line.startswith("│")]
    assert sorted(row.split("│")[1].strip() for row in rows) == sorted(PROFILES)
    worked = [row for row in rows if row.split("│")[2].strip() != "0"]
    assert len(worked) >= 2  # every job ran on two hosts
    for row in worked:
        cells = [cell.strip() for cell in row.split("│")[1:-1]]
        assert int(cells[3]) > 0 and float(cells[4]) > 0  # earned credits, used energy
        assert float(cells[6]) == pytest.approx(int(cells[3]) - float(cells[5]), abs=0.011)
