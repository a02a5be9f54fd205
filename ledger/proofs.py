"""Self-proving evidence against an author: fork proofs, double-claim proofs, refused authors.

I/O: none. A proof needs no context to check: it carries both signed entries, so any peer can
verify it alone, keep it, gossip it on ``hearth/heads/1``, and refuse the author from then on.
"""

from __future__ import annotations

from hearth.ledger.entry import (
    CountersignedReceipt,
    DoubleClaimProof,
    Entry,
    ForkProof,
    HalfSignedReceipt,
    Kind,
    parse_entry,
    parse_receipt,
)
from hearth.ledger.errors import (
    ChainError,
    DoubleClaimProofError,
    ForkProofError,
    RefusedAuthorError,
)
from hearth.protocol import limits
from hearth.protocol.codec import decode_as
from hearth.protocol.errors import RemoteProtocolError
from hearth.protocol.identity import PublicKey, verify_signature


def make_fork_proof(wire_a: bytes, wire_b: bytes) -> ForkProof:
    """Order the two entries canonically: by seq, and by hash when the seqs are equal."""
    a, b = parse_entry(wire_a), parse_entry(wire_b)
    return (
        ForkProof(wire_a, wire_b)
        if (a.seq, a.hash) < (b.seq, b.hash)
        else ForkProof(wire_b, wire_a)
    )


def _signed_pair(
    wire_a: bytes, wire_b: bytes, error: type[RemoteProtocolError]
) -> tuple[Entry, Entry]:
    try:
        a, b = parse_entry(wire_a), parse_entry(wire_b)
    except ChainError as exc:
        raise error(f"an entry in the proof does not parse: {exc}") from exc
    if a.author != b.author:
        raise error("the two entries have different authors")
    for entry in (a, b):
        if not verify_signature(entry.author, entry.signed, entry.signature):
            raise error(f"entry seq {entry.seq} is not signed by its author")
    return a, b


def verify_fork_proof(proof: ForkProof) -> PublicKey:
    """Check a fork proof with no other context; return the author it convicts.

    Two shapes (ADR 0030): two different entries with one seq (``entry_a`` has the smaller
    hash), or an entry and one at the next seq whose ``prev_hash`` names another entry (a link
    no single chain has; ``entry_a`` is the earlier one)."""
    a, b = _signed_pair(proof.entry_a, proof.entry_b, ForkProofError)
    if a.seq == b.seq:
        if not a.hash < b.hash:
            raise ForkProofError("entries must differ and be ordered by hash")
    elif b.seq == a.seq + 1:
        if b.prev_hash == a.hash:
            raise ForkProofError("the later entry links to the earlier one: no fork")
    else:
        raise ForkProofError("the entries must have one seq or follow one another")
    return a.author


def _credit_key(entry: Entry) -> tuple[bytes, bytes, bytes] | None:
    if entry.kind is Kind.EARN or entry.kind is Kind.PAY:
        body: CountersignedReceipt | HalfSignedReceipt = entry.body
        return parse_receipt(body.receipt).credit_key
    return None


def verify_double_claim_proof(proof: DoubleClaimProof) -> PublicKey:
    """Two EARN (or two PAY) entries by one author for one (payer, job, payee); return the
    author."""
    a, b = _signed_pair(proof.entry_a, proof.entry_b, DoubleClaimProofError)
    if a.kind is not b.kind or a.seq >= b.seq:
        raise DoubleClaimProofError("entries must be of one kind, the earlier one first")
    try:
        key_a, key_b = _credit_key(a), _credit_key(b)
    except RemoteProtocolError as exc:
        raise DoubleClaimProofError(f"receipt does not parse: {exc}") from exc
    if key_a is None or key_a != key_b:
        raise DoubleClaimProofError("the entries do not credit one (payer, job, payee)")
    return a.author


class RefusedAuthors:
    """The authors this node refuses, each with the fork proof that convicts it. Bounded."""

    __slots__ = ("_entries_max", "_proofs")

    def __init__(self, entries_max: int = limits.REFUSED_AUTHORS_MAX) -> None:
        self._entries_max = entries_max
        self._proofs: dict[bytes, ForkProof] = {}

    def __len__(self) -> int:
        return len(self._proofs)

    def __contains__(self, author: object) -> bool:
        return author in self._proofs

    def add(self, proof: ForkProof) -> PublicKey:
        """Verify ``proof`` and refuse its author; raises ``ForkProofError`` if it is no proof."""
        author = verify_fork_proof(proof)
        if author not in self._proofs:
            if len(self._proofs) >= self._entries_max:
                raise RefusedAuthorError("refused-author table is full", reason="busy")
            self._proofs[author] = proof
        return author

    def add_bytes(self, data: bytes) -> PublicKey:
        """Decode a gossiped proof, then ``add`` it."""
        return self.add(decode_as(data, ForkProof, bytes_max=limits.GOSSIP_MESSAGE_BYTES_MAX))

    def check(self, author: bytes) -> None:
        """Raise ``RefusedAuthorError`` if ``author`` forked."""
        if author in self._proofs:
            raise RefusedAuthorError(f"author {author.hex()[:16]} forked its ledger")

    def proof_for(self, author: bytes) -> ForkProof | None:
        return self._proofs.get(author)


class ForkWatch:
    """Remembers the latest entry seen per author (heads gossip, audits); spots forks. Bounded."""

    __slots__ = ("_entries_max", "_seen")

    def __init__(self, entries_max: int = limits.REFUSED_AUTHORS_MAX) -> None:
        self._entries_max = entries_max
        self._seen: dict[tuple[bytes, int], Entry] = {}

    def observe(self, entry: Entry) -> ForkProof | None:
        """Record a signature-checked entry; return a proof if it contradicts one seen before:
        another entry with its seq, or a neighbour (seq - 1, seq + 1) it does not link with.

        Comparing neighbours matters: a forker shows a twin of its head to one peer, then
        commits and gossips the next head, which that peer never sees at the twin's seq."""
        author = bytes(entry.author)
        key = (author, entry.seq)
        earlier = self._seen.get(key)
        if earlier is not None:
            return None if earlier.hash == entry.hash else make_fork_proof(earlier.wire, entry.wire)
        before = self._seen.get((author, entry.seq - 1))
        if before is not None and entry.prev_hash != before.hash:
            return make_fork_proof(before.wire, entry.wire)
        after = self._seen.get((author, entry.seq + 1))
        if after is not None and after.prev_hash != entry.hash:
            return make_fork_proof(entry.wire, after.wire)
        if len(self._seen) >= self._entries_max:
            self._seen.pop(next(iter(self._seen)))  # oldest first: forgetting only delays a proof
        self._seen[key] = entry
        return None
