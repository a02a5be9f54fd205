"""Which runtimes this host offers and, for each one it does not, why: `hearth node status`.

The Python runtime is offered only once CPython-on-WASI is compiled (minutes, the first time on a
machine). A compile that fails is retried with backoff, so a node that came up under load or
with a full disk offers Python once the machine allows, and says meanwhile what went wrong.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Awaitable, Callable
from typing import Any, Final

import trio

from hearth.node.logs import log
from hearth.node.sandbox.python import PythonUnavailable

RETRY_FIRST_S: Final = 5.0
RETRY_FACTOR: Final = 2.0
RETRY_MAX_S: Final = 10 * 60.0


class State(enum.StrEnum):
    OFFERED = "offered"
    PREPARING = "preparing"  # compiling or loading; not bid on yet
    FAILED = "failed"  # the last attempt failed; retried at `retry_at`
    UNAVAILABLE = "unavailable"  # cannot run on this host as installed; not retried
    NOT_CONFIGURED = "not-configured"  # left out of [limits] runtimes in config.toml


@dataclasses.dataclass
class RuntimeState:
    state: State
    reason: str = ""
    attempts: int = 0
    retry_in_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "offered": self.state is State.OFFERED,
            "state": self.state.value,
            "reason": self.reason,
            "attempts": self.attempts,
            "retry_in_s": self.retry_in_s,
        }


class RuntimeOffers:
    """The state of every runtime Hearth knows, as this host sees it now."""

    def __init__(self, known: tuple[str, ...], configured: tuple[str, ...]) -> None:
        self.states: dict[str, RuntimeState] = {}
        for name in known:
            if name not in configured:
                why = "left out of `runtimes` in config.toml's [limits]"
                self.states[name] = RuntimeState(State.NOT_CONFIGURED, why)
            elif name == "python":
                self.states[name] = RuntimeState(State.PREPARING, "not prepared yet")
            else:
                self.states[name] = RuntimeState(State.OFFERED)

    def to_json(self) -> dict[str, Any]:
        return {name: state.to_json() for name, state in self.states.items()}


async def prepare_with_retry(
    offers: RuntimeOffers,
    name: str,
    prepare: Callable[[], Awaitable[None]],
    offered: Callable[[], Awaitable[None]],
    *,
    first_s: float = RETRY_FIRST_S,
    max_s: float = RETRY_MAX_S,
) -> None:
    """Prepare runtime ``name`` until it works, waiting longer after each failure (up to
    ``max_s``), then call ``offered``. A runtime that cannot run here as installed is given up."""
    state = offers.states[name]
    wait_s = first_s
    while True:
        state.attempts += 1
        state.state, state.reason, state.retry_in_s = State.PREPARING, _preparing(state), None
        try:
            await prepare()
        except PythonUnavailable as exc:
            state.state, state.reason = State.UNAVAILABLE, str(exc)
            log("warning", f"{name}-runtime-not-offered", reason=state.reason)
            return
        except (RuntimeError, OSError) as exc:
            reason = str(exc) or type(exc).__name__
            state.state, state.reason, state.retry_in_s = State.FAILED, reason, wait_s
            log("warning", f"{name}-runtime-not-offered", reason=reason, retry_in_s=wait_s)
            await trio.sleep(wait_s)
            wait_s = min(wait_s * RETRY_FACTOR, max_s)
            continue
        break
    await offered()
    state.state, state.reason = State.OFFERED, ""
    log("info", f"{name}-runtime-offered", attempts=state.attempts)


def _preparing(state: RuntimeState) -> str:
    if state.attempts == 1:
        return "compiling (minutes, once per machine) or loading the runtime"
    return f"attempt {state.attempts}; the last one failed: {state.reason}"
