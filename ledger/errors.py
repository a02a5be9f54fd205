"""Why a ledger entry, chain, receipt or proof is refused: one class, one ``reason``, per fault.

I/O: none. A chain fault comes from bytes a peer (or a disk) handed us, so every ``ChainError`` is
a ``RemoteProtocolError`` that names the entry it stopped at (``index`` in the list checked,
``seq`` when it could be read). Misuse of the store API is a ``LocalProtocolError``; a store that
cannot write right now raises ``LedgerUnavailableError`` and keeps saying why until it can.
"""

from __future__ import annotations

from hearth.protocol.errors import HearthError, LocalProtocolError, RemoteProtocolError


class ChainError(RemoteProtocolError):
    """An entry breaks a chain rule. ``index`` is its position in the list being checked."""

    reason = "bad-chain"

    def __init__(
        self, message: str, *, index: int = -1, seq: int | None = None, reason: str | None = None
    ) -> None:
        super().__init__(message, reason=reason)
        self.index = index
        self.seq = seq

    def located(self, index: int, seq: int | None) -> ChainError:
        """Record where in a chain the fault sits (rules raise before they know)."""
        self.index = index
        if self.seq is None:
            self.seq = seq
        return self

    def describe(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else f"entry #{self.index}"
        return f"{where}: {self.reason}: {self}"


class MalformedEntryError(ChainError):
    reason = "malformed-entry"


class NonCanonicalEntryError(ChainError):
    reason = "non-canonical-entry"


class TamperedEntryError(ChainError):
    """The entry's bytes no longer hash to what its successor (or the store) recorded."""

    reason = "tampered-entry"


class EntrySignatureError(ChainError):
    """The bytes are the ones the chain recorded, but the signature is not the author's."""

    reason = "bad-entry-signature"


class WrongAuthorError(ChainError):
    reason = "wrong-author"


class GenesisError(ChainError):
    reason = "bad-genesis"


class PrevHashError(ChainError):
    reason = "bad-prev-hash"


class SeqGapError(ChainError):
    reason = "seq-gap"


class RepeatedSeqError(ChainError):
    """Two different entries with one seq: a fork; ``proof`` is a standalone ``ForkProof``."""

    reason = "repeated-seq"
    proof: object = None


class ReorderedError(ChainError):
    reason = "reordered"


class ReplayedEntryError(ChainError):
    """An exact copy of an earlier entry appears again later in the chain."""

    reason = "replayed-entry"


class TruncatedChainError(ChainError):
    reason = "truncated"


class HeadMismatchError(ChainError):
    reason = "head-mismatch"


class TimeTravelError(ChainError):
    reason = "time-backwards"


class BodyError(ChainError):
    """The body does not fit its kind (wrong parties, bad amounts, bad bounds)."""

    reason = "bad-body"


class ReceiptSignatureError(ChainError):
    reason = "bad-receipt-signature"


class CountersignatureError(ChainError):
    """The countersignature is not the payee's (a non-party signed, or the bytes differ)."""

    reason = "bad-countersignature"


class ExpiredReceiptError(ChainError):
    reason = "receipt-expired"


class CreditLimitError(ChainError):
    reason = "credit-limit"


class DoubleClaimError(ChainError):
    """A second credit (or payment) for one (job, payee). ``proof`` holds the evidence."""

    reason = "double-claim"
    proof: object = None
    existing_entry: bytes = b""
    first_seq: int = -1


class UnknownReceiptError(ChainError):
    reason = "unknown-receipt"


class ReceiptStateError(ChainError):
    """Settle or cancel of a receipt in the wrong state (already settled, not pending...)."""

    reason = "receipt-state"


class ForkProofError(RemoteProtocolError):
    reason = "bad-fork-proof"


class DoubleClaimProofError(RemoteProtocolError):
    reason = "bad-double-claim-proof"


class RefusedAuthorError(RemoteProtocolError):
    """The author forked; we hold a proof and refuse everything it signs."""

    reason = "refused-author"


class AuditError(RemoteProtocolError):
    """A fetched ledger range contradicts itself or the receipts the auditor holds."""

    reason = "audit-failed"


class LedgerCorruptError(HearthError):
    """The local ledger file fails verification: the node must stop rather than build on it."""

    def __init__(self, path: str, cause: ChainError) -> None:
        super().__init__(f"ledger {path} is corrupt at {cause.describe()}")
        self.cause = cause


class CreditsMismatchError(ChainError):
    """The ``credits`` table (an index of the chain's pays and earns) disagrees with the chain."""

    reason = "credits-mismatch"


class LedgerDamagedError(HearthError):
    """The file cannot be read as a ledger at all: not SQLite, truncated, a table or the meta row
    missing. Nothing in it can be trusted or built on; the message is one line."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"ledger {path} is damaged: {why}")
        self.why = why


class LedgerUnavailableError(HearthError):
    """The store cannot write right now (disk full, I/O error); no signature was released."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"ledger unable to write: {reason}")
        self.reason = reason


class NotCommittedError(LocalProtocolError):
    """A group's result was read before the group committed: a durability-rule violation."""
