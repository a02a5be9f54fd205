"""The Python SDK: publish jobs, follow them and read verified results through a running node.

from hearth import Client
with Client() as client:                      # the node of $HEARTH_HOME (or home=...)
    result = client.run("job.wasm", b"input", replicas=2)
    print(result.output, result.fuel_used, result.paid_mc)
    result.check()                            # raises JobFailed unless the job succeeded

A result is ``ok`` only when the job ran, exited 0 and was verified. A job that failed the same
way on every replica is a verified failure (``verified`` true, ``ok`` false) and carries its
``error_kind``, ``exit_code`` and ``stderr``; a job that could not run carries its ``cause``
(protocol.causes.Cause) and ``reason``, a line that says the fix. ``wait`` and ``run`` report
either in the result; ``check()`` raises ``JobFailed`` for both (ADR 0023).

async with AsyncClient() as client:           # trio or asyncio
    job_id = await client.submit("job.py", b"input")
    async for event in client.events(job_id):
        print(event["phase"], event["detail"])
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import httpx

from hearth import files as job_files
from hearth import inference
from hearth.files import FilesError, JobFiles, Progress, no_progress
from hearth.inference import GeneratedChunk
from hearth.node import paths
from hearth.protocol.causes import exit_code_for

if TYPE_CHECKING:
    from hearth.batch import TaskOutcome

T = TypeVar("T")
EVENTS_WAIT_S = 20.0
UPLOAD_FIRST = "upload the module and the input first"  # the node lacks a blob of the job
TERMINAL_PHASES = frozenset({"paid", "failed"})
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


class HearthError(Exception):
    """The node refused, failed or could not be reached; the message says why."""


class JobFailed(HearthError):
    """The job failed (``result.error_kind``) or could not run (``result.cause``)."""

    def __init__(self, result: JobResult) -> None:
        super().__init__(result.message)
        self.result = result


@dataclasses.dataclass(frozen=True)
class JobResult:
    job_id: str
    ok: bool  # ran, exited 0 and verified
    output: bytes
    output_sha256: str
    fuel_used: int
    paid_mc: int
    reason: str  # why it could not run or was not verified, with the fix; "" otherwise
    summary: dict[str, Any]
    files: tuple[str, ...] = ()  # written under output_dir, for a job with an output folder
    verified: bool = False  # the replicas agreed on this result, success or failure
    error_kind: str = ""  # exit | trap | out-of-fuel | memory-limit | ... ; "" on success
    exit_code: int | None = None  # the job's exit status (-1: it never exited); None unverified
    stderr: str = ""  # the tail of the job's stderr the replicas agreed on
    cause: str = ""  # protocol.causes.Cause when it could not run

    @property
    def message(self) -> str:
        """One line on how the job ended."""
        if self.ok:
            return f"job {self.job_id} verified"
        if self.verified:
            return (
                f"job {self.job_id} failed: {self.error_kind} (exit code {self.exit_code}), "
                f"verified by its replicas"
            )
        return f"job {self.job_id} did not run: {self.reason or self.summary.get('phase', '')}"

    @property
    def spot_checked(self) -> bool:
        """Under verify="adaptive": a trusted host's result compared with another at random."""
        return bool(self.summary.get("spot_checked"))

    @property
    def error_bound_ppm(self) -> int:
        """Under verify="adaptive": the long-run share of accepted results that may be wrong,
        in parts per million (ADR 0034); 0 under "always-2"."""
        return int(self.summary.get("error_bound_ppm", 0))

    @property
    def cli_exit_code(self) -> int:
        """What `hearth job run` exits with for this result (docs/job-failures.md)."""
        return 0 if self.ok else exit_code_for(self.error_kind, self.cause)

    def check(self) -> JobResult:
        """This result if the job succeeded; else raise ``JobFailed`` with it."""
        if not self.ok:
            raise JobFailed(self)
        return self


@dataclasses.dataclass(frozen=True)
class JobOptions:
    runtime: str | None = None  # from the file name when None: .wasm/.wat -> wasm, .py -> python
    replicas: int = 2
    replicas_max: int = 5
    max_price_mc_per_tfuel: int = 100_000
    prefer: str = "cheapest"
    fuel_max: int = 10_000_000_000
    memory_mb_max: int = 256
    deadline_s: int = 120
    bid_window_ms: int = 1_500
    # Seconds a winner has to commit before its award moves on; None derives it from fuel_max
    # and the deadline, so that a winner that never commits is replaced in time.
    lease_s: int | None = None
    # "always-2": every result is compared with another; "adaptive": a host with a long run of
    # matching results may run it alone, spot-checked at random (ADR 0034).
    verify: str = "always-2"

    def body(self, module_hash: str, input_hash: str, runtime: str) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "runtime": runtime,
            "module_hash": module_hash,
            "input_hash": input_hash,
        }


def module_bytes(path: Path) -> bytes:
    """The module as the network runs it: WebAssembly text is compiled to binary first."""
    data = path.read_bytes()
    if path.suffix == ".wat":
        import wasmtime

        try:
            return bytes(wasmtime.wat2wasm(data.decode()))
        except (wasmtime.WasmtimeError, UnicodeDecodeError) as exc:
            raise HearthError(f"{path.name} is not valid WebAssembly text: {exc}") from None
    return data


def runtime_for(path: Path, runtime: str | None) -> str:
    if runtime:
        return runtime
    if path.suffix == ".py":
        return "python"
    if path.suffix in (".wasm", ".wat"):
        return "wasm"
    raise HearthError(f"cannot tell the runtime of {path.name}; pass runtime='wasm' or 'python'")


def _connection(home: Path | None) -> tuple[str, dict[str, str]]:
    home = home or paths.data_dir()
    try:
        info = json.loads(paths.node_info_path(home).read_text())
    except FileNotFoundError:
        raise HearthError(
            f"no running node for {home}; start one with `hearth node start`"
        ) from None
    try:
        token = paths.read_token(paths.token_path(home))
    except ValueError as exc:
        raise HearthError(str(exc)) from None
    from hearth.node.client import forwarded_api

    return forwarded_api(home, info) or info["api"], {"Authorization": f"Bearer {token}"}


def _check(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            reason = response.json().get("error", response.text)
        except ValueError:
            reason = response.text
        raise HearthError(f"the node refused: {reason}")
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.json()
    return response.content


def _has_output(summary: dict[str, Any]) -> bool:
    """A verified success with a non-empty output: the one result with a blob to fetch."""
    return (
        summary["state"] == "accepted"
        and not summary.get("error_kind")
        and summary.get("result_hash", "") not in ("", EMPTY_SHA256)
    )


def _result(summary: dict[str, Any], output: bytes, files: tuple[str, ...] = ()) -> JobResult:
    verified = summary["state"] == "accepted"
    error_kind = str(summary.get("error_kind", "")) if verified else ""
    return JobResult(
        files=files,
        job_id=summary["job_id"],
        ok=verified and not error_kind,
        output=output,
        output_sha256=summary.get("result_hash", ""),
        fuel_used=summary.get("fuel_used", 0),
        paid_mc=summary.get("paid_mc", 0),
        reason=summary.get("reason", ""),
        summary=summary,
        verified=verified,
        error_kind=error_kind,
        exit_code=summary.get("exit_code") if verified else None,
        stderr=str(summary.get("stderr", "")) if verified else "",
        cause=str(summary.get("cause", "")),
    )


class Client:
    """A blocking client of the local node's API."""

    def __init__(self, home: Path | None = None, *, timeout_s: float = 60.0) -> None:
        base_url, headers = _connection(home)
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)
        self._home, self._timeout_s = home, timeout_s
        self._modules: set[str] = set()  # module hashes this client uploaded: not sent again

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return _check(self._http.request(method, path, **kwargs))
        except httpx.HTTPError as exc:
            raise HearthError(f"the node did not answer: {exc}") from None

    def put_blob(self, data: bytes) -> str:
        return str(self._call("PUT", "/v1/blobs", content=data)["hash"])

    def blob(self, digest: str) -> bytes:
        data = self._call("GET", f"/v1/blobs/{digest}")
        assert isinstance(data, bytes)
        return data

    def submit(
        self,
        module: str | Path,
        input: bytes = b"",
        options: JobOptions | None = None,
        *,
        files: JobFiles | None = None,
        progress: Progress = no_progress,
    ) -> str:
        """Publish a job. With ``files`` (inputs, args, env, stdin file, output folder) the input
        goes as a bundle of chunks, uploading only those the node lacks (ADR 0024)."""
        path = Path(module)
        options = options or JobOptions()
        runtime = runtime_for(path, options.runtime)
        code = module_bytes(path)
        module_hash = hashlib.sha256(code).hexdigest()
        if module_hash not in self._modules:
            module_hash = self.put_blob(code)
        if files is not None and files.used:
            try:
                digest, input_bytes = job_files.upload(self, files, input, progress)
            except FilesError as exc:
                raise HearthError(str(exc)) from None
            input_hash = digest.hex()
            if options.lease_s is None:
                lease_s = job_files.lease_s_for(input_bytes, options.deadline_s)
                options = dataclasses.replace(options, lease_s=lease_s)
        else:
            input_hash = self.put_blob(input)
        body = options.body(module_hash, input_hash, runtime)
        try:
            job_id = str(self._call("POST", "/v1/jobs", json=body)["job_id"])
        except HearthError as exc:
            if module_hash not in self._modules or UPLOAD_FIRST not in str(exc):
                raise
            self._modules.discard(module_hash)  # the node let it go since: upload it again
            self.put_blob(code)
            job_id = str(self._call("POST", "/v1/jobs", json=body)["job_id"])
        self._modules.add(module_hash)  # a repeated job skips one request (ADR 0031)
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/jobs/{job_id}")
        return result

    def jobs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/jobs")["jobs"]
        return result

    def events(self, job_id: str) -> Iterator[dict[str, Any]]:
        """Each progress event of the job, as it happens, until it is paid or failed."""
        after = 0
        while True:
            batch = self._call(
                "GET", f"/v1/jobs/{job_id}/events", params={"after": after, "wait_s": EVENTS_WAIT_S}
            )
            yield from batch["events"]
            after = batch["next"]
            if batch["done"]:
                return

    def wait(
        self, job_id: str, output_dir: str | Path | None = None, progress: Progress = no_progress
    ) -> JobResult:
        """The verified result. A job with an output folder has its files written under
        ``output_dir`` and its stdout as ``output``."""
        for _ in self.events(job_id):
            pass
        summary = self.job(job_id)
        if not _has_output(summary):
            return _result(summary, b"")
        output = self.blob(summary["result_hash"])
        tree = job_files.tree_of(output)
        if tree is None:
            return _result(summary, output)
        if output_dir is None:
            raise HearthError("the job returned an output folder: pass output_dir")
        try:
            job_files.wait_fetched(self, job_id, tree.total_bytes, progress)
            stdout, written = job_files.download(self, tree, Path(output_dir), progress)
        except FilesError as exc:
            raise HearthError(str(exc)) from None
        return _result(summary, stdout, written)

    def run(
        self,
        module: str | Path,
        input: bytes = b"",
        *,
        inputs: list[str | Path] | tuple[str | Path, ...] = (),
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        stdin: str | Path | None = None,
        output_dir: str | Path | None = None,
        progress: Progress = no_progress,
        **options: Any,
    ) -> JobResult:
        """Publish and wait. ``inputs`` (files, or folders whose contents) appear read-only
        under /input; with ``output_dir`` the job writes /output and gets its files back."""
        files = JobFiles.of(inputs, args, env, stdin, output_dir)
        job_id = self.submit(module, input, JobOptions(**options), files=files, progress=progress)
        return self.wait(job_id, output_dir, progress)

    def generate(
        self, program: str | Path, weights: bytes, prompt: str, *, tokens: int, **options: Any
    ) -> Iterator[GeneratedChunk]:
        """Continue ``prompt`` by ``tokens`` characters, yielding each verified chunk as it lands.

        ``program`` is a model job such as examples/inference/generate.py; options are
        ``chunk_tokens``, ``seed``, ``temperature_milli`` and any of JobOptions (replicas, ...).
        """
        return inference.generate(self, program, weights, prompt, tokens=tokens, **options)

    def market(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/market")
        return result

    def map(
        self, module: str | Path, inputs: Sequence[bytes], **options: Any
    ) -> Iterator[TaskOutcome]:
        """Run ``module`` on each of ``inputs`` in verified bundles (ADR 0033): an iterator of
        each task's outcome, as its bundle is verified. Options are those of ``BatchOptions``."""
        from hearth import batch

        home, timeout_s = self._home, self._timeout_s

        async def run(emit: batch.Emit) -> None:
            async with AsyncClient(home, timeout_s=timeout_s) as client:
                tasks = batch.MemoryTasks(inputs)
                await batch.runner_for(client, Path(module), tasks, options, emit).run()

        return batch.iterate_in_thread(run)

    def peers(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/v1/peers")["peers"]
        return result

    def balance_mc(self) -> int:
        return int(self._call("GET", "/v1/ledger/balance")["balance_mc"])


class AsyncClient:
    """The same powers for async code (trio or asyncio), with an async iterator of job events."""

    def __init__(self, home: Path | None = None, *, timeout_s: float = 60.0) -> None:
        base_url, headers = _connection(home)
        self._http = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s)
        self._home, self._timeout_s = home, timeout_s  # file transfers run a Client in a thread
        self.home = home or paths.data_dir()  # the node's home: a batch keeps its record there

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            return _check(await self._http.request(method, path, **kwargs))
        except httpx.HTTPError as exc:
            raise HearthError(f"the node did not answer: {exc}") from None

    async def submit(
        self,
        module: str | Path,
        input: bytes = b"",
        options: JobOptions | None = None,
        *,
        files: JobFiles | None = None,
        progress: Progress = no_progress,
    ) -> str:
        if files is not None and files.used:  # chunked, blocking file I/O: off the event loop
            return await self._in_thread(
                lambda c: c.submit(module, input, options, files=files, progress=progress)
            )
        path = Path(module)
        options = options or JobOptions()
        runtime = runtime_for(path, options.runtime)
        module_hash = (await self._call("PUT", "/v1/blobs", content=module_bytes(path)))["hash"]
        input_hash = (await self._call("PUT", "/v1/blobs", content=input))["hash"]
        body = options.body(module_hash, input_hash, runtime)
        return str((await self._call("POST", "/v1/jobs", json=body))["job_id"])

    async def put_blob(self, data: bytes) -> str:
        return str((await self._call("PUT", "/v1/blobs", content=data))["hash"])

    async def blob(self, digest: str, *, wait_s: float = 0.0) -> bytes:
        """A blob the node holds; ``wait_s``: wait up to that long (and half this client's
        timeout) for one it is still fetching."""
        params = {"wait_s": min(wait_s, self._timeout_s / 2)} if wait_s else None
        data = await self._call("GET", f"/v1/blobs/{digest}", params=params)
        assert isinstance(data, bytes)
        return data

    async def publish(self, body: dict[str, Any]) -> str:
        """Publish a job whose blobs the node holds (``POST /v1/jobs``); returns its id."""
        return str((await self._call("POST", "/v1/jobs", json=body))["job_id"])

    async def cancel(self, job_id: str) -> dict[str, Any]:
        """Stop a job published here: its open awards are withdrawn with signed cancels."""
        result: dict[str, Any] = await self._call("POST", f"/v1/jobs/{job_id}/cancel")
        return result

    async def market(self) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", "/v1/market")
        return result

    async def map(
        self, module: str | Path, inputs: Sequence[bytes], **options: Any
    ) -> AsyncIterator[TaskOutcome]:
        """Run ``module`` on each of ``inputs`` in verified bundles (ADR 0033); yield each
        task's outcome as its bundle is verified. Options are those of ``BatchOptions``."""
        from hearth import batch

        send, receive = anyio.create_memory_object_stream[batch.TaskOutcome](math.inf)

        async def emit(outcomes: list[TaskOutcome]) -> None:
            for outcome in outcomes:
                await send.send(outcome)

        runner = batch.runner_for(self, Path(module), batch.MemoryTasks(inputs), options, emit)
        async with anyio.create_task_group() as group:

            async def run() -> None:
                async with send:
                    await runner.run()

            group.start_soon(run)
            async with receive:
                async for outcome in receive:
                    yield outcome

    async def events(self, job_id: str) -> AsyncIterator[dict[str, Any]]:
        after = 0
        while True:
            batch = await self._call(
                "GET", f"/v1/jobs/{job_id}/events", params={"after": after, "wait_s": EVENTS_WAIT_S}
            )
            for event in batch["events"]:
                yield event
            after = batch["next"]
            if batch["done"]:
                return

    async def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self._call("GET", f"/v1/jobs/{job_id}")
        return result

    async def wait(
        self, job_id: str, output_dir: str | Path | None = None, progress: Progress = no_progress
    ) -> JobResult:
        async for _ in self.events(job_id):
            pass
        summary = await self.job(job_id)
        output = b""
        if _has_output(summary):
            output = await self._call("GET", f"/v1/blobs/{summary['result_hash']}")
            if job_files.tree_of(output) is not None:
                return await self._in_thread(lambda c: c.wait(job_id, output_dir, progress))
        return _result(summary, output)

    async def run(
        self,
        module: str | Path,
        input: bytes = b"",
        *,
        inputs: list[str | Path] | tuple[str | Path, ...] = (),
        args: list[str] | tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        stdin: str | Path | None = None,
        output_dir: str | Path | None = None,
        progress: Progress = no_progress,
        **options: Any,
    ) -> JobResult:
        files = JobFiles.of(inputs, args, env, stdin, output_dir)
        job_id = await self.submit(
            module, input, JobOptions(**options), files=files, progress=progress
        )
        return await self.wait(job_id, output_dir, progress)

    async def _in_thread(self, call: Callable[[Client], T]) -> T:
        def run() -> T:
            with Client(self._home, timeout_s=self._timeout_s) as client:
                return call(client)

        return await anyio.to_thread.run_sync(run)
