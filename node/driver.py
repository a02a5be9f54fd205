"""The trio shell around the engine: feeds it events, carries out the effects it returns.

Theory of operation
-------------------
One task, ``run``, owns the engine: it takes events from a single bounded channel, calls
``engine.step(event, now_ms)`` and carries out each effect. Everything that produces events
(transport inbound, timers, the peer watcher, local API commands, the sandbox, the ledger) sends
into that channel, so the engine never runs twice at once and needs no locks.

Effects are carried out by ``interpreter`` (protocol/interpreter.py), the one the simulator and
the test harness use: the driver registers its handlers for Publish, Send, Penalise, BanPeer and
Log, and the node's services register theirs (sandbox, blobs, saved jobs). A handler that returns an
awaitable (Publish, Send, a fetch, a run) has it run as a task in the driver's nursery, so a
slow peer or a long job never stalls the engine. Timers live in the interpreter's timer table;
one task sleeps until the earliest deadline, wakes when a timer is set, and fires what is due.

Local commands (publish a job, restore a saved one) go through the same queue as every other
event: ``call`` waits until the engine has taken its event and returns the command's refusal.

``CommitEntries`` (ADR 0019) is the one effect the next step waits for: its handler, registered
like the others, queues the group and returns the task that hands the queued groups, in order,
to ``commit_entries`` (the ledger store's ``append_many``) on a worker thread, so the fsync never
blocks the event loop; the run loop takes no event until the queue is empty. After each commit
the task carries out ``then`` (the sends that carry the entries' signatures) and answers
``EntriesCommitted``; a failed commit answers ``CommitFailed`` and drops ``then`` and every
later commit already queued (they build on the failed entries). Effects listed before it in the
step (``SaveJob``, carried out synchronously) have run by then. The engine is not stepped while
a commit is in flight, so its view of the chain never runs ahead of the disk by more than one
step.

Capacity ads are coalesced (ADR 0032): at most one ad per author waits in the queue, the one
that arrived last, and an ad arriving while its author's earlier one still waits takes that one's
place instead of queueing behind it. Ads come every few seconds from every host; under load a
queue of them outlived their lifetime before the engine reached them, and only the newest of
each author would have counted anyway.

Each step, each effect, each effect's task and each request handler runs inside the failure
boundary (node/boundary.py): an exception there fails that one piece of work, is logged and
charged to the peer that sent the input, and the node runs on. ``Log`` effects go through a
limiter, so a flood of rejected messages becomes a few lines and a count.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from hearth.ledger.entry import Entry
from hearth.ledger.errors import ChainError, LedgerUnavailableError
from hearth.node.boundary import Boundary
from hearth.node.clock import Clock
from hearth.node.logs import LINE_WINDOW_S, LogLimiter
from hearth.p2p.transport import Inbound, Transport, TransportError
from hearth.protocol import limits
from hearth.protocol.effects import (
    AwaitSaves,
    BanPeer,
    CommitEntries,
    Effect,
    Log,
    Penalise,
    Publish,
    Send,
)
from hearth.protocol.engine import Engine
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.events import (
    CommitFailed,
    EntriesCommitted,
    InvitationUndelivered,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    RttMeasured,
    TimerFired,
)
from hearth.protocol.identity import PeerId
from hearth.protocol.interpreter import Interpreter
from hearth.protocol.messages import PROTOCOL_INVITE, TOPIC_CAPACITY
from hearth.protocol.timers import TimerKey

CommitHandler = Callable[[Sequence[Entry]], None]  # blocking; raises LedgerUnavailableError
# A round trip changes slowly on a home link, and each ping opens a fresh stream (a yamux SYN and
# a multistream-select round at both ends, about eight frames in all): every 10 s it was a
# quarter of an idle node's CPU in a 50-node testnet, and every 60 s still about one frame in
# five that an idle node of it sent (issue 14, ADR 0032). A new peer is pinged when it
# connects, so its bids have an RTT from the start.
PING_INTERVAL_S = 300.0

if TYPE_CHECKING:  # trio-typing's stubs (a py-libp2p dependency) shadow trio's own types
    from trio_typing import TaskStatus


@dataclasses.dataclass(frozen=True)
class _AdWaiting:
    """Stands in the queue for ``author``'s newest capacity ad (held in ``Driver._ads``)."""

    author: str


@dataclasses.dataclass(eq=False)
class _Command:
    """A local command for the engine, with a slot for its refusal and a flag for its caller."""

    event: object
    done: trio.Event = dataclasses.field(default_factory=trio.Event)
    refusal: LocalProtocolError | None = None
    failed: bool = False  # the step raised something else: the boundary logged it


class Driver:
    def __init__(self, engine: Engine, transport: Transport, clock: Clock) -> None:
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.interpreter: Interpreter[Awaitable[None]] = Interpreter(self._on_timer_set)
        self.interpreter.register(Publish, self._publish)
        self.interpreter.register(Send, self._deliver)
        self.interpreter.register(Penalise, self._penalise)
        self.interpreter.register(BanPeer, self._ban)
        self.interpreter.register(Log, self._log)
        self.interpreter.register(CommitEntries, self._commit_entries)
        self.interpreter.register(AwaitSaves, self._await_saves)
        self.commit_entries: CommitHandler | None = None  # the ledger store's append_many
        # Writes the publisher states kept so far (node/jobs.py); set by the job service.
        self.flush_saves: Callable[[], Awaitable[None]] | None = None
        # Commits and what waits on saves, in the order the steps made them.
        self._commits: collections.deque[Callable[[], Awaitable[None]]] = collections.deque()
        self._committing = trio.Lock()  # one committer at a time, groups in order
        self._commits_idle = trio.Event()  # set while no commit is queued or in flight
        self._commits_idle.set()
        self.request_handlers: dict[str, Callable[[Inbound], Awaitable[None]]] = {}
        self.observers: list[Callable[[object, list[Any]], None]] = []
        self._send, self._receive = trio.open_memory_channel[object](
            limits.EVENT_QUEUE_MESSAGES_MAX
        )
        self._connected: set[str] = set()  # from the transport's connection events
        self._timers_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.events_dropped = 0
        self._ads: dict[str, MessageReceived] = {}  # each author's newest ad still queued
        self.ads_superseded = 0  # ads replaced in the queue by a newer one of their author
        self.log_limiter = LogLimiter()
        self.boundary = Boundary(transport.reputation, self.now_s, self.log_limiter)

    def now_s(self) -> float:
        return self.clock.now_ms() / 1000

    def submit_nowait(self, event: object) -> bool:
        """Queue an event for the engine; False (and counted) if the queue is full."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.events_dropped += 1
            return False
        return True

    async def submit(self, event: object) -> None:
        await self._send.send(event)

    async def call(self, event: object) -> bool:
        """Queue a local command and wait until the engine has taken it; False if it failed there.

        Raises the ``LocalProtocolError`` with which the engine refused it (a bad command). Any
        other failure stays inside the boundary, which logs it, as for every other event.
        """
        command = _Command(event)
        await self._send.send(command)
        await command.done.wait()
        if command.refusal is not None:
            raise command.refusal
        return not command.failed

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump_inbound)
            nursery.start_soon(self._run_timers)
            nursery.start_soon(self._watch_peers)
            nursery.start_soon(self._ping_peers)
            nursery.start_soon(self._flush_logs)
            task_status.started()
            async for event in self._receive:
                await self._commits_idle.wait()  # never a step while a commit is in flight
                if isinstance(event, _Command):
                    self._step_command(event)
                    continue
                if isinstance(event, _AdWaiting):
                    event = self._ads.pop(event.author)
                peer = event.peer if isinstance(event, MessageReceived) else None
                with self.boundary.guard(f"step:{type(event).__name__}", peer):
                    self.step(event)

    def _step_command(self, command: _Command) -> None:
        failures = self.boundary.failures
        try:
            with self.boundary.guard(f"step:{type(command.event).__name__}"):
                try:
                    self.step(command.event)
                except LocalProtocolError as exc:  # the caller's to report, not a failure
                    command.refusal = exc
        finally:
            command.failed = self.boundary.failures != failures
            command.done.set()

    def expedite(self, key: TimerKey) -> None:
        """Fire the timer ``key`` now if it is set (what it waited for has come back)."""
        if self.interpreter.timers.expedite(key, self.clock.now_ms()):
            self._timers_changed.set()

    def step(self, event: object) -> None:
        effects = self.engine.step(event, self.clock.now_ms())
        for observer in self.observers:
            observer(event, effects)
        self.execute_all(effects)

    def execute_all(self, effects: list[Effect]) -> None:
        for effect in effects:
            what = f"effect:{type(effect).__name__}"
            with self.boundary.guard(what):
                result = self.interpreter.run(effect)
                if result is not None:  # an async handler: its own task, its own boundary
                    assert self._nursery is not None
                    self._nursery.start_soon(self._await, what, result)

    def _commit_entries(self, effect: CommitEntries) -> Awaitable[None]:
        """Queue the group; the task it returns commits every queued group, in order."""
        self._commits.append(lambda: self._commit(effect))
        self._commits_idle = trio.Event() if self._commits_idle.is_set() else self._commits_idle
        return self.carry_out_commits()

    def _await_saves(self, effect: AwaitSaves) -> Awaitable[None]:
        """Queue what waits on saved state (ADR 0031), in order with the commits. The engine
        keeps stepping while only messages wait (saves of later steps join the same write);
        a ledger commit among them stops it, as every commit does."""
        self._commits.append(lambda: self._after_saves(effect))
        if effect.commits and self._commits_idle.is_set():
            self._commits_idle = trio.Event()
        return self.carry_out_commits()

    async def carry_out_commits(self) -> None:
        """Commit queued entries off the event loop, in order; then send what waited on them."""
        try:
            async with self._committing:
                while self._commits:
                    await self._commits.popleft()()
        except BaseException:
            # A bug in a commit (the failure boundary logs it): the groups queued after it build
            # on it, so they go too, and the run loop must not wait for them forever.
            self._commits.clear()
            raise
        finally:
            if not self._commits:
                self._commits_idle.set()

    async def _after_saves(self, effect: AwaitSaves) -> None:
        if self.flush_saves is not None:
            await self.flush_saves()
        self.execute_all(list(effect.then))  # a commit among them joins this queue, next

    async def _commit(self, effect: CommitEntries) -> None:
        assert self.commit_entries is not None, "an engine with a ledger needs a committer"
        try:
            await trio.to_thread.run_sync(self.commit_entries, effect.entries)
        except (LedgerUnavailableError, ChainError) as exc:
            self._commits.clear()  # every later group builds on the failed entries
            reason = exc.reason if isinstance(exc, LedgerUnavailableError) else str(exc)
            with self.boundary.guard("step:CommitFailed"):
                self.step(CommitFailed(effect.entries[0].seq, reason))
            return
        self.execute_all(list(effect.then))
        with self.boundary.guard("step:EntriesCommitted"):
            self.step(EntriesCommitted(effect.entries[-1].seq))

    async def _await(self, what: str, awaitable: Awaitable[None]) -> None:
        with self.boundary.guard(what):
            await awaitable

    def _on_timer_set(self, key: TimerKey, at_ms: int) -> None:
        self._timers_changed.set()

    def _penalise(self, effect: Penalise) -> None:
        """Already charged in the engine's book, which alone decides bans (BanPeer)."""

    def _ban(self, effect: BanPeer) -> None:
        self.transport.reputation.ban(effect.peer)

    def _log(self, effect: Log) -> None:
        fields = dict(effect.fields)
        key = f"{effect.event}:{fields.get('reason', '')}"
        self.log_limiter.log(key, self.now_s(), effect.level, effect.event, **fields)

    async def _publish(self, effect: Publish) -> None:
        try:
            await self.transport.publish(effect.topic, effect.data)
        except TransportError as exc:
            self.log_limiter.log(
                "publish-failed", self.now_s(), "warning", "publish-failed",
                topic=effect.topic, error=str(exc),
            )  # fmt: skip

    async def _deliver(self, effect: Send) -> None:
        try:
            await self.transport.send(effect.peer, effect.protocol, effect.data)
        except TransportError as exc:
            self.log_limiter.log(
                "send-failed", self.now_s(), "info", "send-failed",
                peer=effect.peer, protocol=effect.protocol, error=str(exc),
            )  # fmt: skip
            if effect.protocol == PROTOCOL_INVITE:  # its auction need not wait for an answer
                self.submit_nowait(InvitationUndelivered(PeerId(effect.peer)))

    async def _serve(self, handler: Callable[[Inbound], Awaitable[None]], item: Inbound) -> None:
        """Answer one direct-stream request; its failure is the requester's, never the node's."""
        with self.boundary.guard(f"request:{item.channel}", item.peer_id):
            await handler(item)

    async def _flush_logs(self) -> None:
        while True:
            await trio.sleep(LINE_WINDOW_S)
            self.log_limiter.flush(self.now_s())

    async def _pump_inbound(self) -> None:
        async for item in self.transport.inbound:
            handler = self.request_handlers.get(item.channel)
            if handler is not None and self._nursery is not None:
                self._nursery.start_soon(self._serve, handler, item)
                continue
            event = MessageReceived(
                PeerId(item.peer_id), item.channel, item.data, item.remote_ip, item.verified
            )
            if item.channel == TOPIC_CAPACITY:
                self._queue_ad(item.peer_id, event)
            else:
                self.submit_nowait(event)

    def _queue_ad(self, author: str, event: MessageReceived) -> None:
        """Queue ``author``'s ad, or let it take the place of the one of theirs still queued."""
        if author in self._ads:
            self.ads_superseded += 1
            self._ads[author] = event
            return
        self._ads[author] = event
        if not self.submit_nowait(_AdWaiting(author)):
            del self._ads[author]

    async def _run_timers(self) -> None:
        timers = self.interpreter.timers
        while True:
            self._timers_changed = trio.Event()
            at_ms = timers.next_deadline()
            if at_ms is None:
                await self._timers_changed.wait()
                continue
            wait_s = max(0, at_ms - self.clock.now_ms()) / 1000
            with trio.move_on_after(wait_s):
                await self._timers_changed.wait()
                continue
            # Slept until ``at_ms``: what is due then fires, even if the clock reads a bit less.
            for key in timers.due(max(at_ms, self.clock.now_ms())):
                await self.submit(TimerFired(key))

    async def _watch_peers(self) -> None:
        """Turn the transport's connection events (pushed, never polled) into engine events."""
        async for event in self.transport.peer_events:
            peer = PeerId(event.peer_id)
            if event.connected:
                if event.peer_id not in self._connected and self._nursery is not None:
                    self._nursery.start_soon(self._ping, event.peer_id)  # an RTT for its bids
                self._connected.add(event.peer_id)
                self.submit_nowait(PeerConnected(peer, event.remote_ip))
            else:
                self._connected.discard(event.peer_id)
                self.submit_nowait(PeerDisconnected(peer))

    async def _ping_peers(self) -> None:
        """Measure the round trip to each connected peer every ``PING_INTERVAL_S``, one peer at a
        time spread over the interval: a burst of pings to every peer at once made a
        starved node miss the gossip that arrived meanwhile."""
        while True:
            assert self._nursery is not None
            peers = sorted(self._connected)
            gap_s = PING_INTERVAL_S / max(1, len(peers))
            for peer_id in peers:
                if peer_id in self._connected:
                    self._nursery.start_soon(self._ping, peer_id)
                await trio.sleep(gap_s)
            if not peers:
                await trio.sleep(PING_INTERVAL_S)

    async def _ping(self, peer_id: str) -> None:
        try:
            with trio.fail_after(5):
                rtt_ms = await self.transport.ping(peer_id)
        except (TransportError, trio.TooSlowError, OSError):
            return
        self.submit_nowait(RttMeasured(PeerId(peer_id), max(0, round(rtt_ms))))
