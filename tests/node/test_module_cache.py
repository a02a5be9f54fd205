"""The compiled-module cache on disk: capped, least recently used evicted, never fatal."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import wasmtime

from hearth.node.commands.common import CommandError
from hearth.node.config import parse
from hearth.node.sandbox import SandboxConfig, SandboxPool
from hearth.node.sandbox.wasm import ModuleCache, make_engine
from tests.node.test_sandbox import request


def module(n: int) -> bytes:
    """Distinct modules of about the same compiled size."""
    return wasmtime.wat2wasm(f'(module (func (export "_start") i32.const {n} drop))')


def cached(directory: Path) -> dict[str, int]:
    return {p.stem: p.stat().st_size for p in directory.glob("*.cwasm")}


def test_the_directory_stays_within_its_cap_and_keeps_the_recently_used(tmp_path: Path) -> None:
    engine = make_engine(epoch_interruption=False)
    probe = ModuleCache(engine, tmp_path / "probe")
    probe.get(module(0))
    size = next(iter(cached(tmp_path / "probe").values()))
    cache = ModuleCache(engine, tmp_path / "c", bytes_max=3 * size + size // 2)  # room for 3
    for n in range(3):
        cache.get(module(n))
    first = hashlib.sha256(module(0)).hexdigest()
    os.utime(tmp_path / "c" / f"{first}.cwasm", ns=(1, 1))  # make it the oldest...
    fresh = ModuleCache(engine, tmp_path / "c", bytes_max=cache.bytes_max)  # no memory cache
    _, hit = fresh.get(module(0))  # ...then use it: a load marks it recently used
    assert hit
    for n in range(3, 5):
        fresh.get(module(n))
        assert sum(cached(tmp_path / "c").values()) <= cache.bytes_max
    kept = set(cached(tmp_path / "c"))
    assert kept == {hashlib.sha256(module(n)).hexdigest() for n in (0, 3, 4)}  # 1, 2 evicted


def test_a_zero_cap_keeps_nothing_on_disk(tmp_path: Path) -> None:
    cache = ModuleCache(make_engine(epoch_interruption=False), tmp_path / "c", bytes_max=0)
    compiled, hit = cache.get(module(1))
    assert compiled is not None and not hit
    assert cached(tmp_path / "c") == {}


def test_a_full_disk_costs_a_compile_not_the_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def full(self: Path, data: bytes) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full)
    cache = ModuleCache(make_engine(epoch_interruption=False), tmp_path / "c")
    compiled, hit = cache.get(module(2))
    assert compiled is not None and not hit
    assert list((tmp_path / "c").iterdir()) == []  # no partial file left behind
    assert "not cached: [Errno 28] No space left on device" in capsys.readouterr().err


async def test_the_pool_passes_the_cap_to_its_workers(tmp_path: Path) -> None:
    config = SandboxConfig(home=tmp_path / "home", workers=1, module_cache_bytes_max=0)
    async with SandboxPool(config) as pool:
        assert (await pool.run(request("hello"))).ok
    assert list((tmp_path / "home" / "cache" / "sandbox").rglob("*.cwasm")) == []


def test_the_node_config_names_the_cap_in_megabytes() -> None:
    assert parse("[limits]\nmodule_cache_mb = 64\n").module_cache_mb == 64
    assert parse("").module_cache_mb == 512
    with pytest.raises(CommandError, match=r"limits\.module_cache_mb"):
        parse("[limits]\nmodule_cache_mb = -1\n")
