"""`hearth job run` with files (ADR 0024): --input PATH..., --output DIR, --arg, --env, --stdin.

A run uses files when it has --arg, --env or --stdin, more than one --input, an --input folder,
or an --output that is a folder (existing, or written with a trailing slash); otherwise --input
and --output stay the job's stdin and stdout files, as before. Transfers show a progress bar.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from hearth.client import Client, HearthError, JobOptions
from hearth.files import FilesError, JobFiles, input_files
from hearth.node import chunks
from hearth.node.commands.common import CommandError, print_json
from hearth.node.sandbox.model import ExecutionResult, JobRequest

STAGES = {"upload": "uploading inputs", "fetch": "node fetching output", "download": "downloading"}


def uses_files(
    inputs: list[Path], output: Path | None, args: list[str], env: list[str], stdin: Path | None
) -> bool:
    folder_out = output is not None and (output.is_dir() or str(output).endswith("/"))
    many = len(inputs) > 1 or any(p.is_dir() for p in inputs)
    return bool(args or env or stdin or many or folder_out)


def parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        problem = chunks.check_env_name(key) if sep else f"--env {pair!r} is not KEY=VALUE"
        if problem:
            raise CommandError(problem)
        env[key] = value
    return env


def job_files(
    inputs: list[Path], output: Path | None, args: list[str], env: list[str], stdin: Path | None
) -> JobFiles:
    files = JobFiles.of(inputs, args, parse_env(env), stdin, output)
    try:
        input_files(files.inputs)  # a missing or doubled input: one line, before any upload
    except FilesError as exc:
        raise CommandError(str(exc)) from None
    if stdin is not None and not stdin.is_file():
        raise CommandError(f"--stdin {stdin} does not exist")
    if output is not None and output.exists() and not output.is_dir():
        raise CommandError(f"--output {output} is a file; give a folder for the job's /output")
    return files


class Bar:
    """One rich progress bar per transfer stage, on stderr."""

    def __init__(self, enabled: bool) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            disable=not enabled,
        )
        self.tasks: dict[str, TaskID] = {}
        self.updates = 0

    def __call__(self, stage: str, done: int, total: int) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(STAGES.get(stage, stage), total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)
        self.updates += 1


def publish(
    module: Path, files: JobFiles, options: JobOptions, json_output: bool
) -> dict[str, Any]:
    bar = Bar(enabled=not json_output and sys.stderr.isatty())
    try:
        with Client() as client, bar.progress:
            job_id = client.submit(module, b"", options, files=files, progress=bar)
            if not json_output:
                Console(stderr=True).log(f"job {job_id[:12]} published")
            result = client.wait(job_id, files.output_dir, bar)
    except HearthError as exc:
        raise CommandError(str(exc)) from None
    if not result.ok:
        raise CommandError(f"job {job_id} failed: {result.reason or result.summary['phase']}")
    report = {
        "job_id": job_id,
        "state": "accepted",
        "output_tree_sha256": result.output_sha256,
        "stdout_bytes": len(result.output),
        "files": list(result.files),
        "fuel_used": result.fuel_used,
        "paid_mc": result.paid_mc,
    }
    finish(report, result.output, files.output_dir, json_output)
    return report


def finish(report: dict[str, Any], stdout: bytes, output: Path | None, json_output: bool) -> None:
    if json_output:
        print_json(report)
        return
    sys.stdout.buffer.write(stdout)
    sys.stdout.flush()
    where = f" in {output}" if output else ""
    typer.echo(f"verified: {len(report['files'])} files{where}, fuel {report['fuel_used']}")


def run_local(request: JobRequest, files: JobFiles, run: Any, json_output: bool) -> ExecutionResult:
    """Run here: inputs copied to a scratch /input, /output collected into --output."""
    with tempfile.TemporaryDirectory(prefix="hearth-job-") as scratch:
        input_dir, output_dir = Path(scratch, "input"), Path(scratch, "output")
        input_dir.mkdir()
        output_dir.mkdir()
        try:
            for name, path in input_files(files.inputs):
                (input_dir / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, input_dir / name)
            stdin = files.stdin.read_bytes() if files.stdin else b""
        except (FilesError, OSError) as exc:
            raise CommandError(str(exc)) from None
        bytes_max = files.output_mb_max << 20
        request = JobRequest(
            **{
                **request.to_message(),
                "input": stdin,
                "args": files.args,
                "env": files.env,
                "input_dir": str(input_dir),
                "output_dir": str(output_dir) if files.output_dir else "",
                "output_dir_bytes_max": bytes_max,
                "output_files_max": files.output_files_max,
            }
        )
        result: ExecutionResult = run(request)
        if result.ok and files.output_dir is not None:
            found = chunks.collect_output(output_dir, bytes_max, files.output_files_max)
            if isinstance(found, str):
                raise CommandError(f"output-too-large: {found}")
            for name, path in found:
                target = files.output_dir / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
        return result
