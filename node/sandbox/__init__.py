"""The sandbox: untrusted jobs in wasmtime (or CPython-on-WASI) inside worker processes."""

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
