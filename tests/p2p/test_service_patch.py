"""The service manager's parent lookup (p2p/patches/service.py) against upstream's walk."""

from __future__ import annotations

from typing import Any

import trio
from libp2p.tools.anyio_service import Service, background_trio_service, trio_manager

from hearth.p2p.patches import service as patch

UPSTREAM_FIND = patch.UPSTREAM_FIND_PARENT_TASK


class Nested(Service):
    """A daemon that starts a child task, which records what both lookups answer inside it."""

    def __init__(self) -> None:
        self.answers: list[tuple[Any, Any]] = []
        self.done = trio.Event()

    async def run(self) -> None:
        self.manager.run_daemon_task(self._parent)
        await self.manager.wait_finished()

    async def _parent(self) -> None:
        self.manager.run_task(self._child)
        await trio.sleep_forever()

    async def _child(self) -> None:
        current = trio.lowlevel.current_task()
        manager: Any = self.manager
        self.answers.append(
            (patch.find_parent_task(manager, current), UPSTREAM_FIND(manager, current))
        )
        self.done.set()


async def test_the_indexed_lookup_finds_what_the_walk_finds() -> None:
    patch.install()
    first, second = Nested(), Nested()
    async with background_trio_service(first), background_trio_service(second):
        with trio.fail_after(5):
            await first.done.wait()
            await second.done.wait()
        for service in (first, second):
            indexed, walked = service.answers[0]
            assert indexed is not None and indexed is walked  # the child's own FunctionTask
        # A trio task outside a manager's tree (a stream handler calling in) has no parent there;
        # nor does a task of one manager in another's tree.
        foreign = trio.lowlevel.current_task()
        manager: Any = first.manager
        assert patch.find_parent_task(manager, foreign) is None
        assert UPSTREAM_FIND(manager, foreign) is None
        indexed_second = second.answers[0][0]
        assert patch.find_parent_task(manager, indexed_second.trio_task) is None
        assert trio_manager.TrioManager._find_parent_task is patch.find_parent_task
