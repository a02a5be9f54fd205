"""The sandbox: untrusted jobs in wasmtime (or CPython-on-WASI) inside worker processes.

The names below load on first use: a worker process imports this package on its way to
``worker.py`` and must not pay for the pool's trio at every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hearth.node.sandbox.config import SandboxConfig
    from hearth.node.sandbox.model import ErrorKind, ExecutionResult, JobRequest, Runtime
    from hearth.node.sandbox.pool import PoolStatistics, SandboxPool, run_job

__all__ = [
    "ErrorKind",
    "ExecutionResult",
    "JobRequest",
    "PoolStatistics",
    "Runtime",
    "SandboxConfig",
    "SandboxPool",
    "run_job",
]
_MODULE_OF = {
    "SandboxConfig": "config",
    "ErrorKind": "model",
    "ExecutionResult": "model",
    "JobRequest": "model",
    "Runtime": "model",
    "PoolStatistics": "pool",
    "SandboxPool": "pool",
    "run_job": "pool",
}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
