"""Write a testnet run's report: events.jsonl, metrics.csv, summary.json and PNG plots.

events.jsonl and metrics.csv are appended and flushed line by line while the run goes on, so an
interrupted or crashed run still leaves what it saw; summary.json and the plots come at the end.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

EVENTS_FILE = "events.jsonl"
METRICS_FILE = "metrics.csv"
SUMMARY_FILE = "summary.json"
SCENARIO_COPY = "scenario.toml"
PLOTS = ("latency.png", "credits.png", "replicas.png", "reputation.png")
VERSIONED = ("hearthnet", "libp2p", "wasmtime", "matplotlib")


def versions() -> dict[str, str]:
    found = {}
    for name in VERSIONED:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


class EventLog:
    """events.jsonl: one JSON object a line, ``t_ms`` from the run's start; thread-safe."""

    def __init__(self, out: Path, started_s: float) -> None:
        self._file: IO[str] = (out / EVENTS_FILE).open("a", encoding="utf-8")
        self._started_s = started_s
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []

    def start_clock(self, started_s: float) -> None:
        """Count ``t_ms`` from here on (the runner starts its timeline once the market is full)."""
        self._started_s = started_s

    def t_ms(self) -> int:
        return int((time.monotonic() - self._started_s) * 1000)

    def add(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"t_ms": self.t_ms(), "at_ms": int(time.time() * 1000), "kind": kind, **fields}
        with self._lock:
            self.events.append(event)
            self._file.write(json.dumps(event, sort_keys=True) + "\n")
            self._file.flush()
        return event

    def close(self) -> None:
        with self._lock:
            self._file.close()


class MetricsLog:
    """metrics.csv: one row per sampling interval; node balances as ``balance_mc_<node>``."""

    def __init__(self, out: Path, node_names: Sequence[str]) -> None:
        self.columns = [
            "t_s",
            "nodes_alive",
            "jobs_published",
            "jobs_verified",
            "jobs_failed",
            "jobs_open",
            "reputation_honest_mean",
            "reputation_adversarial_mean",
            *(f"balance_mc_{name}" for name in node_names),
        ]
        self._file: IO[str] = (out / METRICS_FILE).open("w", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)
        self._writer.writeheader()
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._writer.writerow({key: row.get(key, "") for key in self.columns})
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def write_summary(out: Path, summary: dict[str, Any]) -> None:
    path = out / SUMMARY_FILE
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    partial.replace(path)


def plot_all(
    out: Path, jobs: list[dict[str, Any]], metrics: MetricsLog, roles: dict[str, str]
) -> list[str]:
    """Draw every plot that has data; returns the file names written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, draw in (
        ("latency.png", _latency),
        ("credits.png", _credits),
        ("replicas.png", _replicas),
        ("reputation.png", _reputation),
    ):
        figure, axes = plt.subplots(figsize=(7, 4))
        draw(axes, jobs, metrics, roles)
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plt.close(figure)
        written.append(name)
    return written


def _latency(
    axes: Any, jobs: list[dict[str, Any]], metrics: MetricsLog, roles: dict[str, str]
) -> None:
    latencies = [j["latency_ms"] / 1000 for j in jobs if j.get("latency_ms") is not None]
    axes.hist(latencies or [0], bins=min(30, max(5, len(latencies) // 2)), color="tab:blue")
    axes.set_xlabel("job latency, publish to verified result (s)")
    axes.set_ylabel("jobs")
    axes.set_title(f"Job latency ({len(latencies)} verified jobs)")


def _credits(
    axes: Any, jobs: list[dict[str, Any]], metrics: MetricsLog, roles: dict[str, str]
) -> None:
    times = [row["t_s"] for row in metrics.rows]
    for name, role in sorted(roles.items()):
        column = f"balance_mc_{name}"
        values = [row.get(column) for row in metrics.rows]
        points = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
        if not points:
            continue
        style = "-" if role == "honest" else "--"
        axes.plot(*zip(*points, strict=True), style, label=f"{name} ({role})")
    axes.axhline(0, color="grey", linewidth=0.5)
    axes.set_xlabel("time since the run started (s)")
    axes.set_ylabel("ledger balance (milli-credits)")
    axes.set_title("Credits per node over time (publishers spend, workers earn)")
    axes.legend(fontsize=6, ncol=2)


def _replicas(
    axes: Any, jobs: list[dict[str, Any]], metrics: MetricsLog, roles: dict[str, str]
) -> None:
    used = [j["replicas_used"] for j in jobs if j.get("replicas_used")]
    counts: dict[int, int] = {}
    for value in used:
        counts[value] = counts.get(value, 0) + 1
    keys = sorted(counts) or [0]
    axes.bar([str(k) for k in keys], [counts.get(k, 0) for k in keys], color="tab:green")
    axes.set_xlabel("replicas awarded for the job")
    axes.set_ylabel("jobs")
    axes.set_title("Replicas used per job (more when results disagree or workers vanish)")


def _reputation(
    axes: Any, jobs: list[dict[str, Any]], metrics: MetricsLog, roles: dict[str, str]
) -> None:
    for column, label, colour in (
        ("reputation_honest_mean", "honest nodes", "tab:blue"),
        ("reputation_adversarial_mean", "adversarial nodes", "tab:red"),
    ):
        points = [(r["t_s"], r[column]) for r in metrics.rows if r.get(column) is not None]
        if points:
            axes.plot(*zip(*points, strict=True), label=label, color=colour)
    axes.set_xlabel("time since the run started (s)")
    axes.set_ylabel("mean reputation score seen by publishers")
    axes.set_title("Reputation of honest vs adversarial nodes")
    axes.legend()


def connection_counts(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Connected pairs of nodes by kind at each sample time (a pair counts once; if its two ends
    disagree, relayed wins over hole-punched over direct), and the counts at the last sample."""
    rank = {"direct": 0, "hole-punched": 1, "relayed": 2}
    by_time: dict[float, dict[tuple[str, str], str]] = {}
    for s in samples:
        pair = (min(s["node"], s["peer"]), max(s["node"], s["peer"]))
        pairs = by_time.setdefault(s["t_s"], {})
        old = pairs.get(pair, "direct")
        pairs[pair] = s["connection"] if rank[s["connection"]] >= rank[old] else old
    series = []
    for t_s in sorted(by_time):
        counts = dict.fromkeys(rank, 0)
        for kind in by_time[t_s].values():
            counts[kind] += 1
        series.append({"t_s": t_s, **counts})
    return {"final": series[-1] if series else {}, "series": series}


def rtt_by_link_pair(samples: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Ping round trips (ms) between connected nodes, by the pair of their link classes."""
    found: dict[str, list[float]] = {}
    for s in samples:
        if s.get("rtt_ms") is not None:
            found.setdefault(s["link_pair"], []).append(float(s["rtt_ms"]))
    return {
        pair: {"samples": len(v), "p50": percentile(v, 50), "p90": percentile(v, 90)}
        for pair, v in sorted(found.items())
    }


def plot_network(
    out: Path,
    samples: list[dict[str, Any]],
    events: list[dict[str, Any]],
    configured_ms: dict[str, float],
) -> list[str]:
    """connections.png (connected pairs by kind over time, faults marked) and
    link_latency.png (ping round trips by pair of link classes, with the configured delay)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = connection_counts(samples)["series"]
    figure, axes = plt.subplots(figsize=(7, 4))
    times = [row["t_s"] for row in series]
    for kind, colour in (
        ("direct", "tab:blue"),
        ("hole-punched", "tab:green"),
        ("relayed", "tab:orange"),
    ):
        axes.plot(times, [row[kind] for row in series], label=kind, color=colour)
    for event in events:
        label = {"partition": "partition", "partition_healed": "heal", "node_killed": "kill"}
        if event["kind"] in label and event["t_ms"] >= 0:
            axes.axvline(event["t_ms"] / 1000, color="grey", linestyle=":", linewidth=1)
            axes.annotate(
                label[event["kind"]],
                (event["t_ms"] / 1000, 0),
                fontsize=7,
                rotation=90,
                va="bottom",
                color="grey",
            )
    axes.set_xlabel("time since the run started (s)")
    axes.set_ylabel("connected pairs of nodes")
    axes.set_title("Connections by kind over time")
    axes.legend()
    figure.tight_layout()
    figure.savefig(out / "connections.png", dpi=100)
    plt.close(figure)

    by_pair: dict[str, list[float]] = {}
    for s in samples:
        if s.get("rtt_ms") is not None:
            by_pair.setdefault(s["link_pair"], []).append(float(s["rtt_ms"]))
    figure, axes = plt.subplots(figsize=(7, 4))
    pairs = sorted(by_pair)
    if pairs:
        axes.boxplot([by_pair[p] for p in pairs], showfliers=True)
        axes.set_xticks(range(1, len(pairs) + 1), pairs, fontsize=7, rotation=15)
        axes.plot(
            range(1, len(pairs) + 1),
            [configured_ms.get(p, 0) or 1 for p in pairs],
            "rx",
            label="configured by the link classes",
        )
        axes.set_yscale("log")
        axes.legend(fontsize=7)
    axes.set_ylabel("libp2p ping round trip (ms, log scale)")
    axes.set_title("Message latency by pair of link classes")
    figure.tight_layout()
    figure.savefig(out / "link_latency.png", dpi=100)
    plt.close(figure)
    return ["connections.png", "link_latency.png"]
