"""Hearth's Python SDK: publish jobs from any running node and get verified results.

from hearth import Client
with Client() as client:
    result = client.run("job.wasm", b"input")
"""

from hearth.client import AsyncClient, Client, HearthError, JobFailed, JobOptions, JobResult
from hearth.inference import GeneratedChunk

__all__ = [
    "AsyncClient", "Client", "GeneratedChunk", "HearthError", "JobFailed", "JobOptions",
    "JobResult",
]  # fmt: skip
