"""kill -9 at random moments: every acknowledged entry survives and the chain still verifies.

A forked child (a real process, forked so it skips the interpreter start-up) opens the ledger,
appends in small groups and writes "seq hash" to its stdout after each commit returns. The parent
kills it with SIGKILL after a random number of acknowledgements plus a random few hundred
microseconds, then reopens the file (which verifies the chain) and checks every acknowledgement.
Cycles: ``HEARTH_LEDGER_KILL_CYCLES`` (default 200).
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from hearth.ledger.store import SqliteLedger
from tests.ledger.conftest import identity

CYCLES = int(os.environ.get("HEARTH_LEDGER_KILL_CYCLES", "200"))
CYCLES_PER_FILE = 50  # a fresh file now and then keeps verify-on-open short
ME, PAYEE = identity(1), identity(2)


def child(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    with SqliteLedger.open(path, ME, now_ms=0) as store:
        n = store.head().seq
        while True:
            with store.group() as group:
                tickets = []
                for _ in range(rng.randrange(1, 5)):
                    n += 1
                    if rng.random() < 0.5:
                        tickets.append(group.append_mismatch(
                            job_id=f"m{n}".encode(), worker=PAYEE.public_key,
                            evidence_hashes=[bytes(32)], now_ms=n,
                        ))  # fmt: skip
                    else:
                        group.append_pay_pending(
                            job_id=f"p{n}".encode(), payee=PAYEE.public_key, amount_mc=1,
                            now_ms=n, ttl_ms=1_000,
                        )  # fmt: skip
            for entry in store.entries(store.head().seq - len(group.entries) + 1):
                os.write(1, f"{entry.seq} {entry.hash.hex()}\n".encode())


def run_child(path: Path, seed: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_fd)
            os.dup2(write_fd, 1)
            child(path, seed)
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd


def read_lines(fd: int, buffer: bytearray, want: int) -> list[str]:
    """Read until ``want`` complete lines have arrived (or the pipe closes)."""
    lines: list[str] = []
    while len(lines) < want:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        buffer += chunk
        *complete, rest = buffer.split(b"\n")
        buffer[:] = rest
        lines += [c.decode() for c in complete]
    return lines


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    rng = random.Random(20240)
    acked: dict[int, str] = {}
    path = tmp_path / "ledger-0.sqlite"
    for cycle in range(CYCLES):
        if cycle % CYCLES_PER_FILE == 0:
            path, acked = tmp_path / f"ledger-{cycle}.sqlite", {}
        pid, fd = run_child(path, seed=cycle)
        buffer = bytearray()
        lines = read_lines(fd, buffer, rng.randrange(0, 12))
        time.sleep(rng.random() * 0.002)  # the random moment itself, not a wait for a condition
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        lines += read_lines(fd, buffer, 1 << 30)  # acknowledgements written before it died
        os.close(fd)
        for line in lines:
            seq, digest = line.split()
            acked[int(seq)] = digest
        with SqliteLedger.open(path, ME, now_ms=0) as store:  # verifies the whole chain
            head = store.head().seq
            assert max(acked, default=0) <= head, f"cycle {cycle}: acknowledged entry lost"
            for seq, entry in enumerate(store.entries()):
                if seq in acked:
                    assert entry.hash.hex() == acked[seq], f"cycle {cycle}: seq {seq} changed"
    assert acked, "no cycle acknowledged anything: the test did not test"
