"""Who may fetch a blob, and which blobs work still needs: the engine's answers (ADR 0015)."""

from __future__ import annotations

from typing import Any

from hearth.protocol.effects import FetchBlob
from hearth.protocol.engine import Engine
from hearth.protocol.identity import PeerId
from tests.protocol.harness import Cluster, Node, sha256

MODULE = b"\0asm fake module"
BIG_INPUT = b"big: an input whose output is too large to travel inline"


def may_fetch(engine: Engine, peer: PeerId, digest: bytes) -> bool:
    return engine.publisher.may_fetch(peer, digest) or engine.worker.may_fetch(peer, digest)


class CheckingCluster(Cluster):
    """Records, for every FetchBlob, whether the peer it names would serve the blob then."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fetches: list[tuple[int, int, bytes, bool]] = []  # (fetcher, source, hash, served)

    def _fetch(self, node: Node, effect: FetchBlob) -> None:
        source = self.by_peer[effect.peer]
        served = may_fetch(source.engine, node.peer_id, effect.blob_hash)
        self.fetches.append((node.index, source.index, effect.blob_hash, served))
        super()._fetch(node, effect)


def test_every_fetch_of_a_job_is_to_an_entitled_peer_and_strangers_are_not() -> None:
    cluster = CheckingCluster(5, ledgers=True)
    job_id = cluster.publish_job(4, MODULE, BIG_INPUT)
    publisher = cluster.nodes[4].engine
    module_hash, input_hash = sha256(MODULE), sha256(BIG_INPUT)
    cluster.run_until(lambda: len(cluster.fetches) >= 4)  # two winners, module and input each
    winners = {cluster.nodes[f].peer_id for f, _, _, _ in cluster.fetches}
    strangers = [n.peer_id for n in cluster.nodes[:4] if n.peer_id not in winners]
    assert len(winners) == 2 and strangers
    for stranger in strangers:
        assert not may_fetch(publisher, stranger, input_hash)
        assert not may_fetch(publisher, stranger, module_hash)
    assert {module_hash, input_hash} <= publisher.publisher.blobs_in_use()[0]

    cluster.run_until(cluster.finished(4, job_id))
    summary = publisher.publisher.summary(job_id)
    assert summary is not None and summary.phase == "paid"
    # The output (100 kB) did not travel inline: the publisher fetched it from a winner.
    output_fetches = [f for f in cluster.fetches if f[2] == summary.output_hash]
    assert [(fetcher, served) for fetcher, _, _, served in output_fetches] == [(4, True)]
    assert all(served for _, _, _, served in cluster.fetches), cluster.fetches
    # The job is over: nobody may fetch its input now; its result is retained, not pinned.
    for winner in winners:
        assert not may_fetch(publisher, winner, input_hash)
    needed, results = publisher.publisher.blobs_in_use()
    assert needed == frozenset() and results == {summary.output_hash}
    cluster.run_for(5_000)  # the payments reach the workers
    for node in cluster.nodes[:4]:
        assert node.engine.worker.blobs_in_use() == frozenset()
        # A winner serves its output to the publisher only, and only the output.
        if node.peer_id in winners:
            assert may_fetch(node.engine, publisher.identity.peer_id, summary.output_hash)
            assert not may_fetch(node.engine, publisher.identity.peer_id, input_hash)
            stranger = strangers[0]
            assert not may_fetch(node.engine, stranger, summary.output_hash)


def test_a_restarted_publisher_still_serves_its_winners() -> None:
    cluster = CheckingCluster(4)
    job_id = cluster.publish_job(3, MODULE, BIG_INPUT)
    cluster.run_until(lambda: len(cluster.fetches) >= 2)
    winner = cluster.nodes[cluster.fetches[0][0]].peer_id
    cluster.restart_publisher(3, job_id)
    restored = cluster.nodes[3].engine
    assert may_fetch(restored, winner, sha256(BIG_INPUT))
    assert sha256(BIG_INPUT) in restored.publisher.blobs_in_use()[0]
    cluster.run_until(cluster.finished(3, job_id))
    assert cluster.phase(3, job_id) == "paid"
    assert all(served for _, _, _, served in cluster.fetches), cluster.fetches
