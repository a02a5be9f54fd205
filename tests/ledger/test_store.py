"""The SQLite store on real files: verify on open, one writer, a full disk, the CLI's verify."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from hearth.ledger import errors
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.store import LedgerBusyError, SqliteLedger
from hearth.protocol.errors import HearthError
from tests.ledger.conftest import exchange, identity

ROOT = Path(__file__).resolve().parents[2]
HEARTH = [sys.executable, "-c", "from node.cli import main; main()"]


def filled(path: Path, receipts: int = 3) -> None:
    payee = MemoryLedger(identity(2))
    with SqliteLedger.open(path, identity(1), now_ms=0) as store:
        for i in range(receipts):
            exchange(store, payee, f"job-{i}".encode(), 10 + i, now_ms=10 * i)


def flip_byte(path: Path, seq: int, offset: int) -> None:
    conn = sqlite3.connect(path)
    (wire,) = conn.execute("SELECT wire FROM entries WHERE seq = ?", (seq,)).fetchone()
    spoiled = bytearray(wire)
    spoiled[offset] ^= 0x01
    conn.execute("UPDATE entries SET wire = ? WHERE seq = ?", (bytes(spoiled), seq))
    conn.commit()
    conn.close()


def test_a_store_survives_a_reopen_and_verifies_on_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    with SqliteLedger.open(path, identity(1), now_ms=0) as store:
        assert store.balance_mc() == -(10 + 11 + 12)
        assert store.head().seq == 6
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(HearthError, match="another identity"):
        SqliteLedger.open(path, identity(9), now_ms=0)


def test_one_writer_per_file(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    with SqliteLedger.open(path, identity(1), now_ms=0), pytest.raises(LedgerBusyError):
        SqliteLedger.open(path, identity(1), now_ms=0)
    SqliteLedger.open(path, identity(1), now_ms=0).close()


def test_a_broken_chain_stops_the_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    flip_byte(path, 3, -70)
    with pytest.raises(errors.LedgerCorruptError, match="seq 3: tampered-entry"):
        SqliteLedger.open(path, identity(1), now_ms=0)


def test_a_truncated_file_stops_the_open(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM entries WHERE seq >= 5")
    conn.commit()
    conn.close()
    with pytest.raises(errors.LedgerCorruptError, match="truncated"):
        SqliteLedger.open(path, identity(1), now_ms=0)


def test_the_file_refuses_a_second_credit_for_one_job(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    conn = sqlite3.connect(path)
    row = conn.execute("SELECT payer, job_id, payee, role FROM credits").fetchone()
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        conn.execute(
            "INSERT INTO credits (payer, job_id, payee, role, seq) VALUES (?, ?, ?, ?, 99)", row
        )
    conn.close()


def test_a_schema_1_file_is_verified_then_its_credits_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    conn = sqlite3.connect(path, isolation_level=None)
    expected = conn.execute("SELECT payer, job_id, payee, role, seq FROM credits").fetchall()
    assert len(expected) == 3  # three pays by this node
    conn.executescript(  # what schema 1 looked like
        """
        DROP TABLE credits;
        CREATE TABLE credits (job_id BLOB, payee BLOB, role INTEGER, seq INTEGER NOT NULL,
                              PRIMARY KEY (role, job_id, payee));
        PRAGMA user_version = 1;
        """
    )
    conn.close()
    with SqliteLedger.open(path, identity(1), now_ms=100) as store:
        assert store.balance_mc() == -(10 + 11 + 12)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (2,)
    rows = conn.execute("SELECT payer, job_id, payee, role, seq FROM credits").fetchall()
    assert sorted(rows) == sorted(expected)
    conn.close()


def test_a_broken_schema_1_file_is_refused_before_any_migration(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    flip_byte(path, seq=3, offset=40)
    with pytest.raises(errors.LedgerCorruptError):
        SqliteLedger.open(path, identity(1), now_ms=100)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (1,)  # untouched
    conn.close()


def test_a_full_disk_releases_no_signature_and_recovers(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    payee = MemoryLedger(identity(2))
    with SqliteLedger.open(path, identity(1), now_ms=0) as store:
        store.set_page_count_max(store.page_count())  # SQLite raises SQLITE_FULL from here on
        released = []
        with pytest.raises(errors.LedgerUnavailableError, match="disk full"):
            for i in range(500):  # until the last free page is used
                released.append(
                    store.append_pay_pending(
                        job_id=f"j{i}".encode(),
                        payee=payee.identity.public_key,
                        amount_mc=1,
                        now_ms=0,
                        ttl_ms=1_000,
                    )
                )
        assert not store.writable and "disk full" in (store.unable_reason or "")
        assert store.head().seq == len(released)  # the failed entry was taken back
        assert store.probe_writable() is False
        store.set_page_count_max(1_000_000)  # space returns
        assert store.probe_writable() and store.writable
        store.append_pay_pending(
            job_id=b"after", payee=payee.identity.public_key, amount_mc=1, now_ms=0, ttl_ms=9
        )
    with SqliteLedger.open(path, identity(1), now_ms=0) as store:
        assert store.head().seq == len(released) + 1
        assert len(store.pending_pays()) == len(released) + 1


def hearth(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*HEARTH, "ledger", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_cli_verifies_an_untouched_file_and_refuses_a_hand_edit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    filled(path)
    ok = hearth("verify", "--db", str(path))
    assert ok.returncode == 0, ok.stderr
    balance = hearth("balance", "--json", "--db", str(path))
    assert json.loads(balance.stdout)["balance_mc"] == -33
    exported = hearth("export", "--db", str(path))
    assert [json.loads(line)["seq"] for line in exported.stdout.splitlines()] == list(range(7))
    for edit in ("sqlite3", "byte"):
        spoiled = tmp_path / f"{edit}.sqlite"
        filled(spoiled)
        if edit == "sqlite3":  # a hand edit with SQLite's own shell, where it is installed
            cli = ["sqlite3", str(spoiled), "UPDATE entries SET created_ms = 7 WHERE seq = 4"]
            try:
                subprocess.run(cli, check=True, capture_output=True, timeout=30)
            except FileNotFoundError:
                continue
        else:
            flip_byte(spoiled, 4, -70)
        bad = hearth("verify", "--db", str(spoiled))
        assert bad.returncode != 0
        lines = bad.stderr.strip().splitlines()
        assert len(lines) == 1 and "seq 4: tampered-entry" in lines[0], bad.stderr
