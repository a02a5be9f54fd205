"""Application-level reputation: clamped, retained, bounded, bans survive identity floods."""

from hearth.p2p.peers import BAN_SCORE, PeerReputation
from hearth.protocol import limits


def test_scores_accumulate_and_clamp() -> None:
    book = PeerReputation()
    assert book.score("p") == 0
    assert book.adjust("p", -5) == -5
    assert book.adjust("p", 2) == -3
    assert book.adjust("p", -(10**12)) == limits.REPUTATION_SCORE_MIN
    assert book.adjust("q", 10**12) == limits.REPUTATION_SCORE_MAX
    assert book.is_banned("p") and not book.is_banned("q")


def test_bound_evicts_least_recent_but_keeps_bans() -> None:
    book = PeerReputation(peers_max=3)
    book.adjust("banned", BAN_SCORE)
    for index in range(10):
        book.adjust(f"sybil-{index}", 1)
    assert len(book) == 3
    assert book.is_banned("banned")
    assert set(book.snapshot()) == {"banned", "sybil-8", "sybil-9"}
