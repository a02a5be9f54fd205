"""A large-input job on a three-node loopback network, measured (ADR 0024).

The publisher uploads a random file as chunks; two workers fetch them (from the publisher and
from each other), run files_sum.wat over /input/data and return /output/sum.bin; the publisher
downloads the agreed output. The result is checked against the same sum computed here, and each
worker's transfer counters say how many bytes and chunks it downloaded. Used by bench/bigio.py
(1 GB) and by the test suite (64 MiB).
"""

from __future__ import annotations

import array
import os
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hearth.client import Client
from hearth.node import chunks
from hearth.node.config import TEMPLATE
from hearth.testnet import launch
from hearth.testnet.observe import market_complete

MODULE = Path(__file__).resolve().parents[1] / "node" / "sandbox" / "modules" / "files_sum.wat"
MIB = 1024 * 1024
NODES = 3


def node_config(store_mb: int) -> str:
    """Wasm only, replicas allowed on one loopback /24, and room for the input in the store."""
    return (
        TEMPLATE.replace("network_group_prefix_v4 = 24", "network_group_prefix_v4 = 32")
        .replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')
        .replace("blob_store_mb = 4096", f"blob_store_mb = {store_mb * 2}")
        .replace("blob_store_peer_mb = 512", f"blob_store_peer_mb = {store_mb}")
        .replace("input_mb_max = 2048", f"input_mb_max = {store_mb}")
    )


def write_random(path: Path, size_bytes: int) -> tuple[int, int]:
    """Write ``size_bytes`` of random data, one MiB at a time; (count, sum) as the job computes
    them: each 1 MiB read's little-endian words, then its tail bytes, wrapping at 2^64."""
    total = 0
    with path.open("wb") as out:
        for start in range(0, size_bytes, MIB):
            block = os.urandom(min(MIB, size_bytes - start))
            out.write(block)
            whole = len(block) // 8 * 8
            total += sum(array.array("Q", block[:whole])) + sum(block[whole:])
    return size_bytes, total % 2**64


def run(
    root: Path,
    size_bytes: int,
    log: Callable[[str], None] = lambda line: None,
    then: Callable[[list[launch.LaunchedNode]], None] = lambda nodes: None,
) -> dict[str, Any]:
    """Start the network, run the job, call ``then`` with the nodes, stop the network; the
    figures as one dict."""
    store_mb = max(256, 2 * size_bytes // MIB + 64)
    inputs = root / "inputs"
    inputs.mkdir(parents=True)
    expected = write_random(inputs / "data", size_bytes)
    log(f"input written: {size_bytes} bytes")
    nodes = launch.up(root / "nodes", NODES, configs=[node_config(store_mb)] * NODES)
    try:
        launch.wait_for(lambda: market_complete(nodes), 60, "every market to be complete")
        figures = _measure(nodes, inputs, root / "out", expected, size_bytes, log)
        then(nodes)
        return figures
    finally:
        launch.stop(nodes)


def _measure(
    nodes: list[launch.LaunchedNode],
    inputs: Path,
    out: Path,
    expected: tuple[int, int],
    size_bytes: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    updates: dict[str, int] = {}

    def progress(stage: str, done: int, total: int) -> None:
        updates[stage] = updates.get(stage, 0) + 1

    publisher = nodes[0]
    started = time.monotonic()
    with Client(publisher.home, timeout_s=300) as client:
        result = client.run(
            MODULE,
            inputs=[inputs],
            output_dir=out,
            progress=progress,
            replicas=2,
            fuel_max=4 * size_bytes + 10**9,
            deadline_s=1800,
        )
    seconds = time.monotonic() - started
    if not result.ok:
        raise RuntimeError(f"the job failed: {result.reason}")
    got = struct.unpack("<QQ", (out / "sum.bin").read_bytes())
    workers = [r["worker"] for r in result.summary["replicas_detail"] if r["paid_mc"] > 0]
    downloaded = {}
    for node in nodes:
        with Client(node.home) as client:
            downloaded[node.info["peer_id"]] = client._call("GET", "/v1/transfers")["downloaded"]
    chunk_count = -(-size_bytes // chunks.CHUNK_BYTES)
    peak_rss_mb = {node.info["peer_id"]: _peak_rss_mb(node.pid) for node in nodes}
    log(f"done in {seconds:.1f} s")
    return {
        "bytes": size_bytes,
        "seconds": round(seconds, 2),
        "mb_per_s": round(size_bytes / MIB / seconds, 1),
        "output_ok": got == expected,
        "chunks": chunk_count,
        "workers": workers,
        "worker_bytes_downloaded": {w: downloaded[w]["bytes"] for w in workers},
        "worker_chunks_downloaded": {w: downloaded[w]["chunks"] for w in workers},
        "worker_sources": {w: downloaded[w]["by_peer"] for w in workers},
        "publisher": publisher.info["peer_id"],
        "progress_updates": updates,
        "fuel_used": result.fuel_used,
        "paid_mc": result.paid_mc,
        "node_peak_rss_mb": peak_rss_mb,  # the daemons' high-water marks: bounded, not ~size
    }


def _peak_rss_mb(pid: int) -> int:
    """VmHWM of a node process (Linux), in MiB; -1 where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1
