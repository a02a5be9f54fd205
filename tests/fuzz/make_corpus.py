"""Write the fuzzers' seed corpus: small real messages and chains from a real job flow.

Run from the repository root: ``python -m tests.fuzz.make_corpus``. It replaces
``tests/fuzz/corpus/<target>/`` with files named by the sha1 of their bytes (libFuzzer's
convention). Everything is deterministic, so a rerun on an unchanged tree changes nothing.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import msgpack

from hearth.ledger.audit import LedgerRangeRequest, serve_range
from hearth.ledger.entry import ForkProof, Kind, MismatchBody, parse_entry, sign_entry
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.proofs import make_fork_proof
from hearth.protocol.codec import encode
from hearth.protocol.effects import Publish, Send
from hearth.protocol.envelope import open_envelope
from hearth.protocol.events import Started
from hearth.protocol.messages import BlobRequest
from tests.fuzz.targets import (
    AUTHORS,
    BLOB,
    CHANNELS,
    CORPUS_INPUT,
    CORPUS_MODULE,
    PUBLISHER,
    T0_MS,
    TARGETS,
    _ledgers,
    corpus_job,
    fill,
)
from tests.protocol.harness import LATENCY_MS, Cluster

CORPUS = Path(__file__).resolve().parent / "corpus"
ROLES = (0, PUBLISHER)  # harness nodes whose inboxes become the engine target's sequences


def job_flow(liar: bool = False) -> list[tuple[int, str, int, bytes, frozenset[int]]]:
    """(delivery ms, channel, author index, envelope, recipients) for each corpus job message;
    with ``liar``, node 0 returns a wrong result and is outvoted (a mismatch notice)."""
    cluster = Cluster(5, ledgers=True, behaviours={0: "liar"} if liar else None)
    job_id = cluster.publish_job(PUBLISHER, CORPUS_MODULE, CORPUS_INPUT)
    assert job_id == corpus_job().job_id
    cluster.run_until(cluster.finished(PUBLISHER, job_id))
    cluster.run_for(2_000)  # the workers' countersignatures and the publisher's settlements
    index_of = {node.peer_id: node.index for node in cluster.nodes}
    everyone = frozenset(range(len(cluster.nodes)))
    flow = []
    for sent_ms, sender, effect in cluster.wire:
        at_ms = sent_ms + LATENCY_MS
        if isinstance(effect, Publish):
            flow.append((at_ms, effect.topic, sender, effect.data, everyone - {sender}))
        elif isinstance(effect, Send):
            to = frozenset({index_of[effect.peer]})
            flow.append((at_ms, effect.protocol, sender, effect.data, to))
    for sender in (1, 2):  # capacity ads and ledger heads, as a node publishes them on start
        for effect in cluster.nodes[sender].engine.step(Started(), cluster.now_ms):
            if isinstance(effect, Publish):
                at_ms = cluster.now_ms + LATENCY_MS
                flow.append((at_ms, effect.topic, sender, effect.data, everyone - {sender}))
    return flow


def chains() -> list[list[bytes]]:
    """A payer's and a payee's chains, one that records fork evidence, and a forked pair."""
    payer, payee = MemoryLedger(AUTHORS[1], now_ms=T0_MS), MemoryLedger(AUTHORS[2], now_ms=T0_MS)
    fill(payer, payee)
    forker = MemoryLedger(AUTHORS[3], now_ms=T0_MS)
    forker.append_mismatch(
        job_id=b"j", worker=AUTHORS[4].public_key, evidence_hashes=(), now_ms=T0_MS + 1
    )
    head = parse_entry(forker.entry_wires()[-1])
    other = sign_entry(
        AUTHORS[3], seq=head.seq, prev_hash=head.prev_hash, kind=Kind.MISMATCH,
        body=MismatchBody(b"k", AUTHORS[4].public_key, ()), created_ms=head.created_ms,
    )  # fmt: skip
    proof = make_fork_proof(forker.entry_wires()[-1], other.wire)
    payee.record_fork(proof, now_ms=T0_MS + 200)
    forked = [*forker.entry_wires(), other.wire]
    return [payer.entry_wires(), payee.entry_wires(), forked, forker.entry_wires()]


def inboxes(flow: list[tuple[int, str, int, bytes, frozenset[int]]]) -> list[list[object]]:
    """``[role, [channel, author, body, delay_ms], ...]`` for the worker and the publisher."""
    found = []
    for role in ROLES:
        inbox: list[object] = [role]
        last_ms = T0_MS
        for at_ms, channel, author, envelope, to in sorted(flow, key=lambda m: m[0]):
            if role in to:
                body = open_envelope(envelope, now_ms=T0_MS, verify=False).body_bytes
                inbox.append([CHANNELS.index(channel), author, body, at_ms - last_ms])
                last_ms = at_ms
        found.append(inbox)
    return found


def seeds() -> dict[str, list[bytes]]:
    flow = job_flow()
    opened = [open_envelope(envelope, now_ms=T0_MS, verify=False) for _, _, _, envelope, _ in flow]
    bodies = [e.body_bytes for e in opened]
    envelopes = [envelope for _, _, _, envelope, _ in flow]
    sequences = [*inboxes(flow), *inboxes(job_flow(liar=True))[:1]]
    all_chains = chains()
    entries = [w for c in all_chains for w in c]
    store, _ = _ledgers()
    author = store.identity.public_key
    requests = [LedgerRangeRequest(author, s, c) for s, c in ((0, 1), (0, 64), (3, 2), (99, 5))]
    fork_proofs = [encode(ForkProof(c[-2], c[-1])) for c in all_chains[2:3]]
    digest = hashlib.sha256(BLOB).digest()
    blob_requests = [BlobRequest(digest, o, n) for o, n in ((0, 65536), (100, 10), (len(BLOB), 1))]
    return {
        "codec": envelopes + bodies + entries,
        "envelope": envelopes,
        "messages": bodies + entries + fork_proofs + [encode(r) for r in requests],
        "engine": [msgpack.packb(inbox, use_bin_type=True) for inbox in sequences]
        + [
            msgpack.packb([inbox[0], item], use_bin_type=True)
            for inbox in sequences[:2]
            for item in inbox[1:]
        ],
        "blob": [encode(r) for r in blob_requests] + [encode(BlobRequest(bytes(32), 0, 10))],
        "ledger_range": [encode(r) for r in requests],
        "audit": [encode(serve_range(store, r)) for r in requests],
        "chain": [msgpack.packb([0, c], use_bin_type=True) for c in all_chains]
        + [
            msgpack.packb([1, [parse_entry(w).signed for w in c]], use_bin_type=True)
            for c in all_chains
        ],
    }


def main() -> None:
    made = seeds()
    assert set(made) == set(TARGETS), "every target needs seeds"
    for name, items in sorted(made.items()):
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for data in items:
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{name}: {len(set(items))} seeds, {sum(map(len, set(items)))} bytes")


if __name__ == "__main__":
    main()
