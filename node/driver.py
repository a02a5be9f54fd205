"""The trio shell around the engine: feeds it events, carries out the effects it returns.

Theory of operation
-------------------
One task, ``run``, owns the engine: it takes events from a single bounded channel, calls
``engine.step(event, now_ms)`` and carries out each effect. Everything that produces events
(transport inbound, timers, the peer watcher, local API commands, the sandbox, the ledger) sends
into that channel, so the engine never runs twice at once and needs no locks.

Effects that wait on the network (Publish, Send) run as tasks in the driver's nursery, so a slow
peer never stalls the engine. Timers live in a dict of key -> deadline; one task sleeps until the
earliest and wakes when the dict changes. Effects the driver does not know are looked up in
``effect_handlers``, which the node's runtime fills (sandbox, blobs, ledger).

``CommitEntries`` (ADR 0019) is the one effect the next step waits for: the run loop hands its
entries to ``commit_entries`` (the ledger store's ``append_many``) on a worker thread, so the
fsync never blocks the event loop, then carries out ``then`` (the sends that carry the entries'
signatures) and answers ``EntriesCommitted``; a failed commit answers ``CommitFailed`` and drops
``then`` and every later commit already queued (they build on the failed entries). Effects listed
before it in the step (``SaveJob``) have run by then. The engine is not stepped while a commit is
in flight, so its view of the chain never runs ahead of the disk by more than one step.

Each step, each effect, each effect's task and each request handler runs inside the failure
boundary (node/boundary.py): an exception there fails that one piece of work, is logged and
charged to the peer that sent the input, and the node runs on. ``Log`` effects go through a
limiter, so a flood of rejected messages becomes a few lines and a count.
"""

from __future__ import annotations

import collections
import ipaddress
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import multiaddr
import trio

from ledger.entry import Entry
from ledger.errors import ChainError, LedgerUnavailableError
from node.boundary import Boundary
from node.clock import Clock
from node.logs import LINE_WINDOW_S, LogLimiter
from p2p.transport import Inbound, PeerStatus, Transport, TransportError
from protocol import limits
from protocol.effects import CancelTimer, CommitEntries, Log, Penalise, Publish, Send, SetTimer
from protocol.engine import Engine
from protocol.events import (
    CommitFailed,
    EntriesCommitted,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    RttMeasured,
    TimerFired,
)
from protocol.identity import PeerId

EffectHandler = Callable[[Any], Awaitable[None] | None]
CommitHandler = Callable[[Sequence[Entry]], None]  # blocking; raises LedgerUnavailableError
PEER_WATCH_INTERVAL_S = 1.0
PING_INTERVAL_S = 10.0

if TYPE_CHECKING:  # trio-typing's stubs (a py-libp2p dependency) shadow trio's own types
    from trio_typing import TaskStatus


def ip_of(addrs: tuple[str, ...]) -> str:
    """The first IP address in a peer's multiaddrs, or "" if none has one."""
    for text in addrs:
        try:
            addr = multiaddr.Multiaddr(text)
        except Exception:  # a peer-supplied address we cannot parse carries no IP for us
            continue
        for proto in ("ip4", "ip6"):
            try:
                value = addr.value_for_protocol(proto)
            except Exception:
                continue
            if value:
                return str(ipaddress.ip_address(value))
    return ""


def peer_ip(peer: PeerStatus) -> str:
    """The address that places a peer in a network group for replica diversity.

    The observed address of the connection cannot be forged by the peer, so it is used, except
    on loopback: dials there leave from 127.0.0.1 whatever address the node listens on, so a
    local testnet tells its nodes apart by their listen addresses instead.
    """
    observed = peer.remote_ip
    if observed and not ipaddress.ip_address(observed).is_loopback:
        return observed
    return ip_of(peer.addrs) or observed


class Driver:
    def __init__(self, engine: Engine, transport: Transport, clock: Clock) -> None:
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.effect_handlers: dict[type, EffectHandler] = {}
        self.commit_entries: CommitHandler | None = None  # the ledger store's append_many
        self._commits: collections.deque[CommitEntries] = collections.deque()
        self._committing = trio.Lock()  # one committer at a time, groups in order
        self.request_handlers: dict[str, Callable[[Inbound], Awaitable[None]]] = {}
        self.observers: list[Callable[[object, list[Any]], None]] = []
        self._send, self._receive = trio.open_memory_channel[object](
            limits.EVENT_QUEUE_MESSAGES_MAX
        )
        self._timers: dict[str, int] = {}
        self._timers_changed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.events_dropped = 0
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

    async def run(self, *, task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._pump_inbound)
            nursery.start_soon(self._run_timers)
            nursery.start_soon(self._watch_peers)
            nursery.start_soon(self._flush_logs)
            task_status.started()
            async for event in self._receive:
                peer = event.peer if isinstance(event, MessageReceived) else None
                with self.boundary.guard(f"step:{type(event).__name__}", peer):
                    self.step(event)
                await self.carry_out_commits()

    def expedite(self, key: str) -> None:
        """Fire the timer ``key`` now if it is set (what it waited for has come back)."""
        if key in self._timers:
            self._timers[key] = self.clock.now_ms()
            self._timers_changed.set()

    def step(self, event: object) -> None:
        effects = self.engine.step(event, self.clock.now_ms())
        for observer in self.observers:
            observer(event, effects)
        self.execute_all(effects)

    def execute_all(self, effects: list[Any]) -> None:
        for effect in effects:
            with self.boundary.guard(f"effect:{type(effect).__name__}"):
                self._execute(effect)

    def _execute(self, effect: Any) -> None:
        assert self._nursery is not None
        if isinstance(effect, Publish):
            self._nursery.start_soon(self._publish, effect)
        elif isinstance(effect, Send):
            self._nursery.start_soon(self._deliver, effect)
        elif isinstance(effect, SetTimer):
            self._timers[effect.key] = effect.at_ms
            self._timers_changed.set()
        elif isinstance(effect, CancelTimer):
            self._timers.pop(effect.key, None)
            self._timers_changed.set()
        elif isinstance(effect, Penalise):
            self.transport.reputation.adjust(effect.peer, -effect.points)
        elif isinstance(effect, CommitEntries):
            self._commits.append(effect)  # the run loop commits it before the next event
        elif isinstance(effect, Log):
            fields = dict(effect.fields)
            key = f"{effect.event}:{fields.get('reason', '')}"
            self.log_limiter.log(key, self.now_s(), effect.level, effect.event, **fields)
        else:
            handler = self.effect_handlers.get(type(effect))
            assert handler is not None, f"no handler for effect {type(effect).__name__}"
            result = handler(effect)
            if result is not None:
                self._nursery.start_soon(self._await, f"effect:{type(effect).__name__}", result)

    async def carry_out_commits(self) -> None:
        """Commit queued entries off the event loop, in order; then send what waited on them."""
        async with self._committing:
            while self._commits:
                await self._commit(self._commits.popleft())

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

    async def _publish(self, effect: Publish) -> None:
        with self.boundary.guard("effect:Publish"):
            try:
                await self.transport.publish(effect.topic, effect.data)
            except TransportError as exc:
                self.log_limiter.log(
                    "publish-failed", self.now_s(), "warning", "publish-failed",
                    topic=effect.topic, error=str(exc),
                )  # fmt: skip

    async def _deliver(self, effect: Send) -> None:
        with self.boundary.guard("effect:Send"):
            try:
                await self.transport.send(effect.peer, effect.protocol, effect.data)
            except TransportError as exc:
                self.log_limiter.log(
                    "send-failed", self.now_s(), "info", "send-failed",
                    peer=effect.peer, protocol=effect.protocol, error=str(exc),
                )  # fmt: skip

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
            self.submit_nowait(MessageReceived(PeerId(item.peer_id), item.channel, item.data))

    async def _run_timers(self) -> None:
        while True:
            self._timers_changed = trio.Event()
            if not self._timers:
                await self._timers_changed.wait()
                continue
            key, at_ms = min(self._timers.items(), key=lambda kv: (kv[1], kv[0]))
            wait_s = max(0, at_ms - self.clock.now_ms()) / 1000
            with trio.move_on_after(wait_s):
                await self._timers_changed.wait()
                continue
            if self._timers.get(key) == at_ms:
                del self._timers[key]
                await self.submit(TimerFired(key))

    async def _watch_peers(self) -> None:
        """Turn the transport's peer list into engine events, and measure round trips."""
        known: dict[str, str] = {}  # connected peer -> the IP last announced ("" if none yet)
        last_ping_s: dict[str, float] = {}
        while True:
            connected = {p.peer_id: peer_ip(p) for p in self.transport.peers() if p.connected}
            for peer_id, ip in sorted(connected.items()):
                # Announce new peers, and again once identify has told us an inbound peer's IP.
                if known.get(peer_id) != ip:
                    self.submit_nowait(PeerConnected(PeerId(peer_id), ip))
            for peer_id in sorted(known.keys() - connected.keys()):
                self.submit_nowait(PeerDisconnected(PeerId(peer_id)))
            known = connected
            now_s = trio.current_time()
            for peer_id in sorted(known):
                if now_s - last_ping_s.get(peer_id, -math.inf) >= PING_INTERVAL_S:
                    last_ping_s[peer_id] = now_s
                    assert self._nursery is not None
                    self._nursery.start_soon(self._ping, peer_id)
            await trio.sleep(PEER_WATCH_INTERVAL_S)

    async def _ping(self, peer_id: str) -> None:
        try:
            with trio.fail_after(5):
                rtt_ms = await self.transport.ping(peer_id)
        except (TransportError, trio.TooSlowError, OSError):
            return
        self.submit_nowait(RttMeasured(PeerId(peer_id), max(0, round(rtt_ms))))
