"""What each dashboard page shows, as JSON built from the running node's state.

Handlers run on the daemon's trio loop between engine steps (as every API handler does), so
each view is consistent. Earnings are read from the ledger; their energy cost is an estimate:
the fuel of the work (known while the worker still holds the task, else inferred from the
amount at this host's own price for that hour) at this host's power draw and tariff.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any, Final

from hearth.ledger.chain import verify_chain
from hearth.ledger.entry import CountersignedReceipt, Entry, HalfSignedReceipt, Kind, Receipt
from hearth.ledger.entry import to_json as entry_json
from hearth.node.api import ad_json, market_entry_json
from hearth.node.routes import balance_json, job_json
from hearth.protocol.codec import decode_as
from hearth.protocol.errors import HearthError
from hearth.protocol.identity import peer_id_from_public_key
from hearth.protocol.pricing import (
    FUEL_PER_TFUEL,
    HOUR_MS,
    WATT_SECONDS_PER_KWH,
    PricingConfig,
    local_hour,
    price_for_hour,
)

if TYPE_CHECKING:
    from hearth.node.runtime import Node

DAY_MS: Final = 24 * HOUR_MS
PERIODS_DAYS: Final = {"week": 7, "month": 30}
LEDGER_ROWS_MAX: Final = 200  # the newest entries listed; the balance curve covers them all
CURVE_POINTS_MAX: Final = 2000  # a longer balance curve is thinned evenly, its last point kept
LEDGER_VERIFY_ENTRIES_MAX: Final = 50_000  # above this the page reports the check made at open


def overview(node: Node, entries: list[Entry]) -> dict[str, Any]:
    now_ms = node.clock.now_ms()
    engine = node.engine
    ad = engine.market_component.current_ad(now_ms)
    peers = sum(1 for p in node.transport.peers() if p.connected)
    degraded = node.health.refresh() if node.health else []
    published_open = sum(
        1 for s in engine.publisher.list_jobs() if s.phase not in {"paid", "failed"}
    )
    return {
        "now_ms": now_ms,
        "peer_id": node.transport.peer_id,
        "reachability": {
            "state": "degraded" if degraded else ("online" if peers else "alone"),
            "peers_connected": peers,
            "multiaddrs": list(node.transport.listen_addrs),
            "degraded": degraded,
        },
        "price": {
            "now_mc_per_tfuel": ad.price_mc_per_tfuel,
            "curve_start_ms": ad.curve_start_ms,
            "curve_mc_per_tfuel": list(ad.price_curve_mc_per_tfuel),
            "energy_source": ad.energy_source,
            "available_now": ad.available_now,
        },
        "jobs": {
            "working": engine.worker.tasks_running(),
            "cores_offered": ad.cores_offered,
            "published_open": published_open,
        },
        "earnings": earnings(node, entries, now_ms),
    }


def _receipt(entry: Entry) -> Receipt | None:
    if isinstance(entry.body, HalfSignedReceipt | CountersignedReceipt):
        return decode_as(entry.body.receipt, Receipt)
    return None


def energy_cost_mc(pricing: PricingConfig, fuel_per_s: int, fuel: int, at_ms: int) -> int:
    """This host's energy cost of ``fuel`` units of work done at ``at_ms`` (0 in solar hours)."""
    hour = local_hour(at_ms, pricing.utc_offset_min)
    if hour in pricing.solar_surplus_hours or fuel_per_s <= 0:
        return 0
    watt_seconds = pricing.power_w * fuel / fuel_per_s
    return round(watt_seconds * pricing.tariff_mc_per_kwh_by_hour[hour] / WATT_SECONDS_PER_KWH)


def earnings(node: Node, entries: list[Entry], now_ms: int) -> dict[str, Any]:
    """Earned, spent and the estimated energy cost of the work, today, this week and month."""
    profile = node.engine.config.profile
    pricing, fuel_per_s = profile.pricing, profile.fuel_per_s
    offset_ms = pricing.utc_offset_min * 60_000
    starts = {"today": now_ms - (now_ms + offset_ms) % DAY_MS}
    starts |= {name: now_ms - days * DAY_MS for name, days in PERIODS_DAYS.items()}
    totals = {
        name: {"earned_mc": 0, "spent_mc": 0, "energy_cost_mc": 0, "jobs": 0} for name in starts
    }
    tasks = node.engine.worker.tasks
    for entry in entries:
        receipt = _receipt(entry)
        if receipt is None or entry.kind not in (Kind.EARN, Kind.SETTLE):
            continue
        fuel = 0
        if entry.kind is Kind.EARN:
            task = tasks.get(receipt.job_id)  # type: ignore[call-overload]
            if task is not None and task.fuel_used:
                fuel = task.fuel_used
            else:
                price = price_for_hour(
                    pricing, fuel_per_s, local_hour(entry.created_ms, pricing.utc_offset_min)
                )
                fuel = receipt.amount_mc * FUEL_PER_TFUEL // max(price, 1)
        cost = energy_cost_mc(pricing, fuel_per_s, fuel, entry.created_ms)
        for name, start_ms in starts.items():
            if entry.created_ms < start_ms:
                continue
            row = totals[name]
            if entry.kind is Kind.EARN:
                row["earned_mc"] += receipt.amount_mc
                row["energy_cost_mc"] += cost
                row["jobs"] += 1
            else:
                row["spent_mc"] += receipt.amount_mc
    for row in totals.values():
        row["net_mc"] = row["earned_mc"] - row["energy_cost_mc"]
    return {"power_w": pricing.power_w, **totals}


def market(node: Node) -> dict[str, Any]:
    now_ms = node.clock.now_ms()
    offers = [market_entry_json(e, now_ms) for e in node.engine.market.snapshot(now_ms)]
    rtts = {p.peer_id: p.rtt_ms for p in node.transport.peers()}
    for offer in offers:
        rtt = rtts.get(offer["peer_id"])
        offer["rtt_ms"] = None if rtt is None else round(rtt, 3)
    by_source: dict[str, list[int]] = {}
    for offer in offers:
        by_source.setdefault(offer["energy_source"], []).append(offer["price_mc_per_tfuel"])
    return {
        "now_ms": now_ms,
        "self": {
            "peer_id": node.transport.peer_id,
            **ad_json(node.engine.market_component.current_ad(now_ms)),
        },
        "offers": offers,
        "prices_by_source": {
            source: {
                "hosts": len(prices),
                "min": min(prices),
                "median": statistics.median(prices),
                "max": max(prices),
            }
            for source, prices in sorted(by_source.items())
        },
    }


def jobs(node: Node) -> dict[str, Any]:
    worked = []
    for job_id, task in sorted(node.engine.worker.tasks.items()):
        worked.append(
            {
                "job_id": job_id.hex(),
                "publisher": str(task.publisher),
                "state": task.state.value,
                "price_mc_per_tfuel": task.price_mc_per_tfuel,
                "fuel_used": task.fuel_used,
                "owed_mc": task.owed_mc,
                "error_kind": task.error_kind,
            }
        )
    return {
        "published": [job_json(s) for s in reversed(node.engine.publisher.list_jobs())],
        "worked": worked,
    }


class LedgerViews:
    """The chain parsed once and extended as it grows (it is append-only), for the pages that
    read it every few seconds; its verification is cached by head, run again when it moves."""

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        self._verified: tuple[int, str] | None = None  # (head seq, verdict)

    def entries(self, node: Node) -> list[Entry]:
        if len(self._entries) <= node.ledger.head().seq:
            self._entries += node.ledger.entries(from_seq=len(self._entries))
        return self._entries

    def page(self, node: Node) -> dict[str, Any]:
        ledger = node.ledger
        head = ledger.head()
        entries = self.entries(node)
        balance = 0
        # From genesis to now, so that one payment is a step, not a lone point.
        curve: list[list[int]] = [[entries[0].created_ms, 0]] if entries else []
        for entry in entries:
            receipt = _receipt(entry)
            if receipt is not None and entry.kind in (Kind.EARN, Kind.SETTLE):
                balance += receipt.amount_mc if entry.kind is Kind.EARN else -receipt.amount_mc
                curve.append([entry.created_ms, balance])
        curve.append([node.clock.now_ms(), balance])
        if len(curve) > CURVE_POINTS_MAX:
            step = -(-len(curve) // CURVE_POINTS_MAX)
            curve = [*curve[:-1:step], curve[-1]]
        rows = []
        for entry in entries[-LEDGER_ROWS_MAX:][::-1]:
            row = entry_json(entry)
            receipt = _receipt(entry)
            if receipt is not None:
                row["amount_mc"] = receipt.amount_mc
                row["job_id"] = receipt.job_id.hex()
                payer, payee = (peer_id_from_public_key(k) for k in (receipt.payer, receipt.payee))
                row["counterparty"] = payee if entry.kind in (Kind.PAY, Kind.SETTLE) else payer
            hidden = ("body", "signature", "author", "wire", "prev_hash")
            rows.append({k: v for k, v in row.items() if k not in hidden})
        return {
            **balance_json(ledger),
            "verify": self._verify(node, head.seq),
            "balance_curve": curve,
            "entries": rows,
        }

    def _verify(self, node: Node, head_seq: int) -> str:
        if self._verified is not None and self._verified[0] == head_seq:
            return self._verified[1]
        if head_seq > LEDGER_VERIFY_ENTRIES_MAX:
            return "verified when the node opened it"
        try:
            verify_chain(node.ledger.entry_wires(), author=node.engine.identity.public_key)
            verdict = f"ok: {head_seq + 1} entries verify"
        except HearthError as exc:
            verdict = f"FAILED: {exc}"
        self._verified = (head_seq, verdict)
        return verdict
