"""How long a job may take: its worst-case run time on a host, and the lease an award grants.

I/O: none. Pure integer arithmetic on milliseconds and fuel.

A job's ``fuel_max`` bounds its work; a host's measured fuel rate (``fuel_per_s``, from
node/calibrate.py) turns that bound into the longest the job can run there. A host bids only
when that fits before the deadline (protocol.bidding). A publisher gives each award a *lease*:
the time the winner has, from the award, to commit a result before the award moves on (ADR
0007). A lease that is too long lets a winner that accepts and never commits hold a replica until
the deadline; one that is too short cuts off honest winners. So, unless the developer sets one,
the lease is derived from the job:

    run_ms   = fuel_max x 1000 / fuel_per_s   (the publisher's own rate: a peer cannot inflate it)
    floor_ms = run_ms + LEASE_MARGIN_MS       (an honest winner at that rate always makes it)
    want_ms  = LEASE_RUN_FACTOR x run_ms + LEASE_MARGIN_MS   (slack for a loaded host)
    lease_ms = max(floor_ms, min(want_ms, time_left_ms / 2)), never past the deadline

Capping the slack at half the time left means a silent winner is dropped while a replacement can
still finish; the floor means the cap never cuts below what an honest winner needs.
"""

from __future__ import annotations

from typing import Final

LEASE_MARGIN_MS: Final = 5_000  # fetching the blobs, compiling, sending the commitment
# The fuel rate is measured once, on a tight loop, often on a quiet machine: a host busy with
# other jobs (or other programs) ran the benchmark loop at a third of it on a loaded 2-core box.
LEASE_RUN_FACTOR: Final = 3
LEASE_MS_MIN: Final = 1_000  # the shortest lease a developer may set


def run_ms_max(fuel_max: int, fuel_per_s: int) -> int:
    """The longest a job of ``fuel_max`` can run at ``fuel_per_s``, rounded up."""
    assert fuel_per_s > 0, fuel_per_s
    return -(-fuel_max * 1000 // fuel_per_s)


def derived_lease_ms(fuel_max: int, fuel_per_s: int, time_left_ms: int) -> int:
    """The lease of an award made ``time_left_ms`` before the job's deadline."""
    time_left_ms = max(1, time_left_ms)
    run_ms = run_ms_max(fuel_max, fuel_per_s)
    floor_ms = run_ms + LEASE_MARGIN_MS
    want_ms = LEASE_RUN_FACTOR * run_ms + LEASE_MARGIN_MS
    return min(time_left_ms, max(floor_ms, min(want_ms, time_left_ms // 2)))


def lease_ms(set_ms: int, fuel_max: int, fuel_per_s: int, time_left_ms: int) -> int:
    """The lease to grant: the developer's ``set_ms`` if non-zero, else derived; never past the
    deadline (and at least 1 ms, as an Award requires)."""
    if set_ms > 0:
        return max(1, min(set_ms, time_left_ms))
    return derived_lease_ms(fuel_max, fuel_per_s, time_left_ms)
