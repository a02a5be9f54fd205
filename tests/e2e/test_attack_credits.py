"""Issue 12 item 7 on real node processes: receipts from a key with no ledger and no work.

A hostile peer (a real py-libp2p host with its own fresh key) signs receipts exactly as
protocol/payments.py does and offers them to a worker: first three of 1,000,000 mc, then
hundreds of 1 mc. The worker credits no more than its line for an unknown payer (ADR 0013),
writes a bounded number of entries, re-sends a bounded number of countersignatures, and an
honest job run during the attack is verified and paid with the honest books still summing to 0.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from hearth import Client
from hearth.ledger.receipts import make_receipt
from hearth.protocol.credit import CreditConfig
from hearth.protocol.identity import public_key_from_peer_id
from hearth.protocol.messages import PROTOCOL_RECEIPT
from hearth.protocol.payments import ReceiptOffer
from hearth.testnet import launch
from tests.e2e.hostile import Hostile, hostile_peer, now_ms
from tests.e2e.network import ECHO, config, hearth, settled, start

pytestmark = pytest.mark.integration

SPAM_RECEIPTS = 400
SPAM_SENDERS = 8  # streams the hostile peer opens at once
LINE = CreditConfig()
QUIET_WINDOW_S = 4.0  # log lines and sends are counted over this long once the attack is over


@pytest.fixture(scope="module")
def three(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[launch.LaunchedNode]]:
    nodes = start(tmp_path_factory.mktemp("credits"), [config(60 + 10 * i) for i in range(3)])
    try:
        yield nodes
    finally:
        launch.stop(nodes)


def status(node: launch.LaunchedNode) -> dict[str, Any]:
    with Client(node.home) as client:
        result: dict[str, Any] = client._call("GET", "/v1/status")
        return result


def api_balances(nodes: list[launch.LaunchedNode]) -> dict[str, int]:
    """Balances through the API (the CLI's balance is checked by test_jobs; this is quicker)."""
    out = {}
    for node in nodes:
        with Client(node.home) as client:
            out[node.info["peer_id"]] = client.balance_mc()
    return out


def payments(node: launch.LaunchedNode) -> dict[str, Any]:
    result: dict[str, Any] = status(node)["payments"]
    return result


def offers_seen(node: launch.LaunchedNode) -> int:
    """Unbacked receipts the node has decided on: refused, or admitted into the unknown pool."""
    stats = payments(node)
    return sum(stats["receipts_refused"].values()) + stats["unknown_pool_receipts"]


async def offer(hostile: Hostile, target: launch.LaunchedNode, amount_mc: int) -> None:
    half = make_receipt(
        hostile.identity,
        job_id=secrets.token_bytes(16),
        payee=public_key_from_peer_id(target.info["peer_id"]),
        amount_mc=amount_mc,
        now_ms=now_ms(),
        ttl_ms=120_000,
    )
    await hostile.send(target.info["peer_id"], PROTOCOL_RECEIPT, ReceiptOffer(half))


async def wait_until(condition: Any, timeout_s: float, what: str) -> None:
    await trio.to_thread.run_sync(launch.wait_for, condition, timeout_s, what)


def log_lines(node: launch.LaunchedNode) -> int:
    with (node.home / "node.log").open("rb") as file:
        return sum(1 for _ in file)


def log_text(node: launch.LaunchedNode, skip: int) -> list[str]:
    with (node.home / "node.log").open(errors="replace") as file:
        return file.readlines()[skip:]


async def test_receipts_from_a_key_with_no_ledger_are_bounded_and_honest_jobs_are_paid(
    three: list[launch.LaunchedNode],
) -> None:
    publisher, target = three[0], three[1]
    before = await trio.to_thread.run_sync(api_balances, three)
    async with hostile_peer(target) as hostile:
        # (a) Three receipts of 1,000,000 mc from a fresh key: over any unknown payer's line.
        for _ in range(3):
            await offer(hostile, target, 1_000_000)
        await wait_until(lambda: offers_seen(target) >= 3, 20, "the three offers to be decided")
        after_large = await trio.to_thread.run_sync(api_balances, three)
        risen_mc = after_large[target.info["peer_id"]] - before[target.info["peer_id"]]
        assert 0 <= risen_mc <= LINE.unknown_payer_mc
        assert payments(target)["receipts_refused"].get("over-credit-line") == 3

        # (b) Hundreds of unsolicited 1 mc receipts while an honest job runs.
        def honest_job() -> Any:
            with Client(publisher.home) as client:
                return client.run(ECHO, os.urandom(10_000), replicas=2)

        results: list[Any] = []

        async def run_job() -> None:
            results.append(await trio.to_thread.run_sync(honest_job))

        async def spam(count: int) -> None:
            for _ in range(count):
                await offer(hostile, target, 1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_job)
            for _ in range(SPAM_SENDERS):
                nursery.start_soon(spam, SPAM_RECEIPTS // SPAM_SENDERS)
        await wait_until(
            lambda: offers_seen(target) >= 3 + SPAM_RECEIPTS, 30, "every spam offer to be decided"
        )
        [result] = results
        assert result.ok and result.paid_mc > 0, result.reason

        stats = payments(target)
        assert stats["unknown_pool_receipts"] <= LINE.unknown_payer_receipts  # entries written
        assert stats["unknown_pool_mc"] <= LINE.unknown_payer_mc
        # The hostile key's, plus at most the honest job's own if its settle is on its way.
        assert stats["countersignatures_unconfirmed"] <= stats["unknown_pool_receipts"] + 1

        hostile_credit_mc = stats["unknown_pool_mc"]
        hostile_id = hostile.identity.peer_id

        # The hostile peer never confirms a countersignature. Over a quiet window right after
        # the spam (when backoffs are shortest), count the target's countersignature sends and
        # its log lines. Before ADR 0013 every spam receipt was re-sent every few seconds.
        sent_before, lines_before = stats["countersignatures_sent"], log_lines(target)
        await trio.sleep(QUIET_WINDOW_S)
        sent = payments(target)["countersignatures_sent"] - sent_before
        window = log_text(target, lines_before)
        about_hostile = sum(1 for line in window if hostile_id in line)
        print(f"in {QUIET_WINDOW_S} s: {sent} countersignature sends, {len(window)} log lines")
        assert sent <= 2 * LINE.unknown_payer_receipts
        assert about_hostile <= 1 + QUIET_WINDOW_S / 10  # one summary line per 10 s at most

    after = await trio.to_thread.run_sync(books_balance_except, three, hostile_credit_mc)
    assert after[publisher.info["peer_id"]] == before[publisher.info["peer_id"]] - result.paid_mc
    paid = {r["worker"]: r["paid_mc"] for r in result.summary["replicas_detail"]}
    for node in three[1:]:  # both workers paid for the honest job, the target despite the spam
        peer = node.info["peer_id"]
        admitted = hostile_credit_mc if node is target else 0
        assert paid.get(peer, 0) > 0 and after[peer] == before[peer] + paid[peer] + admitted


def books_balance_except(nodes: list[launch.LaunchedNode], admitted_mc: int) -> dict[str, int]:
    """Every receipt settled, every ledger verifies, and the balances sum to what the credit
    line admitted from the hostile key (which has no ledger to hold the other side)."""
    launch.wait_for(lambda: settled(nodes), 30, "every receipt to settle")
    verify = hearth(nodes[1].home, "ledger", "verify")  # the ledger the hostile key wrote to
    assert verify.returncode == 0, verify.stdout + verify.stderr
    after = api_balances(nodes)
    assert sum(after.values()) == admitted_mc, (after, admitted_mc)
    return after
