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

Each step, each effect, each effect's task and each request handler runs inside the failure
boundary (node/boundary.py): an exception there fails that one piece of work, is logged and
charged to the peer that sent the input, and the node runs on. ``Log`` effects go through a
limiter, so a flood of rejected messages becomes a few lines and a count.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from node.boundary import Boundary
from node.clock import Clock
from node.logs import LINE_WINDOW_S, LogLimiter
from p2p.transport import Inbound, Transport, TransportError
from protocol import limits
from protocol.effects import BanPeer, CancelTimer, Log, Penalise, Publish, Send, SetTimer
from protocol.engine import Engine
from protocol.events import (
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    RttMeasured,
    TimerFired,
)
from protocol.identity import PeerId

EffectHandler = Callable[[Any], Awaitable[None] | None]
PING_INTERVAL_S = 10.0

if TYPE_CHECKING:  # trio-typing's stubs (a py-libp2p dependency) shadow trio's own types
    from trio_typing import TaskStatus


class Driver:
    def __init__(self, engine: Engine, transport: Transport, clock: Clock) -> None:
        self.engine = engine
        self.transport = transport
        self.clock = clock
        self.effect_handlers: dict[type, EffectHandler] = {}
        self.request_handlers: dict[str, Callable[[Inbound], Awaitable[None]]] = {}
        self.observers: list[Callable[[object, list[Any]], None]] = []
        self._send, self._receive = trio.open_memory_channel[object](
            limits.EVENT_QUEUE_MESSAGES_MAX
        )
        self._timers: dict[str, int] = {}
        self._connected: set[str] = set()  # from the transport's connection events
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
            nursery.start_soon(self._ping_peers)
            nursery.start_soon(self._flush_logs)
            task_status.started()
            async for event in self._receive:
                peer = event.peer if isinstance(event, MessageReceived) else None
                with self.boundary.guard(f"step:{type(event).__name__}", peer):
                    self.step(event)

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
        elif isinstance(effect, BanPeer):
            self.transport.reputation.ban(effect.peer)
        elif isinstance(effect, Penalise):
            pass  # already charged in the engine's book, which alone decides bans (BanPeer)
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
            self.submit_nowait(
                MessageReceived(
                    PeerId(item.peer_id), item.channel, item.data, item.remote_ip, item.verified
                )
            )

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
        """Measure the round trip to each connected peer every ``PING_INTERVAL_S``."""
        while True:
            assert self._nursery is not None
            for peer_id in sorted(self._connected):
                self._nursery.start_soon(self._ping, peer_id)
            await trio.sleep(PING_INTERVAL_S)

    async def _ping(self, peer_id: str) -> None:
        try:
            with trio.fail_after(5):
                rtt_ms = await self.transport.ping(peer_id)
        except (TransportError, trio.TooSlowError, OSError):
            return
        self.submit_nowait(RttMeasured(PeerId(peer_id), max(0, round(rtt_ms))))
