"""A client may wait for a blob the node is still fetching (a bundle's output, just after it was
paid) instead of asking again and again (ADR 0033)."""

from __future__ import annotations

import os
from pathlib import Path

import trio

from hearth.node.blobs import blob_hash
from hearth.protocol.effects import FetchBlob
from hearth.protocol.identity import PeerId
from tests.node.test_degraded import node_on


async def test_a_waiting_reader_gets_the_blob_as_soon_as_it_is_stored(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    output = os.urandom(50_000)
    digest = blob_hash(output)
    got: list[bytes | None] = []
    async with node_on(tmp_path) as (_, jobs):

        async def reader() -> None:
            got.append(await jobs.wait_blob(digest, 30))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.sleep(5)
            assert got == []  # still waiting: nothing has stored it
            started = trio.current_time()
            jobs.driver.execute_all([FetchBlob(PeerId("worker"), digest, len(output), output)])
        assert got == [output]
        assert trio.current_time() - started < 1
        missing = blob_hash(b"never fetched")
        started = trio.current_time()
        assert await jobs.wait_blob(missing, 3) is None  # gives up after its wait, not before
        assert trio.current_time() - started >= 3
        assert await jobs.wait_blob(digest, 0) == output  # held: answered without waiting
