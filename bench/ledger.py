"""Ledger benchmark: durable countersigned appends and chain verification against bare baselines.

I/O: SQLite files in a temporary directory. Prints a few lines, then one JSON object last:
``appends_per_s`` (PAY + EARN + SETTLE entries of countersigned receipts, group-committed, WAL +
synchronous=FULL), ``verify_entries_per_s`` (``verify_chain`` on those chains, every signature),
the same-run baselines ``sqlite_commits_per_s`` (bare one-row WAL+FULL commit) and
``ed25519_verify_per_s`` (bare pynacl), and the ratios. Baselines are measured before and after
the ledger runs and the better figure is kept, so a noisy neighbour cannot flatter the ratios.

    .venv/bin/python bench/ledger.py [--receipts N] [--group G]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import nacl.signing

# Run as a script, this file's directory comes first on sys.path and its name would shadow the
# ``ledger`` package: put the repository root there instead.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [str(_HERE.parent)] + [p for p in sys.path if Path(p or ".").resolve() != _HERE]

from ledger.chain import verify_chain  # noqa: E402
from ledger.entry import Kind, parse_header  # noqa: E402
from ledger.store import SqliteLedger  # noqa: E402
from protocol.identity import Identity  # noqa: E402


def bare_commits_per_s(directory: Path, commits: int) -> float:
    path = directory / f"bare-{time.monotonic_ns()}.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, wire BLOB NOT NULL)")
    row = bytes(300)
    start = time.perf_counter()
    for i in range(commits):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t VALUES (?, ?)", (i, row))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return commits / elapsed


def bare_verify_per_s(verifies: int) -> float:
    key = nacl.signing.SigningKey(bytes(range(32)))
    message = bytes(300)
    signature = key.sign(message).signature
    verify_key = key.verify_key
    start = time.perf_counter()
    for _ in range(verifies):
        verify_key.verify(message, signature)
    return verifies / (time.perf_counter() - start)


def run_receipts(payer: SqliteLedger, payee: SqliteLedger, receipts: int, group: int) -> float:
    """Pay, earn and settle ``receipts`` receipts in groups; return entries appended per second."""
    now_ms = payer.head().created_ms + 1
    job = payer.head().seq
    start = time.perf_counter()
    for first in range(0, receipts, group):
        jobs = [f"job-{job}-{i}".encode() for i in range(first, min(first + group, receipts))]
        with payer.group() as g:
            pays = [
                g.append_pay_pending(
                    job_id=j,
                    payee=payee.identity.public_key,
                    amount_mc=7,
                    now_ms=now_ms,
                    ttl_ms=60_000,
                )
                for j in jobs
            ]
        with payee.group() as g:
            earns = [g.append_earn(p.value, now_ms=now_ms) for p in pays]
        with payer.group() as g:
            for e in earns:
                g.settle(e.value, now_ms=now_ms)
    return 3 * receipts / (time.perf_counter() - start)


def verify_rates(wires: list[bytes]) -> tuple[float, float]:
    """(entries/s, signatures/s) for ``verify_chain`` over one chain."""
    kinds = [parse_header(w).kind for w in wires]
    signatures = len(wires) + sum(k in (Kind.EARN, Kind.SETTLE) for k in kinds)
    elapsed = float("inf")
    for _ in range(3):  # best of three, like the baselines' before-and-after
        start = time.perf_counter()
        verify_chain(wires)
        elapsed = min(elapsed, time.perf_counter() - start)
    return len(wires) / elapsed, signatures / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--receipts", type=int, default=1500)
    parser.add_argument("--group", type=int, default=32)
    parser.add_argument("--commits", type=int, default=1000)
    parser.add_argument("--verifies", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hearth-bench-") as tmp:
        directory = Path(tmp)
        commits = [bare_commits_per_s(directory, args.commits)]
        verifies = [bare_verify_per_s(args.verifies)]
        payer = SqliteLedger.open(directory / "payer.sqlite", Identity(bytes(32)), now_ms=1)
        payee = SqliteLedger.open(directory / "payee.sqlite", Identity(bytes([1]) * 32), now_ms=1)
        ungrouped = run_receipts(payer, payee, max(1, args.receipts // 10), 1)
        appends = run_receipts(payer, payee, args.receipts, args.group)
        chains = [payer.entry_wires(), payee.entry_wires()]
        payer.close()
        payee.close()
        rates = [verify_rates(w) for w in chains]
        commits.append(bare_commits_per_s(directory, args.commits))
        verifies.append(bare_verify_per_s(args.verifies))
    total_entries = sum(len(w) for w in chains)
    verify_entries = total_entries / sum(len(w) / r[0] for w, r in zip(chains, rates, strict=True))
    verify_signatures = verify_entries * sum(
        r[1] / r[0] * len(w) for w, r in zip(chains, rates, strict=True)
    )
    verify_signatures /= total_entries
    result = {
        "appends_per_s": round(appends),
        "appends_ungrouped_per_s": round(ungrouped),
        "group_entries": args.group,
        "verify_entries_per_s": round(verify_entries),
        "verify_signatures_per_s": round(verify_signatures),
        "sqlite_commits_per_s": round(max(commits)),
        "ed25519_verify_per_s": round(max(verifies)),
        "appends_ratio": round(appends / max(commits), 3),
        "verify_ratio": round(verify_entries / max(verifies), 3),
        "verify_signatures_ratio": round(verify_signatures / max(verifies), 3),
    }
    print(f"baseline commits/s {[round(c) for c in commits]}")
    print(f"baseline verifies/s {[round(v) for v in verifies]}")
    print(f"chains: {[len(w) for w in chains]} entries; ungrouped appends/s {round(ungrouped)}")
    sys.stdout.write(json.dumps(result, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
