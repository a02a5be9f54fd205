"""The wheel installs one import package, `hearth`; the required folders are mapped into it."""

import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("node", "p2p", "protocol", "ledger", "testnet")


def _sources() -> list[Path]:
    found = []
    for top in (*FOLDERS, "hearth", "tests", "bench", "examples", "docs"):
        for path in (ROOT / top).rglob("*.py"):
            if "hearth" not in path.relative_to(ROOT).parts[1:2]:
                found.append(path)
    return found


def test_every_folder_is_mapped_into_the_hearth_package() -> None:
    for name in FOLDERS:
        link = ROOT / "hearth" / name
        assert link.is_symlink() and link.resolve() == (ROOT / name).resolve(), name


def test_no_source_imports_a_folder_by_its_old_top_level_name() -> None:
    offenders = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            where = path.relative_to(ROOT)
            offenders += [f"{where}: {n}" for n in names if n.split(".")[0] in FOLDERS]
    assert offenders == []


@pytest.mark.slow
def test_the_wheel_holds_only_hearth_and_runs_without_the_checkout(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(ROOT)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("hearthnet-*.whl")
    tops = {name.split("/")[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith((".dist-info", ".data"))} == {"hearth"}
    assert {
        "hearth/node/sandbox/modules/echo.wat",
        "hearth/testnet/__init__.py",
        "hearth/node/dashboard/static/index.html",
        "hearth/node/dashboard/static/uPlot.iife.min.js",
    } <= set(
        zipfile.ZipFile(wheel).namelist()
    )
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
         str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert install.returncode == 0, install.stderr
    # The installed copy alone, beside this venv's dependencies, with the checkout off the path.
    env = {**os.environ, "PYTHONPATH": str(target), "HEARTH_HOME": str(tmp_path / "home")}
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-P", *args], capture_output=True, text=True,
                              env=env, cwd=tmp_path, timeout=120)
    init = run("-m", "hearth", "init")
    assert init.returncode == 0, init.stderr
    where = run(
        "-c", "import hearth.node.cli, hearth.protocol.engine; print(hearth.node.cli.__file__)"
    )
    assert where.stdout.strip().startswith(str(target)), where
    old = run("-c", "import node")
    assert old.returncode != 0 and "ModuleNotFoundError" in old.stderr
