"""The ledger in memory: the store's interface for tests and the simulator, lean per node.

I/O: none. Time: ``now_ms`` arguments. A ``MemoryLedger`` holds its entries' bytes and the chain
fold, nothing else, so tens of thousands fit in one process. ``entries_max`` lets a simulation
fill a "disk": a write past it raises ``LedgerUnavailableError`` like a full SQLite file.
"""

from __future__ import annotations

from collections.abc import Sequence

from hearth.ledger.base import LedgerBase
from hearth.ledger.chain import ChainState, verify_chain
from hearth.ledger.entry import Entry
from hearth.ledger.errors import LedgerUnavailableError
from hearth.protocol.identity import Identity


class MemoryLedger(LedgerBase):
    def __init__(
        self,
        identity: Identity,
        *,
        now_ms: int = 0,
        wires: Sequence[bytes] | None = None,
        entries_max: int | None = None,
    ) -> None:
        if wires is None:
            genesis = self.genesis(identity, now_ms=now_ms)
            state = ChainState(identity.public_key)
            state.append(genesis, signatures=False)
            self._wires = [genesis.wire]
        else:
            state = verify_chain(wires, author=identity.public_key)
            self._wires = list(wires)
        super().__init__(identity, state)
        self.entries_max = entries_max
        self._load_refused()

    def reopen(self) -> MemoryLedger:
        """A restart: a new ledger from the committed bytes, verified from genesis."""
        return MemoryLedger(self.identity, wires=self._wires, entries_max=self.entries_max)

    def _write(self, entries: Sequence[Entry]) -> None:
        assert entries[0].seq == len(self._wires), "an entry's index is its seq"
        if self.entries_max is not None and len(self._wires) + len(entries) > self.entries_max:
            raise LedgerUnavailableError(f"ledger full ({self.entries_max} entries)")
        self._wires.extend(entry.wire for entry in entries)

    def entry_wires(self, from_seq: int = 0, count: int | None = None) -> list[bytes]:
        end = len(self._wires) if count is None else from_seq + count
        return self._wires[from_seq:end]
