"""A task spawned while its service's nursery closes is dropped, not raised into the host."""

from __future__ import annotations

from typing import Any

import pytest
from libp2p.tools.anyio_service import trio_manager

from hearth.p2p.patches import shutdown


class _ClosingNursery:
    def __init__(self, message: str) -> None:
        self.message = message

    def start_soon(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(self.message)


class _Manager:
    """What `_schedule_task` reads of a TrioManager that still says it is running."""

    is_running = True

    def __init__(self, message: str) -> None:
        self._task_nursery = _ClosingNursery(message)

    async def _run_and_manage_task(self, task: Any) -> None:
        raise AssertionError("never started")


def test_upstream_raises_into_the_host_and_the_patch_drops_the_task() -> None:
    closing = _Manager("Nursery is closed to new arrivals")
    with pytest.raises(RuntimeError, match="closed to new arrivals"):
        shutdown._original(closing, "flush_pending_messages")  # upstream, unpatched
    shutdown._schedule_task_unless_closing(closing, "flush_pending_messages")  # dropped


def test_any_other_error_still_raises() -> None:
    with pytest.raises(RuntimeError, match="something else"):
        shutdown._schedule_task_unless_closing(_Manager("something else"), "task")


def test_install_replaces_the_method_once() -> None:
    shutdown.install()
    shutdown.install()
    assert trio_manager.TrioManager._schedule_task is shutdown._schedule_task_unless_closing
