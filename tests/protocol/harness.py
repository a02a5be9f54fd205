"""An in-memory network of engines for job tests: a heap of deliveries, timers, a fake sandbox.

Every node is a real ``protocol.engine.Engine``. Effects are carried out here the way node/ and
the simulator carry them out: Publish reaches every other live node and Send its target after a
fixed latency, SetTimer fires at its time unless replaced or cancelled, FetchBlob answers from a
shared blob store, and RunJob runs a fake sandbox whose output is a hash of module and input (a
*liar* returns a wrong output, a *staller* never finishes). Runs are deterministic. Each node's
effects go through its own ``protocol.interpreter.Interpreter``, the one the daemon and the
simulator use, with this harness's handlers registered; a restarted publisher gets its saved
job back as a ``JobRestored`` event, as a restarted daemon does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import heapq
import random
from collections.abc import Callable
from typing import Any

from hearth.ledger.errors import LedgerUnavailableError
from hearth.ledger.memory import MemoryLedger
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
from hearth.protocol.envelope import Envelope, open_envelope
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
    PublishJob,
    RttMeasured,
    Started,
    TimerFired,
)
from hearth.protocol.identity import Identity, PeerId
from hearth.protocol.interpreter import Interpreter
from hearth.protocol.job_messages import JobId
from hearth.protocol.jobs_config import JobsConfig
from hearth.protocol.messages import PROTOCOL_BID
from hearth.protocol.pricing import PricingConfig
from hearth.protocol.publisher_state import PublisherConfig
from hearth.protocol.timers import TimerKey

T0_MS = 1_800_000_000_000
LATENCY_MS = 10
RUN_MS = 400
FUEL_PER_INPUT_BYTE = 10**9


FAILED_STDERR = b"Traceback (most recent call last):\nValueError: bad input line 3\n"


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def honest_output(module: bytes, data: bytes) -> bytes:
    """What every honest replica computes; an input starting "big:" gives a 100 kB output."""
    output = b"out:" + sha256(module + data)
    return output * 3000 if data.startswith(b"big:") else output


@dataclasses.dataclass(frozen=True, slots=True)
class _Wake:
    """A timer's deadline on the heap; it fires only if the node's timer table still holds it."""

    key: TimerKey
    at_ms: int


def _ignore(effect: Effect) -> None:
    return None


def make_profile(index: int, *, operator: str | None = None, power_w: int = 100) -> HostProfile:
    return HostProfile(
        cores_offered=2,
        memory_mb_offered=1024,
        fuel_per_s=10**9,
        runtimes=("wasm",),
        availability_hours_mask=2**24 - 1,
        energy_source="grid",
        operator=f"op{index}" if operator is None else operator,
        pricing=PricingConfig(power_w + 10 * index, (300_000,) * 24),
    )


@dataclasses.dataclass
class Node:
    index: int
    engine: Engine
    ip: str
    behaviour: str = "honest"  # honest | liar | garbage | stall | mute (bids, then silent)
    alive: bool = True
    interpreter: Interpreter[None] = dataclasses.field(default_factory=Interpreter)
    ledger: MemoryLedger | None = None  # what the engine's CommitEntries made durable
    effects: list[tuple[int, Any]] = dataclasses.field(default_factory=list)

    @property
    def peer_id(self) -> PeerId:
        return self.engine.identity.peer_id


def step_committing(
    step: Callable[[Any, int], list[Any]], ledger: MemoryLedger, event: Any, now_ms: int
) -> list[Any]:
    """Step an engine and carry out its ``CommitEntries`` against ``ledger``, as the daemon does.

    Returns the step's effects, each ``CommitEntries`` replaced by its ``then`` (if the commit
    succeeded) and by the effects of the engine's answer to the commit.
    """
    out: list[Any] = []

    def commit(effect: CommitEntries) -> None:
        try:
            ledger.append_many(effect.entries)
        except LedgerUnavailableError as exc:
            failed = CommitFailed(effect.entries[0].seq, exc.reason)
            out.extend(step_committing(step, ledger, failed, now_ms))
            return
        out.extend(effect.then)
        done = EntriesCommitted(effect.entries[-1].seq)
        out.extend(step_committing(step, ledger, done, now_ms))

    # By exact type, as the interpreter dispatches; every other effect is returned as it is.
    handlers: dict[type, Callable[[Any], None]] = {CommitEntries: commit}
    for effect in step(event, now_ms):
        handlers.get(type(effect), out.append)(effect)
    return out


class LedgerEngine(Engine):
    """An engine and the ledger its commits go to, stepped as one node (tests without a cluster)."""

    def __init__(self, config: EngineConfig, rng: random.Random, ledger: MemoryLedger) -> None:
        super().__init__(config, rng, ledger.view())
        self.store = ledger

    def step(self, event: object, now_ms: int) -> list[Any]:
        return step_committing(super().step, self.store, event, now_ms)


class Cluster:
    def __init__(
        self,
        n: int,
        *,
        seed: int = 0,
        behaviours: dict[int, str] | None = None,
        operators: dict[int, str] | None = None,
        ips: dict[int, str] | None = None,
        publisher_config: PublisherConfig | None = None,
        ledgers: bool = False,
        drop: Callable[[int, Send], bool] | None = None,
        market: bool = False,
    ) -> None:
        self.now_ms = T0_MS
        self.with_ledgers = ledgers
        self.drop = drop  # (sending node index, Send) -> True to lose the message
        self.seed = seed
        self._queue: list[tuple[int, int, int, Any]] = []
        self._seq = 0
        self.blobs: dict[bytes, bytes] = {}
        self.inline_blobs = 0  # blobs that came inside an award, not fetched
        self.wire: list[tuple[int, int, Any]] = []  # (time, from node, Send | Publish)
        self.publisher_config = publisher_config or PublisherConfig(network_prefix_v4=32)
        self.nodes: list[Node] = []
        for i in range(n):
            ip = (ips or {}).get(i, f"127.0.0.{i + 2}")
            profile = make_profile(i, operator=(operators or {}).get(i))
            engine, ledger = self._engine(i, profile)
            node = Node(i, engine, ip, (behaviours or {}).get(i, "honest"), ledger=ledger)
            node.interpreter = self._interpreter(node)
            self.nodes.append(node)
        self.by_peer = {node.peer_id: node for node in self.nodes}
        for node in self.nodes:
            for other in self.nodes:
                if other is not node:
                    self._push(self.now_ms, node.index, PeerConnected(other.peer_id, other.ip))
                    rtt_ms = 2 * LATENCY_MS + 3 * abs(node.index - other.index)
                    self._push(self.now_ms, node.index, RttMeasured(other.peer_id, rtt_ms))
        if market:  # every node publishes its capacity ad: publishers invite from the view
            for node in self.nodes:
                self._push(self.now_ms, node.index, Started())
            self.run_for(2 * LATENCY_MS)
        self.run_for(0)

    def _engine(
        self, index: int, profile: HostProfile, rng_tag: str = ""
    ) -> tuple[Engine, MemoryLedger | None]:
        identity = Identity(hashlib.sha256(f"node{index}".encode()).digest())
        config = EngineConfig(identity, profile, jobs=JobsConfig(publisher=self.publisher_config))
        ledger = MemoryLedger(identity, now_ms=T0_MS) if self.with_ledgers else None
        rng = random.Random(f"{self.seed}:{index}{rng_tag}")
        return Engine(config, rng, ledger.view() if ledger is not None else None), ledger

    # Driving

    def _push(self, at_ms: int, index: int, event: Any) -> None:
        self._seq += 1
        heapq.heappush(self._queue, (at_ms, self._seq, index, event))

    def inject(self, index: int, event: Any, delay_ms: int = 0) -> None:
        self._push(self.now_ms + delay_ms, index, event)

    def publish_job(self, index: int, module: bytes, data: bytes, **spec: Any) -> JobId:
        """Store the blobs at the publisher and inject a PublishJob; returns the job id."""
        module_hash, input_hash = sha256(module), sha256(data)
        self.blobs[module_hash], self.blobs[input_hash] = module, data
        job_id = JobId(sha256(module_hash + input_hash + str(self.now_ms).encode())[:16])
        fields: dict[str, Any] = {
            "job_id": job_id,
            "runtime": "wasm",
            "module_hash": module_hash,
            "module_bytes": len(module),
            "input_hash": input_hash,
            "input_bytes": len(data),
            # A realistic bound: half again what the fake sandbox burns (_run_job), so that the
            # hosts (10^9 fuel/s) can finish it in time and still bid (protocol.bidding).
            "fuel_max": FUEL_PER_INPUT_BYTE * (1 + len(data)) * 3 // 2,
            "memory_mb_max": 256,
            "deadline_ms": self.now_ms + 120_000,
            "max_price_mc_per_tfuel": 50_000,
            "bid_window_ms": 1_000,
        }
        fields.update(spec)
        self.inject(index, PublishJob(**fields))
        return job_id

    def run_until(self, done: Callable[[], bool], limit_ms: int = 300_000) -> None:
        end_ms = self.now_ms + limit_ms
        while self._queue and not done():
            if self._queue[0][0] > end_ms:
                break
            self._step()
        assert done(), "condition not reached"

    def run_for(self, duration_ms: int) -> None:
        end_ms = self.now_ms + duration_ms
        while self._queue and self._queue[0][0] <= end_ms:
            self._step()
        self.now_ms = max(self.now_ms, end_ms)

    def _step(self) -> None:
        at_ms, _, index, event = heapq.heappop(self._queue)
        self.now_ms = max(self.now_ms, at_ms)
        node = self.nodes[index]
        if not node.alive:
            return
        if isinstance(event, _Wake):  # a timer, fired only if its deadline still stands
            if not node.interpreter.timers.take(event.key, event.at_ms):
                return
            event = TimerFired(event.key)
        self.carry_out(node, node.engine.step(event, self.now_ms))

    def carry_out(self, node: Node, effects: list[Effect]) -> None:
        for effect in effects:
            node.effects.append((self.now_ms, effect))
            node.interpreter.run(effect)

    # Effects: this harness's handlers, registered in each node's interpreter

    def _interpreter(self, node: Node) -> Interpreter[None]:
        def wake(key: TimerKey, at_ms: int) -> None:
            self._push(at_ms, node.index, _Wake(key, at_ms))

        interpreter: Interpreter[None] = Interpreter(wake)
        interpreter.register(Publish, lambda effect: self._publish(node, effect))
        interpreter.register(Send, lambda effect: self._send(node, effect))
        interpreter.register(FetchBlob, lambda effect: self._fetch(node, effect))
        interpreter.register(RunJob, lambda effect: self._run_job(node, effect))
        interpreter.register(CommitEntries, lambda effect: self._commit(node, effect))
        interpreter.register(AwaitSaves, lambda effect: self.carry_out(node, list(effect.then)))
        # Recorded in ``node.effects`` for the tests to read; nothing else to do here.
        recorded = (
            Penalise,
            BanPeer,
            Log,
            AbortJob,
            PayWorker,
            RecordMismatch,
            JobProgress,
            SaveJob,
        )
        for kind in recorded:
            interpreter.register(kind, _ignore)
        assert not interpreter.missing(), interpreter.missing()
        return interpreter

    def _publish(self, node: Node, effect: Publish) -> None:
        self.wire.append((self.now_ms, node.index, effect))
        for other in self.nodes:
            if other is not node:
                event = MessageReceived(node.peer_id, effect.topic, effect.data)
                self._push(self.now_ms + LATENCY_MS, other.index, event)

    def _send(self, node: Node, effect: Send) -> None:
        self.wire.append((self.now_ms, node.index, effect))
        if node.behaviour == "mute" and effect.protocol != PROTOCOL_BID:
            return  # bids, then silence
        if self.drop is not None and self.drop(node.index, effect):
            return
        target = self.by_peer.get(effect.peer)
        if target is None:
            return  # an identity the test made up: nobody listens
        event = MessageReceived(node.peer_id, effect.protocol, effect.data)
        self._push(self.now_ms + LATENCY_MS, target.index, event)

    def _fetch(self, node: Node, effect: FetchBlob) -> None:
        if effect.data and sha256(effect.data) == effect.blob_hash:
            self.inline_blobs += 1
            self._push(self.now_ms, node.index, BlobFetched(effect.blob_hash))  # came in the award
            return
        source = self.by_peer.get(effect.peer)
        # A blob comes from the peer that holds it: not from one that is down.
        found = effect.blob_hash in self.blobs and (source is None or source.alive)
        answer: Any = (
            BlobFetched(effect.blob_hash)
            if found
            else BlobFetchFailed(effect.blob_hash, "not-found")
        )
        self._push(self.now_ms + 2 * LATENCY_MS, node.index, answer)

    def _commit(self, node: Node, commit: CommitEntries) -> None:
        """As the daemon does: append in one group, then the sends, then tell the engine."""
        assert node.ledger is not None
        try:
            node.ledger.append_many(commit.entries)
        except LedgerUnavailableError as exc:
            failed = CommitFailed(commit.entries[0].seq, exc.reason)
            self.carry_out(node, node.engine.step(failed, self.now_ms))
            return
        self.carry_out(node, list(commit.then))
        done = EntriesCommitted(commit.entries[-1].seq)
        self.carry_out(node, node.engine.step(done, self.now_ms))

    def _run_job(self, node: Node, run: RunJob) -> None:
        if node.behaviour == "stall":
            return
        output = honest_output(self.blobs[run.module_hash], self.blobs[run.input_hash])
        if node.behaviour == "liar":
            output = b"lie:" + node.peer_id.encode()
        fuel_used = FUEL_PER_INPUT_BYTE * (1 + len(self.blobs[run.input_hash]))
        self.blobs[sha256(output)] = output
        event = JobExecuted(run.job_id, True, sha256(output), output, fuel_used, "")
        if node.behaviour.startswith("fails"):  # exits 1; "fails:<text>" prints other stderr
            stderr = node.behaviour.partition(":")[2].encode() or FAILED_STDERR
            event = JobExecuted(run.job_id, False, sha256(b""), b"", fuel_used, "exit", 1, stderr)
        if node.behaviour == "garbage":  # claims the honest hash, sends other bytes
            event = JobExecuted(run.job_id, True, sha256(output), b"garbage", fuel_used, "")
        self._push(self.now_ms + RUN_MS, node.index, event)

    # Faults

    def kill(self, index: int) -> None:
        node = self.nodes[index]
        node.alive = False
        for other in self.nodes:
            if other is not node and other.alive:
                self.inject(other.index, PeerDisconnected(node.peer_id))

    def restart_publisher(self, index: int, job_id: JobId) -> list[Effect]:
        """A fresh engine for node ``index`` restored from its last SaveJob of ``job_id``."""
        node = self.nodes[index]
        state = self.saved_state(index, job_id)
        engine, node.ledger = self._engine(
            index, node.engine.config.profile, rng_tag=f"@{self.now_ms}"
        )
        node.engine, node.alive = engine, True
        node.interpreter.timers.clear()  # a crash loses every timer; wake-ups left find none
        for other in self.nodes:
            if other is not node:
                engine.step(PeerConnected(other.peer_id, other.ip), self.now_ms)
        effects = engine.step(JobRestored(state), self.now_ms)
        self.carry_out(node, effects)
        return effects

    # Observations

    def of_type(self, index: int, kind: type) -> list[Any]:
        return [effect for _, effect in self.nodes[index].effects if isinstance(effect, kind)]

    def all_of_type(self, kind: type) -> list[Any]:
        return [e for node in self.nodes for _, e in node.effects if isinstance(e, kind)]

    def saved_state(self, index: int, job_id: JobId) -> bytes:
        saves: list[bytes] = [e.state for e in self.of_type(index, SaveJob) if e.job_id == job_id]
        return saves[-1]

    def phase(self, index: int, job_id: JobId) -> str:
        job = self.nodes[index].engine.publisher.jobs.get(job_id)
        return "" if job is None else job.phase.value

    def finished(self, index: int, job_id: JobId) -> Callable[[], bool]:
        return lambda: self.phase(index, job_id) in ("paid", "failed")

    def payments(self, job_id: JobId) -> list[PayWorker]:
        return [p for p in self.all_of_type(PayWorker) if p.job_id == job_id]

    def mismatches(self, job_id: JobId) -> list[RecordMismatch]:
        return [m for m in self.all_of_type(RecordMismatch) if m.job_id == job_id]

    def progress(self, index: int, job_id: JobId) -> list[str]:
        phases = [p.phase for p in self.of_type(index, JobProgress) if p.job_id == job_id]
        return [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]

    def sends_of(self, index: int, kind: type) -> list[tuple[int, Any, Envelope]]:
        """Messages of ``kind`` that node ``index`` sent, opened (for taps and replays)."""
        found = []
        for at_ms, sender, effect in self.wire:
            if sender != index or not isinstance(effect, Send | Publish):
                continue
            envelope = open_envelope(effect.data, now_ms=at_ms, verify=False)
            if isinstance(envelope.body, kind):
                found.append((at_ms, effect, envelope))
        return found
