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

from ledger.audit import LedgerRangeRequest, serve_range
from ledger.entry import ForkProof, Kind, MismatchBody, parse_entry, sign_entry
from ledger.memory import MemoryLedger
from ledger.proofs import make_fork_proof
from protocol.codec import encode
from protocol.effects import Publish, Send
from protocol.envelope import open_envelope
from protocol.events import Started
from protocol.messages import BlobRequest
from tests.fuzz.targets import AUTHORS, BLOB, CHANNELS, T0_MS, TARGETS, _ledgers, fill
from tests.protocol.harness import Cluster

CORPUS = Path(__file__).resolve().parent / "corpus"
ENGINE_UNDER_TEST = 0  # the harness node whose inbox becomes the engine target's sequences


def job_flow() -> list[tuple[str, int, bytes, bool]]:
    """(channel, author index, envelope, delivered to node 0) for every message of one job."""
    cluster = Cluster(5, ledgers=True)
    job_id = cluster.publish_job(3, b"\0asm fuzz corpus module", b"fuzz corpus input")
    cluster.run_until(cluster.finished(3, job_id))
    me = cluster.nodes[ENGINE_UNDER_TEST].peer_id
    flow = []
    for _, sender, effect in cluster.wire:
        if isinstance(effect, Publish):
            flow.append((effect.topic, sender, effect.data, sender != ENGINE_UNDER_TEST))
        elif isinstance(effect, Send):
            flow.append((effect.protocol, sender, effect.data, effect.peer == me))
    for sender in (1, 2):  # capacity ads and ledger heads, as a node publishes them on start
        for effect in cluster.nodes[sender].engine.step(Started(), cluster.now_ms):
            if isinstance(effect, Publish):
                flow.append((effect.topic, sender, effect.data, True))
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


def seeds() -> dict[str, list[bytes]]:
    flow = job_flow()
    opened = [(ch, a, open_envelope(env, now_ms=T0_MS, verify=False), env, to_me)
              for ch, a, env, to_me in flow]  # fmt: skip
    bodies = [e.body_bytes for _, _, e, _, _ in opened]
    envelopes = [env for _, _, _, env, _ in opened]
    all_chains = chains()
    entries = [w for c in all_chains for w in c]
    store, _ = _ledgers()
    author = store.identity.public_key
    requests = [LedgerRangeRequest(author, s, c) for s, c in ((0, 1), (0, 64), (3, 2), (99, 5))]
    inbox = [[CHANNELS.index(ch), a, e.body_bytes] for ch, a, e, _, to_me in opened if to_me]
    fork_proofs = [encode(ForkProof(c[-2], c[-1])) for c in all_chains[2:3]]
    digest = hashlib.sha256(BLOB).digest()
    blob_requests = [BlobRequest(digest, o, n) for o, n in ((0, 65536), (100, 10), (len(BLOB), 1))]
    return {
        "codec": envelopes + bodies + entries,
        "envelope": envelopes,
        "messages": bodies + entries + fork_proofs + [encode(r) for r in requests],
        "engine": [msgpack.packb(inbox, use_bin_type=True)]
        + [msgpack.packb([item], use_bin_type=True) for item in inbox],
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
