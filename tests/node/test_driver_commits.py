"""The driver carries out ``CommitEntries``: commit off the event loop, then send (ADR 0019)."""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import trio
import trio.testing

from hearth.ledger.entry import Entry, Kind
from hearth.ledger.errors import LedgerUnavailableError
from hearth.ledger.store import SqliteLedger
from hearth.node.driver import Driver
from hearth.p2p.memory import MemoryNetwork
from hearth.protocol.effects import PayWorker
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.events import CommitFailed, EntriesCommitted
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import JobId
from hearth.protocol.payments import RETRY_PAY_MS
from tests.p2p.helpers import config, seed
from tests.protocol.harness import make_profile

WORKER = Identity(seed("worker")).peer_id


class TrioClock:
    def now_ms(self) -> int:
        return int(trio.current_time() * 1000)


@dataclasses.dataclass(frozen=True)
class PayNow:
    """A local event that makes the engine decide one payment (as a settled job does)."""


@dataclasses.dataclass
class Seen:
    """What the shell did, in order, and whether each commit ran off the event loop."""

    order: list[str] = dataclasses.field(default_factory=list)
    on_loop: list[bool] = dataclasses.field(default_factory=list)
    refusals: int = 0
    answers: dict[type, trio.Event] = dataclasses.field(
        default_factory=lambda: {EntriesCommitted: trio.Event(), CommitFailed: trio.Event()}
    )

    def observe(self, event: object, effects: object) -> None:
        """A driver observer: the engine was told how a commit went."""
        answered = self.answers.get(type(event))
        if answered is not None:
            answered.set()

    async def wait_for(self, answer: type) -> None:
        await self.answers[answer].wait()
        self.answers[answer] = trio.Event()
        await trio.testing.wait_all_tasks_blocked()  # the sends it released have run


@asynccontextmanager
async def paying_node(home: Path, seen: Seen) -> AsyncIterator[tuple[Engine, SqliteLedger]]:
    identity = Identity(seed("node"))
    ledger = SqliteLedger.open(home / "ledger.sqlite", identity, now_ms=0)
    net = MemoryNetwork()
    try:
        async with net.open_transport(config("node", "127.0.0.2")) as transport:
            engine = Engine(
                EngineConfig(identity, make_profile(0)), random.Random(0), ledger.view()
            )
            engine.add_local_handler(
                PayNow, lambda _event, _now_ms: [PayWorker(JobId(b"j" * 16), WORKER, 10)]
            )
            driver = Driver(engine, transport, TrioClock())

            def commit(entries: Sequence[Entry]) -> None:
                seen.on_loop.append(threading.current_thread() is threading.main_thread())
                if seen.refusals:
                    seen.refusals -= 1
                    raise LedgerUnavailableError("disk full (database or disk is full)")
                ledger.append_many(entries)
                seen.order += [f"commit:{entry.kind.name}" for entry in entries]

            async def send(peer_id: str, protocol_id: str, data: bytes) -> None:
                seen.order.append(f"send:{protocol_id}")

            driver.commit_entries = commit
            driver.observers.append(seen.observe)
            transport.send = send  # type: ignore[method-assign]
            async with trio.open_nursery() as nursery:
                await nursery.start(driver.run)
                driver.submit_nowait(PayNow())
                yield engine, ledger
                nursery.cancel_scope.cancel()
    finally:
        ledger.close()


async def test_a_pay_commits_off_the_loop_before_its_offer_leaves(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    seen = Seen()
    async with paying_node(tmp_path, seen) as (_engine, ledger):
        await seen.wait_for(EntriesCommitted)
        # (Later commits and resends follow as the virtual clock runs on: offers, a cancel.)
        assert seen.order[:2] == ["commit:PAY", "send:/hearth/receipt/1"]
        assert seen.on_loop and not any(seen.on_loop)
        assert [e.kind for e in ledger.entries()][:2] == [Kind.GENESIS, Kind.PAY]


async def test_a_failed_commit_is_taken_back_sends_nothing_and_is_retried(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    seen = Seen(refusals=1)
    async with paying_node(tmp_path, seen) as (engine, ledger):
        await seen.wait_for(CommitFailed)
        assert seen.order == []  # no offer without its entry on disk
        assert engine.ledger is not None and engine.ledger.head().seq == 0  # rolled back
        assert engine.unable_reasons() == [
            "ledger-unwritable: disk full (database or disk is full)"
        ]
        start_s = trio.current_time()
        await seen.wait_for(EntriesCommitted)  # the retry timer fired
        assert trio.current_time() - start_s >= RETRY_PAY_MS / 1000 - 1
        assert seen.order[:2] == ["commit:PAY", "send:/hearth/receipt/1"]
        assert engine.unable_reasons() == []
        assert [e.kind for e in ledger.entries()][:2] == [Kind.GENESIS, Kind.PAY]
