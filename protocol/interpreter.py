"""The one effect interpreter: a table effect type -> handler, and the timer table. I/O: none.

Theory of operation
-------------------
The daemon (node/driver.py), the simulator (testnet/sim/cluster.py) and the test harness
(tests/protocol/harness.py) each build an ``Interpreter`` and register, per effect type, the
handler that does that effect's I/O in their world: a trio task, a simulated delivery, a fake
sandbox. ``run(effect)`` looks the handler up by the effect's exact type and calls it; what the
handler returns goes back to the shell (the daemon awaits an awaitable in its nursery, so an
async handler such as a ledger commit is one registration like any other). An effect type with
no handler is our own programming error, never a peer's: it fails an assertion.

``SetTimer`` and ``CancelTimer`` are carried out here, on ``timers``, the same way in every shell:
a key set again replaces its deadline, a cancelled or replaced deadline never fires. The shell is
told of each deadline set (``on_timer_set``) so that it can wake up then: the daemon sleeps
until ``timers.next_deadline()`` and fires ``timers.due(now_ms)``; the simulator puts a wake-up on
its heap, ordered with the messages of the same millisecond, and fires one key with
``timers.take(key, at_ms)`` if that deadline still stands.

What must never happen: an effect silently dropped; a timer that fires after it was cancelled or
re-set; two shells that disagree on either.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from hearth.protocol.effects import CancelTimer, Effect, SetTimer
from hearth.protocol.timers import TimerKey

EFFECT_TYPES: typing.Final[frozenset[type]] = frozenset(typing.get_args(Effect))

E = TypeVar("E")
R = TypeVar("R")


class Timers:
    """Deadlines by key. Ties fire in the order their deadlines were set."""

    def __init__(self) -> None:
        self._deadlines: dict[TimerKey, tuple[int, int]] = {}  # key -> (at_ms, set order)
        self._sets = 0

    def __len__(self) -> int:
        return len(self._deadlines)

    def __contains__(self, key: TimerKey) -> bool:
        return key in self._deadlines

    def deadline_ms(self, key: TimerKey) -> int | None:
        entry = self._deadlines.get(key)
        return None if entry is None else entry[0]

    def set(self, key: TimerKey, at_ms: int) -> None:
        self._sets += 1
        self._deadlines[key] = (at_ms, self._sets)

    def cancel(self, key: TimerKey) -> None:
        self._deadlines.pop(key, None)

    def clear(self) -> None:
        """Forget every deadline (the node crashed)."""
        self._deadlines.clear()

    def next_deadline(self) -> int | None:
        """The earliest deadline set, or None when no timer is."""
        if not self._deadlines:
            return None
        return min(self._deadlines.values())[0]

    def due(self, now_ms: int) -> list[TimerKey]:
        """Remove and return every key whose deadline is at or before ``now_ms``, earliest first."""
        fired = sorted((entry, key) for key, entry in self._deadlines.items() if entry[0] <= now_ms)
        for _, key in fired:
            del self._deadlines[key]
        return [key for _, key in fired]

    def take(self, key: TimerKey, at_ms: int) -> bool:
        """Remove ``key`` if its deadline is still ``at_ms``; False if re-set or cancelled since."""
        if self.deadline_ms(key) != at_ms:
            return False
        del self._deadlines[key]
        return True

    def expedite(self, key: TimerKey, now_ms: int) -> bool:
        """Make ``key`` due at ``now_ms`` if it is set (what it waited for has come back)."""
        if key not in self._deadlines:
            return False
        self.set(key, now_ms)
        return True


class Interpreter(Generic[R]):
    """Carries out effects through the handlers a shell registered, and keeps its timers."""

    def __init__(self, on_timer_set: Callable[[TimerKey, int], object] | None = None) -> None:
        self.timers = Timers()
        self._on_timer_set = on_timer_set
        self._handlers: dict[type, Callable[[Any], R | None]] = {
            SetTimer: self._set_timer,
            CancelTimer: self._cancel_timer,
        }

    def register(self, effect_type: type[E], handler: Callable[[E], R | None]) -> None:
        """Carry out ``effect_type`` with ``handler``; one handler per type, for good."""
        assert effect_type not in self._handlers, f"{effect_type.__name__} registered twice"
        self._handlers[effect_type] = handler

    def missing(self) -> frozenset[type]:
        """Effect types the engine may return that have no handler yet."""
        return frozenset(t for t in EFFECT_TYPES if t not in self._handlers)

    def run(self, effect: Effect) -> R | None:
        """Carry out one effect; return what its handler returned (an awaitable, or None)."""
        handler = self._handlers.get(type(effect))
        assert handler is not None, f"no handler for effect {type(effect).__name__}"
        return handler(effect)

    def _set_timer(self, effect: SetTimer) -> None:
        self.timers.set(effect.key, effect.at_ms)
        if self._on_timer_set is not None:
            self._on_timer_set(effect.key, effect.at_ms)

    def _cancel_timer(self, effect: CancelTimer) -> None:
        self.timers.cancel(effect.key)
