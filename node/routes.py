"""The job and ledger endpoints of the local API (status, market and peers are in runtime.py)."""

from __future__ import annotations

import hashlib
import math
import secrets
import string
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hearth.node import chunks
from hearth.node.api import to_json
from hearth.node.blobs import BlobError
from hearth.node.routes_files import build_file_routes, missing_input
from hearth.protocol import limits
from hearth.protocol.adaptive import VERIFY_ALWAYS_2, VERIFY_POLICIES
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.events import CancelJob, PublishJob
from hearth.protocol.job_messages import JobId
from hearth.protocol.lease import LEASE_MS_MIN
from hearth.protocol.messages import RUNTIMES

if TYPE_CHECKING:
    from hearth.ledger.store import SqliteLedger
    from hearth.node.runtime import Node

EVENTS_WAIT_S_MAX = 30.0
PREFERENCES = ("cheapest", "fastest", "greenest")
JOB_FIELDS: dict[str, type] = {
    "runtime": str,
    "module_hash": str,
    "input_hash": str,
    "fuel_max": int,
    "memory_mb_max": int,
    "deadline_s": int,
    "replicas": int,
    "replicas_max": int,
    "max_price_mc_per_tfuel": int,
    "prefer": str,
    "bid_window_ms": int,
}
# Optional: absent or null takes the default. A lease of 0 or none is derived from the job
# (protocol.lease); a set one is whole seconds, at least LEASE_MS_MIN, at most the deadline.
# A job_id (hex) chosen by the caller lets a batch record a bundle before publishing it, so a
# restart finds it again and never publishes (nor pays) it twice (ADR 0033).
OPTIONAL_JOB_FIELDS: dict[str, type] = {"lease_s": int, "job_id": str, "verify": str}


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def wait_s_of(request: Request) -> float | JSONResponse:
    """How long a long poll may wait (``wait_s``, at most ``EVENTS_WAIT_S_MAX``; 0 by default),
    or the error that answers a bad value."""
    try:
        wait_s = min(EVENTS_WAIT_S_MAX, float(request.query_params.get("wait_s", "0")))
    except ValueError:
        return error("wait_s must be a number")
    if not math.isfinite(wait_s):
        return error("wait_s must be finite")
    return max(0.0, wait_s)


def job_json(summary: Any) -> dict[str, Any]:
    data: dict[str, Any] = to_json(summary)
    data.pop("output", None)  # fetched as a blob: GET /v1/blobs/<result_hash>
    phase = summary.phase
    data["state"] = {"paid": "accepted", "failed": "failed"}.get(phase, phase)
    data["result_hash"] = summary.output_hash.hex() if phase == "paid" else ""
    data["paid_mc"] = summary.credits_paid_mc
    data["reason"] = summary.detail if phase == "failed" else ""
    # A verified failure (ADR 0023): what the replicas agreed the job exited with and printed.
    data["stderr"] = summary.stderr.decode("utf-8", "replace")
    data["exit_code"] = summary.exit_code if phase == "paid" else None
    data["spot_checked"] = summary.spot_checked  # with verify, verified_by, error_bound_ppm
    return data


def parse_job_body(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(body) - set(JOB_FIELDS) - set(OPTIONAL_JOB_FIELDS))
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(unknown)}")
    missing = sorted(set(JOB_FIELDS) - set(body))
    if missing:
        raise ValueError(f"missing fields: {', '.join(missing)}")
    for name, kind in JOB_FIELDS.items():
        value = body[name]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{name} must be a {kind.__name__}")
    if body["runtime"] not in RUNTIMES:
        raise ValueError(f"runtime must be one of {list(RUNTIMES)}")
    if body["prefer"] not in PREFERENCES:
        raise ValueError(f"prefer must be one of {list(PREFERENCES)}")
    body["lease_s"] = _lease_s(body.get("lease_s"), body["deadline_s"])
    body["job_id"] = _job_id(body.get("job_id"))
    body["verify"] = body.get("verify") or VERIFY_ALWAYS_2
    if body["verify"] not in VERIFY_POLICIES:
        raise ValueError(f"verify must be one of {list(VERIFY_POLICIES)}")
    return body


def _job_id(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        job_id = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        job_id = b""
    if not 8 <= len(job_id) <= limits.JOB_ID_BYTES_MAX:
        raise ValueError(f"job_id must be 8 to {limits.JOB_ID_BYTES_MAX} bytes in hex")
    return job_id


def _lease_s(value: Any, deadline_s: int) -> int:
    """The lease in seconds, 0 to derive it; a set lease must fit inside the job's deadline."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("lease_s must be an int (seconds) or null")
    lease_s_min = -(-LEASE_MS_MIN // 1000)
    lease_s_max = min(deadline_s, limits.LEASE_MS_MAX // 1000)
    if value and not lease_s_min <= value <= lease_s_max:
        raise ValueError(f"lease_s must be 0 (derived) or {lease_s_min} to {lease_s_max} seconds")
    return value


def balance_json(ledger: SqliteLedger) -> dict[str, Any]:
    return {
        "balance_mc": ledger.balance_mc(),
        "available_mc": ledger.available_mc(),
        "head_seq": ledger.head().seq,
        "writable": ledger.writable,
        "unable_reason": ledger.unable_reason,
        "pending_pays": len(ledger.pending_pays()),
    }


def inline_blobs(
    jobs: Any, module_hash: bytes, input_hash: bytes, sizes: list[int]
) -> tuple[bytes, bytes]:
    """A small module and input go inside the awards (ADR 0031): no fetch round trips."""
    if sum(sizes) > limits.AWARD_INLINE_BYTES_MAX:
        return b"", b""
    module, data = jobs.blob(module_hash), jobs.blob(input_hash)
    if module is None or data is None or chunks.kind_of(data) == "bundle":
        return b"", b""
    return module, data


def build_job_routes(node: Node) -> list[Route]:
    jobs = node.jobs
    engine = node.engine

    async def put_blob(request: Request) -> Response:
        data = await request.body()
        if len(data) > limits.BLOB_BYTES_MAX:
            return error(f"a blob may hold at most {limits.BLOB_BYTES_MAX} bytes", 413)
        try:
            digest = jobs.blobs.put(data)
        except OSError as exc:
            jobs.note_failed_write("blob", exc)
            return error(f"could not store the blob: {exc}", 507)
        except BlobError as exc:
            return error(f"could not store the blob: {exc}", 507)
        return JSONResponse({"hash": digest.hex(), "bytes": len(data)})

    async def get_blob(request: Request) -> Response:
        wait_s = wait_s_of(request)
        if isinstance(wait_s, Response):
            return wait_s
        try:
            data = await jobs.wait_blob(bytes.fromhex(request.path_params["digest"]), wait_s)
        except (ValueError, BlobError):
            return error("not a blob hash")
        if data is None:
            return error("no such blob here", 404)
        return Response(data, media_type="application/octet-stream")

    async def publish(request: Request) -> Response:
        try:
            body = parse_job_body(await request.json())
            module_hash = bytes.fromhex(body["module_hash"])
            input_hash = bytes.fromhex(body["input_hash"])
        except ValueError as exc:
            return error(str(exc))
        sizes = [jobs.blobs.size(h) if len(h) == 32 else -1 for h in (module_hash, input_hash)]
        if min(sizes) < 0:
            return error("upload the module and the input first (PUT /v1/blobs)")
        lacking = missing_input(node, input_hash)
        if lacking:
            return error(lacking)
        inline = inline_blobs(jobs, module_hash, input_hash, sizes)
        now_ms = node.clock.now_ms()
        job_id = JobId(
            body["job_id"]
            or hashlib.sha256(
                engine.identity.public_key + module_hash + input_hash + secrets.token_bytes(16)
            ).digest()[:16]
        )
        event = PublishJob(
            job_id=job_id,
            runtime=body["runtime"],
            module_hash=module_hash,
            module_bytes=sizes[0],
            input_hash=input_hash,
            input_bytes=sizes[1],
            fuel_max=body["fuel_max"],
            memory_mb_max=body["memory_mb_max"],
            deadline_ms=now_ms + body["deadline_s"] * 1000,
            max_price_mc_per_tfuel=body["max_price_mc_per_tfuel"],
            bid_window_ms=body["bid_window_ms"],
            replicas=body["replicas"],
            replicas_max=body["replicas_max"],
            prefer=body["prefer"],
            lease_ms=body["lease_s"] * 1000,
            verify=body["verify"],
            module_inline=inline[0],
            input_inline=inline[1],
        )
        jobs.log_for(job_id)
        try:
            taken = await node.driver.call(event)  # through the queue, like every event
        except LocalProtocolError as exc:
            taken, problem = False, (str(exc), 400)
        else:
            problem = ("the node failed to start the job; its log says why", 500)
        if not taken:
            jobs.logs.pop(job_id, None)
            return error(*problem)
        return JSONResponse({"job_id": job_id.hex()})

    NO_SUCH_JOB = "no job published from this node has that id (or the prefix names several)"

    def summary_or_none(request: Request) -> Any:
        """The job a full id or any unique prefix of one names (as `job list` prints them)."""
        given = request.path_params["job_id"].lower()
        if not given or len(given) > 64 or given.strip(string.hexdigits):
            return None
        found = [j for j in engine.publisher.jobs if j.hex().startswith(given)]
        return engine.publisher.summary(found[0]) if len(found) == 1 else None

    async def list_jobs(request: Request) -> Response:
        return JSONResponse({"jobs": [job_json(s) for s in engine.publisher.list_jobs()]})

    async def show_job(request: Request) -> Response:
        summary = summary_or_none(request)
        if summary is None:
            return error(NO_SUCH_JOB, 404)
        return JSONResponse(job_json(summary))

    async def job_events(request: Request) -> Response:
        summary = summary_or_none(request)
        if summary is None:
            return error(NO_SUCH_JOB, 404)
        try:
            after = int(request.query_params.get("after", "0"))
        except ValueError:
            return error("after must be a number")
        wait_s = wait_s_of(request)
        if isinstance(wait_s, Response):
            return wait_s
        log = jobs.log_for(summary.job_id)
        if len(log.events) <= after and not log.done and wait_s > 0:
            with trio.move_on_after(wait_s):
                await log.changed.wait()
        events = log.events[after:]
        return JSONResponse({"events": events, "next": after + len(events), "done": log.done})

    async def cancel_job(request: Request) -> Response:
        summary = summary_or_none(request)
        if summary is None:
            return error(NO_SUCH_JOB, 404)
        await node.driver.call(CancelJob(summary.job_id))
        return JSONResponse(job_json(engine.publisher.summary(summary.job_id)))

    async def balance(request: Request) -> Response:
        # What publishers owe us for work done: pay not yet received, held pay included (an
        # adaptive job's, ADR 0034), so that a host can see what it is waiting for.
        owed_mc = sum(engine.worker.owed_mc_by_publisher.values())
        return JSONResponse({**balance_json(node.ledger), "owed_mc": owed_mc})

    return [
        *build_file_routes(node),
        Route("/v1/blobs", put_blob, methods=["PUT"]),
        Route("/v1/blobs/{digest}", get_blob),
        Route("/v1/jobs", publish, methods=["POST"]),
        Route("/v1/jobs", list_jobs, methods=["GET"]),
        Route("/v1/jobs/{job_id}", show_job),
        Route("/v1/jobs/{job_id}/events", job_events),
        Route("/v1/jobs/{job_id}/cancel", cancel_job, methods=["POST"]),
        Route("/v1/ledger/balance", balance),
    ]
