"""Run fuzz targets under atheris (libFuzzer): ``python -m tests.fuzz.run TARGET [ARGS...]``.

TARGET is one of ``targets.TARGETS`` or ``all``, which runs every target in one process (the
input's first byte picks the target, the rest is its input): one start-up instead of eight, which
is what CI can afford. ARGS are libFuzzer's: corpus directories (new inputs go to the first, which
is seeded from ``tests/fuzz/corpus`` first), ``-max_total_time=S``, ``-runs=N``,
``-artifact_prefix=DIR/``, or one file to replay a single input. From the repository root::

    PYTHONPATH=. .venv/bin/python -m tests.fuzz.run all -max_total_time=3600 /tmp/fuzz-all
    PYTHONPATH=. .venv/bin/python -m tests.fuzz.run chain -max_total_time=600 /tmp/fuzz-chain
    PYTHONPATH=. .venv/bin/python -m tests.fuzz.run chain /tmp/crash-0123abcd   # replay one

A crash prints the Python traceback and writes ``crash-<sha1>`` under the artifact prefix. An
input that hits a known issue (``targets.KnownIssue``) is written as ``known-<sha1>`` and
reported once on stderr; it does not stop the run. With ``HEARTH_FUZZ_STATS=FILE`` the run keeps
FILE up to date with each target's executions and the seconds spent in it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path

import atheris

with atheris.instrument_imports(
    include=["hearth.protocol", "hearth.ledger", "hearth.node.blobs", "tests.fuzz"]
):
    from tests.fuzz import targets

CORPUS = Path(__file__).resolve().parent / "corpus"
NAMES = sorted(targets.TARGETS)
STATS_INTERVAL_S = 0.5


def seeds(name: str) -> list[bytes]:
    """The stored corpus and regressions of ``name`` (every target's, prefixed, for ``all``)
    and, for the parsers, one seed per registered message."""
    if name == "all":
        return [bytes([i]) + s for i, n in enumerate(NAMES) for s in seeds(n)]
    regressions = CORPUS.parent / "regressions" / name
    files = sorted((CORPUS / name).iterdir())
    files += sorted(regressions.iterdir()) if regressions.is_dir() else []
    found = [p.read_bytes() for p in files]
    return found + (targets.registry_seeds() if name in ("codec", "messages") else [])


def _plant(name: str, argv: list[str]) -> None:
    """Write the seeds into the first corpus directory, where libFuzzer will read them."""
    dirs = [a for a in argv[1:] if not a.startswith("-")]
    if not dirs or Path(dirs[0]).is_file():
        return
    folder = Path(dirs[0])
    folder.mkdir(parents=True, exist_ok=True)
    for seed in seeds(name):
        (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)


class Stats:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.execs = dict.fromkeys(NAMES, 0)
        self.seconds = dict.fromkeys(NAMES, 0.0)
        self.written_s = time.monotonic()

    def add(self, name: str, seconds: float) -> None:
        self.execs[name] += 1
        self.seconds[name] += seconds
        now = time.monotonic()
        if self.path and now - self.written_s > STATS_INTERVAL_S:
            self.written_s = now
            table = {n: [self.execs[n], round(self.seconds[n], 3)] for n in NAMES}
            Path(self.path).write_text(json.dumps(table))


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in (*NAMES, "all"):
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(NAMES)},all}} [libFuzzer args]")
    name = sys.argv[1]
    argv = [sys.argv[0], *sys.argv[2:]]
    prefix = next((a.split("=", 1)[1] for a in argv if a.startswith("-artifact_prefix=")), "./")
    _plant(name, argv)
    known: set[str] = set()
    stats = Stats(os.environ.get("HEARTH_FUZZ_STATS"))

    def test_one_input(data: bytes) -> None:
        if name == "all":
            if not data:
                return
            target, data = targets.TARGETS[NAMES[data[0] % len(NAMES)]], data[1:]
        else:
            target = targets.TARGETS[name]
        started = time.perf_counter()
        try:
            targets.run_one(target, data)
        except targets.KnownIssue as exc:
            path = f"{prefix}known-{hashlib.sha1(data).hexdigest()}"
            Path(path).write_bytes(data)
            if str(exc) not in known:
                known.add(str(exc))
                sys.stderr.write(f"KNOWN ISSUE in {target.name}: {exc}: input {path}\n")
        stats.add(target.name, time.perf_counter() - started)

    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
