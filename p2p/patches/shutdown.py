"""Tasks spawned while a service shuts down are dropped, not raised into the host.

Upstream defect fixed here (py-libp2p 0.8.1, `libp2p/tools/anyio_service/trio_manager.py`):
`TrioManager._schedule_task` checks `is_running`, but a service stays "running" while its task
nursery is already closing. A peer's subscription message that arrives in that moment makes
pubsub's `handle_subscription` spawn its flush and replay tasks, `start_soon` raises
`RuntimeError: Nursery is closed to new arrivals`, and the error unwinds through the swarm
into whoever runs the host: a node stopping cleanly failed its shutdown. A task refused
because its service is going away has nothing left to do, so it is dropped (logged at debug).
"""

from __future__ import annotations

import logging
from typing import Any

from libp2p.tools.anyio_service import trio_manager as upstream

_CLOSED = "Nursery is closed to new arrivals"
_log = logging.getLogger(__name__)
_original = upstream.TrioManager._schedule_task


def _schedule_task_unless_closing(self: Any, task: Any) -> None:
    try:
        _original(self, task)
    except RuntimeError as exc:
        if _CLOSED not in str(exc):
            raise
        _log.debug("dropped %s: its service is shutting down", task)


def install() -> None:
    """Process-wide and idempotent."""
    upstream.TrioManager._schedule_task = _schedule_task_unless_closing  # type: ignore[method-assign]
