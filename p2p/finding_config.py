"""How a node finds peers beyond its bootstrap list (ADR 0036). No libp2p here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

DHT_MODES: Final = ("auto", "server", "client", "off")


@dataclass(frozen=True)
class DiscoveryConfig:
    """How a node finds peers beyond its bootstrap list (ADR 0036).

    ``peerstore_path``: the on-disk peer store ("" keeps none). ``mdns``: announce and look for
    peers on the local network. ``dht_mode``: "server" answers DHT queries, "client" only asks,
    "auto" is a server when the listen address is public, "off" runs no DHT.
    """

    peerstore_path: str = ""
    mdns: bool = False
    dht_mode: str = "auto"

    def __post_init__(self) -> None:
        if self.dht_mode not in DHT_MODES:
            raise ValueError(f"dht_mode must be one of {DHT_MODES}, not {self.dht_mode!r}")
