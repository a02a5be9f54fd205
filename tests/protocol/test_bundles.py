"""Task bundles and result bundles (ADR 0033): round trips, the Merkle root, hostile bytes."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hearth.protocol import bundles
from hearth.protocol.bundles import BundleError, TaskBundle, TaskResult


def results(count: int) -> list[TaskResult]:
    return [TaskResult("", f"out {i}".encode(), 100 + i, 0, b"") for i in range(count)]


def test_a_task_bundle_round_trips_and_is_told_from_other_inputs() -> None:
    bundle = TaskBundle(10**9, 1 << 20, (b"a", b"", b"c" * 5000))
    data = bundle.encode()
    assert bundles.is_task_bundle(data)
    assert bundles.decode_tasks(data) == bundle
    assert not bundles.is_task_bundle(b"plain input")
    assert not bundles.is_task_bundle(bundles.encode_results(results(2)))
    assert not bundles.is_task_bundle(msgpack.packb(["hearth/tasks/2", 1, 1, [b"x"]]))


def test_results_carry_their_root_and_name_the_task_that_differs() -> None:
    honest = results(7)
    decoded = bundles.decode_results(bundles.encode_results(honest), 7)
    assert decoded.results == tuple(honest)
    assert decoded.root == bundles.merkle_root(decoded.leaves())
    assert decoded.fuel_used == sum(r.fuel_used for r in honest)
    lying = list(honest)
    lying[4] = TaskResult("", b"forged", 104, 0, b"")
    other = bundles.decode_results(bundles.encode_results(lying), 7)
    assert other.root != decoded.root
    assert bundles.differing_tasks(decoded, other) == [4]


def test_a_result_whose_root_does_not_match_its_leaves_is_refused() -> None:
    good = msgpack.unpackb(bundles.encode_results(results(3)))
    good[2][1][1] = b"swapped output"  # the root still commits to the old one
    with pytest.raises(BundleError, match="root"):
        bundles.decode_results(msgpack.packb(good), 3)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x94",
        msgpack.packb(["hearth/tasks/1", 0, 1, [b"x"]]),  # no fuel
        msgpack.packb(["hearth/tasks/1", 1, -1, [b"x"]]),
        msgpack.packb(["hearth/tasks/1", 1, 1, []]),  # no task
        msgpack.packb(["hearth/tasks/1", 1, 1, ["text"]]),
        msgpack.packb(["hearth/tasks/1", 1, 1, [b"x"] * (bundles.TASKS_PER_BUNDLE_MAX + 1)]),
        msgpack.packb(["hearth/tasks/1", 1, 1, [b"x"]]) + b"\x00",  # trailing bytes
    ],
)
def test_malformed_task_bundles_are_refused(data: bytes) -> None:
    with pytest.raises(BundleError):
        bundles.decode_tasks(data)


def test_a_result_bundle_for_another_number_of_tasks_is_refused() -> None:
    with pytest.raises(BundleError, match="number"):
        bundles.decode_results(bundles.encode_results(results(3)), 4)


@given(st.lists(st.binary(min_size=32, max_size=32), min_size=1, max_size=40))
def test_merkle_roots_never_collide_by_repeating_the_last_leaf(leaves: list[bytes]) -> None:
    # Bitcoin's tree pairs an odd node with itself, so [a, b, c] and [a, b, c, c] share a root
    # (CVE-2012-2459); ours carries the odd node up instead.
    assert bundles.merkle_root(leaves) != bundles.merkle_root([*leaves, leaves[-1]])
    assert bundles.merkle_root(leaves) == bundles.merkle_root(list(leaves))


def test_a_leaf_depends_on_the_task_place_and_every_field_of_its_verdict() -> None:
    base = TaskResult("", b"out", 10, 0, b"")
    variants = [
        TaskResult("trap", b"out", 10, 0, b""),
        TaskResult("", b"out!", 10, 0, b""),
        TaskResult("", b"out", 11, 0, b""),
        TaskResult("", b"out", 10, 1, b""),
        TaskResult("", b"out", 10, 0, b"e"),
    ]
    leaves = {bundles.leaf(0, base), bundles.leaf(1, base)}
    leaves |= {bundles.leaf(0, v) for v in variants}
    assert len(leaves) == 2 + len(variants)
