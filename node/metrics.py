"""The node's Prometheus metrics (``GET /metrics``), in the node's own registry (ADR 0025).

Two kinds of value:

- Counted as they happen, by ``observe``, a driver observer that sees every event the engine
  takes and the effects it returns: ads and calls heard, bids sent and won, sandbox runs and the
  fuel they burnt, verification verdicts on the jobs this node published. The same observer logs
  each job decision as a structured event (``bid-sent``, ``award-accepted``, ``job-phase``,
  ``job-verdict``), so the log tells why a job went where it went.
- Read at scrape time from the node's state by ``_StateCollector``: peers, the market, jobs by
  phase, credits and ledger entries from the chain, the transport's drop counters.

Energy state is set by the energy code through ``NodeMetrics.set_energy``; until it is, the
energy gauges read NaN (unknown), except ``paused`` (0).

py-libp2p has metrics of its own in prometheus_client's global registry, served on 0.0.0.0; they
stay off. Nothing here touches the global registry, so two nodes in one process (tests) keep
their numbers apart.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hearth.node.logs import log
from hearth.protocol.effects import (
    AwaitSaves,
    CommitEntries,
    FetchBlob,
    JobProgress,
    Log,
    Publish,
    Send,
)
from hearth.protocol.events import JobExecuted, MessageReceived, PaymentReceived, PublishJob
from hearth.protocol.messages import PROTOCOL_AWARD, PROTOCOL_BID, TOPIC_CAPACITY, TOPIC_JOBS

if TYPE_CHECKING:
    from hearth.node.runtime import Node

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
FINAL_PHASES = frozenset({"paid", "failed"})


class NodeMetrics:
    """One node's metrics: counters fed by ``observe``, gauges set by ``set_energy``, and the
    node's state read at each scrape once ``attach`` has been given the running node."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ads_heard = Counter("hearth_ads_heard", "Capacity ads received by gossip", registry=r)
        self.dropped_in_engine = Counter(
            "hearth_engine_dropped",
            "Messages the engine dropped after they were queued, by reason",
            labelnames=["reason"],
            registry=r,
        )
        self.calls_heard = Counter(
            "hearth_calls_heard", "Calls for bids received by gossip", registry=r
        )
        self.bids_sent = Counter("hearth_bids_sent", "Bids this host sent", registry=r)
        self.messages_sent = Counter(
            "hearth_messages_sent",
            "Messages this node sent, by stream protocol or gossip topic",
            ["channel"],
            registry=r,
        )
        self.bids_won = Counter(
            "hearth_bids_won", "Awards this host accepted (a bid won)", registry=r
        )
        self.jobs_published = Counter(
            "hearth_jobs_published", "Jobs published from this node", registry=r
        )
        self.jobs_finished = Counter(
            "hearth_jobs_finished",
            "Jobs published from this node that ended, by outcome (paid or failed)",
            ["outcome"],
            registry=r,
        )
        self.verdicts = Counter(
            "hearth_verification_verdicts",
            "Replica verdicts on jobs published here: match, mismatch, declined, dropped",
            ["verdict"],
            registry=r,
        )
        self.sandbox_runs = Counter(
            "hearth_sandbox_runs",
            "Jobs run in this host's sandbox, by result (ok or the error kind)",
            ["result"],
            registry=r,
        )
        self.sandbox_fuel = Counter(
            "hearth_sandbox_fuel", "Fuel burnt by jobs run in this host's sandbox", registry=r
        )
        self.payments_received = Counter(
            "hearth_payments_received", "Payments recorded for work this host did", registry=r
        )
        self.battery_pct = _gauge(r, "battery_pct", "Home battery state of charge, percent")
        self.solar_w = _gauge(r, "solar_w", "Solar power produced now, watts")
        self.available_w = _gauge(
            r, "available_w", "Power the node may use now (surplus + battery above reserve), W"
        )
        self.power_cap_w = _gauge(r, "power_cap_w", "Panel or circuit power cap, watts")
        self.cores_offered = _gauge(r, "cores_offered", "Cores the energy policy lets it offer")
        self.paused = _gauge(r, "paused", "1 while bidding and the sandbox are paused")
        self.paused.set(0)

    def set_energy(
        self,
        *,
        battery_pct: float | None = None,
        solar_w: float | None = None,
        available_w: float | None = None,
        power_cap_w: float | None = None,
        cores_offered: int | None = None,
        paused: bool = False,
    ) -> None:
        """Set the energy gauges from the node's whole energy state; None means not known (NaN)."""
        for gauge, value in (
            (self.battery_pct, battery_pct),
            (self.solar_w, solar_w),
            (self.available_w, available_w),
            (self.power_cap_w, power_cap_w),
            (self.cores_offered, cores_offered),
        ):
            gauge.set(math.nan if value is None else float(value))
        self.paused.set(1 if paused else 0)

    def attach(self, node: Node) -> None:
        """Read ``node``'s state at each scrape, and count what its driver steps."""
        self.registry.register(_StateCollector(node))
        node.driver.observers.append(lambda event, effects: self.observe(node, event, effects))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def observe(self, node: Node, event: object, effects: list[Any]) -> None:
        """Count (and log, for job decisions) what one engine step took and decided."""
        grouped = by_type(effects)
        for line in grouped[Log]:
            if line.event == "message-dropped":
                self.dropped_in_engine.labels(reason=dict(line.fields).get("reason", "")).inc()
        for send in grouped[Send]:
            self.messages_sent.labels(channel=send.protocol).inc()
        for publish in grouped[Publish]:
            self.messages_sent.labels(channel=publish.topic).inc()
        if isinstance(event, MessageReceived):
            self._on_message(node, event, grouped)
        elif isinstance(event, PublishJob):
            self.jobs_published.inc()
        elif isinstance(event, JobExecuted):
            self.sandbox_runs.labels(result="ok" if event.ok else event.error_kind or "error").inc()
            self.sandbox_fuel.inc(max(0, event.fuel_used))
        elif isinstance(event, PaymentReceived):
            self.payments_received.inc()
        for progress in grouped[JobProgress]:
            self._on_progress(node, progress)

    def _on_message(
        self, node: Node, event: MessageReceived, effects: collections.defaultdict[type, list[Any]]
    ) -> None:
        if event.channel == TOPIC_CAPACITY:
            self.ads_heard.inc()
        elif event.channel == TOPIC_JOBS:
            self.calls_heard.inc()
        worker = node.engine.worker
        if any(send.protocol == PROTOCOL_BID for send in effects[Send]):
            self.bids_sent.inc()
            bids_sent = worker._bids_sent  # the bid just made is the newest remembered
            if bids_sent:
                job_id, bids = next(reversed(bids_sent.items()))
                price = bids.calls[max(bids.calls)][1]
                log(
                    "info",
                    "bid-sent",
                    job=job_id.hex()[:16],
                    publisher=str(bids.publisher),
                    price_mc_per_tfuel=price,
                )
        if event.channel == PROTOCOL_AWARD and effects[FetchBlob]:
            self.bids_won.inc()  # an award accepted starts fetching the job's blobs
            if worker.tasks:
                task = worker.tasks[next(reversed(worker.tasks))]
                log(
                    "info",
                    "award-accepted",
                    job=task.job_id.hex()[:16],
                    publisher=str(task.publisher),
                    price_mc_per_tfuel=task.price_mc_per_tfuel,
                )

    def _on_progress(self, node: Node, progress: JobProgress) -> None:
        job = progress.job_id.hex()[:16]
        log(
            "info",
            "job-phase",
            job=job,
            phase=progress.phase,
            detail=progress.detail,
            results=progress.results,
            replicas=progress.replicas,
        )
        if progress.phase not in FINAL_PHASES:
            return
        self.jobs_finished.labels(outcome=progress.phase).inc()
        summary = node.engine.publisher.summary(progress.job_id)
        for replica in summary.replicas_detail if summary is not None else ():
            if not replica.verdict:
                continue
            self.verdicts.labels(verdict=verdict_label(replica.verdict)).inc()
            log(
                "info",
                "job-verdict",
                job=job,
                worker=str(replica.worker),
                verdict=replica.verdict,
                fuel_used=replica.fuel_used,
                paid_mc=replica.paid_mc,
            )


def verdict_label(verdict: str) -> str:
    """A bounded label: a dropped replica's reason may quote its worker, so it goes only to
    the log (``job-verdict``)."""
    if verdict in ("match", "mismatch"):
        return verdict
    return "declined" if verdict.startswith("declined:") else "dropped"


def _gauge(registry: CollectorRegistry, name: str, documentation: str) -> Gauge:
    gauge = Gauge(f"hearth_energy_{name}", documentation, registry=registry)
    gauge.set(math.nan)
    return gauge


def by_type(effects: Iterable[Any]) -> collections.defaultdict[type, list[Any]]:
    """The effects of a step by type, with the sends a ledger commit carries out afterwards.

    Read by type, not dispatched: carrying effects out is the interpreter's alone."""
    grouped: collections.defaultdict[type, list[Any]] = collections.defaultdict(list)
    for effect in effects:
        grouped[type(effect)].append(effect)
    for waiting in grouped[AwaitSaves]:  # what waited on a save (ADR 0031), a commit among it
        for effect in waiting.then:
            grouped[type(effect)].append(effect)
    for commit in grouped[CommitEntries]:
        for effect in commit.then:
            grouped[type(effect)].append(effect)
    return grouped


class _StateCollector(Collector):
    """What the node holds now, read at each scrape (between engine steps, on its trio loop)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def describe(self) -> list[Metric]:
        return []  # the families are made at scrape time; nothing to check ahead

    def collect(self) -> Iterator[Metric]:
        node = self._node
        now_ms = node.clock.now_ms()
        peers = [p for p in node.transport.peers() if p.connected]
        yield _one(GaugeMetricFamily, "hearth_peers_connected", "Peers connected now", len(peers))
        hosts = len(node.engine.market.snapshot(now_ms))
        yield _one(GaugeMetricFamily, "hearth_market_hosts", "Hosts in the market view", hosts)
        ad = node.engine.market_component.current_ad(now_ms)
        yield _one(
            GaugeMetricFamily,
            "hearth_price_mc_per_tfuel",
            "This host's price now, milli-credits per 10^12 fuel",
            ad.price_mc_per_tfuel,
        )
        yield _one(
            GaugeMetricFamily,
            "hearth_ad_cores_offered",
            "Cores in this host's current capacity ad",
            ad.cores_offered,
        )
        yield self._jobs()
        yield from self._ledger()
        if node.edge is not None:
            refused = CounterMetricFamily(
                "hearth_edge_refused",
                "Messages the edge check refused before they were queued, by reason",
                labels=["reason"],
            )
            for reason, count in sorted(node.edge.refused.items()):
                refused.add_metric([reason], count)
            yield refused
        yield from self._transport()
        yield _one(
            GaugeMetricFamily,
            "hearth_uptime_seconds",
            "Seconds since the node started",
            (now_ms - node.started_ms) / 1000,
        )
        yield _one(
            CounterMetricFamily,
            "hearth_handler_failures",
            "Failures caught by the node's failure boundary",
            node.driver.boundary.failures,
        )
        forks = node.engine.heads.forks_detected if node.engine.heads else 0
        yield _one(CounterMetricFamily, "hearth_forks_detected", "Ledger forks detected", forks)
        yield _one(
            GaugeMetricFamily,
            "hearth_degraded",
            "1 while the node may not take work (a full disk, an unwritable ledger)",
            1 if node.engine.unable_reasons() else 0,
        )

    def _jobs(self) -> Metric:
        family = GaugeMetricFamily(
            "hearth_jobs", "Jobs this node holds now, by role and phase", labels=["role", "phase"]
        )
        counts: dict[tuple[str, str], int] = {}
        for summary in self._node.engine.publisher.list_jobs():
            key = ("publisher", summary.phase)
            counts[key] = counts.get(key, 0) + 1
        for task in self._node.engine.worker.tasks.values():
            key = ("worker", task.state.value)
            counts[key] = counts.get(key, 0) + 1
        for (role, phase), count in sorted(counts.items()):
            family.add_metric([role, phase], count)
        return family

    def _ledger(self) -> Iterator[Metric]:
        ledger = self._node.ledger
        state = ledger.state
        earned = sum(mc for mc, _ in state.earned_by_payer.values())
        spent = sum(mc for mc, _ in state.paid_by_payee.values())
        yield _one(
            GaugeMetricFamily,
            "hearth_credits_balance_mc",
            "Settled earnings minus settled payments, milli-credits",
            ledger.balance_mc(),
        )
        yield _one(
            GaugeMetricFamily,
            "hearth_credits_available_mc",
            "What a new payment may still promise, milli-credits",
            ledger.available_mc(),
        )
        yield _one(
            CounterMetricFamily,
            "hearth_credits_earned_mc",
            "Credits earned, as recorded in the ledger, milli-credits",
            earned,
        )
        yield _one(
            CounterMetricFamily,
            "hearth_credits_spent_mc",
            "Credits paid out and countersigned, milli-credits",
            spent,
        )
        yield _one(
            GaugeMetricFamily,
            "hearth_ledger_entries",
            "Entries in this node's ledger",
            ledger.head().seq + 1,
        )
        yield _one(
            GaugeMetricFamily,
            "hearth_ledger_pending_pays",
            "Payments signed but not yet countersigned",
            len(ledger.pending_pays()),
        )

    def _transport(self) -> Iterator[Metric]:
        stats = self._node.transport.statistics()
        dropped = CounterMetricFamily(
            "hearth_gossip_messages_dropped",
            "Inbound messages dropped: queue full, or refused (oversize, banned, edge check)",
            labels=["reason"],
        )
        dropped.add_metric(["queue-full"], stats.inbound_dropped)
        dropped.add_metric(["refused"], stats.gossip_refused)
        dropped.add_metric(["engine-queue-full"], self._node.driver.events_dropped)
        dropped.add_metric(["ad-superseded"], self._node.driver.ads_superseded)
        yield dropped
        refused = CounterMetricFamily(
            "hearth_transport_refused",
            "Connections, streams and frames the transport refused, by kind",
            labels=["kind"],
        )
        for kind in (
            "frames_refused",
            "read_timeouts",
            "requests_refused",
            "edge_refused",
            "connections_refused",
            "streams_refused",
            "windows_exceeded",
        ):
            refused.add_metric([kind], getattr(stats, kind))
        yield refused
        wire = CounterMetricFamily(
            "hearth_wire_events",
            "Long-lived per-peer streams for one-way messages (ADR 0038), by event",
            labels=["event"],
        )
        for event in ("streams_opened", "reopens", "sends_dropped", "legacy_sends", "write_stalls"):
            wire.add_metric([event], getattr(stats, f"wire_{event}"))
        yield wire


def _one(kind: Any, name: str, documentation: str, value: float) -> Metric:
    family: Metric = kind(name, documentation, value=value)
    return family
