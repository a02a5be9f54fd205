"""Run a scenario on real node processes: roles, churn and jobs from the plan; write the report.

Theory of operation: the plan (testnet/plan.py) fixes everything random up front from the seed.
The runner starts the nodes (each adversary gets its plug-in, testnet/adversaries/), waits for a
full market, then walks one timeline of actions (publish a job, kill -9 a node, restart it) at
their planned times. One thread follows each published job to its verdict and checks the accepted
output against the honest output computed here; a sampler thread records balances, reputation and
dead nodes. At the end it waits for the jobs and for every receipt to settle, then stops exactly
the processes it started. Ctrl-C ends the timeline early; the nodes are still stopped and the
report still written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any, Final

from hearth.client import Client, HearthError, JobOptions
from hearth.node import lifeline
from hearth.node.commands.common import CommandError
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.model import JobRequest, Runtime
from hearth.node.sandbox.pool import run_job
from hearth.testnet import adversaries, launch, plan, report
from hearth.testnet.observe import ask, market_complete
from hearth.testnet.scenario import load_scenario
from hearth.testnet.summary import summarise

SAMPLE_INTERVAL_S: Final = 2.0
MARKET_TIMEOUT_S: Final = 60.0
RESTART_TIMEOUT_S: Final = 60.0
SETTLE_TIMEOUT_S: Final = 60.0
JOB_DEADLINE_S: Final = 180  # covers a lease lost to a staller (ADR 0012), then a second round
JOB_FUEL_MAX: Final = 2_000_000_000
# Calls for bids cross a loaded machine slowly (gossip among a dozen processes on two cores);
# the 1.5 s default window expires calls before hosts can bid.
BID_WINDOW_MS: Final = 4_000
JOB_GRACE_S: Final = 30.0  # past a job's deadline, the runner stops waiting for its verdict
LOG_TAIL_BYTES: Final = 1500


@dataclasses.dataclass(frozen=True)
class RunOptions:
    scenario_path: Path
    out: Path
    testnet_dir: Path | None = None  # default: <out>/testnet


@dataclasses.dataclass
class Managed:
    """A node the runner started, and what happened to it."""

    plan: plan.NodePlan
    launched: launch.LaunchedNode
    up: bool = True
    kills: int = 0
    restarts: int = 0
    died: bool = False


@dataclasses.dataclass
class JobRecord:
    plan: plan.JobPlan
    expected: bytes
    job_id: str = ""
    published_s: float = 0.0
    state: str = "planned"  # planned, open, verified, failed, publish-failed, lost
    latency_ms: int | None = None
    replicas_used: int = 0
    correct: bool | None = None
    paid_mc: int = 0
    reason: str = ""
    workers: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def json(self) -> dict[str, Any]:
        return {
            "number": self.plan.number,
            "job_id": self.job_id,
            "publisher": f"node{self.plan.publisher}",
            "module": self.plan.module.name,
            "state": self.state,
            "latency_ms": self.latency_ms,
            "replicas_used": self.replicas_used,
            "correct": self.correct,
            "paid_mc": self.paid_mc,
            "reason": self.reason,
            "workers": self.workers,
        }


def honest_outputs(run_plan: plan.RunPlan, home: Path) -> dict[bytes, bytes]:
    """The honest output of each distinct loop input, computed here in the same sandbox."""
    home.mkdir(parents=True, exist_ok=True)
    module = _wasm(plan.LOOP)
    outputs: dict[bytes, bytes] = {}
    for data in sorted({j.input for j in run_plan.jobs if j.module == plan.LOOP}):
        request = JobRequest(Runtime("wasm"), module, data, JOB_FUEL_MAX, 64 << 20, 60_000, 1024)
        result = run_job(request, SandboxConfig(home=home, workers=1))
        assert result.ok, f"the reference run of bench_loop failed: {result.error_kind}"
        outputs[data] = result.output
    return outputs


def _wasm(path: Path) -> bytes:
    from hearth.client import module_bytes

    return module_bytes(path)


class Runner:
    def __init__(self, options: RunOptions) -> None:
        self.options = options
        self.plan = plan.make_plan(load_scenario(options.scenario_path))  # unreadable: one line
        self.scenario_text = options.scenario_path.read_text(encoding="utf-8")
        self.root = options.testnet_dir or options.out / "testnet"
        self.started_s = time.monotonic()
        self.stop_event = threading.Event()
        self.interrupted = False
        self._unwind_on_stop = False
        self.error = ""
        self.lock = threading.Lock()
        self.nodes: list[Managed] = []
        self.jobs: list[JobRecord] = []
        self.final: dict[str, Any] = {}
        options.out.mkdir(parents=True, exist_ok=True)
        (options.out / report.SCENARIO_COPY).write_text(self.scenario_text, encoding="utf-8")
        for name in (report.EVENTS_FILE, report.SUMMARY_FILE):
            (options.out / name).unlink(missing_ok=True)
        self.events = report.EventLog(options.out, self.started_s)
        self.metrics = report.MetricsLog(options.out, [n.name for n in self.plan.nodes])

    def run(self) -> dict[str, Any]:
        """Carry out the plan; always stops the nodes and writes the report.

        Ctrl-C and SIGTERM get this runner's handler from the start, whatever this process
        inherited (a launcher started in the background inherits SIGINT ignored, and then
        SIGTERM, forwarded to SIGINT's handler, did nothing either): while the nodes start it
        unwinds (KeyboardInterrupt, deferred past ``lifeline.held`` blocks); from the timeline
        on it only sets ``stop_event``, which every wait watches."""
        previous = {signum: signal.getsignal(signum) for signum in lifeline.STOP_SIGNALS}
        self._unwind_on_stop = True
        for signum in lifeline.STOP_SIGNALS:
            signal.signal(signum, self._on_stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, lifeline.STOP_SIGNALS)
        try:
            self._prepare()
            self._unwind_on_stop = False
            if self.interrupted:  # a stop taken while the last thread started
                raise KeyboardInterrupt
            self._run_timeline()
            self._finish_jobs()
            self._settle()
        except KeyboardInterrupt:
            self.interrupted = True
        except (launch.TestnetError, HearthError, CommandError, OSError) as exc:
            self.error = str(exc)
            self.events.add("run_error", error=self.error)
        finally:
            self._unwind_on_stop = False
            for signum in lifeline.STOP_SIGNALS:  # cleanup must not be cut short
                signal.signal(signum, signal.SIG_IGN)
            try:
                summary = self._close()
            finally:
                for signum, handler in previous.items():
                    if handler is not None:  # None: not set from Python; leave ours
                        signal.signal(signum, handler)
        return summary

    def _on_stop(self, signum: int, frame: object) -> None:
        self.interrupted = True
        self.stop_event.set()
        if self._unwind_on_stop and not lifeline.defer_if_held(signum):
            raise KeyboardInterrupt

    def _wait_until(self, at_s: float) -> bool:
        """Wait for the planned time; False if the run was interrupted."""
        delay_s = self.started_s + at_s - time.monotonic()
        return not self.stop_event.wait(max(0.0, delay_s))

    def _prepare(self) -> None:
        p = self.plan
        self.events.add("run_started", seed=p.scenario.seed, scenario=p.scenario.name)
        references = honest_outputs(p, self.root / "reference")
        self.jobs = [
            JobRecord(j, j.input if j.module == plan.ECHO else references[j.input]) for j in p.jobs
        ]
        for node in p.nodes:
            home = launch.node_home(self.root, node.index)
            home.mkdir(parents=True, exist_ok=True)
            adversaries.clear(home)  # a reused folder keeps no old role
            if node.behaviour:
                adversaries.write(home, node.behaviour)
        configs = [plan.config_text(node) for node in p.nodes]
        launched = self._launch(configs)
        self.nodes = [Managed(n, x) for n, x in zip(p.nodes, launched, strict=True)]
        for m in self.nodes:
            self.events.add(
                "node_started",
                node=m.plan.name,
                role=m.plan.role,
                profile=m.plan.profile,
                peer_id=m.launched.info["peer_id"],
            )
        try:
            launch.wait_for(lambda: market_complete(launched), MARKET_TIMEOUT_S, "a full market")
        except launch.TestnetError as exc:
            self.events.add("market_incomplete", detail=str(exc))
        self.started_s = time.monotonic()  # the timeline starts with a whole market
        self.events.start_clock(self.started_s)
        threading.Thread(target=self._sample_loop, name="sampler", daemon=True).start()

    def _launch(self, configs: list[str]) -> list[launch.LaunchedNode]:
        return launch.up(
            self.root, len(configs), configs=configs, psk=secrets.token_bytes(32), tied=True
        )

    def _timeline(self) -> list[tuple[float, int, str, Any]]:
        actions: list[tuple[float, int, str, Any]] = []
        for job in self.jobs:
            actions.append((job.plan.at_s, 1, "publish", job))
        for churn in self.plan.churn:
            actions.append((churn.at_s, 0, "kill", churn))
            actions.append((churn.at_s + churn.downtime_s, 0, "restart", churn))
        actions += self._fault_actions()
        return sorted(actions, key=lambda a: (a[0], a[1], id(a[3])))

    def _fault_actions(self) -> list[tuple[float, int, str, Any]]:
        """Network faults at planned times (the netns lab's runner has them)."""
        return []

    def _fault(self, kind: str, item: Any) -> None:
        raise AssertionError(f"no network fault {kind!r} on this testnet")

    def _run_timeline(self) -> None:
        for at_s, _, kind, item in self._timeline():
            if not self._wait_until(at_s):
                return
            if kind == "publish":
                self._publish(item)
            elif kind == "kill":
                self._kill(self.nodes[item.node], item.cause)
            elif kind == "restart":
                self._restart(self.nodes[item.node])
            else:
                self._fault(kind, item)

    def _publish(self, job: JobRecord) -> None:
        publisher = self.nodes[job.plan.publisher]
        options = JobOptions(
            replicas=self.plan.scenario.replicas,
            replicas_max=self.plan.scenario.replicas_max,
            deadline_s=JOB_DEADLINE_S,
            fuel_max=JOB_FUEL_MAX,
            bid_window_ms=BID_WINDOW_MS,
        )
        try:
            with Client(publisher.launched.home, timeout_s=30) as client:
                job.job_id = client.submit(job.plan.module, job.plan.input, options)
        except HearthError as exc:
            job.state, job.reason = "publish-failed", str(exc)
            self.events.add("job_publish_failed", job=job.plan.number, reason=str(exc))
            return
        job.published_s, job.state = time.monotonic(), "open"
        self.events.add(
            "job_published",
            job=job.plan.number,
            job_id=job.job_id,
            publisher=publisher.plan.name,
            module=job.plan.module.name,
            input_bytes=len(job.plan.input),
        )
        threading.Thread(target=self._follow, args=(job, publisher), daemon=True).start()

    def _follow(self, job: JobRecord, publisher: Managed) -> None:
        """Wait for the job's verdict at its publisher and judge the accepted output."""
        give_up_s = job.published_s + JOB_DEADLINE_S + JOB_GRACE_S
        while time.monotonic() < give_up_s and not self.stop_event.is_set():
            try:
                with Client(publisher.launched.home, timeout_s=60) as client:
                    result = client.wait(job.job_id)
                break
            except HearthError as exc:
                job.reason = str(exc)
                self.stop_event.wait(1.0)  # the publisher is busy or restarting: ask again
        else:
            if job.state == "open":
                job.state = "lost"
            return
        job.latency_ms = int((time.monotonic() - job.published_s) * 1000)
        detail = result.summary.get("replicas_detail", [])
        job.replicas_used = len(detail)
        job.paid_mc = result.paid_mc
        job.workers = [
            {"node": self._name(r["worker"]), "verdict": r["verdict"], "paid_mc": r["paid_mc"]}
            for r in detail
        ]
        paid = sorted(self._name(r["worker"]) for r in detail if r.get("paid_mc", 0) > 0)
        if result.ok:
            job.correct = result.output == job.expected
            job.state = "verified"
            self.events.add(
                "job_verified",
                job=job.plan.number,
                latency_ms=job.latency_ms,
                replicas=job.replicas_used,
                correct=job.correct,
                paid=paid,
                paid_mc=job.paid_mc,
            )
            if not job.correct:
                self.events.add("wrong_result_accepted", job=job.plan.number, paid=paid)
        else:
            job.state, job.reason = "failed", result.reason or result.message
            self.events.add(
                "job_failed", job=job.plan.number, reason=result.reason, replicas=job.replicas_used
            )

    def _name(self, peer_id: str) -> str:
        for m in self.nodes:
            if m.launched.info.get("peer_id") == peer_id:
                return m.plan.name
        return peer_id

    def _kill(self, node: Managed, cause: str) -> None:
        with self.lock:
            if not node.up:
                return
            node.up = False
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.launched.pid, signal.SIGKILL)
        launch.wait_for(lambda: not launch.is_running(node.launched.pid), 10, "a killed node")
        node.kills += 1
        self.events.add(
            "node_killed", node=node.plan.name, pid=node.launched.pid, cause=cause, signal="SIGKILL"
        )

    def _restart(self, node: Managed) -> None:
        if node.up or node.died:
            return
        home = node.launched.home
        (home / "node.json").unlink(missing_ok=True)
        process = self._start_again(node)
        try:
            node.launched.info = launch.wait_until_listening(home, process, RESTART_TIMEOUT_S)
        except launch.TestnetError as exc:
            node.died = True
            self.events.add("node_restart_failed", node=node.plan.name, reason=str(exc))
            return
        with self.lock:
            node.up = True
        node.restarts += 1
        self.events.add("node_restarted", node=node.plan.name, pid=process.pid)

    def _start_again(self, node: Managed) -> launch.NodeProcess:
        home = node.launched.home
        bootstrap = next(
            (m.launched.info["multiaddrs"][0] for m in self.nodes if m.up and m.launched.info),
            None,
        )
        with lifeline.held():
            process = launch.start_process(
                home, node.launched.host, bootstrap, home / "node.out", tied=True
            )
            node.launched.pid = process.pid
            launch.save_state(self.root, [m.launched for m in self.nodes])
        return process

    def _sample_loop(self) -> None:
        while not self.stop_event.wait(SAMPLE_INTERVAL_S):
            self._sample()

    def _sample(self) -> dict[str, Any]:
        self._check_deaths()
        counts = {state: 0 for state in ("open", "verified", "failed")}
        for job in self.jobs:
            if job.state in counts:
                counts[job.state] += 1
        row: dict[str, Any] = {
            "t_s": round(time.monotonic() - self.started_s, 2),
            "nodes_alive": sum(1 for m in self.nodes if m.up),
            "jobs_published": sum(counts.values()),
            "jobs_verified": counts["verified"],
            "jobs_failed": counts["failed"],
            "jobs_open": counts["open"],
        }
        for name, balance in self._balances().items():
            row[f"balance_mc_{name}"] = balance
        reputation = self._reputation()
        for group, adversarial in (("honest", False), ("adversarial", True)):
            scores = [s for (_, n), s in reputation.items() if self._adversarial(n) == adversarial]
            row[f"reputation_{group}_mean"] = (
                round(sum(scores) / len(scores), 2) if scores else None
            )
        self.metrics.add(row)
        return {"row": row, "reputation": reputation}

    def _adversarial(self, name: str) -> bool:
        """Every role that misbehaves on purpose, forkers included (a crash is not malice)."""
        return self.nodes[int(name.removeprefix("node"))].plan.role in plan.ADVERSARIAL_ROLES

    def _balances(self) -> dict[str, int | None]:
        found: dict[str, int | None] = {}
        for m in self.nodes:
            found[m.plan.name] = None
            if m.up:
                with contextlib.suppress(CommandError, OSError, KeyError):
                    found[m.plan.name] = int(ask(m.launched, "/v1/ledger/balance")["balance_mc"])
        return found

    def _reputation(self) -> dict[tuple[str, str], int]:
        """(publisher, peer) -> the score the publisher gives that peer."""
        scores: dict[tuple[str, str], int] = {}
        for index in self.plan.publishers:
            m = self.nodes[index]
            if not m.up:
                continue
            with contextlib.suppress(CommandError, OSError, KeyError):
                for peer in ask(m.launched, "/v1/peers")["peers"]:
                    name = self._name(peer["peer_id"])
                    if name.startswith("node"):
                        scores[(m.plan.name, name)] = int(peer["reputation"])
        return scores

    def _refused(self) -> dict[str, list[str]]:
        """Per node still up: the peer IDs it refuses because it holds a fork proof."""
        refused = {}
        for m in self.nodes:
            if m.up:
                try:
                    refused[m.plan.name] = ask(m.launched, "/v1/status")["refused_authors"]
                except (CommandError, OSError):
                    continue
        return refused

    def _check_deaths(self) -> None:
        """A node that dies on its own is reported, with the end of its log, and left down."""
        for m in self.nodes:
            with self.lock:
                if not m.up or launch.is_running(m.launched.pid):
                    continue
                m.up, m.died = False, True
            log_path = m.launched.home / "node.out"
            try:
                tail = log_path.read_bytes()[-LOG_TAIL_BYTES:].decode(errors="replace")
            except OSError:
                tail = ""
            self.events.add(
                "node_died", node=m.plan.name, pid=m.launched.pid, log=str(log_path), log_tail=tail
            )

    def _finish_jobs(self) -> None:
        for churn in self.plan.churn:  # every node back up, so that receipts can settle
            self._restart(self.nodes[churn.node])

        def decided() -> bool:
            return self.stop_event.is_set() or all(j.state != "open" for j in self.jobs)

        _wait(decided, JOB_DEADLINE_S + JOB_GRACE_S + 5)
        for job in self.jobs:
            if job.state == "open":
                job.state = "lost"
                self.events.add("job_lost", job=job.plan.number, reason=job.reason)

    def _settle(self) -> None:
        def settled() -> bool:
            if self.stop_event.is_set():
                return True
            for m in self.nodes:
                if m.up:
                    try:
                        if ask(m.launched, "/v1/ledger/balance")["pending_pays"]:
                            return False
                    except (CommandError, OSError):
                        return False
            return True

        self.final["settled"] = _wait(settled, SETTLE_TIMEOUT_S) and not self.stop_event.is_set()
        self.events.add("receipts_settled" if self.final["settled"] else "receipts_unsettled")

    def _close(self) -> dict[str, Any]:
        self.stop_event.set()
        if self.interrupted:
            self.events.add("run_interrupted")
        if self.nodes:
            final = self._sample()
            self.final["balances"] = final["row"]
            self.final["reputation"] = final["reputation"]
            self.final["refused"] = self._refused()
        launch.stop([m.launched for m in self.nodes])
        self._teardown()
        for m in self.nodes:
            self.events.add("node_stopped", node=m.plan.name, pid=m.launched.pid)
        summary = summarise(self)
        self.events.add("run_finished", elapsed_s=summary["elapsed_s"])
        report.write_summary(self.options.out, summary)
        self.events.close()
        self.metrics.close()
        roles = {m.plan.name: m.plan.role for m in self.nodes}
        summary["plots"] = report.plot_all(
            self.options.out, [j.json() for j in self.jobs], self.metrics, roles
        )
        summary.update(self._network_report(summary["plots"]))
        report.write_summary(self.options.out, summary)
        return summary

    def _teardown(self) -> None:
        """After the nodes stop: remove what else the run built (the netns lab)."""

    def _network_report(self, plots: list[str]) -> dict[str, Any]:
        """Extra summary keys (and plots appended to ``plots``) of the network the run used."""
        return {}


def _wait(condition: Any, timeout_s: float) -> bool:
    """Poll ``condition`` until it holds or the time is up; True if it held."""
    try:
        launch.wait_for(condition, timeout_s, "the run to settle")
    except launch.TestnetError:
        return False
    return True


def run_scenario(options: RunOptions) -> dict[str, Any]:
    if load_scenario(options.scenario_path).lab is not None:
        from hearth.testnet.netns.run import NetnsRunner

        return NetnsRunner(options).run()
    return Runner(options).run()
