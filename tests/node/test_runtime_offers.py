"""The daemon's retry with backoff when a runtime fails to prepare (node/runtime_offers.py)."""

from __future__ import annotations

import itertools

import trio
import trio.testing

from hearth.node.runtime_offers import RETRY_FIRST_S, RuntimeOffers, prepare_with_retry
from hearth.node.sandbox.python import PythonUnavailable


async def test_failures_are_retried_with_growing_waits_then_offered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    offers = RuntimeOffers(("wasm", "python"), ("wasm", "python"))
    attempts_at: list[float] = []
    offered: list[float] = []

    async def prepare() -> None:
        attempts_at.append(trio.current_time())
        if len(attempts_at) <= 3:
            raise RuntimeError(
                f"compiling the python runtime failed: killed by SIGKILL #{len(attempts_at)}"
            )
        assert offers.states["python"].state == "preparing"
        assert "the last one failed: compiling" in offers.states["python"].reason

    async def offer() -> None:
        offered.append(trio.current_time())

    start = trio.current_time()
    await prepare_with_retry(offers, "python", prepare, offer, max_s=15)
    waits = [later - earlier for earlier, later in itertools.pairwise(attempts_at)]
    assert waits == [RETRY_FIRST_S, 2 * RETRY_FIRST_S, 15]  # doubled, then capped
    assert offered and attempts_at[0] == start
    status = offers.to_json()
    assert status["python"] == {
        "offered": True, "state": "offered", "reason": "", "attempts": 4, "retry_in_s": None,
    }  # fmt: skip
    assert status["wasm"]["offered"]


async def test_a_runtime_that_is_not_installed_is_not_retried() -> None:
    offers = RuntimeOffers(("wasm", "python"), ("wasm", "python"))

    async def prepare() -> None:
        raise PythonUnavailable("the python runtime needs the `python` extra")

    async def offer() -> None:
        raise AssertionError("never offered")

    await prepare_with_retry(offers, "python", prepare, offer)
    assert offers.to_json()["python"]["state"] == "unavailable"
    assert offers.to_json()["python"]["reason"].startswith("the python runtime needs")


def test_a_runtime_left_out_of_the_config_says_so() -> None:
    status = RuntimeOffers(("wasm", "python"), ("wasm",)).to_json()
    assert status["python"]["state"] == "not-configured" and not status["python"]["offered"]
    assert "config.toml" in status["python"]["reason"]
