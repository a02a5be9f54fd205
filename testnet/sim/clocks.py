"""Per-node clocks: an offset from true time and a drift, both integers. I/O: none.

A node's clock reads ``true + offset + (true - T0) * drift_ppm // 1_000_000``. Its engine sees
only that reading, and a timer it sets for local time ``at_ms`` fires at the first true ms whose
reading is at least ``at_ms``, as a timer on a real host fires by that host's clock.
"""

from __future__ import annotations

import array
import random

PPM = 1_000_000


class Clocks:
    def __init__(
        self, nodes: int, t0_ms: int, offset_ms_max: int, drift_ppm_max: int, rng: random.Random
    ) -> None:
        self.t0_ms = t0_ms
        self.offset_ms = array.array("q", [0]) * nodes
        self.drift_ppm = array.array("q", [0]) * nodes
        self.skewed = bool(offset_ms_max or drift_ppm_max)
        if not self.skewed:
            return  # no draws: a run without clock faults replays as it did before them
        for node in range(nodes):
            self.offset_ms[node] = rng.randint(-offset_ms_max, offset_ms_max)
            self.drift_ppm[node] = rng.randint(-drift_ppm_max, drift_ppm_max)

    def local_ms(self, node: int, true_ms: int) -> int:
        if not self.skewed:
            return true_ms
        elapsed_ms = true_ms - self.t0_ms
        return true_ms + self.offset_ms[node] + elapsed_ms * self.drift_ppm[node] // PPM

    def true_ms(self, node: int, local_ms: int) -> int:
        """The first true ms at which ``node``'s clock reads ``local_ms`` or later."""
        if not self.skewed:
            return local_ms
        rate = PPM + self.drift_ppm[node]
        guess = self.t0_ms + (local_ms - self.offset_ms[node] - self.t0_ms) * PPM // rate - 2
        while self.local_ms(node, guess) < local_ms:
            guess += 1
        assert self.local_ms(node, guess - 1) < local_ms <= self.local_ms(node, guess)
        return guess
