"""`hearth testnet up --netns` / `down`: nodes in a namespace lab, and nothing left after."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.testnet.netns.lab import list_namespaces
from tests.netns_lab import require_netns

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def hearth(home: Path, *args: str, timeout_s: float = 400) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEARTH_HOME": str(home)}
    return subprocess.run(
        [sys.executable, "-m", "hearth", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def test_up_netns_puts_homes_behind_nat_and_down_removes_everything(tmp_path: Path) -> None:
    require_netns()
    root = tmp_path / "tn"
    up = hearth(
        tmp_path,
        "testnet",
        "up",
        "--netns",
        "--homes",
        "2",
        "--public",
        "1",
        "--delay-ms",
        "5",
        "--loss-pct",
        "1",
        "--dir",
        str(root),
        "--json",
    )
    try:
        assert up.returncode == 0, up.stderr
        nodes = json.loads(up.stdout)
        assert [n["multiaddrs"][0].split("/")[2] for n in nodes] == [
            "203.0.113.10",
            "192.168.1.10",
            "192.168.1.10",
        ]
        state = json.loads((root / "testnet.json").read_text())
        lab_id = state["lab"]
        assert [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab_id}-")]
        status = hearth(tmp_path, "testnet", "status", "--dir", str(root), "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert all(row["alive"] for row in rows)
        assert rows[1]["peers"] >= 1  # the home node reached the public node through its NAT
    finally:
        down = hearth(tmp_path, "testnet", "down", "--dir", str(root))
    assert down.returncode == 0, down.stderr
    assert not [ns for ns in list_namespaces() if ns.startswith(f"hth-{lab_id}-")]
    for entry in state["nodes"] + [{"pid": state["forwarder_pid"]}]:
        assert not Path(f"/proc/{entry['pid']}").exists() or _zombie(entry["pid"])


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def test_up_netns_without_root_says_so_in_one_line(tmp_path: Path) -> None:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run the command as an unprivileged user")
    home = tmp_path / "nobody"
    home.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(home, 0o777)
    env = {**os.environ, "HEARTH_HOME": str(home)}
    done = subprocess.run(
        [
            setpriv,
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "hearth",
            "testnet",
            "up",
            "--netns",
            "--dir",
            str(home / "tn"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd="/",
    )
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "need root" in done.stderr
