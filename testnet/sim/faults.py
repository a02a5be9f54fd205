"""Host profiles, adversary roles and the sandbox stand-in that gives each role its results.

I/O: none. Randomness: the ``random.Random`` passed in (derived from the run seed).

Honest replicas compute ``honest_result``: an output and a fuel count that are pure functions of
the job's module and input, as the pinned wasmtime makes them. Each adversary role differs from it
in one way: ``wrong_result`` returns an output of its own, ``colluder`` returns the one wrong answer
all colluders agree on (and they share one /24), ``lazy_copier`` skips the work and commits a cheap
guess of its own (commit-reveal leaves it nothing to copy; copiers that all guessed alike would
be colluders across subnets, which a 2-of-3 majority of newcomers cannot stop),
``bid_spammer`` bids the floor price on everything and never delivers, ``ledger_forker`` works
honestly but signs two ledger entries with one seq, ``crash_restart`` is honest but keeps crashing,
``trust_cheater`` is honest while the publisher would check it and returns its own wrong output
whenever that publisher trusts it enough to run a job alone (ADR 0034): an adversary that reads
the publisher's mind, the worst case for adaptive verification.
"""

from __future__ import annotations

import hashlib
import random
import sys
from typing import Final

from hearth.ledger.entry import GENESIS_PREV_HASH, CancelBody, GenesisBody, Kind, sign_entry
from hearth.ledger.memory import MemoryLedger
from hearth.protocol.engine import HostProfile
from hearth.protocol.messages import HOURS_MASK_ALL
from hearth.protocol.pricing import PricingConfig
from hearth.testnet.scenario import Scenario

HONEST: Final = "honest"
STALLERS: Final = frozenset({"bid_spammer"})  # never finish a job
TRUST_CHEATER: Final = "trust_cheater"
CHEATERS: Final = frozenset({"wrong_result", "colluder", "lazy_copier", TRUST_CHEATER})
DAYLIGHT_MASK: Final = sum(1 << hour for hour in range(7, 18))  # 07:00-17:59 UTC
TARIFF_MC_PER_KWH: Final = (300_000,) * 24  # 0.30 credits per kWh, flat

# name -> (link class, cores, memory MB, fuel/s, power W, energy source, hours mask)
PROFILES: Final = {
    "gaming_pc": ("fibre", 8, 16_384, 3 * 10**9, 300, "grid", HOURS_MASK_ALL),
    "panel_box": ("dsl", 4, 4_096, 10**9, 60, "battery", HOURS_MASK_ALL),
    "solar_streetlight": ("distant", 1, 1_024, 4 * 10**8, 15, "solar", DAYLIGHT_MASK),
    "office_nuc": ("fibre", 4, 8_192, 2 * 10**9, 40, "grid", HOURS_MASK_ALL),
}
COLLUDER_SUBNET: Final = "203.0.113"
SPAMMER_SUBNETS: Final = ("198.51.100", "198.51.101", "198.51.102", "198.51.103")
RUN_MS_BASE: Final = 200


def assign(scenario: Scenario, nodes: int, rng: random.Random) -> tuple[list[str], list[str]]:
    """Each node's host profile and role, by the scenario's shares (rounded down)."""
    profiles: list[str] = []
    for name, pct in scenario.host_shares_pct:
        profiles += [name] * (nodes * pct // 100)
    first = scenario.host_shares_pct[0][0] if scenario.host_shares_pct else "gaming_pc"
    profiles += [first] * (nodes - len(profiles))
    rng.shuffle(profiles)
    roles: list[str] = []
    for name, pct in scenario.adversary_shares_pct:
        roles += [name] * (nodes * pct // 100)
    roles += [HONEST] * (nodes - len(roles))
    rng.shuffle(roles)
    return profiles, [sys.intern(role) for role in roles]


def address(index: int, role: str, rng: random.Random) -> str:
    """A home address: random public /24s, except colluders (one subnet) and spammers (four)."""
    host = index % 250 + 2
    if role == "colluder":
        return f"{COLLUDER_SUBNET}.{host}"
    if role == "bid_spammer":
        return f"{SPAMMER_SUBNETS[index % len(SPAMMER_SUBNETS)]}.{host}"
    return f"{rng.randrange(1, 223)}.{rng.randrange(256)}.{rng.randrange(256)}.{host}"


def host_profile(name: str, role: str, index: int) -> HostProfile:
    _, cores, memory_mb, fuel_per_s, power_w, energy, mask = PROFILES[name]
    if role == "bid_spammer":  # claims free power and many cores, so it bids lowest on all
        cores, power_w, mask = 64, 0, HOURS_MASK_ALL
    return HostProfile(
        cores_offered=cores,
        memory_mb_offered=memory_mb,
        fuel_per_s=fuel_per_s,
        runtimes=("wasm",),
        availability_hours_mask=mask,
        energy_source=energy,
        operator=f"op-{index}",
        pricing=_pricing(power_w),
    )


_PRICING: dict[int, PricingConfig] = {}


def _pricing(power_w: int) -> PricingConfig:
    if power_w not in _PRICING:  # shared: tens of thousands of nodes, a handful of tariffs
        _PRICING[power_w] = PricingConfig(power_w, TARIFF_MC_PER_KWH)
    return _PRICING[power_w]


def honest_result(module_hash: bytes, input_hash: bytes) -> tuple[bytes, int]:
    """The output and fuel every honest replica computes for one job."""
    output = b"out:" + hashlib.sha256(module_hash + input_hash).digest()
    fuel = 10**8 * (1 + input_hash[0] % 8)
    return output, fuel


def role_result(
    role: str, module_hash: bytes, input_hash: bytes, worker_key: bytes, *, trusted: bool = False
) -> tuple[bytes, int] | None:
    """What a worker of ``role`` reports for a job; None if it never finishes. ``trusted``: the
    job's publisher would run it alone (only a ``trust_cheater`` looks)."""
    if role in STALLERS:
        return None
    output, fuel = honest_result(module_hash, input_hash)
    if role == "wrong_result" or (role == TRUST_CHEATER and trusted):
        return b"lie:" + hashlib.sha256(worker_key + input_hash).digest()[:12], fuel
    if role == "colluder":
        return b"collude:" + hashlib.sha256(input_hash).digest()[:12], fuel
    if role == "lazy_copier":  # its own cheap guess: with nothing to copy, guesses differ
        return b"lazy:" + hashlib.sha256(worker_key).digest()[:12], 10**6
    return output, fuel


def run_ms(fuel: int, fuel_per_s: int) -> int:
    return RUN_MS_BASE + fuel * 1000 // fuel_per_s


def forged_heads(ledger: MemoryLedger) -> tuple[bytes, bytes]:
    """Two signed entries with the ledger's head seq: the real head and a forged twin."""
    head = ledger.entry_at(ledger.committed_seq)
    identity = ledger.identity
    if head.seq == 0:
        twin = sign_entry(
            identity,
            seq=0,
            prev_hash=GENESIS_PREV_HASH,
            kind=Kind.GENESIS,
            body=GenesisBody(head.body.format_version, head.body.credit_limit_mc),
            created_ms=head.created_ms + 1,
        )
    else:
        forged = CancelBody(hashlib.sha256(b"forged:" + head.hash).digest())
        twin = sign_entry(
            identity,
            seq=head.seq,
            prev_hash=head.prev_hash,
            kind=Kind.CANCEL,
            body=forged,
            created_ms=head.created_ms,
        )
    return head.wire, twin.wire
