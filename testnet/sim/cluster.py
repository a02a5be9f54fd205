"""The discrete-event loop: real protocol engines, a heap of deliveries, effects carried out.

I/O: none. Time: simulated integer ms. Randomness: only ``random.Random`` objects derived from
the run seed (``f"{seed}:{node}"`` for each engine, ``f"{seed}:net"`` for the network).

Theory of operation
-------------------
The heap holds ``(deliver_at_ms, seq, node, event)``; ``seq`` breaks ties so that the order is
total and the run replays exactly. ``step`` pops one item, feeds it to that node's engine and
carries out the effects the engine returns, the way node/ does with real sockets: Publish and
Send become future deliveries over the simulated network, SetTimer a future ``TimerFired``
(stale if the key was re-set or cancelled), FetchBlob and RunJob future ``BlobFetched`` /
``JobExecuted`` from the blob and sandbox stand-ins. Each step's bytes go into the trace hash.

A node that goes down loses its queued timers and local events (``life`` changes), and its
engine; it keeps its ledger. Coming back it gets a fresh engine over ``MemoryLedger.reopen()``,
with the publisher's jobs restored from the last ``SaveJob`` of each, as a restarted daemon would.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import struct
from collections import Counter
from typing import Any

from ledger.audit import HeadGossip
from ledger.errors import LedgerUnavailableError
from ledger.memory import MemoryLedger
from protocol.effects import (
    AbortJob,
    CancelTimer,
    CommitEntries,
    FetchBlob,
    JobProgress,
    Log,
    Penalise,
    Publish,
    RunJob,
    SaveJob,
    Send,
    SetTimer,
)
from protocol.engine import Engine, EngineConfig, HostProfile
from protocol.events import (
    BlobFetched,
    BlobFetchFailed,
    CommitFailed,
    EntriesCommitted,
    JobExecuted,
    MessageReceived,
    PeerConnected,
    PeerDisconnected,
    RestoreJob,
    RttMeasured,
    Started,
    TimerFired,
)
from protocol.heads import HEADS_TTL_MS
from protocol.identity import Identity, PeerId, public_key_from_peer_id
from protocol.jobs_config import JobsConfig
from protocol.messages import TOPIC_HEADS, TOPIC_JOBS
from protocol.publisher_state import PublisherConfig
from testnet.sim import faults
from testnet.sim.checkers import Checker, InvariantViolation
from testnet.sim.network import Network

T0_MS = 1_800_000_000_000  # 08:00 UTC: solar hosts are up
BLOB_FAIL_MS = 2_000
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
        self.timers: dict[str, int] = {}
        self.saved: dict[bytes, bytes] = {}  # job id -> last SaveJob state, open jobs only

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id


class _Timer:
    __slots__ = ("at_ms", "key", "life")

    def __init__(self, key: str, at_ms: int, life: int) -> None:
        self.key, self.at_ms, self.life = key, at_ms, life


class _Local:
    __slots__ = ("event", "life")

    def __init__(self, event: object, life: int) -> None:
        self.event, self.life = event, life


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
    ) -> None:
        self.seed = seed
        self.nodes = nodes
        self.network = network
        self.checker = checker
        self.now_ms = T0_MS
        self.index_by_peer = {node.peer_id: node.index for node in nodes}
        self.blob_bytes: dict[bytes, int] = {}  # the blob store stand-in: hash -> size
        self.runs: dict[tuple[bytes, bytes], bool] = {}  # (job, worker key) -> honest result?
        self.counters: Counter[str] = Counter()
        self.trace = hashlib.sha256()
        self.events = 0
        self._verify = verify_signatures
        self._jobs_config = JobsConfig(publisher=publisher_config)
        self._queue: list[tuple[int, int, int, object]] = []
        self._seq = 0
        self.on_progress: Any = None  # set by Simulation: (node, JobProgress) -> None
        self.on_control: Any = None  # set by Simulation: (Control) -> None

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
            if event.life != node.life or node.timers.get(event.key) != event.at_ms:
                return  # re-set, cancelled, or set before a crash
            del node.timers[event.key]
            self._trace(index, event.key.encode())
            self.step_engine(node, TimerFired(event.key))
        elif isinstance(event, MessageReceived):
            self._trace(index, event.data)
            self._connect(node, event.peer)
            self.step_engine(node, event)
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

    def step_engine(self, node: SimNode, event: object) -> None:
        engine = node.engine
        assert engine is not None
        try:
            effects = engine.step(event, self.now_ms)
        except Exception as exc:  # the engine must never raise on any input: that is a bug
            detail = (
                f"node {node.index} raised {type(exc).__name__}: {exc} on {type(event).__name__}"
            )
            raise InvariantViolation("engine-raised", detail, self.now_ms) from exc
        for effect in effects:
            self._carry_out(node, effect)
        self.checker.on_ledger(node.index, node.ledger, self.now_ms)

    def _connect(self, node: SimNode, peer: PeerId) -> None:
        """A stream implies a connection: tell the engine the peer's address and RTT once."""
        engine = node.engine
        assert engine is not None
        if peer in engine.peer_ips:
            return
        other = self.index_by_peer[peer]
        engine.step(PeerConnected(peer, self.network.ips[other]), self.now_ms)
        engine.step(RttMeasured(peer, self.network.rtt_ms(node.index, other)), self.now_ms)

    # Effects

    def _carry_out(self, node: SimNode, effect: object) -> None:
        kind = type(effect)
        if kind is Send:
            assert isinstance(effect, Send)
            self._send(node, effect)
        elif kind is SetTimer:
            assert isinstance(effect, SetTimer)
            node.timers[effect.key] = effect.at_ms
            self.push(effect.at_ms, node.index, _Timer(effect.key, effect.at_ms, node.life))
        elif kind is Publish:
            assert isinstance(effect, Publish)
            self._publish(node, effect)
        elif kind is CancelTimer:
            assert isinstance(effect, CancelTimer)
            node.timers.pop(effect.key, None)
        elif kind is JobProgress:
            assert isinstance(effect, JobProgress)
            self.on_progress(node, effect)
        elif kind is SaveJob:
            assert isinstance(effect, SaveJob)
            self._save(node, effect)
        elif kind is FetchBlob:
            assert isinstance(effect, FetchBlob)
            self._fetch(node, effect)
        elif kind is RunJob:
            assert isinstance(effect, RunJob)
            self._run(node, effect)
        elif kind is Log:
            assert isinstance(effect, Log)
            if effect.level in ("warning", "error"):
                self.counters[f"log:{effect.event}"] += 1
            if effect.event == "fork-detected":
                author = public_key_from_peer_id(str(dict(effect.fields)["author"]))
                self.checker.on_fork_detected(bytes(author), self.now_ms)
        elif kind is CommitEntries:
            assert isinstance(effect, CommitEntries)
            self._commit(node, effect)
        elif kind is Penalise:
            self.counters["penalties"] += 1
        elif kind is AbortJob:
            self.counters["aborts"] += 1
        else:
            raise InvariantViolation(
                "unknown-effect", f"{kind.__name__} from node {node.index}", self.now_ms
            )

    def _commit(self, node: SimNode, commit: CommitEntries) -> None:
        """The daemon's order: append in one group, then the sends, then tell the engine."""
        try:
            node.ledger.append_many(commit.entries)
        except LedgerUnavailableError as exc:
            self.step_engine(node, CommitFailed(commit.entries[0].seq, exc.reason))
            return
        for effect in commit.then:
            self._carry_out(node, effect)
        self.step_engine(node, EntriesCommitted(commit.entries[-1].seq))

    def _send(self, node: SimNode, send: Send) -> None:
        self.counters["sends"] += 1
        target = self.index_by_peer.get(send.peer)
        if target is None or not self.nodes[target].alive:
            self.counters["sends_refused"] += 1
            return
        if not self.network.delivers(node.index, target):
            self.counters["sends_lost"] += 1
            return
        event = MessageReceived(node.peer_id, send.protocol, send.data)
        self.push(self.now_ms + self.network.latency_ms(node.index, target), target, event)

    def _publish(self, node: SimNode, publish: Publish) -> None:
        self.counters[f"publish:{publish.topic}"] += 1
        if publish.topic == TOPIC_JOBS:
            targets = self.network.call_targets(node.index)
        else:  # capacity ads and ledger heads: the periodic gossip
            targets = self.network.gossip_targets(node.index)
        event = MessageReceived(node.peer_id, publish.topic, publish.data)
        for target in targets:
            if self.nodes[target].alive and self.network.delivers(node.index, target):
                self.push(self.now_ms + self.network.latency_ms(node.index, target), target, event)

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
        result = faults.role_result(node.role, run.module_hash, run.input_hash, key)
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

    def start(self, node: SimNode, rng_tag: str = "") -> None:
        """Bring ``node`` up with a fresh engine over its (reopened) ledger."""
        config = EngineConfig(
            node.identity, node.profile, verify_signatures=self._verify, jobs=self._jobs_config
        )
        if node.engine is not None:
            node.ledger = node.ledger.reopen()  # a restart: the chain is verified from genesis
        rng = random.Random(f"{self.seed}:{node.index}{rng_tag}")
        engine = Engine(config, rng, node.ledger.view())
        node.engine, node.alive, node.timers = engine, True, {}
        self.step_engine(node, Started())
        for job_id in sorted(node.saved):
            self.step_engine(node, RestoreJob(node.saved[job_id]))
        self.checker.on_ledger(node.index, node.ledger, self.now_ms)

    def stop(self, node: SimNode) -> None:
        """Crash ``node``: its queued timers die; publishers of its tasks see it disconnect."""
        engine = node.engine
        assert engine is not None
        node.alive = False
        node.life += 1
        node.timers = {}
        publishers = sorted({task.publisher for task in engine.worker.tasks.values()})
        for publisher in publishers:
            target = self.index_by_peer.get(publisher)
            if target is not None:
                at_ms = self.now_ms + self.network.latency_ms(node.index, target)
                self.push(at_ms, target, PeerDisconnected(node.peer_id))

    def fork(self, node: SimNode) -> None:
        """The forker signs a twin of its head and shows each of two neighbours one of the two;
        its engine's own head gossip then shows the real one to both, and one of them convicts."""
        engine = node.engine
        assert engine is not None
        self.checker.on_fork_injected(bytes(node.identity.public_key), self.now_ms)
        heads = faults.forged_heads(node.ledger)
        targets = self.network.gossip_targets(node.index)
        for wire, target in zip(heads, targets, strict=False):
            data = engine.seal(HeadGossip(wire), now_ms=self.now_ms, ttl_ms=HEADS_TTL_MS)
            if self.nodes[target].alive and self.network.delivers(node.index, target):
                event = MessageReceived(node.peer_id, TOPIC_HEADS, data)
                self.push(self.now_ms + self.network.latency_ms(node.index, target), target, event)
