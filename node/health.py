"""Degraded mode: a node whose disk refuses a write stops taking work, says why, and heals itself.

Theory of operation
-------------------
Four writers can meet a full disk: job state (SaveJob), blobs, the ledger and ``node.log``. None
of them raises into the node. Each keeps what it could not write in memory and records why:
``JobService.disk_failure`` (unsaved states and blobs, retried), ``ledger.unable_reason`` (the
ledger's own flag), ``NodeLogFile.file_failure``. ``Health.refresh`` gathers them into the
engine's one flag, ``engine.degraded`` (the ledger is read by the engine itself), which the
worker consults before every bid: no bid while any reason stands. ``engine.unable_reasons()`` is
what ``hearth node status`` shows. Each change is logged once (``node-degraded``, and
``node-recovered`` with every reason the outage had, since lines written while the disk was full
may be lost), never per failed write.

``watch`` probes every ``PROBE_INTERVAL_S`` while degraded: it retries the unsaved job states
and blobs, probes the ledger with a write that needs fresh space, and checks that the log's
folder has room again. When the last reason clears, payments deferred by the ledger are retried
at once rather than at their next timer.

What must never happen: a write error ends the daemon; a degraded node bids; a node stays
degraded after space returns.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from hearth.node import logs
from hearth.node.logs import log
from hearth.protocol.timers import PayRetryTimer

if TYPE_CHECKING:
    from hearth.ledger.store import SqliteLedger
    from hearth.node.driver import Driver
    from hearth.node.jobs import JobService

PROBE_INTERVAL_S = 1.0
RETRY_TIMER_KEY = PayRetryTimer()  # protocol/payments.py: pays deferred by a full disk


class Health:
    def __init__(self, driver: Driver, ledger: SqliteLedger, jobs: JobService) -> None:
        self.driver = driver
        self.ledger = ledger
        self.jobs = jobs
        self._reported: list[str] = []
        self._outage: dict[str, None] = {}  # every reason since the node degraded, in order
        jobs.on_disk_change = self.refresh

    def reasons(self) -> list[str]:
        return self.driver.engine.unable_reasons()

    def refresh(self) -> list[str]:
        """Carry every source's state into the engine's flag; log a change once."""
        degraded = self.driver.engine.degraded
        for source, why in (("jobs", self.jobs.disk_failure), ("log", logs.file_failure())):
            if why:
                degraded[source] = why
            else:
                degraded.pop(source, None)
        # The store is the truth about the disk: a probe that found room clears the engine's
        # view too (it learns of failures from CommitFailed, of recovery from here or a commit).
        self.driver.engine.ledger_writable(self.ledger.unable_reason)
        reasons = self.reasons()
        if reasons != self._reported:
            if reasons:
                log("error", "node-degraded", reasons=reasons, bids="off until space returns")
                self._outage.update(dict.fromkeys(reasons))
            else:
                log("info", "node-recovered", was=list(self._outage))
                self._outage.clear()
                self.driver.expedite(RETRY_TIMER_KEY)
            self._reported = reasons
        return reasons

    def probe(self) -> None:
        """Try again every write that failed; each source clears its reason if it succeeds."""
        if self.jobs.disk_failure:
            self.jobs.save_pending()
        if not self.ledger.writable:
            self.ledger.probe_writable()
        logs.probe_file()

    async def watch(self) -> None:
        while True:
            await trio.sleep(PROBE_INTERVAL_S)
            if self.refresh():
                self.probe()
                self.refresh()
