"""Fuzz targets: each takes one input's bytes and may raise only its documented refusals.

A target returns normally or raises one of its ``refusals`` (a peer's bad input, refused on
purpose); any other exception is a crash. The same functions run under atheris (``run.py``, for
coverage-guided search) and in-process over the corpus (``test_fuzz.py``), so a crash found by
either replays with ``python -m tests.fuzz.run TARGET PATH``.

Inputs that must carry several values (a chain of entries, a sequence of messages) are msgpack
arrays; anything else is fed to the code under test as it is, so the fuzzer also tries the shape.
Fixtures (keys, a real chain, a real SQLite ledger, a blob store) are built once per process, the
same every time, so that an input reproduces.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import random
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import msgpack

from hearth.ledger.audit import (
    LedgerRangeRequest,
    LedgerRangeResponse,
    audit_range,
    check_range_request,
    serve_range,
)
from hearth.ledger.base import LedgerBase
from hearth.ledger.chain import verify_chain
from hearth.ledger.entry import (
    CountersignedReceipt,
    DoubleClaimProof,
    EntrySigned,
    EntryWire,
    ForkProof,
    HalfSignedReceipt,
    Receipt,
    parse_entry,
    parse_receipt,
)
from hearth.ledger.errors import ChainError
from hearth.ledger.memory import MemoryLedger
from hearth.ledger.parallel import verify_chain_parallel
from hearth.ledger.proofs import verify_double_claim_proof, verify_fork_proof
from hearth.ledger.receipts import check_half_signed, check_receipt
from hearth.ledger.store import SqliteLedger
from hearth.node.blobs import BlobStore, serve_blob_request
from hearth.p2p.transport import Inbound
from hearth.protocol.codec import decode, decode_as, encode, registered_types
from hearth.protocol.effects import (
    CancelTimer,
    CommitEntries,
    FetchBlob,
    JobProgress,
    RunJob,
    Send,
    SetTimer,
)
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.envelope import NONCE_MAX, EnvelopeWire, SignedWire, open_envelope
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.events import (
    BlobFetched,
    EntriesCommitted,
    JobExecuted,
    MessageReceived,
    PeerConnected,
    PublishJob,
    RttMeasured,
    TimerFired,
)
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import JobId
from hearth.protocol.jobs_config import JobsConfig
from hearth.protocol.messages import PROTOCOLS, TOPICS
from hearth.protocol.publisher_state import PublisherConfig
from hearth.protocol.timers import TimerKey
from tests.protocol.harness import LATENCY_MS, T0_MS, make_profile

NOW_MS = T0_MS + 100  # just after the corpus job's call for bids, inside its envelopes' lives
CHANNELS = (*TOPICS, *PROTOCOLS)
MESSAGE_INTERVAL_MS = 10  # between an engine input's messages that do not say (the latency)
MESSAGE_DELAY_MS_MAX = 600_000  # the longest wait an input may ask for between two messages
ENGINE_REACHED: set[str] = set()  # protocols it sent on, job phases it reached (for a test)
LOCAL_EVENTS_MAX = 64  # effects handled per message: a fetch answers, a job runs, no loop
FINAL_TIMERS_MAX = 16  # timers fired after the last message (leases, resends), then stop
BLOB = b"hearth blob " * 100  # a blob every blob-request input may ask for (its hash is below)


def identity(index: int) -> Identity:
    """The keys of tests.protocol.harness's nodes: node 0 is the engine under test."""
    return Identity(hashlib.sha256(f"node{index}".encode()).digest())


AUTHORS = tuple(identity(i) for i in range(5))


@dataclasses.dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    refusals: tuple[type[BaseException], ...]
    doc: str


class KnownIssue(Exception):
    """A crash another branch of issue 12 fixes; tolerated by name, and reported, until then."""


# The codec -----------------------------------------------------------------------------------


def codec(data: bytes) -> None:
    """``decode`` refuses, or parses canonical bytes that encode back to exactly ``data``."""
    msg = decode(data)
    assert encode(msg) == data, "decode accepted bytes that do not re-encode to themselves"


def envelope(data: bytes) -> None:
    """``open_envelope`` as a node opens it, then without the signature check (to go deeper)."""
    try:
        open_envelope(data, now_ms=NOW_MS)
    except RemoteProtocolError:
        opened = open_envelope(data, now_ms=NOW_MS, verify=False)
        assert opened.body_bytes == encode(opened.body)
        return


# Every registered message's parser and checks ------------------------------------------------

_PAYEE = AUTHORS[0].public_key
_EXTRA_CHECKS: dict[type, Callable[[Any], object]] = {
    EnvelopeWire: lambda m: open_envelope(encode(m), now_ms=NOW_MS, verify=False),
    SignedWire: lambda m: decode(m.body),
    EntryWire: lambda m: parse_entry(encode(m)),
    Receipt: lambda m: parse_receipt(encode(m)),
    HalfSignedReceipt: lambda m: check_half_signed(m, payee=_PAYEE, now_ms=NOW_MS),
    CountersignedReceipt: check_receipt,
    ForkProof: verify_fork_proof,
    DoubleClaimProof: verify_double_claim_proof,
    LedgerRangeRequest: check_range_request,
}


def message_checks(cls: type) -> list[Callable[[Any], object]]:
    """What a node runs on a freshly decoded ``cls`` beyond the codec: its ``check`` (given
    ``now_ms`` if it takes one) and the ledger's parsers. Built from the registry, so a new
    message with a ``check`` is fuzzed without a change here."""
    checks: list[Callable[[Any], object]] = []
    check = getattr(cls, "check", None)
    if check is not None:
        if "now_ms" in inspect.signature(check).parameters:
            checks.append(lambda m: m.check(now_ms=NOW_MS))
        else:
            checks.append(lambda m: m.check())
    if cls in _EXTRA_CHECKS:
        checks.append(_EXTRA_CHECKS[cls])
    return checks


def messages(data: bytes) -> None:
    """Decode any registered message, then run every check a node would run on it."""
    msg = decode(data)
    errors: list[RemoteProtocolError] = []
    for check in message_checks(type(msg)):
        try:
            check(msg)
        except RemoteProtocolError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]


# The engine: every message handler, reached with valid signatures ----------------------------


CORPUS_MODULE = b"\0asm fuzz corpus module"
CORPUS_INPUT = b"fuzz corpus input"
PUBLISHER = 3  # the harness node that publishes the corpus job (make_corpus.py)


def corpus_job() -> PublishJob:
    """The job of the corpus, as tests.protocol.harness.Cluster.publish_job made it at T0_MS."""
    module_hash = hashlib.sha256(CORPUS_MODULE).digest()
    input_hash = hashlib.sha256(CORPUS_INPUT).digest()
    return PublishJob(
        job_id=JobId(hashlib.sha256(module_hash + input_hash + str(T0_MS).encode()).digest()[:16]),
        runtime="wasm", module_hash=module_hash, module_bytes=len(CORPUS_MODULE),
        input_hash=input_hash, input_bytes=len(CORPUS_INPUT), fuel_max=10**12, memory_mb_max=256,
        deadline_ms=T0_MS + 120_000, max_price_mc_per_tfuel=50_000, bid_window_ms=1_000,
    )  # fmt: skip


def _sequence(data: bytes) -> tuple[int, list[tuple[int, int, bytes, int]]]:
    """``[role, [channel, author, body, delay_ms], ...]`` (role: which harness node the engine
    is, the publisher publishing the corpus job first; delay_ms: since the previous message, or
    since the start, optional), or the whole input as one body to node 0."""
    try:
        items = msgpack.unpackb(data, raw=False, max_array_len=64, max_map_len=0)
    except Exception:
        return 0, [(len(data), 1, data, 0)]
    if not isinstance(items, list):
        return 0, [(len(data), 1, data, 0)]
    role = 0
    if items and type(items[0]) is int:
        role, items = items[0] % len(AUTHORS), items[1:]
    out = []
    for item in items:
        if (
            isinstance(item, list)
            and len(item) in (3, 4)
            and type(item[0]) is int
            and type(item[1]) is int
            and type(item[2]) is bytes
        ):
            delay = item[3] if len(item) == 4 and type(item[3]) is int else MESSAGE_INTERVAL_MS
            out.append((item[0], item[1], item[2], max(0, min(delay, MESSAGE_DELAY_MS_MAX))))
    return role, out


def _seal_raw(author: Identity, body: bytes, nonce: int, now_ms: int) -> bytes:
    signed = encode(SignedWire(author.public_key, nonce, now_ms, now_ms + 30_000, body))
    return encode(EnvelopeWire(signed, author.sign(signed)))


def engine(data: bytes) -> None:
    """A fresh worker/publisher engine (with a ledger) fed a sequence of signed messages.

    The harness signs whatever body the fuzzer made, as one of the harness's nodes, so the
    fuzzer reaches each component's handler rather than stopping at the signature. Nothing may
    raise out of ``Engine.step``: every refusal is a ``Log`` and a ``Penalise``.
    """
    role, sequence = _sequence(data)
    me = AUTHORS[role]
    ledger = MemoryLedger(me, now_ms=T0_MS)
    node = Engine(  # seeded as the harness seeds its node, so the corpus's messages match
        EngineConfig(me, make_profile(role), jobs=JobsConfig(publisher=PublisherConfig(32))),
        random.Random(f"0:{role}"),
        ledger.view(),
    )
    now_ms = T0_MS  # the corpus job's timeline: published at T0_MS, delays as they were
    timers: dict[TimerKey, int] = {}
    for index, other in enumerate(AUTHORS):
        if other is not me:
            node.step(PeerConnected(other.peer_id, f"127.0.0.{index + 2}"), now_ms)
            # The round trips the harness measured when it recorded the corpus: ranking uses them.
            node.step(RttMeasured(other.peer_id, 2 * LATENCY_MS + 3 * abs(role - index)), now_ms)
    if role == PUBLISHER:
        _carry_out(node, ledger, node.step(corpus_job(), now_ms), now_ms, timers)
    for nonce, (channel, author_index, body, delay_ms) in enumerate(sequence):
        now_ms += delay_ms
        _fire_due_timers(node, ledger, timers, now_ms)
        author = AUTHORS[author_index % len(AUTHORS)]
        wire = _seal_raw(author, body, nonce % NONCE_MAX, now_ms)
        event = MessageReceived(author.peer_id, CHANNELS[channel % len(CHANNELS)], wire)
        _carry_out(node, ledger, node.step(event, now_ms), now_ms, timers)
    _fire_due_timers(node, ledger, timers, now_ms + MESSAGE_DELAY_MS_MAX, FINAL_TIMERS_MAX)


def _fire_due_timers(
    node: Engine,
    ledger: MemoryLedger,
    timers: dict[TimerKey, int],
    now_ms: int,
    count_max: int = LOCAL_EVENTS_MAX,
) -> None:
    for _ in range(count_max):
        # Ties fire in the order they were set (timer keys are not ordered).
        due = min(
            ((at_ms, n, key) for n, (key, at_ms) in enumerate(timers.items()) if at_ms <= now_ms),
            default=None,
        )
        if due is None:
            return
        at_ms, _, key = due
        del timers[key]
        _carry_out(node, ledger, node.step(TimerFired(key), at_ms), at_ms, timers)


def _carry_out(
    node: Engine, ledger: MemoryLedger, effects: list[Any], now_ms: int, timers: dict[TimerKey, int]
) -> None:
    """Do what a node's shell does with effects, at once: blobs are always at hand, jobs run
    instantly and output a hash of their inputs (so replicas of the corpus agree), ledger
    entries are committed to ``ledger`` before the sends that wait on them, timers are kept for
    the caller to fire as time passes."""
    queue = list(effects)
    for _ in range(LOCAL_EVENTS_MAX):
        if not queue:
            return
        effect = queue.pop(0)
        if isinstance(effect, SetTimer):
            timers[effect.key] = effect.at_ms
        elif isinstance(effect, CancelTimer):
            timers.pop(effect.key, None)
        elif isinstance(effect, Send):
            ENGINE_REACHED.add(effect.protocol)
        elif isinstance(effect, JobProgress):
            ENGINE_REACHED.add(f"phase:{effect.phase}")
        elif isinstance(effect, FetchBlob):
            queue += node.step(BlobFetched(effect.blob_hash), now_ms)
        elif isinstance(effect, RunJob):
            output = b"out:" + hashlib.sha256(effect.module_hash + effect.input_hash).digest()
            done = JobExecuted(
                effect.job_id, True, hashlib.sha256(output).digest(), output, 10**9, ""
            )
            queue += node.step(done, now_ms)
        elif isinstance(effect, CommitEntries):  # as the shells do: commit, send, tell the engine
            ledger.append_many(effect.entries)
            queue += [*effect.then, *node.step(EntriesCommitted(effect.entries[-1].seq), now_ms)]


# The blob request handler -------------------------------------------------------------------


@functools.cache
def _blob_store() -> BlobStore:
    store = BlobStore(Path(tempfile.mkdtemp(prefix="hearth-fuzz-blobs-")))
    store.put(BLOB)
    return store


def _drive(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits on trio (the fake reply does not) to completion."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    coroutine.close()
    raise AssertionError("the handler waited on something other than its reply")


def blob(data: bytes) -> None:
    """``serve_blob_request`` answers or stays silent; it never raises, and any answer is a
    ``BlobChunk`` for the hash asked about, no larger than a frame."""
    replies: list[bytes] = []

    async def reply(frame: bytes) -> None:
        replies.append(frame)

    # Entitled, so that every request reaches the range checks against the blob it names.
    inbound = Inbound("fuzzer", "/hearth/blob/1", data, reply)
    _drive(serve_blob_request(_blob_store(), inbound, may_fetch=lambda *_: True))
    assert len(replies) <= 1
    for frame in replies:
        decode(frame, bytes_max=sys.maxsize)


# The ledger-range handler and the auditor that reads its answers ----------------------------


@functools.cache
def _ledgers() -> tuple[SqliteLedger, MemoryLedger]:
    """A real SQLite ledger with payments in it (served), and its payee's (audited against)."""
    payer_identity, payee = AUTHORS[1], MemoryLedger(AUTHORS[2], now_ms=T0_MS)
    path = Path(tempfile.mkdtemp(prefix="hearth-fuzz-ledger-")) / "ledger.sqlite"
    store = SqliteLedger.open(path, payer_identity, now_ms=T0_MS)
    fill(store, payee)
    return store, payee


def fill(payer: LedgerBase, payee: LedgerBase, receipts: int = 3) -> None:
    """Payments from ``payer`` to ``payee``: pay, earn, settle; one left pending; a mismatch."""
    for i in range(receipts):
        now_ms = T0_MS + 10 * i
        half = payer.append_pay_pending(
            job_id=f"job-{i}".encode(), payee=payee.identity.public_key, amount_mc=100 + i,
            now_ms=now_ms, ttl_ms=10_000,
        )  # fmt: skip
        countersigned = payee.append_earn(half, now_ms=now_ms + 1)
        if i < receipts - 1:
            payer.settle(countersigned, now_ms=now_ms + 2)
    payer.append_mismatch(
        job_id=b"job-x", worker=payee.identity.public_key, evidence_hashes=(bytes(32),),
        now_ms=T0_MS + 100,
    )  # fmt: skip


def ledger_range(data: bytes) -> None:
    """A node serving its ledger: decode the request, answer from the SQLite file."""
    store, _ = _ledgers()
    response = serve_range(store, decode_as(data, LedgerRangeRequest))
    assert response.from_seq == decode_as(data, LedgerRangeRequest).from_seq
    encode(response)


def audit(data: bytes) -> None:
    """An auditor checking a range response against the receipts it holds with the author."""
    store, payee = _ledgers()
    response = decode_as(data, LedgerRangeResponse)
    held = {}
    for entry in payee.entries():
        if isinstance(entry.body, CountersignedReceipt):
            held[hashlib.sha256(entry.body.receipt).digest()] = entry.body
    count = max(1, min(len(response.entries), 64))
    request = LedgerRangeRequest(store.identity.public_key, response.from_seq, count)
    audit_range(response, request=request, prev_hash=None, held=held)


# The chain verifier -------------------------------------------------------------------------


def _chain_input(data: bytes) -> tuple[int, list[bytes]]:
    """``[mode, [bytes, ...]]``; anything else is one wire alone."""
    try:
        value = msgpack.unpackb(data, raw=False, max_array_len=512, max_map_len=0)
    except Exception:
        return 0, [data]
    if (
        isinstance(value, list)
        and len(value) == 2
        and type(value[0]) is int
        and isinstance(value[1], list)
        and all(type(w) is bytes for w in value[1])
    ):
        return value[0], value[1]
    return 0, [data]


def _signed_by_its_author(signed: bytes) -> bytes:
    """Sign an ``EntrySigned`` as its author when the author is one of our keys."""
    try:
        author = decode_as(signed, EntrySigned).author
    except RemoteProtocolError:
        author = b""
    key = next((a for a in AUTHORS if a.public_key == author), AUTHORS[1])
    return encode(EntryWire(signed, key.sign(signed)))


def chain(data: bytes) -> None:
    """``verify_chain`` over mutated real chains. Mode 1 re-signs each (mutated) ``EntrySigned``
    as its author, so the fuzzer reaches the chain rules behind the signature check."""
    mode, items = _chain_input(data)
    wires = [_signed_by_its_author(s) for s in items] if mode % 2 else items
    if not wires:
        wires = [b""]
    first: ChainError | None = None
    try:
        state = verify_chain(wires)
    except ChainError as exc:
        first = exc
    try:  # the threaded verifier (the store's) must agree exactly with the one-pass one
        verify_chain_parallel(wires, threads=2, window_entries=2)
    except ChainError as exc:
        assert first is not None, f"only the parallel verifier refused: {exc.describe()}"
        assert (type(exc), exc.index) == (type(first), first.index), "the verifiers disagree"
        raise
    assert first is None, f"only the one-pass verifier refused: {first.describe()}"
    assert state.reserved_mc >= 0 and state.head.seq == len(wires) - 1


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("codec", codec, (RemoteProtocolError,), "hearth.protocol.codec.decode"),
        Target(
            "envelope", envelope, (RemoteProtocolError,), "hearth.protocol.envelope.open_envelope"
        ),
        Target("messages", messages, (RemoteProtocolError,), "every message's parser and check"),
        Target("engine", engine, (), "Engine.step over signed messages on every channel"),
        Target("blob", blob, (), "hearth.node.blobs.serve_blob_request"),
        Target(
            "ledger_range", ledger_range, (RemoteProtocolError,), "hearth.ledger.audit.serve_range"
        ),
        Target("audit", audit, (RemoteProtocolError,), "hearth.ledger.audit.audit_range"),
        Target("chain", chain, (ChainError,), "hearth.ledger.chain verify_chain / ChainVerifier"),
    )
}


def run_one(target: Target, data: bytes) -> None:
    """Run one input; a documented refusal is a pass, anything else propagates (a crash)."""
    try:
        target.run(data)
    except target.refusals:
        return


def registry_seeds() -> list[bytes]:
    """One plausible instance of every registered message, built from its field types: a new
    message type gets seeds without anyone regenerating the corpus."""
    return [encode(_example(cls)) for cls in registered_types().values()]


def _example(tp: Any) -> Any:
    import typing

    if tp is bool:
        return True
    if tp is int:
        return 1
    if tp is str:
        return "wasm"
    if tp is bytes:
        return bytes(32)
    if typing.get_origin(tp) is tuple:
        return (_example(typing.get_args(tp)[0]),)
    hints = typing.get_type_hints(tp)
    return tp(*(_example(hints[f.name]) for f in dataclasses.fields(tp)))
