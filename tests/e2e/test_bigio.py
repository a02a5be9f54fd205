"""A 64 MiB input job across three real nodes: each worker fetches each chunk exactly once, from
the publisher and from the other worker, and the verified output folder is right (ADR 0024)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hearth.testnet import bigio

pytestmark = pytest.mark.integration

SIZE_BYTES = 64 * bigio.MIB


def test_a_64_mib_input_is_fetched_once_per_worker_and_the_output_is_right(
    tmp_path: Path,
) -> None:
    figures = bigio.run(tmp_path, SIZE_BYTES)
    assert figures["output_ok"], figures
    assert len(figures["workers"]) == 2
    for worker in figures["workers"]:
        assert figures["worker_chunks_downloaded"][worker] == figures["chunks"]  # once each
        assert figures["worker_bytes_downloaded"][worker] == SIZE_BYTES
    assert figures["progress_updates"]["upload"] >= figures["chunks"]  # the bar moved per chunk
    assert figures["progress_updates"]["download"] >= 1
    assert all(mb < 512 for mb in figures["node_peak_rss_mb"].values()), figures
