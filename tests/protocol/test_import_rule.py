"""protocol/ and the ledger's chain rules do no I/O: walk their AST and refuse forbidden imports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FORBIDDEN = {
    "trio", "libp2p", "sqlite3", "sqlite_utils", "socket", "time", "os", "subprocess",
    "threading", "concurrent", "multiprocessing",
}  # fmt: skip
# The drivers of ledger/: store.py is the only SQLite code, parallel.py the only threads.
LEDGER_IO_MODULES = ("store.py", "parallel.py")


def pure_files() -> list[Path]:
    files = sorted((ROOT / "protocol").rglob("*.py"))
    ledger = sorted((ROOT / "ledger").glob("*.py"))
    files += [path for path in ledger if path.name not in LEDGER_IO_MODULES]
    return files


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def forbidden_imports(path: Path) -> list[str]:
    return [
        f"{path.name}:{line} imports {name}"
        for line, name in imports(path)
        if name.split(".")[0] in FORBIDDEN
    ]


def module_level_random_calls(path: Path) -> list[str]:
    """``random.random()`` and friends share hidden global state; only injected Randoms may."""
    tree = ast.parse(path.read_text(), filename=str(path))
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "random"
            and node.func.attr != "Random"
        ):
            calls.append(f"{path.name}:{node.lineno} calls random.{node.func.attr}")
    return calls


def test_the_pure_modules_exist() -> None:
    names = {p.name for p in pure_files()}
    assert {"codec.py", "envelope.py", "engine.py", "pricing.py", "chain.py", "entry.py"} <= names


@pytest.mark.parametrize("path", pure_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_io_imports(path: Path) -> None:
    assert forbidden_imports(path) == []
    assert module_level_random_calls(path) == []


def test_the_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom trio import sleep\nimport random\nx = random.random()\n")
    assert len(forbidden_imports(bad)) == 2
    assert len(module_level_random_calls(bad)) == 1


# ADR 0019: the engine sees its chain through ledger.view; the stores belong to the shell.
STORE_MODULES = ("hearth.ledger.base", "hearth.ledger.store", "hearth.ledger.memory")


def store_imports(path: Path) -> list[str]:
    return [
        f"{path.name}:{line} imports {name}"
        for line, name in imports(path)
        if name in STORE_MODULES
    ]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "protocol").rglob("*.py")), ids=lambda p: f"protocol/{p.name}"
)
def test_protocol_names_no_ledger_store(path: Path) -> None:
    assert store_imports(path) == []


def test_loading_the_engine_loads_no_ledger_store() -> None:
    code = "import sys, protocol.engine; print(sorted(m for m in sys.modules if m in %r))"
    loaded = subprocess.run(
        [sys.executable, "-c", code % (STORE_MODULES,)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert loaded.stdout.strip() == "[]"
