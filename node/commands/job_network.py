"""The network half of `hearth job`: publish through the running node, follow it, list, show."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from hearth.client import Client, HearthError, JobOptions, JobResult
from hearth.node.commands.common import CommandError, print_json

SPEC_KEYS = {f.name for f in dataclasses.fields(JobOptions)} | {"module", "input", "output"}


def load_spec(path: Path) -> dict[str, Any]:
    """A job spec file (TOML): the same names as the flags, e.g. replicas = 3."""
    try:
        spec = tomllib.loads(path.read_text())
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"{path}: not valid TOML ({exc})") from None
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise CommandError(f"{path}: unknown keys {unknown}; expected some of {sorted(SPEC_KEYS)}")
    return spec


def options_from(spec: dict[str, Any], flags: dict[str, Any]) -> JobOptions:
    """Flags given on the command line win over the spec file, which wins over defaults."""
    values = {k: v for k, v in spec.items() if k not in ("module", "input", "output")}
    values.update({k: v for k, v in flags.items() if v is not None})
    try:
        return JobOptions(**values)
    except TypeError as exc:
        raise CommandError(f"job options: {exc}") from None


def phase_line(event: dict[str, Any]) -> str:
    phase = event["phase"]
    if phase == "running":
        return f"running {event['results']}/{event['replicas']}"
    if event.get("detail") and (phase in ("paid", "failed") or event.get("cause")):
        return f"{phase}: {event['detail']}"  # a cause is shown as soon as it is known
    return str(phase)


def failure_report(result: JobResult) -> dict[str, Any]:
    """What --json prints for a job that failed or could not run."""
    return {
        "job_id": result.job_id,
        "state": "job-failed" if result.verified else "not-run",
        "error_kind": result.error_kind,
        "exit_code": result.exit_code,
        "stderr": result.stderr,
        "cause": result.cause,
        "reason": result.reason,
        "fuel_used": result.fuel_used,
        "paid_mc": result.paid_mc,
        "cli_exit_code": result.cli_exit_code,
    }


def report_failure(result: JobResult, json_output: bool) -> NoReturn:
    """Print how the job failed and exit with its code (10-19, docs/job-failures.md)."""
    if json_output:
        print_json(failure_report(result))
        raise typer.Exit(result.cli_exit_code)
    if result.verified:
        if result.stderr:
            typer.echo("stderr of the job (agreed by its replicas):", err=True)
            typer.echo(result.stderr.rstrip("\n"), err=True)
        raise CommandError(
            f"job {result.job_id} failed: {result.error_kind}, exit code {result.exit_code} "
            f"(fuel {result.fuel_used}; verified by its replicas, who were paid)",
            result.cli_exit_code,
        )
    cause = f" [{result.cause}]" if result.cause else ""
    raise CommandError(
        f"job {result.job_id} did not run{cause}: {result.reason or result.summary['phase']}",
        result.cli_exit_code,
    )


def publish(
    module: Path, data: bytes, output: Path, options: JobOptions, json_output: bool
) -> None:
    """Publish, show progress (bidding, running i/n, verifying, paid), write a verified result."""
    try:
        with Client() as client:
            job_id = client.submit(module, data, options)
            if json_output:
                result = client.wait(job_id)
            else:
                console = Console(stderr=True)
                with console.status(f"job {job_id[:12]}: bidding") as status:
                    for event in client.events(job_id):
                        status.update(f"job {job_id[:12]}: {phase_line(event)}")
                        console.log(phase_line(event))
                result = client.wait(job_id)
    except HearthError as exc:
        raise CommandError(str(exc)) from None
    if not result.ok:
        report_failure(result, json_output)
    try:
        output.write_bytes(result.output)
    except OSError as exc:
        raise CommandError(f"cannot write {output}: {exc.strerror or exc}") from None
    report = {
        "job_id": job_id,
        "state": "accepted",
        "output_sha256": result.output_sha256,
        "output_bytes": len(result.output),
        "fuel_used": result.fuel_used,
        "paid_mc": result.paid_mc,
        "clearing_price_mc_per_tfuel": result.summary["clearing_price_mc_per_tfuel"],
        "replicas": [r["worker"] for r in result.summary["replicas_detail"] if r["paid_mc"]],
        "verify": result.summary["verify"],
        "verified_by": result.summary["verified_by"],
        "spot_checked": result.summary["spot_checked"],
        "error_bound_ppm": result.summary["error_bound_ppm"],
    }
    if json_output:
        print_json(report)
        return
    typer.echo(
        f"verified: {len(result.output)} bytes to {output}, sha256 {result.output_sha256}, "
        f"fuel {result.fuel_used}, paid {result.paid_mc} mc to {len(report['replicas'])} hosts"
        + verification_note(result.summary)
    )


def verification_note(summary: dict[str, Any]) -> str:
    """Under --verify adaptive: how this result was checked and the policy's error bound."""
    if summary["verify"] != "adaptive":
        return ""
    bound_pct = summary["error_bound_ppm"] / 10_000
    return f" ({summary['verified_by']}; adaptive error bound {bound_pct:.2f} %)"


def register(app: typer.Typer, json_option: Any) -> None:
    @app.command("list")
    def list_jobs(
        json_output: bool = json_option,
        worked: bool = typer.Option(False, "--worked", help="Jobs this node ran as a worker."),
    ) -> None:
        """Jobs published from this node (or, with --worked, run by it for others)."""
        if worked:
            list_worked(json_output)
            return
        jobs = _client_call(lambda c: c.jobs())
        if json_output:
            print_json({"jobs": jobs})
            return
        table = Table(title="Jobs published from this node")
        for column in ("job", "state", "replicas", "fuel", "paid mc", "detail"):
            table.add_column(column)
        for job in jobs:
            table.add_row(
                job["job_id"][:12],
                job["state"],
                str(job["replicas"]),
                str(job["fuel_used"]),
                str(job["paid_mc"]),
                job["detail"],
            )
        Console().print(table)

    @app.command("show")
    def show(job_id: str, json_output: bool = json_option) -> None:
        """Bids, winners, each replica's verdict, fuel and credits paid for one job."""
        job = _client_call(lambda c: c.job(job_id))
        if json_output:
            print_json(job)
            return
        typer.echo(f"job {job['job_id']}: {job['state']} {job['detail']}")
        if job.get("cause"):
            typer.echo(f"cause: {job['cause']}")
        if job["state"] == "accepted" and job.get("error_kind"):
            typer.echo(f"the job failed: {job['error_kind']}, exit code {job['exit_code']}")
            if job.get("stderr"):
                typer.echo(f"stderr (agreed by the replicas):\n{job['stderr'].rstrip()}")
        typer.echo(
            f"clearing price {job['clearing_price_mc_per_tfuel']} mc/Tfuel, "
            f"fuel {job['fuel_used']}, paid {job['paid_mc']} mc"
        )
        bids = Table(title="Bids")
        for column in ("worker", "price", "operator", "network", "energy", "rtt ms"):
            bids.add_column(column)
        for bid in job["bids"]:
            bids.add_row(
                bid["worker"][-10:],
                str(bid["price_mc_per_tfuel"]),
                bid["operator"],
                bid["network_group"],
                bid["energy_source"],
                str(bid["rtt_ms"]),
            )
        replicas = Table(title="Replicas")
        for column in ("worker", "state", "verdict", "output", "error", "fuel", "paid mc"):
            replicas.add_column(column)
        for rep in job["replicas_detail"]:
            error = f"{rep['error_kind']} {rep['exit_code']}" if rep["error_kind"] else ""
            replicas.add_row(
                rep["worker"][-10:],
                rep["state"],
                rep["verdict"],
                rep["output_hash"][:12],
                error,
                str(rep["fuel_used"]),
                str(rep["paid_mc"]),
            )
        Console().print(bids, replicas)


def list_worked(json_output: bool) -> None:
    from hearth.node.commands.ledger import worked_jobs  # reads the ledger file, no node needed

    jobs = worked_jobs()
    if json_output:
        print_json({"jobs": jobs})
        return
    table = Table(title="Jobs this node ran as a worker (from its ledger)")
    for column in ("job", "publisher", "state", "paid mc"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job["job_id"][:12], job["publisher"][-10:], job["state"], str(job["paid_mc"]))
    Console().print(table)


def _client_call(call: Any) -> Any:
    try:
        with Client() as client:
            return call(client)
    except HearthError as exc:
        raise CommandError(str(exc)) from None
