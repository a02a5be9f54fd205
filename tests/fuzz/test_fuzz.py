"""The fuzz targets in CI: the corpus and seeded mutations in-process, structured inputs from
hypothesis, and a bounded atheris run of each target. A crash fails the test and names a file
holding the input, with the command that replays it.

Longer runs by hand: see docs/testing.md ("Fuzzing").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import subprocess
import sys
import typing
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hearth.ledger.audit import LedgerRangeRequest
from hearth.ledger.entry import EntrySigned
from hearth.protocol import limits
from hearth.protocol.codec import decode, decode_as, encode, registered_types
from hearth.protocol.messages import (
    PROTOCOL_AWARD,
    PROTOCOL_BID,
    PROTOCOL_RECEIPT,
    PROTOCOL_RESULT,
    BlobRequest,
)
from tests.fuzz import targets
from tests.fuzz.targets import TARGETS, KnownIssue, Target, run_one
from tests.protocol.strategies import INTS, any_message, for_type

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
REGRESSIONS = Path(__file__).resolve().parent / "regressions"
MUTATIONS_SLOW_TARGET = 300  # engine and chain take about a millisecond an input
MUTATIONS_FAST_TARGET = 3_000
# Seconds of atheris over all targets together (one process); the module stays under 60 s.
ATHERIS_S = float(os.environ.get("HEARTH_FUZZ_SECONDS", "25"))
STRUCTURED = settings(
    max_examples=int(os.environ.get("HEARTH_FUZZ_EXAMPLES", "150")),
    deadline=None,
    derandomize="HEARTH_FUZZ_RANDOM" not in os.environ,  # CI: the same examples every run
    suppress_health_check=[HealthCheck.too_slow],
)


def corpus(name: str) -> list[tuple[str, bytes]]:
    """The generated seeds, the crashes found so far (``regressions/``, kept by hand), and for
    the parsers one seed per registered message."""
    files = sorted((CORPUS / name).iterdir())
    assert files, f"no seeds in {CORPUS / name}; run python -m tests.fuzz.make_corpus"
    found = REGRESSIONS / name
    files += sorted(found.iterdir()) if found.is_dir() else []
    seeds = [(str(p), p.read_bytes()) for p in files]
    if name in ("codec", "messages"):
        seeds += [(f"registry seed {i}", s) for i, s in enumerate(targets.registry_seeds())]
    return seeds


def crash_report(target: Target, data: bytes, where: Path, origin: str) -> str:
    where.mkdir(parents=True, exist_ok=True)
    path = where / f"crash-{target.name}-{hashlib.sha1(data).hexdigest()}"
    path.write_bytes(data)
    return (
        f"{target.name} crashed on an input from {origin}; it is saved at {path}\n"
        f"replay: PYTHONPATH=. python -m tests.fuzz.run {target.name} {path}"
    )


def check(target: Target, data: bytes, where: Path, origin: str) -> bool:
    """Run one input; True if it hit a known issue, fail the test on a crash."""
    try:
        run_one(target, data)
    except KnownIssue:
        return True
    except Exception as exc:
        pytest.fail(f"{crash_report(target, data, where, origin)}\n{exc!r}")
    return False


INTERESTING = (b"\x00", b"\xff", b"\x7f", b"\x80", b"\xc0", b"\xcf" + b"\xff" * 8, b"\xd3\x80")


def mutate(data: bytes, others: list[bytes], rng: random.Random) -> bytes:
    """One to four of libFuzzer's simplest mutations, seeded: a deterministic stand-in."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out) + 1)
        op = rng.randrange(6)
        if op == 0 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            out[at:at] = bytes([rng.randrange(256)])
        elif op == 2:
            del out[at : at + rng.randint(1, 16)]
        elif op == 3:
            out[at:at] = rng.choice(INTERESTING)
        elif op == 4 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 32)]
        else:
            other = rng.choice(others)
            out[at:] = other[rng.randrange(len(other) + 1) :]
    return bytes(out)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_corpus_and_seeded_mutations(name: str, tmp_path: Path) -> None:
    target = TARGETS[name]
    seeds = corpus(name)
    for origin, data in seeds:
        check(target, data, tmp_path, origin)
    rng = random.Random(f"hearth-fuzz:{name}")
    inputs = [data for _, data in seeds]
    count = MUTATIONS_SLOW_TARGET if name in ("engine", "chain") else MUTATIONS_FAST_TARGET
    for i in range(count):
        data = mutate(rng.choice(inputs), inputs, rng)
        check(target, data, tmp_path, f"seeded mutation {i}")


def test_every_registered_message_is_seeded() -> None:
    """A message added to the registry is fuzzed from a seed of its own at once."""
    seeded = {code: False for code in registered_types()}
    for seed in targets.registry_seeds():
        seeded[msgpack.unpackb(seed)[0]] = True
    assert all(seeded.values()), seeded


@STRUCTURED
@given(message=any_message(), channel=st.integers(0, 63), author=st.integers(0, 4))
def test_structured_messages_through_the_parsers_and_the_engine(
    message: object, channel: int, author: int
) -> None:
    data = encode(message)
    for name in ("codec", "messages"):
        run_one(TARGETS[name], data)
    run_one(TARGETS["engine"], msgpack.packb([[channel, author, data]], use_bin_type=True))


def job_flow_inboxes() -> list[list[object]]:
    """The engine corpus's whole job as the worker (node 0) and the publisher (node 3) received
    it: ``[role, [channel, author, body, delay_ms], ...]``."""
    inboxes = []
    for path in sorted((CORPUS / "engine").iterdir()):
        items = msgpack.unpackb(path.read_bytes())
        if len(items) > 3:
            inboxes.append(items)
    assert {inbox[0] for inbox in inboxes} == {0, targets.PUBLISHER}
    return inboxes


def test_the_engine_corpus_takes_a_worker_and_a_publisher_through_a_whole_job() -> None:
    """Bid, award, commit, reveal, pay, countersign: the deep handlers are reached with valid
    signatures, so the fuzzers' mutations start from there."""
    targets.ENGINE_REACHED.clear()
    for inbox in job_flow_inboxes():
        targets.engine(msgpack.packb(inbox, use_bin_type=True))
    protocols = {PROTOCOL_BID, PROTOCOL_AWARD, PROTOCOL_RESULT, PROTOCOL_RECEIPT}
    assert protocols | {"phase:paid"} <= targets.ENGINE_REACHED


@STRUCTURED
@given(data=st.data())
def test_field_mutations_of_a_real_job_reach_the_engine_handlers(data: st.DataObject) -> None:
    """One field of one message of the real job replaced by any value of its type: what a
    hostile publisher, payer, bidder or worker would send, signed, to a node mid-job."""
    role, *items = data.draw(st.sampled_from(job_flow_inboxes()))
    inbox = [list(item) for item in items]
    item = inbox[data.draw(st.integers(0, len(inbox) - 1))]
    message = decode(item[2])  # type: ignore[arg-type]
    field = data.draw(st.sampled_from(dataclasses.fields(message)))
    value = data.draw(for_type(typing.get_type_hints(type(message))[field.name]))
    item[2] = encode(dataclasses.replace(message, **{field.name: value}))
    run_one(TARGETS["engine"], msgpack.packb([role, *inbox], use_bin_type=True))


def signed_chains() -> list[list[bytes]]:
    """The chain corpus's real chains as the ``EntrySigned`` bytes their authors signed."""
    chains = []
    for _, data in corpus("chain"):
        mode, items = msgpack.unpackb(data)
        if mode == 1:
            chains.append(items)
    assert chains
    return chains


ENTRY_FIELDS = {
    "seq": st.integers(-1, 12),
    "kind": st.integers(-1, 8),
    "created_ms": INTS | st.integers(targets.T0_MS - 5, targets.T0_MS + 300),
    "prev_hash": st.binary(min_size=32, max_size=32) | st.binary(max_size=40),
    "author": st.sampled_from([a.public_key for a in targets.AUTHORS]) | st.binary(max_size=40),
}


@STRUCTURED
@given(data=st.data())
def test_structural_edits_of_real_chains_reach_the_chain_rules(data: st.DataObject) -> None:
    """Entries dropped, repeated, swapped, or one field (a body taken from another entry)
    changed and re-signed by the author: the chain rules, not the signature check, decide."""
    chains = signed_chains()
    signed = list(data.draw(st.sampled_from(chains)))
    bodies = [decode_as(s, EntrySigned).body for chain in chains for s in chain]
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["drop", "repeat", "swap", "edit", "edit"]))
        i = data.draw(st.integers(0, len(signed) - 1))
        j = data.draw(st.integers(0, len(signed) - 1))
        if op == "drop" and len(signed) > 1:
            del signed[i]
        elif op == "repeat":
            signed.insert(i, signed[j])
        elif op == "swap":
            signed[i], signed[j] = signed[j], signed[i]
        else:
            entry = decode_as(signed[i], EntrySigned)
            name = data.draw(st.sampled_from([*ENTRY_FIELDS, "body"]))
            field_values = ENTRY_FIELDS[name] if name in ENTRY_FIELDS else st.sampled_from(bodies)
            value = data.draw(field_values)
            signed[i] = encode(dataclasses.replace(entry, **{name: value}))
    run_one(TARGETS["chain"], msgpack.packb([1, signed], use_bin_type=True))


HELD = hashlib.sha256(targets.BLOB).digest()


@STRUCTURED
@given(
    digest=st.sampled_from([HELD, bytes(32), b"", b"\x01" * 33]),
    offset=INTS | st.sampled_from([2**44, 2**44 - 1, len(targets.BLOB), 2**63 - 1]),
    length=INTS | st.sampled_from([1, limits.BLOB_CHUNK_BYTES_MAX + 1]),
)
def test_structured_blob_requests(digest: bytes, offset: int, length: int) -> None:
    run_one(TARGETS["blob"], encode(BlobRequest(digest, offset, length)))


def test_a_blob_request_past_two_to_the_44_is_answered_or_ignored() -> None:
    """Issue 12 item 1: this request once made ``seek`` raise EINVAL and ended the daemon."""
    run_one(TARGETS["blob"], encode(BlobRequest(HELD, 2**44, 1)))


@STRUCTURED
@given(
    author=st.sampled_from([targets.AUTHORS[1].public_key, bytes(32), b""]),
    from_seq=INTS | st.integers(-2, 12),
    count=INTS | st.integers(-2, limits.LEDGER_RANGE_ENTRIES_MAX + 2),
)
def test_structured_ledger_range_requests(author: bytes, from_seq: int, count: int) -> None:
    run_one(TARGETS["ledger_range"], encode(LedgerRangeRequest(author, from_seq, count)))


def test_chain_seeds_include_whole_real_chains() -> None:
    """The chain target starts from chains that verify (and one fork), not only from noise."""
    ok = 0
    for _, data in corpus("chain"):
        try:
            targets.chain(data)
            ok += 1
        except Exception:  # the forked seed is refused on purpose
            continue
    assert ok >= 4


@pytest.mark.slow
def test_atheris_finds_no_crash_in_any_target(tmp_path: Path) -> None:
    """Every target in one atheris process (one start-up), coverage-guided, for ATHERIS_S."""
    pytest.importorskip("atheris")
    stats = tmp_path / "stats.json"
    command = [
        sys.executable, "-m", "tests.fuzz.run", "all", f"-max_total_time={ATHERIS_S:g}",
        "-print_final_stats=1", "-timeout=60", f"-artifact_prefix={tmp_path}/",
        str(tmp_path / "corpus"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HEARTH_FUZZ_STATS": str(stats)}
    done = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=ATHERIS_S + 60
    )
    crashes = sorted(tmp_path.glob("crash-*")) + sorted(tmp_path.glob("timeout-*"))
    tail = "\n".join(done.stderr.splitlines()[-40:])
    assert done.returncode == 0 and not crashes, (
        f"atheris: exit {done.returncode}; crashing input(s): {[str(c) for c in crashes]}\n"
        f"replay: PYTHONPATH=. python -m tests.fuzz.run all <input>\n{tail}"
    )
    table = json.loads(stats.read_text())
    for name, (execs, seconds) in sorted(table.items()):
        print(f"fuzz {name}: {execs} execs, {execs / max(seconds, 1e-9):.0f} exec/s in the target")
    assert all(execs > 0 for execs, _ in table.values()), table
