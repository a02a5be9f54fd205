"""Test-only fault points: a node dies at a named point when ``HEARTH_TEST_CRASH_AT`` says so.

The variable is read when the node wires its ledger, not at import (a node forked by the
testnet's zygote imported this module before it had its own environment); it is unset in
production, where every hook returns what it was given. The e2e tests use it to kill a node
with SIGKILL (no cleanup, as a power cut) between two writes, and show what a restart makes of
the state that survived.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Sequence
from typing import Final

from hearth.ledger.entry import Entry, Kind

CRASH_AT_ENV: Final = "HEARTH_TEST_CRASH_AT"
BEFORE_PAY_COMMIT: Final = "before-pay-commit"  # the job state is saved, its pay not committed


def crash_before_pay(
    commit: Callable[[Sequence[Entry]], None],
) -> Callable[[Sequence[Entry]], None]:
    """``commit``, or (under ``before-pay-commit``) one that dies before committing a PAY."""
    if os.environ.get(CRASH_AT_ENV, "") != BEFORE_PAY_COMMIT:
        return commit

    def commit_or_die(entries: Sequence[Entry]) -> None:
        if any(entry.kind is Kind.PAY for entry in entries):
            os.kill(os.getpid(), signal.SIGKILL)
        commit(entries)

    return commit_or_die
