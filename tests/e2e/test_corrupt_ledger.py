"""`hearth node start` on a corrupt ledger: one line naming the problem, exit 1, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hearth.ledger.memory import MemoryLedger
from hearth.ledger.store import SqliteLedger
from hearth.node import calibrate, paths
from hearth.node.home import load_identity
from hearth.node.lifeline import PARENT_ENV
from tests.e2e.network import hearth
from tests.ledger.conftest import exchange, identity

pytestmark = pytest.mark.integration


def sql(statement: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()

    return edit


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 20)


# edit -> what the one line must say (the hash column and credits cases: tests/node/test_cli_errors)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "meta row deleted": (sql("DELETE FROM meta"), "is damaged: the meta table has 0 rows"),
    "garbage file": (garbage, "is damaged: SQLITE_NOTADB"),
    "truncated file": (truncated, "is damaged: SQLITE_CORRUPT"),
    "schema from elsewhere": (sql("PRAGMA user_version = 9"), "has schema 9"),
}


def home_with_ledger(root: Path) -> Path:
    """An initialised home whose ledger holds 30 payments (enough pages to truncate)."""
    assert hearth(root, "init").returncode == 0
    (root / calibrate.CALIBRATION_FILE).write_text(json.dumps({"fuel_per_s": 10**9}))
    payee = MemoryLedger(identity(9))
    with SqliteLedger.open(paths.ledger_path(root), load_identity(root), now_ms=0) as store:
        for i in range(30):
            exchange(store, payee, f"job-{i}".encode(), 10 + i, now_ms=10 * i)
    return root


def test_node_start_on_each_corrupt_ledger_says_one_line(tmp_path: Path) -> None:
    original = home_with_ledger(tmp_path / "original")
    homes = {}
    for n, (case, (edit, _)) in enumerate(sorted(CASES.items())):
        home = shutil.copytree(original, tmp_path / f"home{n}")
        edit(paths.ledger_path(home))
        homes[case] = home
    started = {  # all at once: each start pays the daemon's imports
        case: subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hearth.node",
                "node",
                "start",
                "--host",
                "127.0.0.9",
                "--port",
                "0",
            ],
            env={**os.environ, "HEARTH_HOME": str(home), PARENT_ENV: str(os.getpid())},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for case, home in homes.items()
    }
    for case, process in started.items():
        try:
            _, stderr = process.communicate(timeout=90)
        finally:
            process.kill()
        lines = stderr.strip().splitlines()
        assert process.returncode == 1, (case, stderr)
        assert len(lines) == 1 and lines[0].startswith("hearth: "), (case, stderr)
        assert CASES[case][1] in lines[0], (case, lines[0])
    verify = hearth(homes["meta row deleted"], "ledger", "verify")
    assert verify.returncode == 1
    assert verify.stderr.strip().count("\n") == 0 and "meta table has 0 rows" in verify.stderr
