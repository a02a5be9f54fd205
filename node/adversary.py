"""Deliberate misbehaviour for research testnets: a node told to cheat, cheats in a known way.

Only a testnet launcher writes ``adversary.toml`` into a node's data directory; a node without
that file is honest. The behaviours are the ones the verification and auction rules must defeat:

- ``wrong-result``: returns a corrupted output (its own, so two liars disagree with each other);
- ``collude``: returns the same wrong output as every other colluder, to try to win the vote;
- ``lazy``: skips the work and returns a guess, as a worker that hopes it is not checked would;
- ``stall``: accepts awards and never delivers, as a bid spammer holding replicas hostage does.
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from node.commands.common import CommandError
from protocol.effects import RunJob

ADVERSARY_FILE = "adversary.toml"
BEHAVIOURS = ("honest", "wrong-result", "collude", "lazy", "stall")


class Adversary:
    def __init__(self, behaviour: str = "honest", secret: bytes = b"") -> None:
        if behaviour not in BEHAVIOURS:
            raise CommandError(f"{ADVERSARY_FILE}: behaviour must be one of {list(BEHAVIOURS)}")
        self.behaviour = behaviour
        self._secret = secret

    @property
    def honest(self) -> bool:
        return self.behaviour == "honest"

    @property
    def delivers(self) -> bool:
        return self.behaviour != "stall"

    def output(self, run: RunJob, honest_output: bytes) -> bytes:
        """What this node claims the job produced."""
        if self.behaviour == "wrong-result":
            return b"wrong:" + hashlib.sha256(self._secret + honest_output).digest()
        if self.behaviour == "collude":
            # Every colluder derives the same lie from the job alone.
            return b"agreed:" + hashlib.sha256(run.module_hash + run.input_hash).digest()
        if self.behaviour == "lazy":
            return b""
        return honest_output


def load(home: Path, secret: bytes) -> Adversary:
    path = home / ADVERSARY_FILE
    if not path.exists():
        return Adversary()
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"{path}: not valid TOML ({exc})") from None
    return Adversary(str(raw.get("behaviour", "honest")), secret)
