"""Whether peers can dial us: a dial-back on a fresh connection (`/hearth/dialback/1`, ADR 0035).

Why not AutoNAT: py-libp2p 0.8.1's AutoNAT v1 server dials back with `host.connect`, which
reuses the connection already open, so it answers "reachable" for an address where nothing
listens. Here the server opens a *new* TCP connection (a fresh source port, which a NAT that
filters by address and port drops) and completes a pnet + Noise handshake that must prove our
peer id; only then does it count.

Wire: the request is one frame of newline-separated candidate addresses (``/ip4/../tcp/..``,
at most `CANDIDATES_MAX`); the reply one frame of lines ``observed <ip>``, ``ok <addr>``,
``fail <addr>``. The server dials only the IP the request's connection comes from, with the
ports of the candidates: it can never be aimed at a third party, and a requester that asks too
often (per IP, token bucket) or over a relayed connection is refused with an empty reply.

Theory of operation (client). The state is unknown until an answer arrives. Each server's
latest answer counts once (the last `ANSWERS_KEPT` servers): more servers that reached us than
servers that did not makes us public, more that did not makes us private; a tie keeps the
state. Addresses a server reached are our confirmed addresses, advertised to peers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from hearth.p2p.addresses import ip_of
from hearth.p2p.dialing import TokenBuckets

logger = logging.getLogger(__name__)

DIALBACK_PROTOCOL: Final = "/hearth/dialback/1"
CANDIDATES_MAX: Final = 4
ANSWERS_KEPT: Final = 5
DIALBACK_BYTES_MAX: Final = 4096
DIALBACK_TIMEOUT_MS: Final = 12_000  # the server's dials (DIAL_TIMEOUT_MS each) plus the round trip
# (burst, ms per token): dial-backs a server makes for one requesting IP.
DIALBACKS_PER_IP: Final = (3, 20_000)
SERVERS_PER_ROUND: Final = 3


class State(Enum):
    UNKNOWN = "unknown"
    PUBLIC = "public"
    PRIVATE = "private"


@dataclass(frozen=True)
class Answer:
    observed_ip: str
    reached: tuple[str, ...]
    failed: tuple[str, ...]


def encode_request(candidates: list[str]) -> bytes:
    return "\n".join(candidates[:CANDIDATES_MAX]).encode()


def parse_request(data: bytes) -> list[str]:
    """Candidate ``/ip4|ip6/<ip>/tcp/<port>`` addresses; anything else is skipped."""
    out: list[str] = []
    for line in data.decode("utf-8", errors="replace").splitlines()[:CANDIDATES_MAX]:
        parts = line.strip().split("/")
        shaped = len(parts) == 5 and parts[1] in ("ip4", "ip6") and parts[3] == "tcp"
        if shaped and parts[4].isdigit() and 0 < int(parts[4]) < 65536:
            out.append(line.strip())
    return out


def dialback_targets(candidates: list[str], observed_ip: str) -> list[str]:
    """The requester's observed IP with each candidate's port: we never dial another IP."""
    family = "ip6" if ":" in observed_ip else "ip4"
    targets: list[str] = []
    for candidate in candidates:
        target = f"/{family}/{observed_ip}/tcp/{candidate.rsplit('/', 1)[1]}"
        if target not in targets:
            targets.append(target)
    return targets[:CANDIDATES_MAX]


def encode_answer(observed_ip: str, results: list[tuple[str, bool]]) -> bytes:
    lines = [f"observed {observed_ip}"]
    lines += [f"{'ok' if ok else 'fail'} {addr}" for addr, ok in results]
    return "\n".join(lines).encode()


def parse_answer(data: bytes, observed_by_us: str = "") -> Answer | None:
    """An answer, or None if it is malformed (a server that sends one is not counted)."""
    observed = ""
    reached: list[str] = []
    failed: list[str] = []
    for line in data.decode("utf-8", errors="replace").splitlines()[: CANDIDATES_MAX + 1]:
        word, _, rest = line.partition(" ")
        if word == "observed":
            observed = rest.strip()
        elif word in ("ok", "fail") and parse_request(rest.encode()):
            (reached if word == "ok" else failed).append(rest.strip())
        else:
            return None
    if not observed or any(ip_of(a) != observed for a in reached + failed):
        return None
    return Answer(observed, tuple(reached), tuple(failed))


@dataclass
class Reachability:
    """The client's view: the latest answer of each of the last few servers."""

    answers: OrderedDict[str, Answer] = field(default_factory=OrderedDict)
    state: State = State.UNKNOWN
    forced: State | None = None  # config [network] reachability = "public" | "private"

    def record(self, server: str, answer: Answer) -> State:
        self.answers[server] = answer
        self.answers.move_to_end(server)
        while len(self.answers) > ANSWERS_KEPT:
            self.answers.popitem(last=False)
        reached = sum(1 for a in self.answers.values() if a.reached)
        missed = len(self.answers) - reached
        if reached > missed:
            self.state = State.PUBLIC
        elif missed > reached:
            self.state = State.PRIVATE
        return self.current()

    def current(self) -> State:
        return self.forced or self.state

    def confirmed_addrs(self) -> list[str]:
        out: list[str] = []
        for answer in reversed(self.answers.values()):
            out += [a for a in answer.reached if a not in out]
        return out

    def observed_ips(self) -> list[str]:
        return sorted({a.observed_ip for a in self.answers.values()})

    def to_json(self) -> dict[str, object]:
        return {
            "state": self.current().value,
            "forced": self.forced is not None,
            "confirmed_addrs": self.confirmed_addrs(),
            "observed_ips": self.observed_ips(),
            "servers_answered": len(self.answers),
        }


# (addr) -> whether a fresh connection to it proved the requester's peer id
ProbeFn = Callable[[str], Awaitable[bool]]


class DialbackServer:
    """Decides whom to dial back; the host does the dialling (`ProbeFn`)."""

    def __init__(self) -> None:
        self._per_ip = TokenBuckets(*DIALBACKS_PER_IP)
        self.refused = 0

    async def answer(self, request: bytes, observed_ip: str, probe: ProbeFn, now_ms: int) -> bytes:
        candidates = parse_request(request)
        if not observed_ip or not candidates or not self._per_ip.available(observed_ip, now_ms):
            self.refused += 1
            return b""
        self._per_ip.take(observed_ip, now_ms)
        results = []
        for target in dialback_targets(candidates, observed_ip):
            results.append((target, await probe(target)))
        return encode_answer(observed_ip, results)
