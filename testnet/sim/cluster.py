"""The discrete-event loop: real protocol engines, a heap of deliveries, effects carried out.

I/O: none. Time: simulated integer ms. Randomness: only ``random.Random`` objects derived from
the run seed (``f"{seed}:engines"``, one stream shared by every engine, ``f"{seed}:net"`` for the
network). The engines share one stream because the order of steps is total, so each engine's
draws are still fixed by the seed, and a Mersenne Twister's state is 2.5 KB: 200 MB at 80,000
nodes if each had its own.

Theory of operation
-------------------
The heap holds ``(deliver_at_ms, seq, node, event)``; ``seq`` breaks ties so that the order is
total and the run replays exactly. ``step`` pops one item, feeds it to that node's engine and
carries out the effects the engine returns through ``protocol.interpreter``, the one the daemon
uses, with this simulator's handlers (one interpreter for the cluster, switched to the timer
table of the node whose effects it carries out, so that 80,000 nodes do not each hold a handler
table): Publish and Send become future deliveries over the simulated network, SetTimer a future
``TimerFired`` (stale if the key was re-set or cancelled: the node's timer table decides),
FetchBlob and RunJob future ``BlobFetched`` /
``JobExecuted`` from the blob and sandbox stand-ins. A restarted node's saved jobs come back as
``JobRestored`` events, the daemon's restore path. Each step's bytes go into the trace hash.

Signatures are real (unless ``fake_signatures``) and are made by every sender, but a gossip
message that reaches many nodes is verified once per run, not once per receiver
(``_edge_verified``): its signature check is a pure function of the exact bytes (the author's
key is inside the signed bytes), so every receiver would compute the same answer. The daemon's
edge check does the same per node (``MessageReceived.verified``); a message whose signature
fails is handed to the engine unverified, which refuses it as it always does.

A node that goes down loses its queued timers and local events (``life`` changes), and its
engine; it keeps its ledger. Coming back it gets a fresh engine over ``MemoryLedger.reopen()``,
with the publisher's jobs restored from the last ``SaveJob`` of each, as a restarted daemon would.

The fault classes of ``fault_rates.FaultRates`` (ADR 0018) act here: each engine is stepped at
its own clock's reading; a message may be held back or delivered twice (the second copy a node
sees in one life must be dropped); a step that committed ledger entries may hold its sends for
the commit's latency, or crash the node before any of its effects is carried out; a new peer's
first message may reach the engine before its ``PeerConnected``. Each class draws from its own
``random.Random(f"{seed}:<class>")``, so a class that is off changes nothing in the run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
import struct
from collections import Counter
from typing import Any

from hearth.ledger.audit import HeadGossip
from hearth.ledger.errors import LedgerUnavailableError
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.bidding import WorkerConfig
from hearth.protocol.codec import decode_as
from hearth.protocol.effects import (
    AbortJob,
    AwaitSaves,
    BanPeer,
    CommitEntries,
    Effect,
    FetchBlob,
    JobProgress,
    Log,
    PayWorker,
    Penalise,
    Publish,
    RecordMismatch,
    RunJob,
    SaveJob,
    Send,
)
from hearth.protocol.engine import Engine, EngineConfig, HostProfile
from hearth.protocol.envelope import EnvelopeWire, SignedWire
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import (
    BlobFetched,
    BlobFetchFailed,
    CommitFailed,
    EntriesCommitted,
    JobExecuted,
    JobRestored,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    RttMeasured,
    Started,
    TimerFired,
)
from hearth.protocol.heads import HEADS_TTL_MS
from hearth.protocol.identity import (
    Identity,
    PeerId,
    public_key_from_peer_id,
    verify_signature,
)
from hearth.protocol.interpreter import Interpreter, Timers
from hearth.protocol.jobs_config import JobsConfig
from hearth.protocol.messages import PROTOCOL_RECEIPT, TOPIC_CAPACITY, TOPIC_HEADS, TOPIC_JOBS
from hearth.protocol.publisher_state import PublisherConfig
from hearth.protocol.timers import TimerKey
from hearth.testnet.sim import faults
from hearth.testnet.sim.checkers import Checker, InvariantViolation, check_refusal
from hearth.testnet.sim.clocks import Clocks
from hearth.testnet.sim.disk import FlakyDisk, FlakyLedger
from hearth.testnet.sim.fault_rates import (
    CRASH_DOWN_MS,
    DUPLICATE_DELAY_MS_MAX,
    REORDER_DELAY_MS_MAX,
    FaultRates,
)
from hearth.testnet.sim.network import Network

T0_MS = 1_800_000_000_000  # 08:00 UTC: solar hosts are up
BLOB_FAIL_MS = 2_000
GOSSIP_TOPICS = frozenset({TOPIC_CAPACITY, TOPIC_HEADS, TOPIC_JOBS})
SIGNATURES_CACHED_MAX = 200_000  # gossip messages whose check is remembered; then start afresh
_PACK = struct.Struct(">qi")


class SimNode:
    __slots__ = (
        "alive",
        "engine",
        "identity",
        "index",
        "ledger",
        "life",
        "profile",
        "role",
        "saved",
        "timers",
    )

    def __init__(self, index: int, role: str, identity: Identity, profile: HostProfile) -> None:
        self.index = index
        self.role = role
        self.identity = identity
        self.profile = profile
        self.ledger = MemoryLedger(identity, now_ms=T0_MS)
        self.engine: Engine | None = None
        self.alive = False
        self.life = 0  # bumped on every crash: stale timers and local events are dropped
        self.timers = Timers()  # the cluster's interpreter uses it while it carries out our effects
        self.saved: dict[bytes, bytes] = {}  # job id -> last SaveJob state, open jobs only

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id


class _Timer:
    __slots__ = ("at_ms", "key", "life")

    def __init__(self, key: TimerKey, at_ms: int, life: int) -> None:
        self.key, self.at_ms, self.life = key, at_ms, life


class _Local:
    __slots__ = ("event", "life")

    def __init__(self, event: object, life: int) -> None:
        self.event, self.life = event, life


class _Twin:
    """One of two copies of a duplicated message; ``key`` names the pair."""

    __slots__ = ("event", "key")

    def __init__(self, event: MessageReceived, key: int) -> None:
        self.event, self.key = event, key


class Control:
    """A simulator action at a time (a job arrives, a node crashes, ...); see ``Simulation``."""

    __slots__ = ("arg", "kind")

    def __init__(self, kind: str, arg: int = -1) -> None:
        self.kind, self.arg = kind, arg


class Cluster:
    """Nodes, heap, network and blob/sandbox stand-ins; ``Simulation`` adds the schedule."""

    def __init__(
        self,
        seed: int,
        nodes: list[SimNode],
        network: Network,
        checker: Checker,
        *,
        verify_signatures: bool,
        publisher_config: PublisherConfig,
        rates: FaultRates | None = None,
        worker_config: WorkerConfig | None = None,
    ) -> None:
        self.seed = seed
        self.rates = rates = rates or FaultRates()
        self.nodes = nodes
        self.network = network
        self.checker = checker
        self.now_ms = T0_MS
        self.index_by_peer = {node.peer_id: node.index for node in nodes}
        self._node = nodes[0] if nodes else None  # whose effects the interpreter carries out
        self._interpreter = self._build_interpreter()
        self.blob_bytes: dict[bytes, int] = {}  # the blob store stand-in: hash -> size
        self.runs: dict[tuple[bytes, bytes], bool] = {}  # (job, worker key) -> honest result?
        self.counters: Counter[str] = Counter()
        self.trace = hashlib.sha256()
        self.events = 0
        self._verify = verify_signatures
        self._jobs_config = JobsConfig(
            worker=worker_config or WorkerConfig(), publisher=publisher_config
        )
        self._queue: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self.on_progress: Any = None  # set by Simulation: (node, JobProgress) -> None
        self.on_control: Any = None  # set by Simulation: (Control) -> None
        self.trusted: Any = lambda node, job_id: False  # set by Simulation: trust_cheater's view
        self.clocks = Clocks(
            len(nodes),
            T0_MS,
            rates.clock_offset_ms_max,
            rates.clock_drift_ppm_max,
            random.Random(f"{seed}:clock"),
        )
        self._engine_rng = random.Random(f"{seed}:engines")  # every engine's (module doc)
        self._wire_rng = random.Random(f"{seed}:wire")  # duplication, reordering
        self._disk_rng = random.Random(f"{seed}:disk")  # storage latency, crashes
        self._connect_rng = random.Random(f"{seed}:connect")
        self._twins: dict[tuple[int, int], int] = {}  # (node, pair) -> life that saw one copy
        self._forged: dict[bytes, bytes] = {}  # a forged head's gossip -> its author
        self._delivering: MessageReceived | None = None  # the message being stepped, if any
        self._dropped = False  # whether the engine dropped ``_delivering``
        self._hold_ms = 0  # sends of this step wait for the ledger commit
        self._may_crash = False  # whether the step being carried out may crash after its commit
        self._signature_ok: dict[bytes, bool] = {}  # sha256 of gossip bytes -> signature good
        if rates.storage_fail_pct:
            for node in nodes:
                disk = FlakyDisk(rates.storage_fail_pct, random.Random(f"{seed}:{node.index}:disk"))
                node.ledger = FlakyLedger(node.identity, disk, now_ms=T0_MS)

    def local_ms(self, node: SimNode) -> int:
        """What ``node``'s own clock reads now."""
        return self.clocks.local_ms(node.index, self.now_ms)

    def heal(self) -> None:
        """Liveness: no more duplicates, reordering, disk errors, crashes or late connects."""
        self.rates = dataclasses.replace(
            self.rates,
            duplicate_pct=0,
            reorder_pct=0,
            storage_fail_pct=0,
            crash_after_commit_pct=0,
            late_connect_pct=0,
        )
        for node in self.nodes:
            if isinstance(node.ledger, FlakyLedger):
                node.ledger.disk.fail_pct = 0

    # The heap

    def push(self, at_ms: int, node: int, event: object) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_ms, self._seq, node, event))

    def next_ms(self) -> int | None:
        return self._queue[0][0] if self._queue else None

    def step(self) -> None:
        at_ms, _, index, event = heapq.heappop(self._queue)
        self.now_ms = max(self.now_ms, at_ms)
        if isinstance(event, Control):
            self._trace(index, b"control:" + event.kind.encode() + str(event.arg).encode())
            self.on_control(event)
            return
        node = self.nodes[index]
        if not node.alive:
            return
        if isinstance(event, _Timer):
            if event.life != node.life or not node.timers.take(event.key, event.at_ms):
                return  # re-set, cancelled, or set before a crash
            self._trace(index, str(event.key).encode())
            self.step_engine(node, TimerFired(event.key), may_crash=True)
        elif isinstance(event, MessageReceived):
            self._trace(index, event.data)
            self._receive(node, event)
        elif isinstance(event, _Twin):
            self._trace(index, event.event.data)
            self._receive_twin(node, event)
        elif isinstance(event, _Local):
            if event.life == node.life:
                self._trace(index, repr(event.event).encode())
                self.step_engine(node, event.event)
        else:
            self._trace(index, repr(event).encode())
            self.step_engine(node, event)

    def _trace(self, index: int, data: bytes) -> None:
        self.events += 1
        self.trace.update(_PACK.pack(self.now_ms, index))
        self.trace.update(data)

    def step_engine(self, node: SimNode, event: object, *, may_crash: bool = False) -> None:
        engine = node.engine
        assert engine is not None
        try:
            effects = engine.step(event, self.local_ms(node))
        except Exception as exc:  # the engine must never raise on any input: that is a bug
            detail = (
                f"node {node.index} raised {type(exc).__name__}: {exc} on {type(event).__name__}"
            )
            raise InvariantViolation("engine-raised", detail, self.now_ms) from exc
        outer, self._may_crash = self._may_crash, may_crash
        try:
            for effect in effects:  # a CommitEntries comes last: its sends wait for the commit
                self._carry_out(node, effect)
        finally:
            self._may_crash = outer
        self._hold_ms = 0
        self.checker.on_ledger(node.index, node.ledger, self.now_ms)

    def _after_commit(self, node: SimNode, may_crash: bool) -> bool:
        """Storage faults after a commit: True if the node crashed before sending what waited."""
        rates = self.rates
        if rates.storage_latency_ms_max:
            self._hold_ms = self._disk_rng.randint(0, rates.storage_latency_ms_max)
        if not (may_crash and rates.crash_after_commit_pct):
            return False
        if self._disk_rng.randrange(100) >= rates.crash_after_commit_pct:
            return False
        self.counters["crashes_after_commit"] += 1
        self.checker.on_ledger(node.index, node.ledger, self.now_ms)
        self._hold_ms = 0
        self.stop(node)
        down_ms = self._disk_rng.randint(*CRASH_DOWN_MS)
        self.push(self.now_ms + down_ms, -1, Control("up", node.index))
        return True

    def _receive(self, node: SimNode, message: MessageReceived) -> None:
        """Deliver a message as the daemon does: a stream implies a connection, announced first
        unless this one is late (the message then reaches the engine before its connection)."""
        author = self._forged.get(message.data)
        if author is not None:  # a node sees the fork's second head: from now on it is exposed
            self.checker.on_fork_injected(author, self.now_ms)
        engine = node.engine
        assert engine is not None
        new_peer = message.peer not in engine.peer_ips
        late = False
        if new_peer and self.rates.late_connect_pct:
            late = self._connect_rng.randrange(100) < self.rates.late_connect_pct
        if new_peer and not late:
            self._connect(node, message.peer)
        message = self._edge_verified(message)
        self._delivering, self._dropped = message, False
        try:
            self.step_engine(node, message, may_crash=True)
        finally:
            self._delivering = None
        if late and node.alive and message.peer not in engine.peer_ips:
            self.counters["late_connects"] += 1
            self._connect(node, message.peer)

    def _edge_verified(self, message: MessageReceived) -> MessageReceived:
        """Gossip reaches many nodes with the same bytes: check its signature once (module doc)."""
        if not self._verify or message.verified or message.channel not in GOSSIP_TOPICS:
            return message
        key = hashlib.sha256(message.data).digest()  # not the bytes: they may then be freed
        ok = self._signature_ok.get(key)
        if ok is None:
            if len(self._signature_ok) >= SIGNATURES_CACHED_MAX:
                self._signature_ok.clear()
            ok = self._signature_ok[key] = _signature_ok(message.data)
            self.counters["signatures_verified_at_edge"] += 1
        else:
            self.counters["signature_cache_hits"] += 1
        return dataclasses.replace(message, verified=True) if ok else message

    def _receive_twin(self, node: SimNode, twin: _Twin) -> None:
        """One copy of a duplicated message: the second copy one life of a node sees must be
        dropped (replay guard or expiry); after a restart the engine may act on it again."""
        key = (node.index, twin.key)
        seen_life = self._twins.pop(key, None)
        self._receive(node, twin.event)
        if seen_life is None:
            if node.alive and not self._dropped:  # a copy dropped for "busy" may be taken later
                self._twins[key] = node.life
            return
        if seen_life == node.life and node.alive and not self._dropped:
            raise InvariantViolation(
                "duplicate-accepted",
                f"node {node.index} acted on a second copy of a message on "
                f"{twin.event.channel} from node {self.index_by_peer[twin.event.peer]}",
                self.now_ms,
            )

    def _connect(self, node: SimNode, peer: PeerId) -> None:
        """Tell the engine a peer's address and RTT, once per connection."""
        other = self.index_by_peer[peer]
        self.step_engine(node, PeerConnected(peer, self.network.ips[other]))
        self.step_engine(node, RttMeasured(peer, self.network.rtt_ms(node.index, other)))

    # Effects: this simulator's handlers, registered in each node's interpreter

    def _build_interpreter(self) -> Interpreter[None]:
        def node() -> SimNode:
            assert self._node is not None
            return self._node

        def wake(key: TimerKey, at_ms: int) -> None:
            # A node's timers fire when its own (skewed) clock reaches them.
            current = node()
            true_ms = self.clocks.true_ms(current.index, at_ms)
            self.push(true_ms, current.index, _Timer(key, at_ms, current.life))

        interpreter: Interpreter[None] = Interpreter(wake)
        interpreter.register(Send, lambda effect: self._send(node(), effect))
        interpreter.register(Publish, lambda effect: self._publish(node(), effect))
        interpreter.register(JobProgress, lambda effect: self.on_progress(node(), effect))
        interpreter.register(SaveJob, lambda effect: self._save(node(), effect))
        interpreter.register(FetchBlob, lambda effect: self._fetch(node(), effect))
        interpreter.register(RunJob, lambda effect: self._run(node(), effect))
        interpreter.register(Log, lambda effect: self._log(node(), effect))
        interpreter.register(Penalise, lambda effect: self._count("penalties"))
        interpreter.register(AbortJob, lambda effect: self._count("aborts"))
        interpreter.register(BanPeer, lambda effect: self._count("bans"))
        interpreter.register(CommitEntries, lambda effect: self._commit(node(), effect))
        # The simulator saves in place (save_behind off): nothing ever waits on a save.
        interpreter.register(AwaitSaves, lambda effect: self._carry_out_all(node(), effect.then))
        # PayWorker and RecordMismatch never leave an engine with a ledger (payments absorb them).
        assert interpreter.missing() <= {PayWorker, RecordMismatch}, interpreter.missing()
        return interpreter

    def _carry_out(self, node: SimNode, effect: Effect) -> None:
        """Carry out one of ``node``'s effects, on its timer table; nesting restores the outer."""
        interpreter, outer = self._interpreter, self._node
        self._node, interpreter.timers = node, node.timers
        try:
            interpreter.run(effect)
        finally:
            if outer is not None:
                self._node, interpreter.timers = outer, outer.timers

    def _carry_out_all(self, node: SimNode, effects: tuple[Effect, ...]) -> None:
        for effect in effects:
            self._carry_out(node, effect)

    def _count(self, counter: str) -> None:
        self.counters[counter] += 1

    def _log(self, node: SimNode, effect: Log) -> None:
        if effect.level in ("warning", "error"):
            self.counters[f"log:{effect.event}"] += 1
        if effect.event == "message-dropped" and self._delivering is not None:
            self._on_dropped(node, self._delivering, dict(effect.fields))
        if effect.event == "fork-detected":
            author = public_key_from_peer_id(str(dict(effect.fields)["author"]))
            self.checker.on_fork_detected(bytes(author), self.now_ms)

    def _on_dropped(self, node: SimNode, message: MessageReceived, fields: dict[str, Any]) -> None:
        self._dropped = True
        if fields.get("reason") == "expired":
            problem = check_refusal(message.data, self.local_ms(node))
            if problem is not None:
                sender = self.index_by_peer[message.peer]
                raise InvariantViolation(
                    "fresh-message-refused",
                    f"node {node.index} refused as expired a message from node {sender} that "
                    f"{problem} (clocks {self.clocks.offset_ms[node.index]:+d} ms and "
                    f"{self.clocks.offset_ms[sender]:+d} ms from true time)",
                    self.now_ms,
                )

    def _commit(self, node: SimNode, commit: CommitEntries) -> None:
        """The daemon's order: append in one group, then the sends, then tell the engine.

        The storage faults live here: a failed write (``FlakyLedger``) answers ``CommitFailed``;
        a slow one holds the sends; a crash after the commit loses them (the node restarts).
        """
        try:
            node.ledger.append_many(commit.entries)
        except LedgerUnavailableError as exc:
            self.step_engine(node, CommitFailed(commit.entries[0].seq, exc.reason))
            return
        if self._after_commit(node, self._may_crash):
            return
        for effect in commit.then:
            self._carry_out(node, effect)
        self.step_engine(node, EntriesCommitted(commit.entries[-1].seq))

    def _send(self, node: SimNode, send: Send) -> None:
        self.counters["sends"] += 1
        if send.protocol == PROTOCOL_RECEIPT:
            self.checker.on_receipt_sent(node.index, node.ledger, send.data, self.now_ms)
        target = self.index_by_peer.get(send.peer)
        if target is None or not self.nodes[target].alive:
            self.counters["sends_refused"] += 1
            return
        if not self.network.delivers(node.index, target):
            self.counters["sends_lost"] += 1
            return
        self._deliver(node, target, MessageReceived(node.peer_id, send.protocol, send.data))

    def _publish(self, node: SimNode, publish: Publish) -> None:
        self.counters[f"publish:{publish.topic}"] += 1
        if publish.topic == TOPIC_JOBS:
            targets = self.network.call_targets(node.index)
        elif publish.topic == TOPIC_CAPACITY:
            targets = self.network.ad_targets(node.index)
        else:  # ledger heads: the periodic gossip
            targets = self.network.gossip_targets(node.index)
        event = MessageReceived(node.peer_id, publish.topic, publish.data)
        for target in targets:
            if self.nodes[target].alive and self.network.delivers(node.index, target):
                self.counters[f"deliveries:{publish.topic}"] += 1
                self._deliver(node, target, event)

    def _deliver(self, node: SimNode, target: int, event: MessageReceived) -> None:
        """Queue ``event`` for ``target`` after the link's latency, maybe late, maybe twice."""
        self.counters["deliveries"] += 1
        at_ms = self.now_ms + self._hold_ms + self.network.latency_ms(node.index, target)
        rates = self.rates
        if rates.reorder_pct and self._wire_rng.randrange(100) < rates.reorder_pct:
            self.counters["reordered"] += 1
            at_ms += self._wire_rng.randint(1, REORDER_DELAY_MS_MAX)
        if rates.duplicate_pct and self._wire_rng.randrange(100) < rates.duplicate_pct:
            self.counters["duplicated"] += 1
            key = self._seq
            again_ms = at_ms + self._wire_rng.randint(0, DUPLICATE_DELAY_MS_MAX)
            self.push(at_ms, target, _Twin(event, key))
            self.push(again_ms, target, _Twin(event, key))
            return
        self.push(at_ms, target, event)

    def _save(self, node: SimNode, save: SaveJob) -> None:
        engine = node.engine
        assert engine is not None
        job = engine.publisher.jobs.get(save.job_id)
        if job is not None and job.phase.value in ("paid", "failed"):
            node.saved.pop(save.job_id, None)  # finished: a restart need not resume it
        else:
            node.saved[save.job_id] = save.state

    def _fetch(self, node: SimNode, fetch: FetchBlob) -> None:
        source = self.index_by_peer.get(fetch.peer)
        ok = (
            fetch.blob_hash in self.blob_bytes
            and source is not None
            and self.nodes[source].alive
            and self.network.reachable(source, node.index)
        )
        if ok and source is not None:
            delay_ms = self.network.transfer_ms(source, node.index, fetch.size_bytes)
            event: object = BlobFetched(fetch.blob_hash)
        else:
            delay_ms, event = BLOB_FAIL_MS, BlobFetchFailed(fetch.blob_hash, "unreachable")
        self.push(self.now_ms + delay_ms, node.index, _Local(event, node.life))

    def _run(self, node: SimNode, run: RunJob) -> None:
        """The sandbox stand-in: the role's output and fuel, after a run time set by the fuel."""
        key = bytes(node.identity.public_key)
        trusted = node.role == faults.TRUST_CHEATER and self.trusted(node, run.job_id)
        result = faults.role_result(
            node.role, run.module_hash, run.input_hash, key, trusted=trusted
        )
        if result is None:
            return  # a staller: no JobExecuted, ever
        output, fuel = result
        honest, _ = faults.honest_result(run.module_hash, run.input_hash)
        self.runs[(bytes(run.job_id), key)] = output == honest
        output_hash = hashlib.sha256(output).digest()
        event = JobExecuted(run.job_id, True, output_hash, output, fuel, "")
        at_ms = self.now_ms + faults.run_ms(fuel, node.profile.fuel_per_s)
        self.push(at_ms, node.index, _Local(event, node.life))

    def result_of(self, job_id: bytes, worker_key: bytes) -> bool | None:
        return self.runs.get((job_id, worker_key))

    # Nodes going down and coming back

    def start(self, node: SimNode) -> None:
        """Bring ``node`` up with a fresh engine over its (reopened) ledger."""
        config = EngineConfig(
            node.identity, node.profile, verify_signatures=self._verify, jobs=self._jobs_config
        )
        if node.engine is not None:
            node.ledger = node.ledger.reopen()  # a restart: the chain is verified from genesis
        engine = Engine(config, self._engine_rng, node.ledger.view())
        node.engine, node.alive = engine, True
        node.timers.clear()
        self.step_engine(node, Started())
        for job_id in sorted(node.saved):  # the daemon's restore path: one event per saved job
            self.counters["jobs_restored"] += 1
            self.step_engine(node, JobRestored(node.saved[job_id]))
        self.checker.on_ledger(node.index, node.ledger, self.now_ms)

    def stop(self, node: SimNode) -> None:
        """Crash ``node``: its queued timers die; publishers of its tasks see it disconnect."""
        engine = node.engine
        assert engine is not None
        node.alive = False
        node.life += 1
        node.timers.clear()
        publishers = sorted({task.publisher for task in engine.worker.tasks.values()})
        for publisher in publishers:
            target = self.index_by_peer.get(publisher)
            if target is not None:
                at_ms = self.now_ms + self.network.latency_ms(node.index, target)
                self.push(at_ms, target, PeerDisconnected(node.peer_id))

    def fork(self, node: SimNode) -> None:
        """The forker signs a twin of its head and shows each of two neighbours one of the two;
        its engine's own head gossip then shows the real one (or its successors) to both, and
        the twin's holder convicts. The checker counts the fork as injected only when the twin
        reaches a live node: a twin sent to a node that is down, or lost, exposes no fork that
        any honest node could see (docs/testing.md)."""
        engine = node.engine
        assert engine is not None
        heads = faults.forged_heads(node.ledger)
        targets = self.network.gossip_targets(node.index)
        for wire, target in zip(heads, targets, strict=False):
            data = engine.seal(HeadGossip(wire), now_ms=self.local_ms(node), ttl_ms=HEADS_TTL_MS)
            if wire is heads[1]:  # the twin: the fork counts once a live node receives it
                self._forged[data] = bytes(node.identity.public_key)
            if self.nodes[target].alive and self.network.delivers(node.index, target):
                self._deliver(node, target, MessageReceived(node.peer_id, TOPIC_HEADS, data))


def _signature_ok(data: bytes) -> bool:
    """Whether ``data`` is an envelope whose signature matches the author named inside it."""
    try:
        wire = decode_as(data, EnvelopeWire)
        signed = decode_as(wire.signed, SignedWire)
    except RemoteProtocolError:
        return False  # the engine refuses it, and says why
    return verify_signature(signed.author, wire.signed, wire.signature)
