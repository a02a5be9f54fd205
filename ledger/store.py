"""The ledger on disk: the only SQLite code in Hearth. One writer, WAL, synchronous=FULL.

I/O: one SQLite file (via sqlite-utils) and a lock file beside it. Time: ``now_ms`` arguments.

``SqliteLedger.open`` takes an exclusive lock (one writer per file), creates the schema and the
genesis entry on first use, and otherwise verifies the whole chain before anything may be
appended: a broken chain raises ``LedgerCorruptError`` and the node stops rather than build on it.
Every group of entries is one transaction: ``BEGIN IMMEDIATE``, the rows, the head, ``COMMIT``.
With WAL and ``synchronous=FULL`` the commit has reached the disk when it returns, and only then
does the driver send the signatures (``append_many``, on a worker thread: ADR 0019). ``credits``
carries the primary key (role, payer, job_id, payee), so the file itself refuses a second credit
for one job even if a bug let one through. ``entries.hash`` and the whole ``credits`` table are
indexes of the chain: verification recomputes both from the entries and treats any difference as
tampering.
Schema 1 keyed credits by (role, job_id, payee); opening such a file verifies it, then rebuilds
``credits`` from the chain in one transaction (ADR 0011).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

from hearth.ledger.base import LedgerBase
from hearth.ledger.chain import ChainState
from hearth.ledger.entry import (
    CountersignedReceipt,
    Entry,
    HalfSignedReceipt,
    Kind,
    parse_body,
    parse_entry,
    parse_header,
    parse_receipt,
)
from hearth.ledger.errors import (
    ChainError,
    CreditsMismatchError,
    HeadMismatchError,
    LedgerCorruptError,
    LedgerDamagedError,
    LedgerUnavailableError,
    TamperedEntryError,
)
from hearth.ledger.parallel import THREADS_MAX, verify_chain_parallel
from hearth.protocol.errors import HearthError
from hearth.protocol.identity import Identity

if TYPE_CHECKING:
    import sqlite_utils

SCHEMA_VERSION: Final = 2
_SCHEMAS_MIGRATED: Final = (1,)  # older schemas this node upgrades on open
_ROLE_EARN: Final = 0  # we are the payee
_ROLE_PAY: Final = 1  # we are the payer


class LedgerBusyError(HearthError):
    """Another process owns this ledger file (one writer only)."""


class SqliteLedger(LedgerBase):
    def __init__(
        self, identity: Identity, state: ChainState, conn: sqlite3.Connection, lock_fd: int
    ) -> None:
        super().__init__(identity, state)
        self._conn = conn
        self._lock_fd = lock_fd
        # The driver commits on a worker thread (ADR 0019) while the event loop may read: one
        # connection, so a reader must not see rows of a transaction that may yet roll back.
        self._conn_lock = threading.Lock()
        self._load_refused()

    @classmethod
    def open(cls, path: Path, identity: Identity, *, now_ms: int) -> SqliteLedger:
        """Open (or create) ``path`` for writing; verify the chain; raise if it is broken."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(path)
        try:
            conn = _connect(path)
            try:
                state = _open_state(conn, path, identity, now_ms)
            except BaseException:
                conn.close()
                raise
        except sqlite3.DatabaseError as exc:  # not SQLite, truncated, a table missing...
            os.close(lock_fd)
            raise LedgerDamagedError(str(path), _why(exc)) from exc
        except BaseException:
            os.close(lock_fd)
            raise
        return cls(identity, state, conn, lock_fd)

    def close(self) -> None:
        if self._lock_fd >= 0:
            self._conn.close()
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def set_page_count_max(self, pages: int) -> None:
        """Cap the file's size (SQLite ``max_page_count``): a quota, and how tests fill a disk."""
        self._conn.execute(f"PRAGMA max_page_count = {int(pages)}")

    def page_count(self) -> int:
        return int(self._conn.execute("PRAGMA page_count").fetchone()[0])

    def probe_writable(self) -> bool:
        """Try a write that needs fresh space; clears ``unable_reason`` when there is room."""
        try:
            with self._conn_lock, _transaction(self._conn):
                self._conn.execute("INSERT INTO probe VALUES (zeroblob(8192))")
                self._conn.execute("DELETE FROM probe")
        except sqlite3.Error as exc:
            self.unable_reason = _why(exc)
            return False
        self.unable_reason = None
        return True

    def _write(self, entries: Sequence[Entry]) -> None:
        rows = [(e.seq, e.hash, int(e.kind), e.created_ms, e.wire) for e in entries]
        credits = [credit for e in entries if (credit := _credit_row(e)) is not None]
        head = entries[-1]
        try:
            with self._conn_lock, _transaction(self._conn):
                self._conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?)", rows)
                self._conn.executemany(_INSERT_CREDIT, credits)
                self._conn.execute(
                    "UPDATE meta SET head_seq = ?, head_hash = ?", (head.seq, head.hash)
                )
        except sqlite3.IntegrityError as exc:
            raise AssertionError(f"chain rules let through what the schema refuses: {exc}") from exc
        except sqlite3.Error as exc:
            raise LedgerUnavailableError(_why(exc)) from exc

    def entry_wires(self, from_seq: int = 0, count: int | None = None) -> list[bytes]:
        limit = -1 if count is None else count
        with self._conn_lock:
            rows = self._conn.execute(
                "SELECT wire FROM entries WHERE seq >= ? ORDER BY seq LIMIT ?", (from_seq, limit)
            ).fetchall()
        return [bytes(row[0]) for row in rows]


def _lock(path: Path) -> int:
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise LedgerBusyError(f"another process is writing {path}") from None
    return fd


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _tables(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite-utils over ``conn``, for creating tables. Imported here, not at the top: its
    import loads numpy when that is installed, a tenth of a second that a node opening an
    existing ledger (every start after the first) need not pay."""
    import sqlite_utils

    return sqlite_utils.Database(conn)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Generator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:  # SQLITE_FULL may already have rolled it back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _why(exc: sqlite3.Error) -> str:
    code = getattr(exc, "sqlite_errorname", "")
    if code == "SQLITE_FULL":
        return f"disk full ({exc})"
    return f"{code or type(exc).__name__}: {exc}"


_INSERT_CREDIT: Final = (
    "INSERT INTO credits (payer, job_id, payee, role, seq) VALUES (?, ?, ?, ?, ?)"
)


def _credit_row(entry: Entry) -> tuple[bytes, bytes, bytes, int, int] | None:
    if entry.kind is Kind.EARN or entry.kind is Kind.PAY:
        body: CountersignedReceipt | HalfSignedReceipt = entry.body
        role = _ROLE_EARN if entry.kind is Kind.EARN else _ROLE_PAY
        return (*parse_receipt(body.receipt).credit_key, role, entry.seq)
    return None


def _create_credits(db: sqlite_utils.Database) -> None:
    db["credits"].create(  # type: ignore[union-attr]
        {"payer": bytes, "job_id": bytes, "payee": bytes, "role": int, "seq": int},
        pk=("role", "payer", "job_id", "payee"),  # one credit per (payer, job, payee) each side
        not_null={"seq"},
    )


def _migrate(conn: sqlite3.Connection, wires: Sequence[bytes], version: int) -> None:
    """Schema 1 -> 2: rebuild ``credits`` from the verified chain, in one transaction."""
    assert version in _SCHEMAS_MIGRATED
    rows = [row for w in wires if (row := _credit_row(parse_entry(w))) is not None]
    with _transaction(conn):
        conn.execute("DROP TABLE credits")
        _create_credits(_tables(conn))
        conn.executemany(_INSERT_CREDIT, rows)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _create_schema(conn: sqlite3.Connection, identity: Identity, genesis: Entry) -> None:
    db = _tables(conn)
    db["entries"].create(  # type: ignore[union-attr]
        {"seq": int, "hash": bytes, "kind": int, "created_ms": int, "wire": bytes},
        pk="seq",
        not_null={"hash", "kind", "created_ms", "wire"},
    )
    _create_credits(db)
    db["meta"].create(  # type: ignore[union-attr]
        {"author": bytes, "head_seq": int, "head_hash": bytes},
        not_null={"author", "head_seq", "head_hash"},
    )
    db["probe"].create({"filler": bytes})  # type: ignore[union-attr]
    conn.execute(
        "INSERT INTO meta VALUES (?, ?, ?)", (identity.public_key, genesis.seq, genesis.hash)
    )
    conn.execute(
        "INSERT INTO entries VALUES (?, ?, ?, ?, ?)",
        (genesis.seq, genesis.hash, int(genesis.kind), genesis.created_ms, genesis.wire),
    )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _open_state(
    conn: sqlite3.Connection, path: Path, identity: Identity, now_ms: int
) -> ChainState:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version == 0:
        genesis = LedgerBase.genesis(identity, now_ms=now_ms)
        with _transaction(conn):
            _create_schema(conn, identity, genesis)
    elif version != SCHEMA_VERSION and version not in _SCHEMAS_MIGRATED:
        raise HearthError(f"ledger {path} has schema {version}; this node reads {SCHEMA_VERSION}")
    author, _, _ = _meta(conn, str(path))
    if author != identity.public_key:
        raise HearthError(f"ledger {path} belongs to another identity")
    state = verify_file(conn, str(path))
    if version in _SCHEMAS_MIGRATED:
        _migrate(conn, read_rows(conn, str(path))[0], version)
    return state


def _meta(conn: sqlite3.Connection, name: str) -> tuple[bytes, int, bytes]:
    """(author, head seq, head hash) from the one meta row; ``LedgerDamagedError`` otherwise."""
    rows = conn.execute(  # CAST: a hand edit may have left TEXT where bytes belong
        "SELECT CAST(author AS BLOB), CAST(head_seq AS INTEGER), CAST(head_hash AS BLOB) FROM meta"
    ).fetchall()
    if len(rows) != 1 or None in rows[0]:
        why = f"{len(rows)} rows" if len(rows) != 1 else "an empty field"
        raise LedgerDamagedError(name, f"the meta table has {why}, not one full row")
    author, head_seq, head_hash = rows[0]
    return bytes(author), int(head_seq), bytes(head_hash)


def read_rows(
    conn: sqlite3.Connection, name: str = "file"
) -> tuple[list[bytes], list[bytes], tuple[int, bytes]]:
    """Everything a verifier needs from a ledger file: bytes, recorded hashes, recorded head.

    Raises ``LedgerDamagedError`` if the file cannot be read as a ledger."""
    try:
        rows = conn.execute(
            "SELECT seq, CAST(hash AS BLOB), CAST(wire AS BLOB) FROM entries ORDER BY seq"
        ).fetchall()
        _, head_seq, head_hash = _meta(conn, name)
    except sqlite3.DatabaseError as exc:
        raise LedgerDamagedError(name, _why(exc)) from exc
    if any(r[1] is None or r[2] is None for r in rows):
        raise LedgerDamagedError(name, "an entry row has no hash or no bytes")
    wires = [bytes(r[2]) for r in rows]
    hashes = [bytes(r[1]) for r in rows]
    return wires, hashes, (head_seq, head_hash)


def verify_threads() -> int:
    """Threads for checking signatures: the cores this process may run on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(THREADS_MAX, cores or 1))


def verify_file(conn: sqlite3.Connection, name: str) -> ChainState:
    """Verify the chain in an open ledger file and its indexes, or raise ``LedgerCorruptError``
    naming the first problem (``LedgerDamagedError`` if it cannot be read as a ledger)."""
    state, problems = file_problems(conn, name)
    if problems:
        raise LedgerCorruptError(name, problems[0])
    assert state is not None
    return state


def file_problems(
    conn: sqlite3.Connection, name: str
) -> tuple[ChainState | None, list[ChainError]]:
    """The verified chain's state and every way the file's indexes disagree with it, in seq
    order; or (None, [the chain's first fault]) if the chain itself does not verify. Reads one
    snapshot, so a node appending meanwhile (WAL) changes nothing of what is checked."""
    try:
        with _snapshot(conn):
            return _file_problems(conn, name)
    except sqlite3.DatabaseError as exc:
        raise LedgerDamagedError(name, _why(exc)) from exc


def _file_problems(
    conn: sqlite3.Connection, name: str
) -> tuple[ChainState | None, list[ChainError]]:
    wires, hashes, head = read_rows(conn, name)
    try:
        state = verify_chain_parallel(
            wires, threads=verify_threads(), head=head, recorded_hashes=hashes
        )
    except ChainError as exc:
        return None, [exc]
    credits: dict[tuple[object, ...], int] = {}  # (role, payer, job_id, payee) -> seq
    problems = _index_problems(conn, wires, credits)
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) == SCHEMA_VERSION:
        problems += _credits_problems(conn, credits)  # schema 1's are rebuilt after verifying
    author, _, _ = _meta(conn, name)
    if author != state.author:
        problems.append(HeadMismatchError("the meta row names another author", seq=0))
    return state, sorted(problems, key=lambda p: -1 if p.seq is None else p.seq)


@contextlib.contextmanager
def _snapshot(conn: sqlite3.Connection) -> Generator[None]:
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # nothing was written: a read transaction only


def _index_problems(
    conn: sqlite3.Connection, wires: Sequence[bytes], credits: dict[tuple[object, ...], int]
) -> list[ChainError]:
    """The columns beside each entry are an index of it: a hand edit there is tampering too.
    Fills ``credits`` with the credits the chain implies, for ``_credits_problems``."""
    rows = conn.execute(
        "SELECT seq, kind, created_ms, CAST(hash AS BLOB) FROM entries ORDER BY seq"
    ).fetchall()
    problems: list[ChainError] = []
    for index, ((seq, kind, created_ms, recorded), wire) in enumerate(
        zip(rows, wires, strict=True)
    ):
        entry = parse_header(wire)
        if entry.kind is Kind.PAY or entry.kind is Kind.EARN:
            row = _credit_row(parse_body(entry))
            assert row is not None
            credits[(row[3], *row[:3])] = row[4]
        if (seq, kind, created_ms) != (entry.seq, int(entry.kind), entry.created_ms):
            problems.append(
                TamperedEntryError(
                    "the index columns disagree with the entry", index=index, seq=seq
                )
            )
        if bytes(recorded) != entry.hash:
            problems.append(
                TamperedEntryError(
                    "the hash column is not the entry's hash", index=index, seq=entry.seq
                )
            )
    return problems


def _credits_problems(
    conn: sqlite3.Connection, expected: dict[tuple[object, ...], int]
) -> list[ChainError]:
    """Compare the credits the chain implies with the ``credits`` table, row by row."""
    found: dict[tuple[object, ...], int] = {}
    for role, payer, job_id, payee, seq in conn.execute(
        "SELECT role, CAST(payer AS BLOB), CAST(job_id AS BLOB), CAST(payee AS BLOB), seq "
        "FROM credits"
    ):
        found[(role, bytes(payer or b""), bytes(job_id or b""), bytes(payee or b""))] = (
            seq if type(seq) is int else -1
        )
    problems: list[ChainError] = []
    for key, seq in expected.items():
        if key not in found:
            side = "earn" if key[0] == _ROLE_EARN else "pay"
            problems.append(CreditsMismatchError(f"no credits row for this {side}", seq=seq))
        elif found[key] != seq:
            problems.append(
                CreditsMismatchError(f"the credits row names seq {found[key]}", seq=seq)
            )
    for row_key, seq in found.items():
        if row_key not in expected:
            problems.append(
                CreditsMismatchError("a credits row for no pay or earn of the chain", seq=seq)
            )
    return problems


def open_readonly(path: Path) -> sqlite3.Connection:
    """A reader's connection (no lock, no writes) for `hearth ledger show/verify/export`."""
    if not path.exists():
        raise HearthError(f"no ledger at {path}")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise LedgerDamagedError(str(path), _why(exc)) from exc
    if version != SCHEMA_VERSION and version not in _SCHEMAS_MIGRATED:  # readers need no credits
        conn.close()
        raise HearthError(f"{path} has ledger schema {version}; this node reads {SCHEMA_VERSION}")
    return conn
