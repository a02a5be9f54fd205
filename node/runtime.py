"""The daemon: wires identity, config, transport, engine, driver and API, and runs them.

``hearth node start`` calls ``run_node``. It writes ``node.json`` once the node listens on both
the peer-to-peer side and the local API, and removes it when the node stops.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import random
import secrets
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hearth.ledger.audit import LedgerRangeRequest, serve_range
from hearth.ledger.errors import LedgerCorruptError, LedgerDamagedError
from hearth.ledger.store import LedgerBusyError, SqliteLedger
from hearth.node import calibrate, paths
from hearth.node.api import ad_json, build_app, market_entry_json, serve_api
from hearth.node.blobs import BlobStore, BlobStoreConfig, serve_blob_request
from hearth.node.clock import Clock, SystemClock
from hearth.node.commands.common import CommandError, first_leaf
from hearth.node.dashboard.routes import build_dashboard_routes
from hearth.node.dashboard.session import Sessions
from hearth.node.driver import Driver
from hearth.node.edge import EdgeGate
from hearth.node.energy.routes import build_energy_routes
from hearth.node.energy.service import EnergyService
from hearth.node.health import Health
from hearth.node.home import load_config, load_identity, load_token
from hearth.node.jobio import TransferLimits
from hearth.node.jobs import JobService
from hearth.node.logs import log
from hearth.node.metrics import CONTENT_TYPE, NodeMetrics
from hearth.node.plugins import PluginContext
from hearth.node.plugins import load as load_plugin
from hearth.node.routes import build_job_routes
from hearth.node.runtime_offers import RuntimeOffers, prepare_with_retry
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.pool import SandboxPool
from hearth.node.testhooks import crash_before_pay
from hearth.p2p.finding_config import DiscoveryConfig
from hearth.p2p.host import open_transport
from hearth.p2p.peerstore import PEERSTORE_FILE
from hearth.p2p.transport import HostConfig, Inbound, ListenError, Transport
from hearth.protocol.bidding import WorkerConfig
from hearth.protocol.codec import decode_as, encode
from hearth.protocol.energy import CORES_MAX
from hearth.protocol.engine import Engine, EngineConfig, HostProfile
from hearth.protocol.errors import HearthError, RemoteProtocolError
from hearth.protocol.events import InboundRefused, RuntimeOffered, Started
from hearth.protocol.identity import Identity, PeerId, peer_id_from_public_key
from hearth.protocol.jobs_config import JobsConfig
from hearth.protocol.messages import (
    PROTOCOL_BLOB,
    PROTOCOL_LEDGER,
    PROTOCOLS,
    RUNTIMES,
    TOPIC_CAPACITY,
    TOPICS,
)
from hearth.protocol.publisher_state import PublisherConfig

RESTORE_WAIT_S_MAX = 15.0  # restore saved jobs anyway after this, even if alone
PEERS_STABLE_S = 1.0  # connected and no new peer for this long: the peer exchange is done
PEERS_POLL_S = 0.1

if TYPE_CHECKING:  # trio-typing's stubs (a py-libp2p dependency) shadow trio's own types
    from trio_typing import TaskStatus


@dataclasses.dataclass(frozen=True)
class NodeOptions:
    """Command-line choices that override config.toml."""

    home: Path
    host: str | None = None
    port: int | None = None
    bootstrap: tuple[str, ...] = ()
    api_port: int = 0
    psk: bytes | None = None


@dataclasses.dataclass
class Node:
    """A running node's parts, for the API handlers and for tests."""

    options: NodeOptions
    engine: Engine
    transport: Transport
    driver: Driver
    clock: Clock
    ledger: SqliteLedger
    jobs: JobService
    api_url: str = ""
    started_ms: int = 0
    health: Health | None = None
    energy: EnergyService | None = None
    metrics: NodeMetrics = dataclasses.field(default_factory=NodeMetrics)
    runtimes: RuntimeOffers | None = None
    edge: EdgeGate | None = None

    def info(self) -> dict[str, Any]:
        return {
            "peer_id": self.transport.peer_id,
            "multiaddrs": list(self.transport.listen_addrs),
            "api": self.api_url,
            "pid": os.getpid(),
            "home": str(self.options.home),
            "started_ms": self.started_ms,
        }


def read_psk(home: Path) -> bytes | None:
    """A testnet's private-network key, if the data dir holds one (``swarm.key``, 64 hex chars)."""
    path = home / "swarm.key"
    if not path.exists():
        return None
    key = bytes.fromhex(path.read_text().strip())
    if len(key) != 32:
        raise ValueError(f"{path} must hold 64 hex characters")
    return key


def build_routes(node: Node) -> list[Route]:
    async def status(request: Request) -> Response:
        now_ms = node.clock.now_ms()
        ad = node.engine.market_component.current_ad(now_ms)
        return JSONResponse(
            {
                **node.info(),
                "now_ms": now_ms,
                "uptime_ms": now_ms - node.started_ms,
                "peers_connected": sum(1 for p in node.transport.peers() if p.connected),
                "forks_detected": node.engine.heads.forks_detected if node.engine.heads else 0,
                "refused_authors": sorted(
                    peer_id_from_public_key(a) for a in node.engine.refused_authors
                ),
                "ad": ad_json(ad),
                "payments": node.engine.payments.status() if node.engine.payments else {},
                "replay_guard": node.engine.replay_guard.statistics(),
                # Refreshed here too: an outage seen by a reader is an outage in the log.
                "degraded": node.health.refresh() if node.health else [],
                "energy": node.energy.status_json() if node.energy else None,
                "runtimes": node.runtimes.to_json() if node.runtimes else {},
                "reachability": node.transport.reachability(),
                "gossip": _gossip_state(node),
            }
        )

    async def market(request: Request) -> Response:
        now_ms = node.clock.now_ms()
        return JSONResponse(
            {
                "now_ms": now_ms,
                "self": {
                    "peer_id": node.transport.peer_id,
                    **ad_json(node.engine.market_component.current_ad(now_ms)),
                },
                "offers": [
                    market_entry_json(e, now_ms) for e in node.engine.market.snapshot(now_ms)
                ],
            }
        )

    async def peers(request: Request) -> Response:
        records = dict(node.engine.reputation.items())
        rows = []
        for peer in sorted(node.transport.peers(), key=lambda p: p.peer_id):
            record = records.get(peer.peer_id)  # type: ignore[call-overload]
            rows.append(
                {
                    "peer_id": peer.peer_id,
                    "addrs": list(peer.addrs),
                    "connected": peer.connected,
                    "rtt_ms": None if peer.rtt_ms is None else round(peer.rtt_ms, 3),
                    "connection": peer.connection or None,
                    "connections_opened": list(peer.connections_opened),
                    "reputation": record.score if record else 0,
                    "results_valid": record.results_valid if record else 0,
                    "results_invalid": record.results_invalid if record else 0,
                }
            )
        return JSONResponse({"peers": rows})

    async def metrics(request: Request) -> Response:
        return Response(node.metrics.render(), media_type=CONTENT_TYPE)

    return [
        Route("/metrics", metrics),
        Route("/v1/status", status),
        Route("/v1/market", market),
        Route("/v1/peers", peers),
        *build_job_routes(node),
        *(build_energy_routes(node.energy) if node.energy else []),
    ]


def _gossip_state(node: Node) -> dict[str, int] | None:
    """The capacity topic as the gossip router sees it (p2p/host.py); None off libp2p."""
    state = getattr(node.transport, "gossip_state", None)
    return None if state is None else state(TOPIC_CAPACITY)


def write_node_info(home: Path, info: dict[str, Any]) -> None:
    """Write node.json atomically, so a reader never sees half of it."""
    target = paths.node_info_path(home)
    partial = target.with_suffix(".json.partial")
    partial.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    os.replace(partial, target)


async def run_node(
    options: NodeOptions,
    *,
    clock: Clock | None = None,
    task_status: TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    home = options.home
    identity = load_identity(home)
    config = load_config(home)
    token = load_token(home)
    plugin = load_plugin(home, identity)
    clock = clock or SystemClock()
    profile = HostProfile(
        cores_offered=config.cores,
        memory_mb_offered=config.memory_mb,
        fuel_per_s=calibrate.fuel_per_s(home),
        # Python is offered only once CPython-on-WASI is compiled (see offer_python).
        runtimes=tuple(r for r in config.runtimes if r != "python"),
        availability_hours_mask=config.availability_hours_mask,
        energy_source=config.energy_source,
        operator=config.operator,
        pricing=config.pricing,
    )
    jobs_config = JobsConfig(
        worker=WorkerConfig(backlog=config.backlog),
        publisher=PublisherConfig(
            network_prefix_v4=config.network_group_prefix_v4,
            directed_invitations=config.directed_invitations,
            save_behind=True,  # node/jobs.py writes job state off the loop (ADR 0031)
        ),
    )
    host_config = HostConfig(
        seed=identity.seed,
        listen_host=options.host or config.host,
        port=config.port if options.port is None else options.port,
        bootstrap=options.bootstrap or config.bootstrap,
        topics=TOPICS,
        protocols=PROTOCOLS,
        psk=options.psk if options.psk is not None else read_psk(home),
        discovery=DiscoveryConfig(
            peerstore_path=str(home / PEERSTORE_FILE), mdns=config.mdns, dht_mode=config.dht
        ),
        relay=config.relay,
        announce=config.announce,
        upnp=config.upnp,
    )
    ledger = open_ledger(paths.ledger_path(home), identity, clock.now_ms())
    # The workers start while the transport and the API do (each imports wasmtime, in a
    # process of its own); node.json waits for them, so a listening node can run a job.
    sandbox = SandboxPool(
        SandboxConfig(
            home=home, workers=config.cores, module_cache_bytes_max=config.module_cache_mb << 20
        ),
        wait_for_workers=False,
    )
    try:
        # The engine comes first: the transport checks inbound messages against it (ADR 0021).
        engine = Engine(
            EngineConfig(identity, profile, jobs=jobs_config, credit=config.credit),
            random.Random(secrets.randbits(128)),
            ledger.view(),
        )
        edge = EdgeGate(engine, clock)
        async with (
            sandbox,
            _listening(host_config, edge) as transport,
            trio.open_nursery() as nursery,
        ):
            driver = Driver(engine, transport, clock)
            edge.submit = driver.submit_nowait
            driver.commit_entries = crash_before_pay(ledger.append_many)
            blobs = BlobStore(
                home / "blobs",
                BlobStoreConfig(
                    bytes_max=config.blob_store_mb << 20,
                    peer_bytes_max=config.blob_store_peer_mb << 20,
                ),
                clock,
            )
            jobs = JobService(home, driver, blobs, sandbox, plugin)
            jobs.files.limits = TransferLimits(
                config.input_mb_max << 20, config.output_mb_max << 20, config.parallel_fetches
            )
            node = Node(options, engine, transport, driver, clock, ledger, jobs, edge=edge)
            node.health = Health(driver, ledger, jobs)
            # The energy service bounds cores by the home's power only; the engine takes the
            # smaller of that and the configured cap, which the settings may change (ADR 0026).
            energy_policy = dataclasses.replace(config.energy_policy, cores_max=CORES_MAX)
            node.energy = EnergyService(
                config.energy_sensor, energy_policy, config.owner, clock, driver.submit_nowait,
                cores_cap=lambda: engine.config.profile.cores_offered,
            )  # fmt: skip
            node.metrics.attach(node)
            metrics = node.metrics
            node.energy.observers.append(lambda e: metrics.set_energy(**e.metrics_values()))
            node.runtimes = RuntimeOffers(RUNTIMES, config.runtimes)
            node.started_ms = clock.now_ms()
            serve_requests(node)
            await nursery.start(driver.run)
            sessions = Sessions(token, clock.now_ms)
            routes = [*build_routes(node), *build_dashboard_routes(node, sessions)]
            app = build_app(routes, token, sessions=sessions)
            node.api_url = await nursery.start(
                functools.partial(serve_api, app, port=options.api_port)
            )
            sessions.port = int(node.api_url.rsplit(":", 1)[1])
            driver.submit_nowait(Started())
            nursery.start_soon(node.energy.run)
            if jobs.has_saved():
                await wait_for_peers(transport)
            restored = await jobs.restore_saved()
            nursery.start_soon(node.health.watch)
            nursery.start_soon(jobs.sweep_blobs)
            if plugin is not None:
                nursery.start_soon(plugin.run, PluginContext(engine, transport, ledger, clock))
            if "python" in config.runtimes:
                nursery.start_soon(offer_python, sandbox, driver, node.runtimes)
            await sandbox.wait_started()
            write_node_info(home, node.info())
            log(
                "info",
                "node-started",
                jobs_restored=restored,
                plugin="" if plugin is None else plugin.name,
                **node.info(),
            )
            task_status.started(node)
            try:
                await trio.sleep_forever()
            finally:
                paths.node_info_path(home).unlink(missing_ok=True)
                nursery.cancel_scope.cancel()
    finally:
        ledger.close()


@asynccontextmanager
async def _listening(config: HostConfig, edge: EdgeGate) -> AsyncIterator[Transport]:
    """The transport, or one line when its address is taken (two nodes never share a port)."""
    try:
        async with open_transport(config, edge) as transport:
            yield transport
    except* ListenError as refused:
        raise CommandError(f"{first_leaf(refused)}; is another node running there?") from None


def open_ledger(path: Path, identity: Identity, now_ms: int) -> SqliteLedger:
    """Open (or create) the ledger; a broken chain or a second writer stops the node here."""
    try:
        return SqliteLedger.open(path, identity, now_ms=now_ms)
    except LedgerCorruptError as exc:
        raise CommandError(
            f"ledger {path} does not verify ({exc}); the node will not build on it. "
            f"Run `hearth ledger verify` and restore it from a backup"
        ) from None
    except LedgerBusyError:
        raise CommandError(f"another process is using {path}; is a node already running?") from None
    except LedgerDamagedError as exc:
        raise CommandError(
            f"{exc}; the node will not build on it. Restore it from a backup"
        ) from None
    except HearthError as exc:  # another identity's ledger, a schema this node does not read
        raise CommandError(str(exc)) from None


def serve_requests(node: Node) -> None:
    """Direct-stream protocols answered by the node itself rather than the engine."""

    engine = node.engine

    def entitled(peer: str, blob_hash: bytes) -> bool:
        peer_id = PeerId(peer)
        return engine.publisher.may_fetch(peer_id, blob_hash) or engine.worker.may_fetch(
            peer_id, blob_hash
        )

    def may_fetch(peer: str, blob_hash: bytes) -> bool:
        if entitled(peer, blob_hash):
            return True
        needed, results = engine.publisher.blobs_in_use()  # a chunk of these (ADR 0024)
        manifests = needed | results | engine.worker.blobs_in_use()
        return node.jobs.files.index.may_fetch(peer, blob_hash, manifests, entitled)

    def penalise(peer: str, points: int, reason: str) -> None:
        node.driver.submit_nowait(InboundRefused(PeerId(peer), PROTOCOL_BLOB, reason, points))

    node.jobs.files.penalise = penalise

    async def blob(item: Inbound) -> None:
        await serve_blob_request(node.jobs.blobs, item, may_fetch, penalise)

    async def ledger_range(item: Inbound) -> None:
        if item.reply is None:
            return
        try:
            request = decode_as(item.data, LedgerRangeRequest)
            response = serve_range(node.ledger, request)
        except RemoteProtocolError as exc:
            refused = InboundRefused(PeerId(item.peer_id), PROTOCOL_LEDGER, exc.reason, 10)
            node.driver.submit_nowait(refused)
            log("info", "ledger-request-refused", peer=item.peer_id, reason=exc.reason)
            return
        await item.reply(encode(response))

    node.driver.request_handlers[PROTOCOL_BLOB] = blob
    node.driver.request_handlers[PROTOCOL_LEDGER] = ledger_range


async def wait_for_peers(transport: Transport) -> None:
    """Wait until we are back on the network and the peer count has settled (bounded).

    A restored publisher at once re-sends its awards and reveal requests; sent before we know
    any worker's address they fail, and the workers would be dropped as silent for our fault.
    """
    with trio.move_on_after(RESTORE_WAIT_S_MAX):
        seen, stable_s = -1, 0.0
        while stable_s < PEERS_STABLE_S:
            count = sum(1 for p in transport.peers() if p.connected)
            seen, stable_s = count, (stable_s + PEERS_POLL_S if count == seen and count else 0.0)
            await trio.sleep(PEERS_POLL_S)


async def offer_python(sandbox: SandboxPool, driver: Driver, offers: RuntimeOffers) -> None:
    """Compile the Python runtime in the background, then add it to what this host offers.

    The first compile takes minutes; a host that bid on Python jobs before it finished would
    spend the publisher's deadline compiling. A failed compile is retried with backoff.
    """

    async def offered() -> None:
        await driver.submit(RuntimeOffered("python"))

    await prepare_with_retry(offers, "python", sandbox.warm_python, offered)


async def run_until_signalled(options: NodeOptions) -> None:
    """Run the node in the foreground until SIGINT or SIGTERM, then shut down cleanly."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_node, options)
            async for signum in signals:
                log("info", "node-stopping", signal=signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break
