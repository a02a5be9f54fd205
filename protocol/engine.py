"""The node's protocol engine: ``Engine.step(event, now_ms) -> list[Effect]``.

I/O: none. Time: ``now_ms`` argument. Randomness: the injected ``random.Random``.

Theory of operation
-------------------
The engine is the whole of a node's protocol logic behind one function. The daemon (node/) and
the simulator (testnet/sim/) both feed it events and carry out the effects it returns, so the same
rules run on real sockets and on a simulated network of thousands of nodes.

Every message arrives in a signed envelope. ``check_inbound`` (protocol/inbound.py, the same
check the shell runs at the edge) opens it (size, canonical encoding, signature, expiry), refuses
authors proven to have forked their ledger, checks that the message type is allowed on the
channel it came by and that the (author, nonce) was not seen; the engine then records the nonce
and only then hands the body to the component that owns that type. A message that fails any check is
dropped with a ``Log`` and a ``Penalise`` of the peer that delivered it; nothing a peer sends can
raise out of ``step``.

Components own disjoint message types and timer key types (protocol.timers; each key names
its component). Every change to the engine arrives through ``step`` as an event, local ones
included: ``PublishJob``, ``JobRestored`` (a saved job state read back after a restart),
``RuntimeOffered``. The market
component publishes this host's capacity ad every ``CAPACITY_AD_INTERVAL_MS`` and keeps the market
view; the worker and publisher components (protocol/worker.py, protocol/publisher.py) bid on,
run, verify and pay for jobs. Local events from the node rather than a peer (``PublishJob``,
``BlobFetched``, ``JobExecuted``, ...) go to the one component that claimed their type with
``add_local_handler``; ``PeerConnected`` addresses are kept in ``peer_ips`` for replica diversity.

Ledger writes leave as effects (ADR 0019). The engine holds a pure ``ChainView`` of its chain;
the payment and heads components sign entries into it. At the end of a step that staged entries,
the step's effects are split: everything but messages runs first (``SaveJob`` among them, so a
publisher's job state is durable before its pay), then one ``CommitEntries`` carries the entries
and, in ``then``, every ``Send`` and ``Publish`` of the step, to leave only after the commit.
The shell answers ``EntriesCommitted`` or ``CommitFailed``; components register with
``after_commit`` what to do in either case.
"""

from __future__ import annotations

import dataclasses
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, Protocol

from hearth.protocol import limits
from hearth.protocol.credit import CreditConfig
from hearth.protocol.effects import (
    AwaitSaves,
    CommitEntries,
    Effect,
    Log,
    Penalise,
    Publish,
    SaveJob,
    Send,
    SetTimer,
)
from hearth.protocol.energy import energy_price
from hearth.protocol.envelope import Envelope, ReplayGuard, seal
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import (
    CommitFailed,
    EnergyChanged,
    EntriesCommitted,
    HostSettingsChanged,
    InboundRefused,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    RttMeasured,
    RuntimeOffered,
    Started,
    TimerFired,
)
from hearth.protocol.heads import HeadsComponent
from hearth.protocol.identity import Identity, PeerId, PublicKey
from hearth.protocol.inbound import InboundCheck, InboundRules, check_inbound
from hearth.protocol.jobs_config import JobsConfig
from hearth.protocol.market import Market
from hearth.protocol.messages import TOPIC_CAPACITY, CapacityAd
from hearth.protocol.payments import PaymentComponent, ReceiptCountersigned
from hearth.protocol.pricing import PricingConfig, price_curve
from hearth.protocol.publisher import PublisherComponent
from hearth.protocol.reputation import Reputation, bans_for
from hearth.protocol.timers import MarketAdTimer, TimerKey
from hearth.protocol.worker import WorkerComponent

if TYPE_CHECKING:
    from hearth.ledger.view import ChainView

MessageHandler = Callable[[Envelope, PeerId, int], list[Effect]]
LocalHandler = Callable[[Any, int], list[Effect]]  # a local event (not from a peer), now_ms
OnCommit = Callable[[int], list[Effect]]  # now_ms
OnRollback = Callable[[str, int], list[Effect]]  # reason, now_ms

PENALTY_POINTS_BY_REASON: Final = {
    "bad-signature": 50,
    "replay": 10,
    "expired": 2,
    "busy": 0,
    "refused-author": 20,
    "wrong-channel": 20,
}
PENALTY_POINTS_DEFAULT: Final = 25


@dataclasses.dataclass(frozen=True)
class HostProfile:
    """What this node offers the market and what it costs to run."""

    cores_offered: int
    memory_mb_offered: int
    fuel_per_s: int
    runtimes: tuple[str, ...]
    availability_hours_mask: int
    energy_source: str
    operator: str
    pricing: PricingConfig
    # Set by EnergyChanged (ADR 0026): the mode (protocol.energy.MODES), the cores the home's
    # power allows (None: no bound beyond cores_offered), why no new work is taken ("": it is).
    energy_mode: str = "grid"
    energy_cores_max: int | None = None
    paused: str = ""

    def cores_now(self) -> int:
        """Cores offered now: the configured cap, bounded by the home's power, 0 while paused."""
        if self.paused:
            return 0
        if self.energy_cores_max is None:
            return self.cores_offered
        return min(self.cores_offered, self.energy_cores_max)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    identity: Identity
    profile: HostProfile
    verify_signatures: bool = True  # False only in simulator runs that say so
    jobs: JobsConfig = dataclasses.field(default_factory=JobsConfig)
    credit: CreditConfig = dataclasses.field(default_factory=CreditConfig)  # ADR 0013


class Component(Protocol):
    """A part of the engine that owns some message types and timers named ``<name>:...``."""

    name: str

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        """Message type -> (channels it may arrive on, handler)."""
        ...

    def on_started(self, now_ms: int) -> list[Effect]: ...

    def on_timer(self, key: TimerKey, now_ms: int) -> list[Effect]: ...


class Engine:
    def __init__(
        self, config: EngineConfig, rng: random.Random, ledger: ChainView | None = None
    ) -> None:
        self.config = config
        self.identity = config.identity
        self.rng = rng
        self.replay_guard = ReplayGuard()
        self.reputation = Reputation()
        self.refused_authors: set[PublicKey] = set()
        self._components: dict[str, Component] = {}
        self._handlers: dict[type, tuple[frozenset[str], MessageHandler]] = {}
        self._channels: dict[type, frozenset[str]] = {}  # message type -> channels it may use
        self._local_handlers: dict[type, LocalHandler] = {}
        self.peer_ips: OrderedDict[PeerId, str] = OrderedDict()  # last observed address
        # Why the node may not take work, by source ("jobs", "blobs", "log": a full disk...):
        # set by the node, which alone sees its disks; the worker bids on nothing while it is set.
        self.degraded: dict[str, str] = {}
        self.ledger = ledger
        # Per staged entry (seq order): what to do once it is durable, or if its commit fails.
        self._after_commit: list[tuple[int, OnCommit | None, OnRollback | None]] = []
        self.market_component = MarketComponent(self)
        self.add_component(self.market_component)
        self.worker = WorkerComponent(self)
        self.publisher = PublisherComponent(self)
        self.add_component(self.worker)
        self.add_component(self.publisher)
        # Without a ledger (some protocol tests) PayWorker and RecordMismatch pass through.
        self.payments = (
            PaymentComponent(self, ledger, config.credit) if ledger is not None else None
        )
        self.heads = HeadsComponent(self, ledger) if ledger is not None else None
        if self.payments is not None and self.heads is not None:
            self.add_component(self.payments)
            self.add_component(self.heads)

    @property
    def market(self) -> Market:
        return self.market_component.market

    def unable_reasons(self) -> list[str]:
        """Why this node must not take work now (its ledger or disk cannot write), or []."""
        reasons = [f"{source}: {why}" for source, why in sorted(self.degraded.items())]
        if self.ledger is not None and not self.ledger.writable:
            reasons.insert(0, f"ledger-unwritable: {self.ledger.unable_reason}")
        return reasons

    def ledger_writable(self, unable_reason: str | None) -> None:
        """The node's word on its chain's disk: unwritable (why), or writable again (None)."""
        if self.ledger is not None:
            self.ledger.unable_reason = unable_reason

    def add_component(self, component: Component) -> None:
        assert component.name not in self._components, component.name
        for message_type, route in component.handlers().items():
            assert message_type not in self._handlers, message_type
            self._handlers[message_type] = route
            self._channels[message_type] = route[0]
        self._components[component.name] = component

    def add_local_handler(self, event_type: type, handler: LocalHandler) -> None:
        """Route a local event type (from the node, not a peer) to one component's handler."""
        assert event_type not in self._local_handlers, event_type
        self._local_handlers[event_type] = handler

    def _note_peer_ip(self, peer: PeerId, ip: str) -> None:
        self.peer_ips[peer] = ip
        self.peer_ips.move_to_end(peer)
        while len(self.peer_ips) > limits.PEER_ADDRESSES_MAX:
            self.peer_ips.popitem(last=False)

    def seal(self, body: object, *, now_ms: int, ttl_ms: int) -> bytes:
        return seal(self.identity, body, now_ms=now_ms, ttl_ms=ttl_ms, rng=self.rng)

    def step(self, event: object, now_ms: int) -> list[Effect]:
        effects = self._step(event, now_ms)
        effects += bans_for(effects, self.reputation)  # this book decides; p2p enforces
        if self.payments is not None:
            effects = self.payments.absorb(effects, now_ms)
        entries = self.ledger.take_staged() if self.ledger is not None else []
        if entries:
            now = [e for e in effects if not isinstance(e, Send | Publish)]
            then = tuple(e for e in effects if isinstance(e, Send | Publish))
            effects = [*now, CommitEntries(tuple(entries), then)]
        return self._after_saves(effects)

    def _after_saves(self, effects: list[Effect]) -> list[Effect]:
        """Hold what acts on a saved decision until the save is durable, when the shell writes
        saves behind (ADR 0031): messages and the ledger commit go in one ``AwaitSaves``."""
        if not self.config.jobs.publisher.save_behind:
            return effects
        if not any(isinstance(e, SaveJob) for e in effects):
            return effects
        waiting = tuple(e for e in effects if isinstance(e, Send | Publish | CommitEntries))
        if not waiting:
            return effects
        now = [e for e in effects if not isinstance(e, Send | Publish | CommitEntries)]
        return [*now, AwaitSaves(waiting)]

    def after_commit(
        self, seq: int, on_commit: OnCommit | None, on_rollback: OnRollback | None
    ) -> None:
        """Run ``on_commit`` once the staged entry ``seq`` is durable, ``on_rollback`` if not."""
        assert self.ledger is not None and seq > self.ledger.committed_seq
        assert not self._after_commit or self._after_commit[-1][0] <= seq
        self._after_commit.append((seq, on_commit, on_rollback))

    def dispatch_local(self, event: object, now_ms: int) -> list[Effect]:
        """Hand a local event to the component that claimed it (within a step, not a new one)."""
        return self._local_handlers[type(event)](event, now_ms)

    def _on_committed(self, event: EntriesCommitted, now_ms: int) -> list[Effect]:
        assert self.ledger is not None
        self.ledger.committed(event.last_seq)
        done = [a for a in self._after_commit if a[0] <= event.last_seq]
        self._after_commit = self._after_commit[len(done) :]
        return [e for _, on_commit, _ in done if on_commit is not None for e in on_commit(now_ms)]

    def _on_commit_failed(self, event: CommitFailed, now_ms: int) -> list[Effect]:
        assert self.ledger is not None
        self.ledger.rollback(event.first_seq, event.reason)
        undone = [a for a in self._after_commit if a[0] >= event.first_seq]
        self._after_commit = self._after_commit[: len(self._after_commit) - len(undone)]
        effects: list[Effect] = []  # each staged entry's own rollback says what it means
        for _, _, on_rollback in undone:
            if on_rollback is not None:
                effects += on_rollback(event.reason, now_ms)
        return effects

    def _step(self, event: object, now_ms: int) -> list[Effect]:
        if isinstance(event, MessageReceived):
            return self._on_message(event, now_ms)
        if isinstance(event, TimerFired):
            component = self._components.get(event.key.component)
            assert component is not None, f"timer {event.key} has no component"
            return component.on_timer(event.key, now_ms)
        if isinstance(event, Started):
            return [e for c in self._components.values() for e in c.on_started(now_ms)]
        if isinstance(event, InboundRefused):
            error = RemoteProtocolError("refused by the node", reason=event.reason)
            return self.reject(event.peer, error, channel=event.channel, points=event.points)
        if isinstance(event, EntriesCommitted):
            return self._on_committed(event, now_ms)
        if isinstance(event, CommitFailed):
            return self._on_commit_failed(event, now_ms)
        if isinstance(event, RttMeasured):
            self.reputation.on_rtt(event.peer, event.rtt_ms)
            return []
        if isinstance(event, PeerConnected) and event.ip:  # a relayed peer's IP is unknown
            self._note_peer_ip(event.peer, event.ip)
        local = self._local_handlers.get(type(event))
        if local is not None:
            return local(event, now_ms)
        if isinstance(event, PeerConnected | PeerDisconnected):
            return []
        raise TypeError(f"unknown event {type(event).__name__}")

    def inbound_rules(self) -> InboundRules:
        """A read-only view of what admits a message, for the edge check (protocol/inbound.py)."""
        return InboundRules(
            self._channels,
            self.refused_authors,
            self.replay_guard,
            _owed,
            verify_signatures=self.config.verify_signatures,
        )

    def check_inbound(self, data: bytes, channel: str, now_ms: int) -> InboundCheck:
        """The edge check against this engine's state; changes nothing (the shell calls it)."""
        return check_inbound(data, channel, now_ms=now_ms, rules=self.inbound_rules())

    def _on_message(self, event: MessageReceived, now_ms: int) -> list[Effect]:
        checked = check_inbound(
            event.data,
            event.channel,
            now_ms=now_ms,
            rules=self.inbound_rules(),
            verified=event.verified,
        )
        if checked.error is not None:
            # A message that passed the edge and then expired while it waited in our own queue
            # is our load, not the sender's doing: it is dropped without a penalty (ADR 0031).
            in_queue = event.verified and checked.error.reason == "expired"
            points = 0 if in_queue else None
            return self.reject(event.peer, checked.error, channel=event.channel, points=points)
        envelope = checked.envelope
        assert envelope is not None
        try:
            self.replay_guard.check(envelope, now_ms=now_ms)
            if event.ip:
                self._note_peer_ip(event.peer, event.ip)
            return self._handlers[type(envelope.body)][1](envelope, event.peer, now_ms)
        except RemoteProtocolError as exc:
            return self.reject(event.peer, exc, channel=event.channel)

    def reject(
        self, peer: PeerId, exc: RemoteProtocolError, *, channel: str, points: int | None = None
    ) -> list[Effect]:
        """Drop a peer's message: log why and charge the peer that delivered it."""
        if points is None:
            points = PENALTY_POINTS_BY_REASON.get(exc.reason, PENALTY_POINTS_DEFAULT)
        self.reputation.penalise(peer, points)
        fields = (("peer", str(peer)), ("channel", channel), ("reason", exc.reason))
        effects: list[Effect] = [Log("warning", "message-dropped", (*fields, ("detail", str(exc))))]
        if points:
            effects.append(Penalise(peer, exc.reason, points))
        return effects


def _owed(body: object) -> bool:
    """A countersignature settles a receipt we signed before its payee was refused.

    It proves itself, and refusing it would leave the payee's earn unmatched by our settle:
    credits must stay conserved even across a forker's consistent chain.
    """
    return isinstance(body, ReceiptCountersigned)


class MarketComponent:
    """Publishes this host's capacity ad and keeps the market view of everyone else's."""

    name = "market"

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.market = Market()
        self.last_ad_ms: int | None = None
        self.next_ad_ms: int | None = None
        self._peers_met: set[PeerId] = set()  # since start; bounded by PEERS_MET_MAX
        self._ads_brought_forward = 0  # since start; at most CAPACITY_AD_BROUGHT_FORWARD_MAX
        engine.add_local_handler(RuntimeOffered, self._on_runtime_offered)
        engine.add_local_handler(PeerConnected, self._on_peer_connected)
        engine.add_local_handler(EnergyChanged, self._on_energy_changed)
        engine.add_local_handler(HostSettingsChanged, self._on_settings_changed)

    def handlers(self) -> Mapping[type, tuple[frozenset[str], MessageHandler]]:
        return {CapacityAd: (frozenset({TOPIC_CAPACITY}), self._on_ad)}

    def on_started(self, now_ms: int) -> list[Effect]:
        return self._publish_ad(now_ms)

    def on_timer(self, key: TimerKey, now_ms: int) -> list[Effect]:
        assert isinstance(key, MarketAdTimer), key
        self.market.expire(now_ms)
        return self._publish_ad(now_ms)

    def _on_runtime_offered(self, event: object, now_ms: int) -> list[Effect]:
        """Offer a runtime the node can run from now on (in the next ad, and to every call)."""
        assert isinstance(event, RuntimeOffered)
        config = self._engine.config
        if event.runtime not in config.profile.runtimes:
            runtimes = (*config.profile.runtimes, event.runtime)
            profile = dataclasses.replace(config.profile, runtimes=runtimes)
            self._engine.config = dataclasses.replace(config, profile=profile)
        return []

    def _on_energy_changed(self, event: object, now_ms: int) -> list[Effect]:
        """Offer what the home's energy allows; a changed ad goes out within the rate limit."""
        assert isinstance(event, EnergyChanged)
        config = self._engine.config
        before = self.current_ad(now_ms)
        profile = dataclasses.replace(
            config.profile,
            energy_cores_max=max(0, event.cores_offered),
            energy_mode=event.mode,
            paused=event.paused,
        )
        self._engine.config = dataclasses.replace(config, profile=profile)
        if self.current_ad(now_ms) == before:
            return []
        fields = (("mode", event.mode), ("cores", str(profile.cores_now())))
        log = Log("info", "energy-changed", (*fields, ("paused", event.paused)))
        next_ms = (self.last_ad_ms or 0) + limits.CAPACITY_AD_GAP_MS_MIN
        if self.last_ad_ms is not None and now_ms < next_ms:
            self.next_ad_ms = next_ms
            return [log, SetTimer(MarketAdTimer(), next_ms)]  # the gossip rate limit
        return [log, *self._publish_ad(now_ms)]

    def _on_settings_changed(self, event: object, now_ms: int) -> list[Effect]:
        """New caps and prices: the next ad, published now, carries them (ADR 0027)."""
        assert isinstance(event, HostSettingsChanged)
        config = self._engine.config
        profile = dataclasses.replace(
            config.profile,
            cores_offered=event.cores_offered,
            memory_mb_offered=event.memory_mb_offered,
            availability_hours_mask=event.availability_hours_mask,
            energy_source=event.energy_source,
            pricing=event.pricing,
        )
        self._engine.config = dataclasses.replace(config, profile=profile)
        return self._publish_ad(now_ms)

    def current_ad(self, now_ms: int) -> CapacityAd:
        profile = self._engine.config.profile
        start_ms, curve = price_curve(profile.pricing, profile.fuel_per_s, now_ms)
        hour_utc = (now_ms // 3_600_000) % 24
        return CapacityAd(
            cores_offered=profile.cores_now(),
            memory_mb_offered=profile.memory_mb_offered,
            fuel_per_s=profile.fuel_per_s,
            runtimes=profile.runtimes,
            availability_hours_mask=profile.availability_hours_mask,
            available_now=bool(profile.availability_hours_mask >> hour_utc & 1)
            and not profile.paused,
            energy_source=profile.energy_source,
            price_mc_per_tfuel=energy_price(
                profile.pricing, profile.fuel_per_s, now_ms, profile.energy_mode
            ),
            price_curve_mc_per_tfuel=curve,
            curve_start_ms=start_ms,
            operator=profile.operator,
        )

    def _on_peer_connected(self, event: object, now_ms: int) -> list[Effect]:
        """A peer met for the first time gets our ad within seconds, not at the next interval,
        so that a newcomer's market (and its ad in ours) fills at once (ADR 0032). Bursts of
        new peers share one ad; the gap keeps a node's start-up from flooding the topic, and
        after `CAPACITY_AD_BROUGHT_FORWARD_MAX` such ads the market sync hands ours on."""
        assert isinstance(event, PeerConnected)
        if event.peer in self._peers_met:
            return []
        if len(self._peers_met) >= limits.CAPACITY_AD_PEERS_MET_MAX:
            self._peers_met.clear()
        self._peers_met.add(event.peer)
        if self._ads_brought_forward >= limits.CAPACITY_AD_BROUGHT_FORWARD_MAX:
            return []
        soon_ms = max(
            now_ms + limits.CAPACITY_AD_AFTER_CONNECT_MS,
            (self.last_ad_ms or 0) + limits.CAPACITY_AD_AFTER_CONNECT_GAP_MS,
        )
        if self.next_ad_ms is not None and self.next_ad_ms <= soon_ms:
            return []
        self.next_ad_ms = soon_ms
        self._ads_brought_forward += 1
        return [SetTimer(MarketAdTimer(), soon_ms)]

    def _publish_ad(self, now_ms: int) -> list[Effect]:
        self.last_ad_ms = now_ms
        self.next_ad_ms = now_ms + limits.CAPACITY_AD_INTERVAL_MS
        data = self._engine.seal(
            self.current_ad(now_ms), now_ms=now_ms, ttl_ms=limits.CAPACITY_AD_TTL_MS
        )
        return [
            Publish(TOPIC_CAPACITY, data),
            SetTimer(MarketAdTimer(), self.next_ad_ms),
        ]

    def _on_ad(self, envelope: Envelope, peer: PeerId, now_ms: int) -> list[Effect]:
        if envelope.author == self._engine.identity.public_key:
            return []  # our own ad coming back through the mesh
        self.market.on_ad(envelope, now_ms)
        return []
