"""Hearth's Python SDK: publish jobs from any running node and get verified results.

from hearth import Client
with Client() as client:
    result = client.run("job.wasm", b"input")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hearth.client import AsyncClient, Client, HearthError, JobFailed, JobOptions, JobResult
    from hearth.inference import GeneratedChunk

# The SDK's names load on first use: a node or a CLI command imports `hearth.node...`, which
# runs this file, and must not pay for the HTTP client it does not use.
_EXPORTS = {
    "AsyncClient": "hearth.client",
    "Client": "hearth.client",
    "HearthError": "hearth.client",
    "JobFailed": "hearth.client",
    "JobOptions": "hearth.client",
    "JobResult": "hearth.client",
    "GeneratedChunk": "hearth.inference",
}

__all__ = [
    "AsyncClient", "Client", "GeneratedChunk", "HearthError", "JobFailed", "JobOptions",
    "JobResult",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hearth' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
