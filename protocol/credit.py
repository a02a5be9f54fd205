"""Credit lines: how much credit a payee accepts from each payer without work to back it.

I/O: none. Time: ``now_ms`` arguments.

Theory of operation (ADR 0013)
------------------------------
A receipt is *backed* when this node did work for that payer: a worker task for the receipt's
job, awarded by the receipt's payer, revealed, and owed at least the receipt's amount. Backed
receipts are the honest path; they are always admitted, and each raises the payer's *history*.
Every other receipt (a gift, spam, or a payment this node can no longer match to its task, after
a restart) is *unbacked* and must fit the payer's line::

    line(P) = unknown_payer + min(history_max, backed(P) + paid(P))      (in mc, and in receipts)
    unbacked(P) + amount <= line(P)
    and, while P has no history, pool + amount <= unknown_total            (all such P together)

``paid(P)`` is what this node paid P and P countersigned (the ledger's fold keeps it), so a payer
earns a larger line only by doing verified work for us or by paying us for work we did: both
cost real work, so a swarm of throwaway keys shares one bounded pool. Unbacked offers are also
rate-limited per payer (a token bucket), so that admitted or not, spam costs little.

A restart loses the tasks, so the ledger cannot tell backed earns from unbacked ones: every
earlier earn then counts as unbacked and payers with no ``paid`` history are charged to the
pool. A restart therefore never grants new credit; its cost is that an honest payment in flight
across our restart may be refused (the payer then cancels it: no credit moves).

Never: admit an unbacked receipt beyond its payer's line or the pool; charge a line for a
receipt whose earn was not committed (``decide`` then ``charge``, only after the commit).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Final

from hearth.protocol import limits

if TYPE_CHECKING:
    from hearth.ledger.chain import ChainState

CREDIT_PAYERS_MAX: Final = 100_000  # payers with a line kept in memory


@dataclasses.dataclass(frozen=True)
class CreditConfig:
    """A payee's credit policy; ``[credit]`` in the node's config.toml (in credits there)."""

    unknown_payer_mc: int = 10_000  # 10 credits without history
    unknown_payer_receipts: int = 16
    unknown_total_mc: int = 100_000  # 100 credits for every payer without history, together
    unknown_total_receipts: int = 256
    history_mc_max: int = limits.CREDIT_LIMIT_MC  # a line grows with history up to this
    history_receipts_max: int = 4096
    unbacked_burst: int = 8  # unbacked offers per payer handled at once ...
    unbacked_refill_ms: int = 5_000  # ... and one more every this long

    def __post_init__(self) -> None:
        assert min(dataclasses.astuple(self)) >= 0, "credit limits are never negative"
        assert self.unbacked_refill_ms > 0


@dataclasses.dataclass(slots=True)
class _Line:
    unbacked_mc: int = 0
    unbacked_receipts: int = 0
    backed_mc: int = 0
    backed_receipts: int = 0
    tokens: int = -1  # -1: a full bucket, set at first use
    refilled_ms: int = 0


class CreditLines:
    """Every payer's line, and the pool shared by payers without history."""

    def __init__(self, config: CreditConfig, state: ChainState) -> None:
        self.config = config
        self._state = state
        self._lines: dict[bytes, _Line] = {}
        self.pool_mc = 0
        self.pool_receipts = 0
        for payer, (earned_mc, receipts) in sorted(state.earned_by_payer.items()):
            self._lines[payer] = _Line(unbacked_mc=earned_mc, unbacked_receipts=receipts)
            if not self.has_history(payer):
                self.pool_mc += earned_mc
                self.pool_receipts += receipts

    def has_history(self, payer: bytes) -> bool:
        line = self._lines.get(payer)
        return (line is not None and line.backed_receipts > 0) or payer in self._state.paid_by_payee

    def line(self, payer: bytes) -> tuple[int, int]:
        """The payer's line: (mc, receipts) of unbacked credit it may hold."""
        config = self.config
        line = self._lines.get(payer) or _Line()
        paid_mc, paid_receipts = self._state.paid_by_payee.get(payer, (0, 0))
        return (
            config.unknown_payer_mc + min(config.history_mc_max, line.backed_mc + paid_mc),
            config.unknown_payer_receipts
            + min(config.history_receipts_max, line.backed_receipts + paid_receipts),
        )

    def decide(self, payer: bytes, amount_mc: int, *, backed: bool, now_ms: int) -> str:
        """Why a receipt of ``amount_mc`` from ``payer`` is refused, or "" if it is admitted.

        An unbacked offer takes a token from the payer's bucket, admitted or not.
        """
        if backed:
            return ""
        line = self._lines.get(payer)
        if line is None:
            if len(self._lines) >= CREDIT_PAYERS_MAX:
                return "credit-payers-full"
            line = self._lines[payer] = _Line()
        if not self._take_token(line, now_ms):
            return "unbacked-rate"
        line_mc, line_receipts = self.line(payer)
        if line.unbacked_mc + amount_mc > line_mc or line.unbacked_receipts + 1 > line_receipts:
            return "over-credit-line"
        if not self.has_history(payer) and (
            self.pool_mc + amount_mc > self.config.unknown_total_mc
            or self.pool_receipts + 1 > self.config.unknown_total_receipts
        ):
            return "unknown-payers-pool-full"
        return ""

    def charge(self, payer: bytes, amount_mc: int, *, backed: bool) -> None:
        """Record an admitted receipt whose earn is now committed."""
        line = self._lines.setdefault(payer, _Line())
        if backed:
            line.backed_mc += amount_mc
            line.backed_receipts += 1
            return
        if not self.has_history(payer):
            self.pool_mc += amount_mc
            self.pool_receipts += 1
        line.unbacked_mc += amount_mc
        line.unbacked_receipts += 1

    def _take_token(self, line: _Line, now_ms: int) -> bool:
        config = self.config
        if line.tokens < 0:
            line.tokens, line.refilled_ms = config.unbacked_burst, now_ms
        refills = (now_ms - line.refilled_ms) // config.unbacked_refill_ms
        if refills > 0:
            line.tokens = min(config.unbacked_burst, line.tokens + refills)
            line.refilled_ms += refills * config.unbacked_refill_ms
        if line.tokens == 0:
            return False
        line.tokens -= 1
        return True

    def statistics(self) -> dict[str, int]:
        return {
            "payers": len(self._lines),
            "unknown_pool_mc": self.pool_mc,
            "unknown_pool_receipts": self.pool_receipts,
        }
