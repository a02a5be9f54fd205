"""Receipts: the payer's signed promise, the payee's countersignature, and the checks on both.

I/O: none. Time: ``now_ms`` argument.

Theory of operation (the two-sided exchange, ADR 0004):

    payer                                           payee
    make_receipt -> PAY entry committed
                 -- HalfSignedReceipt ------------>  check_half_signed (now_ms <= expires_ms)
                                                     countersign -> EARN entry committed
                 <-- CountersignedReceipt ---------  (re-sent until the payer has it)
    check_countersignature -> SETTLE committed
    (no countersignature by expires_ms) -> CANCEL committed; a countersignature that still
    arrives later is recorded as a SETTLE all the same.

A receipt counts only on its EARN (payee, +amount) and SETTLE (payer, -amount) entries; PAY merely
reserves credit. The payee never countersigns after ``expires_ms`` and a chain with an EARN whose
``created_ms`` passed ``expires_ms`` does not verify, so every countersignature that exists was made
in time, and the payer accepts it whenever it arrives. Signatures are domain-separated by the
message type inside the signed bytes: a payer signs ``Receipt`` (102), a payee signs
``HalfSignedReceipt`` (103), an author signs ``EntrySigned`` (100).
"""

from __future__ import annotations

from hearth.ledger.entry import (
    CountersignedReceipt,
    HalfSignedReceipt,
    Receipt,
    parse_receipt,
    sha256,
)
from hearth.ledger.errors import CountersignatureError, ExpiredReceiptError, ReceiptSignatureError
from hearth.protocol import limits
from hearth.protocol.codec import encode
from hearth.protocol.errors import LocalProtocolError
from hearth.protocol.identity import Identity, verify_signature


def receipt_hash(receipt_bytes: bytes) -> bytes:
    """The name of a receipt everywhere (cancel bodies, indexes, audits)."""
    return sha256(receipt_bytes)


def make_receipt(
    payer: Identity, *, job_id: bytes, payee: bytes, amount_mc: int, now_ms: int, ttl_ms: int
) -> HalfSignedReceipt:
    """Sign a payment promise. Release it only after a store commits its PAY entry."""
    if not 0 < ttl_ms <= limits.RECEIPT_TTL_MS_MAX:
        raise LocalProtocolError(f"ttl_ms {ttl_ms} outside (0, {limits.RECEIPT_TTL_MS_MAX}]")
    receipt = Receipt(job_id, payer.public_key, payee, amount_mc, now_ms, now_ms + ttl_ms)
    data = encode(receipt)
    try:
        parse_receipt(data)
    except Exception as exc:  # our caller's mistake, not a peer's
        raise LocalProtocolError(f"cannot make this receipt: {exc}") from exc
    return HalfSignedReceipt(data, payer.sign(data))


def check_half_signed(half: HalfSignedReceipt, *, payee: bytes, now_ms: int) -> Receipt:
    """The payee's check before it countersigns: the payer signed it, it is for us, in time."""
    receipt = parse_receipt(half.receipt)
    if receipt.payee != payee:
        raise CountersignatureError("this receipt names another payee")
    if not verify_signature(receipt.payer, half.receipt, half.payer_signature):
        raise ReceiptSignatureError("receipt is not signed by its payer")
    if now_ms > receipt.expires_ms:
        raise ExpiredReceiptError(f"receipt expired {now_ms - receipt.expires_ms} ms ago")
    return receipt


def countersign(payee: Identity, half: HalfSignedReceipt, *, now_ms: int) -> CountersignedReceipt:
    """Check and countersign. Release it only after a store commits its EARN entry."""
    check_half_signed(half, payee=payee.public_key, now_ms=now_ms)
    return CountersignedReceipt(half.receipt, half.payer_signature, payee.sign(encode(half)))


def check_countersignature(countersigned: CountersignedReceipt) -> Receipt:
    """The payer's check on what came back: the payee, and only the payee, countersigned."""
    receipt = parse_receipt(countersigned.receipt)
    if not verify_signature(receipt.payee, countersigned.half_bytes, countersigned.payee_signature):
        raise CountersignatureError("countersignature is not the payee's")
    return receipt


def check_receipt(countersigned: CountersignedReceipt) -> Receipt:
    """A standalone proof of a transfer: both parties' signatures over the same receipt."""
    receipt = check_countersignature(countersigned)
    if not verify_signature(receipt.payer, countersigned.receipt, countersigned.payer_signature):
        raise ReceiptSignatureError("receipt is not signed by its payer")
    return receipt
