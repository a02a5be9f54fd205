"""A ledger whose disk fails now and then: ``MemoryLedger`` with seeded write errors. I/O: none.

A failed write raises ``LedgerUnavailableError`` as a full or failing SQLite file would; the
ledger reverts the staged entries, so the engine sees exactly what the daemon would.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from hearth.ledger.entry import Entry
from hearth.ledger.errors import LedgerUnavailableError
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.identity import Identity


class FlakyDisk:
    """The failure rate and its randomness, shared by a node's ledger across restarts."""

    def __init__(self, fail_pct: int, rng: random.Random) -> None:
        self.fail_pct = fail_pct
        self.rng = rng
        self.failures = 0

    def fails(self) -> bool:
        if not self.fail_pct or self.rng.randrange(100) >= self.fail_pct:
            return False
        self.failures += 1
        return True


class FlakyLedger(MemoryLedger):
    def __init__(
        self,
        identity: Identity,
        disk: FlakyDisk,
        *,
        now_ms: int = 0,
        wires: Sequence[bytes] | None = None,
    ) -> None:
        super().__init__(identity, now_ms=now_ms, wires=wires)
        self.disk = disk

    def reopen(self) -> FlakyLedger:
        return FlakyLedger(self.identity, self.disk, wires=self.entry_wires())

    def _write(self, entries: Sequence[Entry]) -> None:
        if self.disk.fails():
            raise LedgerUnavailableError("simulated disk error")
        super()._write(entries)
