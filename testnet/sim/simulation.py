"""A whole simulated run: build the nodes, schedule jobs and faults, run safety then liveness.

I/O: none (progress goes to the callback it is given). Time: simulated ms. Randomness: derived
from the run seed only, so a run replays exactly from (seed, nodes, jobs, scenario, flags).

Safety phase (``duration_s``): jobs arrive, the scenario's faults are on (loss, a partition,
churn, crashes, forks) with the fault classes of ``FaultRates`` (clocks, duplication,
reordering, storage, connection order), and the checkers run after every step. Liveness phase:
the network heals, every node that is down comes back, no new fault starts; the run ends when
every job is paid or failed and every payment is settled or cancelled, or fails when
``liveness_limit_s`` passes first.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable
from typing import Final

from hearth.protocol.adaptive import VERIFY_ALWAYS_2, VERIFY_POLICIES, AdaptiveConfig
from hearth.protocol.bidding import WorkerConfig
from hearth.protocol.effects import JobProgress
from hearth.protocol.events import PublishJob, ReleaseHeldPay
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import JobId, result_digest
from hearth.protocol.publisher_state import PublisherConfig, PublisherJob
from hearth.testnet.scenario import Scenario
from hearth.testnet.sim import faults
from hearth.testnet.sim.checkers import Checker
from hearth.testnet.sim.cluster import T0_MS, Cluster, Control, SimNode
from hearth.testnet.sim.fault_rates import FaultRates, swarm
from hearth.testnet.sim.network import Network, NetworkConfig

MODULES: Final = 8  # jobs share a few modules, as real workloads do
MODULE_BYTES: Final = 200_000
INPUT_BYTES: Final = 10_000
JOB_DEADLINE_MS: Final = 90_000
LEASE_MS: Final = 15_000
# Honest runs use at most 8 x 10^8 fuel (faults.honest_result): a bound every host profile can
# finish before the deadline, so that slow hosts still bid (protocol.bidding, "cannot-finish").
JOB_FUEL_MAX: Final = 10**9
TICK_MS: Final = 1_000
SAMPLE_MS: Final = 5_000
SAMPLED_NODES: Final = 24  # nodes whose balance is recorded over time, for the plot
PUBLISHER_ROLES: Final = frozenset({faults.HONEST, "crash_restart"})


@dataclasses.dataclass(frozen=True)
class SimConfig:
    nodes: int
    jobs: int
    seed: int
    scenario: Scenario = dataclasses.field(default_factory=Scenario)
    scenario_path: str = ""
    fake_signatures: bool = False
    network: NetworkConfig = dataclasses.field(default_factory=NetworkConfig)
    liveness_limit_s: int = 600
    faults: FaultRates = dataclasses.field(default_factory=FaultRates)
    swarm: bool = False  # draw ``faults`` from the seed instead (fault_rates.swarm)
    verify: str = VERIFY_ALWAYS_2  # every job's policy (protocol.adaptive, ADR 0034)
    adaptive: AdaptiveConfig = dataclasses.field(default_factory=AdaptiveConfig)
    publishers: int = 0  # 0: any honest node publishes; k: only the first k honest nodes
    backlog: int = 0  # jobs a host takes beyond its cores, queued (WorkerConfig.backlog)

    def __post_init__(self) -> None:
        assert self.verify in VERIFY_POLICIES, self.verify

    @property
    def rates(self) -> FaultRates:
        """The fault rates this run uses: the seed's swarm draw, or the ones given."""
        return swarm(self.seed) if self.swarm else self.faults


@dataclasses.dataclass(slots=True)
class JobRecord:
    job_id: JobId
    publisher: int
    published_ms: int
    honest_digest: bytes
    phase: str = "bidding"
    finished_ms: int = -1
    awards: int = 0


class Simulation:
    def __init__(self, config: SimConfig, progress: Callable[[str], None] | None = None) -> None:
        self.config = config
        self.scenario = config.scenario
        self._progress = progress or (lambda line: None)
        seed = config.seed
        self.rng = random.Random(f"{seed}:faults")
        profiles, self.roles = faults.assign(self.scenario, config.nodes, self.rng)
        ips = [faults.address(i, role, self.rng) for i, role in enumerate(self.roles)]
        links = [faults.PROFILES[name][0] for name in profiles]
        self.rates = rates = config.rates
        loss_pct = self.scenario.loss_pct if rates.loss_pct is None else rates.loss_pct
        net_config = dataclasses.replace(config.network, loss_pct=loss_pct)
        network = Network(links, ips, net_config, random.Random(f"{seed}:net"))
        nodes = [
            SimNode(i, role, _identity(seed, i), faults.host_profile(profiles[i], role, i))
            for i, role in enumerate(self.roles)
        ]
        self.checker = Checker(
            config.nodes, self._result_of, solo_may_err=config.verify != VERIFY_ALWAYS_2
        )
        publisher_config = PublisherConfig(award_reply_timeout_ms=5_000, adaptive=config.adaptive)
        self.cluster = Cluster(
            seed,
            nodes,
            network,
            self.checker,
            verify_signatures=not config.fake_signatures,
            publisher_config=publisher_config,
            rates=rates,
            worker_config=WorkerConfig(backlog=config.backlog),
        )
        self.cluster.on_progress = self._on_progress
        self.cluster.on_control = self._on_control
        self.cluster.trusted = self._trusted
        honest = [n.index for n in nodes if n.role == faults.HONEST]
        self.publishers = honest[: config.publishers] if config.publishers else []
        self.jobs: dict[bytes, JobRecord] = {}
        self.job_order: list[bytes] = []
        # Each job's publisher record, kept here too: a publisher forgets finished jobs beyond
        # PUBLISHER_JOBS_KEPT_MAX, and a long experiment reads every one at the end.
        self.publisher_jobs: dict[bytes, PublisherJob] = {}
        self.phase = "safety"
        self.safety_end_ms = T0_MS + self.scenario.duration_s * 1000
        self.finished = False
        self.batch_ended: set[int] = set()  # publishers told that their batch is over
        self.sampled = sorted(
            self.rng.sample(range(config.nodes), min(SAMPLED_NODES, config.nodes))
        )
        self.balance_samples: list[tuple[int, list[int]]] = []
        self._churn_acc = 0
        self._schedule()

    def _result_of(self, job_id: bytes, worker_key: bytes) -> bool | None:
        return self.cluster.result_of(job_id, worker_key)

    # Schedule

    def _schedule(self) -> None:
        cluster, s = self.cluster, self.scenario
        for node in cluster.nodes:  # staggered starts, so ads do not all fire at once
            cluster.push(T0_MS + self.rng.randrange(5_000), node.index, Control("up", node.index))
        spacing_ms = _spacing_ms(self.config.jobs, s.job_rate_per_s, s.duration_s)
        for j in range(self.config.jobs):
            at_ms = T0_MS + 5_000 + j * spacing_ms + self.rng.randrange(max(1, spacing_ms))
            cluster.push(at_ms, -1, Control("job", j))
        if s.partition_at_s >= 0:
            cluster.push(T0_MS + s.partition_at_s * 1000, -1, Control("partition"))
            cluster.push(T0_MS + s.partition_heal_s * 1000, -1, Control("heal"))
        for node in cluster.nodes:
            if node.role == "crash_restart":
                at_ms = T0_MS + self.rng.randrange(5_000, max(5_001, s.duration_s * 1000))
                cluster.push(at_ms, -1, Control("crash", node.index))
            elif node.role == "ledger_forker":
                at_ms = T0_MS + self.rng.randrange(10_000, max(10_001, s.duration_s * 700))
                cluster.push(at_ms, -1, Control("fork", node.index))
        cluster.push(T0_MS + TICK_MS, -1, Control("tick"))
        cluster.push(self.safety_end_ms, -1, Control("liveness"))

    def _on_control(self, control: Control) -> None:
        handler = getattr(self, f"_control_{control.kind}")
        handler(control.arg)

    def _control_up(self, index: int) -> None:
        node = self.cluster.nodes[index]
        if not node.alive:
            self.cluster.start(node)

    def _control_down(self, index: int) -> None:
        node = self.cluster.nodes[index]
        if node.alive:
            self.cluster.stop(node)

    def _control_crash(self, index: int) -> None:
        if self.phase != "safety":
            return
        self._control_down(index)
        down_ms = self.rng.randrange(3_000, 8_000)
        self.cluster.push(self.cluster.now_ms + down_ms, -1, Control("up", index))
        again_ms = self.cluster.now_ms + down_ms + self.rng.randrange(10_000, 30_000)
        if again_ms < self.safety_end_ms:
            self.cluster.push(again_ms, -1, Control("crash", index))

    def _control_fork(self, index: int) -> None:
        node = self.cluster.nodes[index]
        if node.alive and self.phase == "safety":
            self.cluster.fork(node)

    def _control_partition(self, _: int) -> None:
        if self.phase == "safety":
            self.cluster.network.partition(self.scenario.partition_pct)

    def _control_heal(self, _: int) -> None:
        self.cluster.network.partitioned = False

    def _control_liveness(self, _: int) -> None:
        """Heal every fault and bring every node back; from now on jobs must settle."""
        self.phase = "liveness"
        self.cluster.network.heal()
        self.cluster.heal()
        for node in self.cluster.nodes:
            if not node.alive:
                self._control_up(node.index)
        self._progress(f"t={self._t_s()}s liveness phase: faults healed, every node up")

    def _control_tick(self, _: int) -> None:
        now_ms = self.cluster.now_ms
        if self.phase == "safety":
            self._churn()
        if (now_ms - T0_MS) % SAMPLE_MS == 0:
            self._sample()
        if self.phase == "liveness" and self._settled():
            self.finished = True
            return
        if now_ms - self.safety_end_ms > self.config.liveness_limit_s * 1000:
            self.finished = True  # the checker's final() reports what never settled
            return
        self.cluster.push(now_ms + TICK_MS, -1, Control("tick"))

    def _churn(self) -> None:
        pct = self.scenario.down_pct_per_min
        if not pct:
            return
        self._churn_acc += len(self.cluster.nodes) * pct * 1000 // 6000
        count, self._churn_acc = divmod(self._churn_acc, 1000)
        for _ in range(count):
            index = self.rng.randrange(len(self.cluster.nodes))
            if self.cluster.nodes[index].alive:
                self._control_down(index)
                back_ms = self.cluster.now_ms + self.scenario.downtime_s * 1000
                self.cluster.push(back_ms, -1, Control("up", index))

    def _sample(self) -> None:
        balances = [self.cluster.nodes[i].ledger.balance_mc() for i in self.sampled]
        self.balance_samples.append((self.cluster.now_ms - T0_MS, balances))
        done = sum(1 for r in self.jobs.values() if r.phase in ("paid", "failed"))
        self._progress(
            f"t={self._t_s()}s {self.phase}: {self.cluster.events} events, "
            f"{len(self.jobs)} jobs published, {done} settled, "
            f"{self.checker.pending_pays} pays pending"
        )

    def _t_s(self) -> int:
        return (self.cluster.now_ms - T0_MS) // 1000

    def _settled(self) -> bool:
        if len(self.jobs) < self.config.jobs:
            return False
        if self.checker.pending_pays or self.checker.unsettled_mc:
            return False
        if not all(r.phase in ("paid", "failed") for r in self.jobs.values()):
            return False
        return not self._release_held_pay()

    def _release_held_pay(self) -> bool:
        """Every job is settled: the batch is over, so each publisher pays what it still holds
        for hosts never caught, once its audits are done (ADR 0034, amendment). True while
        some pay is still held."""
        held = False
        for node in self.cluster.nodes:
            engine = node.engine
            if engine is None or not node.alive or not engine.publisher.escrow.held:
                continue
            held = True
            if node.index not in self.batch_ended:
                self.batch_ended.add(node.index)
                self.cluster.step_engine(node, ReleaseHeldPay())
        return held

    # Jobs

    def _control_job(self, j: int) -> None:
        publisher = self._pick_publisher(j)
        seed = self.config.seed
        module_hash = hashlib.sha256(f"module:{j % MODULES}".encode()).digest()
        input_hash = hashlib.sha256(f"{seed}:input:{j}".encode()).digest()
        job_id = JobId(hashlib.sha256(f"{seed}:job:{j}".encode()).digest()[:16])
        self.cluster.blob_bytes[module_hash] = MODULE_BYTES
        self.cluster.blob_bytes[input_hash] = INPUT_BYTES
        output, fuel = faults.honest_result(module_hash, input_hash)
        honest = result_digest(job_id, "", hashlib.sha256(output).digest(), fuel)
        now_ms = self.cluster.now_ms
        self.jobs[job_id] = JobRecord(job_id, publisher, now_ms, honest)
        local_ms = self.cluster.local_ms(self.cluster.nodes[publisher])
        self.job_order.append(job_id)
        command = PublishJob(
            job_id=job_id,
            runtime="wasm",
            module_hash=module_hash,
            module_bytes=MODULE_BYTES,
            input_hash=input_hash,
            input_bytes=INPUT_BYTES,
            fuel_max=JOB_FUEL_MAX,
            memory_mb_max=256,
            deadline_ms=local_ms + JOB_DEADLINE_MS,
            max_price_mc_per_tfuel=50_000,
            bid_window_ms=1_000,
            replicas=self.scenario.replicas,
            replicas_max=self.scenario.replicas_max,
            lease_ms=LEASE_MS,
            verify=self.config.verify,
        )
        self.cluster.step_engine(self.cluster.nodes[publisher], command)

    def _trusted(self, node: SimNode, job_id: bytes) -> bool:
        """Would the publisher of ``job_id`` run it on ``node`` alone? (trust_cheater's view)"""
        record = self.jobs.get(job_id)
        engine = None if record is None else self.cluster.nodes[record.publisher].engine
        if engine is None:
            return False
        streak = engine.reputation.get(node.peer_id).valid_streak
        return streak >= self.config.adaptive.trust_streak_min

    def _pick_publisher(self, j: int) -> int:
        """A random live honest node; every job has a publisher, even if it must search."""
        if self.publishers:
            index = self.publishers[j % len(self.publishers)]
            self._control_up(index)
            return index
        nodes = self.cluster.nodes
        start = self.rng.randrange(len(nodes))
        for offset in range(len(nodes)):
            node = nodes[(start + offset) % len(nodes)]
            if node.alive and node.role in PUBLISHER_ROLES:
                return node.index
        for offset in range(len(nodes)):
            node = nodes[(start + offset) % len(nodes)]
            if node.role in PUBLISHER_ROLES:
                self._control_up(node.index)
                return node.index
        raise ValueError("the scenario leaves no honest node to publish jobs")

    def _on_progress(self, node: SimNode, progress: JobProgress) -> None:
        engine = node.engine
        job = None if engine is None else engine.publisher.jobs.get(progress.job_id)
        if job is None:
            return
        self.publisher_jobs[progress.job_id] = job  # audits and re-runs too
        record = self.jobs.get(progress.job_id)
        if record is None:
            return
        if progress.phase == "paid" and record.phase == "paid":
            self.checker.on_paid_again(progress.job_id, self.cluster.now_ms)
        self.checker.on_job(job, record.honest_digest, self.cluster.now_ms)
        if progress.phase in ("paid", "failed") and record.phase not in ("paid", "failed"):
            record.finished_ms = self.cluster.now_ms
            record.awards = len(job.slots)
        record.phase = progress.phase

    # Running

    def run(self) -> None:
        cluster = self.cluster
        while not self.finished and cluster.next_ms() is not None:
            cluster.step()
        unsettled = [
            job for job in self.job_order if self.jobs[job].phase not in ("paid", "failed")
        ]
        self.checker.final(unsettled, cluster.now_ms)


def _identity(seed: int, index: int) -> Identity:
    return Identity(hashlib.sha256(f"{seed}:{index}:key".encode()).digest())


def _spacing_ms(jobs: int, rate_per_s: int, duration_s: int) -> int:
    """Arrivals at the scenario's rate, squeezed so that every job arrives in the safety phase."""
    if jobs == 0:
        return 1
    by_rate = 1000 // max(1, rate_per_s)
    by_duration = max(1, (duration_s * 1000 - 5_000) // jobs)
    return max(1, min(by_rate, by_duration))
