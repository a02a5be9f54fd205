"""API routes for jobs with files (ADR 0024): which chunks the node lacks, the download of an
accepted output tree, and what this node has transferred."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import trio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hearth.node import chunks
from hearth.node.blobs import BlobError

if TYPE_CHECKING:
    from hearth.node.runtime import Node

HASHES_PER_REQUEST_MAX = 100_000
WAIT_S_MAX = 20.0


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def missing_input(node: Node, input_hash: bytes) -> str:
    """Why a job with this input cannot be published yet ("" if it can): a bundle needs every
    chunk it lists here, since workers fetch them from us."""
    data = node.jobs.blobs.get(input_hash)
    if data is None or chunks.kind_of(data) != "bundle":
        return ""
    try:
        bundle = chunks.decode_bundle(data)
    except chunks.ManifestError as exc:
        return str(exc)
    limits = node.jobs.files.limits
    if bundle.input_bytes > limits.input_bytes_max:
        return (
            f"the input is {bundle.input_bytes} bytes, over this node's limit of "
            f"{limits.input_bytes_max} ([limits] input_mb_max)"
        )
    if bundle.output_bytes_max > limits.output_bytes_max:
        return (
            f"an output of up to {bundle.output_bytes_max} bytes is over this node's limit of "
            f"{limits.output_bytes_max} ([limits] output_mb_max)"
        )
    lacking = [d for d, _ in chunks.chunk_list(bundle.refs()) if not node.jobs.blobs.has(d)]
    if lacking:
        return f"upload the input's {len(lacking)} missing chunks first (PUT /v1/blobs)"
    node.jobs.files.index.note(input_hash, data)
    return ""


def build_file_routes(node: Node) -> list[Route]:
    jobs = node.jobs

    async def missing(request: Request) -> Response:
        try:
            body: Any = await request.json()
            hashes = [bytes.fromhex(h) for h in body["hashes"]]
        except (ValueError, KeyError, TypeError):
            return _error('expected {"hashes": ["<hex sha256>", ...]}')
        if len(hashes) > HASHES_PER_REQUEST_MAX or any(len(h) != 32 for h in hashes):
            return _error(f"at most {HASHES_PER_REQUEST_MAX} hashes of 32 bytes")
        try:
            lacking = [h.hex() for h in hashes if not jobs.blobs.has(h)]
        except BlobError as exc:
            return _error(str(exc))
        return JSONResponse({"missing": lacking})

    async def outputs(request: Request) -> Response:
        try:
            job_id = bytes.fromhex(request.path_params["job_id"])
            wait_s = min(WAIT_S_MAX, float(request.query_params.get("wait_s", "0")))
            after = int(request.query_params.get("after_bytes", "-1"))
        except ValueError:
            return _error("job id, wait_s and after_bytes must be hex and numbers")
        if not math.isfinite(wait_s):
            return _error("wait_s must be finite")
        status = jobs.files.outputs.get(job_id)
        if status is None:
            return _error("no output folder is being fetched for this job", 404)
        if status.state == "fetching" and status.done_bytes <= after and wait_s > 0:
            with trio.move_on_after(wait_s):
                await status.changed.wait()
        return JSONResponse(status.as_json())

    async def transfers(request: Request) -> Response:
        return JSONResponse(
            {"downloaded": jobs.files.counters.as_json(), "store": jobs.blobs.statistics()}
        )

    return [
        Route("/v1/blobs/missing", missing, methods=["POST"]),
        Route("/v1/jobs/{job_id}/outputs", outputs),
        Route("/v1/transfers", transfers),
    ]
