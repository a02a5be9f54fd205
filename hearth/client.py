"""The Python SDK: publish jobs, follow them and read verified results through a running node.

from hearth import Client
with Client() as client:                      # the node of $HEARTH_HOME (or home=...)
    result = client.run("job.wasm", b"input", replicas=2)
    print(result.output, result.fuel_used, result.paid_mc)

async with AsyncClient() as client:           # trio or asyncio
    job_id = await client.submit("job.py", b"input")
    async for event in client.events(job_id):
        print(event["phase"], event["detail"])
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx

from hearth import inference
from hearth.inference import GeneratedChunk
from hearth.node import paths

EVENTS_WAIT_S = 20.0
TERMINAL_PHASES = frozenset({"paid", "failed"})


class HearthError(Exception):
    """The node refused, failed or could not be reached; the message says why."""


@dataclasses.dataclass(frozen=True)
class JobResult:
    job_id: str
    ok: bool
    output: bytes
    output_sha256: str
    fuel_used: int
    paid_mc: int
    reason: str
    summary: dict[str, Any]


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
    return info["api"], {"Authorization": f"Bearer {token}"}


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


def _result(summary: dict[str, Any], output: bytes) -> JobResult:
    return JobResult(
        job_id=summary["job_id"],
        ok=summary["state"] == "accepted",
        output=output,
        output_sha256=summary.get("result_hash", ""),
        fuel_used=summary.get("fuel_used", 0),
        paid_mc=summary.get("paid_mc", 0),
        reason=summary.get("reason", ""),
        summary=summary,
    )


class Client:
    """A blocking client of the local node's API."""

    def __init__(self, home: Path | None = None, *, timeout_s: float = 60.0) -> None:
        base_url, headers = _connection(home)
        self._http = httpx.Client(base_url=base_url, headers=headers, timeout=timeout_s)

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

    def submit(self, module: str | Path, input: bytes, options: JobOptions | None = None) -> str:
        path = Path(module)
        options = options or JobOptions()
        runtime = runtime_for(path, options.runtime)
        body = options.body(self.put_blob(module_bytes(path)), self.put_blob(input), runtime)
        return str(self._call("POST", "/v1/jobs", json=body)["job_id"])

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

    def wait(self, job_id: str) -> JobResult:
        for _ in self.events(job_id):
            pass
        summary = self.job(job_id)
        output = self.blob(summary["result_hash"]) if summary["state"] == "accepted" else b""
        return _result(summary, output)

    def run(self, module: str | Path, input: bytes, **options: Any) -> JobResult:
        return self.wait(self.submit(module, input, JobOptions(**options)))

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
        self, module: str | Path, input: bytes, options: JobOptions | None = None
    ) -> str:
        path = Path(module)
        options = options or JobOptions()
        runtime = runtime_for(path, options.runtime)
        module_hash = (await self._call("PUT", "/v1/blobs", content=module_bytes(path)))["hash"]
        input_hash = (await self._call("PUT", "/v1/blobs", content=input))["hash"]
        body = options.body(module_hash, input_hash, runtime)
        return str((await self._call("POST", "/v1/jobs", json=body))["job_id"])

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

    async def wait(self, job_id: str) -> JobResult:
        async for _ in self.events(job_id):
            pass
        summary = await self.job(job_id)
        output = b""
        if summary["state"] == "accepted":
            output = await self._call("GET", f"/v1/blobs/{summary['result_hash']}")
        return _result(summary, output)

    async def run(self, module: str | Path, input: bytes, **options: Any) -> JobResult:
        return await self.wait(await self.submit(module, input, JobOptions(**options)))
