"""py-libp2p's service manager finds a new task's parent by walking every task it runs.

`TrioManager.run_task` (py-libp2p 0.8.1, `libp2p/tools/anyio_service/trio_manager.py`) looks up
the calling trio task's `FunctionTask` with `_find_parent_task`, which walks the manager's whole
task tree. Pubsub calls `run_task` for every message it receives (`push_msg`), from a stream
handler that belongs to another manager, so every walk visits every task and finds nothing: one
per-peer sender task and one task per message in flight each. On a 50-node testnet this was
11 % of the CPU of a bootstrap node with 49 peers (py-spy, issue 14).

`install` keeps a map from each trio task to the `FunctionTask` running in it (filled when the
task starts, where upstream sets it) and answers from there: the same task upstream's walk
would find, as long as it belongs to this manager's tree (checked by walking up to its root),
else none. O(depth) instead of O(tasks).
"""

from __future__ import annotations

import weakref
from typing import Any, Final

import trio
from libp2p.tools.anyio_service import trio_manager, trio_tasks

# Upstream's walk, kept for comparison in the tests (read before `install` can replace it).
UPSTREAM_FIND_PARENT_TASK: Final = trio_manager.TrioManager._find_parent_task
# id(trio task) -> the FunctionTask running in it; an entry goes with its FunctionTask.
_running: Final[weakref.WeakValueDictionary[int, Any]] = weakref.WeakValueDictionary()


def install() -> None:
    """Process-wide and idempotent."""
    task_class: Any = trio_tasks.FunctionTask
    if getattr(task_class, "_hearth_indexed", False):
        return
    upstream = task_class.trio_task

    def set_trio_task(task: Any, value: trio.lowlevel.Task) -> None:
        upstream.fset(task, value)
        _running[id(value)] = task

    task_class.trio_task = upstream.setter(set_trio_task)
    task_class._hearth_indexed = True
    manager_class: Any = trio_manager.TrioManager
    manager_class._find_parent_task = find_parent_task


def find_parent_task(manager: Any, trio_task: trio.lowlevel.Task) -> Any:
    """The `FunctionTask` of this manager running in ``trio_task``, or None (a root task)."""
    task = _running.get(id(trio_task))
    # An id is reused once its trio task is gone: only the same object counts.
    if task is None or not task.has_trio_task or task.trio_task is not trio_task:
        return None
    root = task
    while root.parent is not None:
        root = root.parent
    return task if root in manager._root_tasks else None
