"""Corrupt ledger files: every kind is refused by the store and by `hearth ledger` in one line.

The hash column and the credits table are indexes of the chain, so editing either is tampering
even though every entry still verifies; a file that is not a ledger at all (garbage, truncated,
a table or the meta row gone, a schema from elsewhere) is damaged, never a traceback.
"""

from __future__ import annotations

import contextlib
import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest

from hearth.ledger import errors
from hearth.ledger.store import SqliteLedger
from hearth.node.cli import main
from hearth.protocol.errors import HearthError
from tests.ledger.conftest import identity
from tests.ledger.test_store import HEARTH, ROOT, filled


def sql(statement: str) -> Callable[[Path], None]:
    def edit(path: Path) -> None:
        conn = sqlite3.connect(path)
        conn.execute(statement)
        conn.commit()
        conn.close()

    return edit


def garbage(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 20)


def truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def ledger(*args: str) -> subprocess.CompletedProcess[str]:
    """`hearth ledger ARGS` through the CLI's own ``main`` (in this process: a fresh Python per
    call would cost seconds each; one real process runs in the hash-column test)."""
    out, err = io.StringIO(), io.StringIO()
    argv = ["hearth", "ledger", *args]
    with (
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        pytest.raises(SystemExit) as exited,
    ):
        main()
    code = exited.value.code
    return subprocess.CompletedProcess(
        argv, code if isinstance(code, int) else 1, out.getvalue(), err.getvalue()
    )


def ledger_process(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTH, "ledger", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def spoiled(tmp_path: Path, edit: Callable[[Path], None], receipts: int = 3) -> Path:
    path = tmp_path / "ledger.sqlite"
    filled(path, receipts)
    edit(path)
    return path


# (edit, what the store raises, the one line `hearth ledger verify` prints)
DAMAGE = {
    "meta row deleted": (sql("DELETE FROM meta"), errors.LedgerDamagedError, "meta table has 0"),
    "meta row doubled": (
        sql("INSERT INTO meta SELECT * FROM meta"),
        errors.LedgerDamagedError,
        "meta table has 2",
    ),
    "garbage file": (garbage, errors.LedgerDamagedError, "file is not a database"),
    "truncated file": (truncated, errors.LedgerDamagedError, "malformed"),
    "entries table gone": (sql("DROP TABLE entries"), errors.LedgerDamagedError, "no such table"),
    "schema from elsewhere": (sql("PRAGMA user_version = 9"), HearthError, "schema 9"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_file_is_one_line_everywhere(case: str, tmp_path: Path) -> None:
    edit, raised, says = DAMAGE[case]
    path = spoiled(tmp_path, edit, receipts=30)  # big enough that half a file loses pages
    with pytest.raises(raised, match=says):
        SqliteLedger.open(path, identity(1), now_ms=0)
    for command in ("verify", "show", "balance", "export"):
        done = ledger(command, "--db", str(path))
        assert done.returncode == 1, (command, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and says in lines[0] and "Traceback" not in done.stderr, (
            command,
            done.stderr,
        )


def test_an_edited_hash_column_is_tampering(tmp_path: Path) -> None:
    path = spoiled(tmp_path, sql("UPDATE entries SET hash = zeroblob(32) WHERE seq = 4"))
    with pytest.raises(errors.LedgerCorruptError, match="seq 4: tampered-entry: the hash column"):
        SqliteLedger.open(path, identity(1), now_ms=0)
    done = ledger_process("verify", "--db", str(path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"hearth: ledger {path} is corrupt at seq 4: tampered-entry: "
        "the hash column is not the entry's hash"
    ]


def test_an_emptied_credits_table_names_every_pay(tmp_path: Path) -> None:
    path = spoiled(tmp_path, sql("DELETE FROM credits"))
    with pytest.raises(errors.LedgerCorruptError, match="seq 1: credits-mismatch"):
        SqliteLedger.open(path, identity(1), now_ms=0)
    done = ledger("verify", "--db", str(path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    pays = [1, 3, 5]  # filled(): pay, settle, pay, settle, pay, settle after the genesis
    assert lines == [
        f"hearth: ledger {path} is corrupt at seq {seq}: credits-mismatch: "
        "no credits row for this pay"
        for seq in pays
    ]


def test_a_forged_or_moved_credits_row_is_named(tmp_path: Path) -> None:
    forged = "INSERT INTO credits VALUES (zeroblob(32), x'01', zeroblob(32), 0, 6)"
    path = spoiled(tmp_path, sql(forged))
    done = ledger("verify", "--db", str(path))
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"hearth: ledger {path} is corrupt at seq 6: credits-mismatch: "
        "a credits row for no pay or earn of the chain"
    ]
    moved = spoiled(tmp_path / "moved", sql("UPDATE credits SET seq = 2 WHERE seq = 3"))
    done = ledger("verify", "--db", str(moved))
    assert "seq 3: credits-mismatch: the credits row names seq 2" in done.stderr


def test_many_problems_are_capped(tmp_path: Path) -> None:
    path = spoiled(tmp_path, sql("UPDATE entries SET hash = zeroblob(32)"), receipts=40)
    done = ledger("verify", "--db", str(path))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 50
    assert lines[-1] == f"hearth: ledger {path}: 32 more problems"


def test_an_untouched_file_still_verifies_and_opens(tmp_path: Path) -> None:
    path = spoiled(tmp_path, lambda path: None)
    assert ledger("verify", "--db", str(path)).returncode == 0
    SqliteLedger.open(path, identity(1), now_ms=0).close()
    assert not os.path.exists(f"{path}-journal")
