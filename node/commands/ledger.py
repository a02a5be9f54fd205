"""`hearth ledger`: show, balance, verify and export this node's credit ledger.

I/O: reads the ledger file (read-only; the node may be writing it at the same time).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer

from hearth.ledger.chain import ChainState, verify_chain
from hearth.ledger.entry import Kind, Receipt, parse_entry, to_json
from hearth.ledger.errors import ChainError
from hearth.ledger.store import file_problems, open_readonly, read_rows, verify_file
from hearth.node.commands.common import JSON_OPTION, fail, print_json
from hearth.node.paths import data_dir, ledger_path
from hearth.protocol.codec import decode_as
from hearth.protocol.errors import HearthError
from hearth.protocol.identity import peer_id_from_public_key

app = typer.Typer(help="Inspect and check this node's credit ledger.", no_args_is_help=True)

PROBLEM_LINES_MAX = 50  # `ledger verify` lists at most this many problems, then a count

DB_OPTION = typer.Option(None, "--db", help="Ledger file (default: the node's data directory).")
OUTPUT_OPTION = typer.Option(None, "--output", "-o", help="Write to this file.")


def _path(db: Path | None) -> Path:
    return db if db is not None else ledger_path(data_dir())


def _connect(db: Path | None) -> sqlite3.Connection:
    with _one_line(db):
        return open_readonly(_path(db))


@contextlib.contextmanager
def _one_line(db: Path | None) -> Iterator[None]:
    """Whatever is wrong with the file, say it in one line and exit 1 (no traceback)."""
    try:
        yield
    except HearthError as exc:  # LedgerCorruptError, LedgerDamagedError, a wrong schema
        fail(str(exc))
    except ChainError as exc:  # an entry `show` or `export` cannot parse
        fail(f"ledger {_path(db)} is corrupt at {exc.describe()}")
    except sqlite3.Error as exc:
        fail(f"cannot read ledger {_path(db)}: {exc}")


def _verified(conn: sqlite3.Connection, db: Path | None) -> ChainState:
    with _one_line(db):
        return verify_file(conn, str(_path(db)))
    raise AssertionError("unreachable")  # mypy: the context manager may swallow


def _wires(conn: sqlite3.Connection, db: Path | None) -> list[bytes]:
    with _one_line(db):
        return read_rows(conn, str(_path(db)))[0]
    raise AssertionError("unreachable")


@app.command()
def show(json_output: bool = JSON_OPTION, db: Path | None = DB_OPTION) -> None:
    """List the entries, newest last."""
    conn = _connect(db)
    with _one_line(db):
        entries = [to_json(parse_entry(w)) for w in _wires(conn, db)]
    if json_output:
        print_json(entries)
        return
    for e in entries:
        detail = _summary(e)
        typer.echo(f"{e['seq']:>6}  {e['kind']:<13} {e['created_ms']:>14}  {detail}")


def _summary(entry: dict[str, Any]) -> str:
    receipt = entry["body"].get("receipt") if isinstance(entry["body"], dict) else None
    if isinstance(receipt, dict):
        return f"job {receipt['job_id'][:16]} {receipt['amount_mc']} mc"
    return ""


@app.command()
def balance(json_output: bool = JSON_OPTION, db: Path | None = DB_OPTION) -> None:
    """Print the balance the verified chain proves (pending pays never count)."""
    state = _verified(_connect(db), db)
    pending_mc = state.reserved_mc
    if json_output:
        print_json(
            {
                "balance_mc": state.balance_mc,
                "pending_mc": pending_mc,
                "available_mc": state.available_mc,
                "head_seq": state.head.seq,
            }
        )
        return
    typer.echo(
        f"balance {state.balance_mc} mc  pending {pending_mc} mc  available {state.available_mc} mc"
    )


@app.command()
def verify(db: Path | None = DB_OPTION, json_output: bool = JSON_OPTION) -> None:
    """Verify the whole chain, the hash column and the credits table: exit 0 only if every
    entry checks out. Each problem is one line naming its entry's seq."""
    name = str(_path(db))
    with _one_line(db):
        state, problems = file_problems(_connect(db), name)
    if json_output:
        print_json(
            {
                "ok": not problems,
                "ledger": name,
                "entries": None if state is None else state.head.seq + 1,
                "head": None if state is None else state.head.hash.hex(),
                "problems": [p.describe() for p in problems],
            }
        )
        if problems:
            raise typer.Exit(1)
        return
    if problems:
        lines = [f"ledger {name} is corrupt at {p.describe()}" for p in problems]
        if len(lines) > PROBLEM_LINES_MAX:
            more = len(lines) - PROBLEM_LINES_MAX + 1
            lines = [*lines[: PROBLEM_LINES_MAX - 1], f"ledger {name}: {more} more problems"]
        for line in lines[:-1]:
            sys.stderr.write(f"hearth: {line}\n")
        fail(lines[-1])
    assert state is not None
    typer.echo(f"ok: {state.head.seq + 1} entries verify, head {state.head.hash.hex()[:16]}")


@app.command()
def export(
    output: Path | None = OUTPUT_OPTION,
    db: Path | None = DB_OPTION,
) -> None:
    """Export the verified chain as JSON lines (one entry per line, with its wire bytes)."""
    conn = _connect(db)
    _verified(conn, db)
    wires = _wires(conn, db)
    lines = (json.dumps(to_json(parse_entry(w)), sort_keys=True) + "\n" for w in wires)
    if output is None:
        sys.stdout.writelines(lines)
    else:
        with output.open("w") as f:
            f.writelines(lines)


def worked_jobs(db: Path | None = None) -> list[dict[str, Any]]:
    """Jobs this node ran as a worker, from its verified ledger: paid (an EARN entry) or
    outvoted (a MISMATCH entry), oldest first."""
    conn = _connect(db)
    _verified(conn, db)
    rows = []
    with _one_line(db):
        for wire in _wires(conn, db):
            entry = parse_entry(wire)
            if entry.kind is Kind.EARN:
                receipt = decode_as(entry.body.receipt, Receipt)
                rows.append(
                    {
                        "job_id": receipt.job_id.hex(),
                        "publisher": peer_id_from_public_key(receipt.payer),
                        "state": "paid",
                        "paid_mc": receipt.amount_mc,
                        "created_ms": entry.created_ms,
                    }
                )
            elif entry.kind is Kind.MISMATCH:
                row = {"job_id": entry.body.job_id.hex(), "publisher": "", "state": "outvoted"}
                rows.append(row | {"paid_mc": 0, "created_ms": entry.created_ms})
    return rows


def verify_wires(wires: list[bytes]) -> str | None:
    """For scripts: None if ``wires`` verify, else one line naming the first bad entry."""
    try:
        verify_chain(wires)
    except ChainError as exc:
        return exc.describe()
    return None
