"""The node's edge check: the engine's admission rules, run by p2p before it forwards or queues.

py-libp2p runs it as each topic's gossipsub validator, so a message the engine would refuse is
never forwarded to a third peer, and the stream server runs it before a frame takes a place in
the inbound queue (ADR 0021). The verdict is ``protocol.inbound.check_inbound`` on the engine's
current state; it changes nothing. A refusal the peer is to blame for becomes an
``InboundRefused`` event, so the penalty is charged in the engine's reputation book by the same
table as a refusal inside ``step``. For gossip, only a ``REJECT`` is charged (to the forwarder):
an expired or already-seen message may come from an honest relay.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from hearth.node.clock import Clock
from hearth.protocol.engine import Engine
from hearth.protocol.events import InboundRefused
from hearth.protocol.identity import PeerId
from hearth.protocol.inbound import Verdict, check_inbound


class EdgeGate:
    """Called by p2p as ``gate(sender, channel, data, gossip=...)``; returns the verdict."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        # The driver's submit_nowait, set once the driver exists; refusals before that (while
        # the node starts) are counted but charged to nobody.
        self.submit: Callable[[object], bool] | None = None
        self.refused: Counter[str] = Counter()  # by reason

    def __call__(self, sender: str, channel: str, data: bytes, *, gossip: bool) -> Verdict:
        rules = self._engine.inbound_rules()
        if not any(channel in channels for channels in rules.channels_by_type.values()):
            return Verdict.ACCEPT  # not the engine's (blobs, ledger ranges): its handler checks
        checked = check_inbound(data, channel, now_ms=self._clock.now_ms(), rules=rules)
        if checked.error is None:
            return checked.verdict
        self.refused[checked.reason] += 1
        if self.submit is not None and (checked.verdict is Verdict.REJECT or not gossip):
            self.submit(InboundRefused(PeerId(sender), channel, checked.reason))
        return checked.verdict
