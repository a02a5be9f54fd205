"""Wire names (topics, stream protocols) and the capacity ad. I/O: none.

Type codes are allotted by range so that modules never collide: 1-9 envelope, 10-19 market,
20-99 jobs (auction, data, results), 100-149 ledger (entries, receipts, audit).
"""

from __future__ import annotations

import dataclasses
from typing import Final

from hearth.protocol import limits
from hearth.protocol.codec import message
from hearth.protocol.errors import RemoteProtocolError

TOPIC_CAPACITY: Final = "hearth/capacity/1"
TOPIC_JOBS: Final = "hearth/jobs/1"
TOPIC_HEADS: Final = "hearth/heads/1"
TOPICS: Final = (TOPIC_CAPACITY, TOPIC_JOBS, TOPIC_HEADS)

PROTOCOL_BID: Final = "/hearth/bid/1"
PROTOCOL_AWARD: Final = "/hearth/award/2"  # Award v2 names its winner (ADR 0012)
PROTOCOL_BLOB: Final = "/hearth/blob/1"
PROTOCOL_RESULT: Final = "/hearth/result/1"
PROTOCOL_RECEIPT: Final = "/hearth/receipt/1"
PROTOCOL_LEDGER: Final = "/hearth/ledger/1"
# A host's "no bid, and why" to a publisher (ADR 0023): a protocol of its own, so that a host
# never sends one to a node that does not speak it.
PROTOCOL_DECLINE: Final = "/hearth/decline/1"
# A call for bids sent straight to a host the publisher chose from its market view (ADR 0031).
PROTOCOL_INVITE: Final = "/hearth/invite/1"
PROTOCOLS: Final = (
    PROTOCOL_BID,
    PROTOCOL_AWARD,
    PROTOCOL_BLOB,
    PROTOCOL_RESULT,
    PROTOCOL_RECEIPT,
    PROTOCOL_LEDGER,
    PROTOCOL_DECLINE,
    PROTOCOL_INVITE,
)

RUNTIMES: Final = ("wasm", "python")
ENERGY_SOURCES: Final = ("grid", "solar", "battery", "mixed")
HOURS_MASK_ALL: Final = (1 << 24) - 1


@message(10)
@dataclasses.dataclass(frozen=True)
class CapacityAd:
    """What a host offers now and what it will charge over the next 24 hours.

    Prices are milli-credits per tera-fuel (10^12 units of wasmtime fuel): integer, and fine
    enough that cheap hosts still differ. ``price_curve_mc_per_tfuel[h]`` holds for the hour that
    starts at ``curve_start_ms + h * 3_600_000``. ``availability_hours_mask`` has bit h set when
    the host takes jobs in UTC hour h. ``operator`` is the host's self-declared operator label,
    which the auction uses (with the address) to keep one job's replicas apart.
    """

    cores_offered: int
    memory_mb_offered: int
    fuel_per_s: int
    runtimes: tuple[str, ...]
    availability_hours_mask: int
    available_now: bool
    energy_source: str
    price_mc_per_tfuel: int
    price_curve_mc_per_tfuel: tuple[int, ...]
    curve_start_ms: int
    operator: str

    def check(self) -> None:
        """Raise ``RemoteProtocolError`` unless every field is in its range."""
        problems = []
        if not 0 <= self.cores_offered <= 4096:
            problems.append("cores_offered")
        if not 0 <= self.memory_mb_offered <= 16 * 1024 * 1024:
            problems.append("memory_mb_offered")
        if self.fuel_per_s <= 0:
            problems.append("fuel_per_s")
        if len(self.runtimes) > limits.RUNTIMES_MAX or not set(self.runtimes) <= set(RUNTIMES):
            problems.append("runtimes")
        if not 0 <= self.availability_hours_mask <= HOURS_MASK_ALL:
            problems.append("availability_hours_mask")
        if self.energy_source not in ENERGY_SOURCES:
            problems.append("energy_source")
        if self.price_mc_per_tfuel < 0:
            problems.append("price_mc_per_tfuel")
        curve = self.price_curve_mc_per_tfuel
        if len(curve) != limits.PRICE_CURVE_HOURS or min(curve) < 0:
            problems.append("price_curve_mc_per_tfuel")
        if len(self.operator) > 64:
            problems.append("operator")
        if problems:
            raise RemoteProtocolError(
                f"capacity ad has bad {', '.join(problems)}", reason="invalid-ad"
            )


BLOB_TOTAL_MISSING: Final = -1  # BlobChunk.total_bytes: the peer does not hold the blob
BLOB_TOTAL_REFUSED: Final = -2  # not entitled to the blob, or a malformed request (ADR 0015)


@message(60)
@dataclasses.dataclass(frozen=True)
class BlobRequest:
    """Ask for ``length`` bytes of the blob ``blob_hash`` from ``offset`` (on /hearth/blob/1).

    Blobs are content-addressed and hash-checked by the receiver, so neither side signs them.
    """

    blob_hash: bytes
    offset: int
    length: int


@message(61)
@dataclasses.dataclass(frozen=True)
class BlobChunk:
    """A piece of a blob; ``total_bytes`` is the whole blob's size, or ``BLOB_TOTAL_MISSING``
    if the peer lacks it, or ``BLOB_TOTAL_REFUSED`` if it will not serve it to us (ADR 0015)."""

    blob_hash: bytes
    offset: int
    data: bytes
    total_bytes: int
