"""The node's one source of time. Everything else asks it, so tests can substitute their own."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ms(self) -> int: ...


class SystemClock:
    """Wall-clock milliseconds since the Unix epoch: what signed messages carry."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000
