"""Chain verification on several threads: the signatures are checked beside the fold.

I/O: none; threads. This drives ``chain.ChainVerifier`` and changes nothing of its rules: the
same entries are accepted and the same first error is raised as by ``chain.verify_chain``.

Theory of operation. Ed25519 verification is most of the cost of verifying a chain, and pynacl
releases the GIL while libsodium works, so the signature checks of one window of entries run on
a pool of threads while this thread parses the next window and folds the previous one. A window
whose checks are still running is at most ``WINDOWS_AHEAD`` ahead of the fold, which bounds the
memory held to a few windows of parsed entries beyond the chain itself. A chain that fails stops
the pool; checks already queued for later windows are cancelled, not awaited.
"""

from __future__ import annotations

import collections
import concurrent.futures
from collections.abc import Sequence
from typing import Final, TypeAlias

from hearth.ledger.chain import (
    WINDOW_ENTRIES,
    ChainState,
    ChainVerifier,
    Claim,
    Window,
    verify_chain,
)
from hearth.protocol.identity import verify_signature

WINDOWS_AHEAD: Final = 2
THREADS_MAX: Final = 8

_Pending: TypeAlias = tuple[Window, list[concurrent.futures.Future[list[bool]]]]


def check_claims(claims: Sequence[Claim]) -> list[bool]:
    """Check each (public key, message, signature); the GIL is free while libsodium runs."""
    return [verify_signature(*claim) for claim in claims]


def verify_chain_parallel(
    wires: Sequence[bytes],
    *,
    threads: int,
    author: bytes | None = None,
    head: tuple[int, bytes] | None = None,
    recorded_hashes: Sequence[bytes] | None = None,
    window_entries: int = WINDOW_ENTRIES,
) -> ChainState:
    """``chain.verify_chain`` with the signature checks spread over ``threads`` threads."""
    assert 1 <= threads <= THREADS_MAX and window_entries >= 1
    verifier = ChainVerifier(wires, author=author, head=head, recorded_hashes=recorded_hashes)
    if threads == 1 or len(wires) <= window_entries:
        return verify_chain(wires, author=author, head=head, recorded_hashes=recorded_hashes)
    pending: collections.deque[_Pending] = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="ledger-verify") as pool:
        try:
            for start in range(0, len(wires), window_entries):
                window = verifier.parse(start, start + window_entries)
                step = max(1, -(-len(window.claims) // threads))
                chunks = [window.claims[i : i + step] for i in range(0, len(window.claims), step)]
                pending.append((window, [pool.submit(check_claims, c) for c in chunks]))
                if len(pending) > WINDOWS_AHEAD:
                    _fold(verifier, pending.popleft())
            while pending:
                _fold(verifier, pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
    return verifier.finish()


def _fold(verifier: ChainVerifier, pending: _Pending) -> None:
    window, futures = pending
    results = [ok for future in futures for ok in future.result()]
    verifier.fold(window, results)
