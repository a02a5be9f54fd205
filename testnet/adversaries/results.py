"""Adversaries that cheat on the work itself: wrong, colluding, lazy and withheld results.

I/O: none. Each is a node plug-in (node/plugins.py) whose hooks change what the node reports.
"""

from __future__ import annotations

import hashlib

from hearth.node.plugins import PluginContext
from hearth.protocol.effects import RunJob


class Honest:
    """Every hook leaves the node as it is; the adversaries below override one each."""

    name = "honest"

    def drops_run(self, run: RunJob) -> bool:
        return False

    def transform_result(self, run: RunJob, output: bytes) -> bytes:
        return output

    async def run(self, context: PluginContext) -> None:
        return None


class Liar(Honest):
    """Returns its own wrong output, derived from a secret, so that two liars disagree."""

    name = "wrong-result"

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def transform_result(self, run: RunJob, output: bytes) -> bytes:
        return b"wrong:" + hashlib.sha256(self._secret + output).digest()


class Colluder(Honest):
    """Returns the lie every colluder derives from the job alone, to try to win the vote."""

    name = "collude"

    def transform_result(self, run: RunJob, output: bytes) -> bytes:
        return b"agreed:" + hashlib.sha256(run.module_hash + run.input_hash).digest()


class LazyCopier(Honest):
    """Claims a cheap guess (the same empty output as every other copier)."""

    name = "lazy"

    def transform_result(self, run: RunJob, output: bytes) -> bytes:
        return b""


class Staller(Honest):
    """Keeps every award and never runs it, so that the lease runs out (a bid spammer)."""

    name = "stall"

    def drops_run(self, run: RunJob) -> bool:
        return True
