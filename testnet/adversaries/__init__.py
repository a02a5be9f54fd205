"""The research testnet's adversaries: node plug-ins (node/plugins.py) that cheat in known ways.

Only a testnet writes one into a node's data directory (``write``); a node without it is honest
and loads none of this. The behaviours are the ones the verification and auction rules must
defeat:

- ``wrong-result``: returns a corrupted output (its own, so two liars disagree with each other);
- ``collude``: returns the same wrong output as every other colluder, to try to win the vote;
- ``lazy``: skips the work and returns a guess, as a worker that hopes it is not checked would;
- ``stall``: accepts awards and never delivers, as a bid spammer holding replicas hostage does;
- ``fork``: works honestly but also signs a second, contradicting entry at its ledger's head and
  gossips it, as a node showing different histories to different peers would.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

from hearth.node.commands.common import CommandError
from hearth.node.plugins import PLUGIN_FILE, NodePlugin
from hearth.protocol.identity import Identity
from hearth.testnet.adversaries.fork import Forker
from hearth.testnet.adversaries.results import Colluder, LazyCopier, Liar, Staller

ADVERSARY_FILE: Final = PLUGIN_FILE  # the file a testnet writes to make a node an adversary
FACTORY: Final = "hearth.testnet.adversaries:make"
BEHAVIOURS: Final[dict[str, Callable[[Identity], NodePlugin]]] = {
    "wrong-result": lambda identity: Liar(identity.seed),
    "collude": lambda identity: Colluder(),
    "lazy": lambda identity: LazyCopier(),
    "stall": lambda identity: Staller(),
    "fork": lambda identity: Forker(),
}


def make(options: Mapping[str, Any], identity: Identity) -> NodePlugin:
    """The plug-in factory ``plugin.toml`` names: one adversary, chosen by ``behaviour``."""
    behaviour = options.get("behaviour")
    if behaviour not in BEHAVIOURS:
        raise CommandError(f"{ADVERSARY_FILE}: behaviour must be one of {sorted(BEHAVIOURS)}")
    return BEHAVIOURS[behaviour](identity)


def write(home: Path, behaviour: str) -> None:
    """Make the node in ``home`` the adversary ``behaviour`` from its next start."""
    assert behaviour in BEHAVIOURS, behaviour
    home.mkdir(parents=True, exist_ok=True)
    text = f'factory = "{FACTORY}"\n\n[options]\nbehaviour = "{behaviour}"\n'
    (home / ADVERSARY_FILE).write_text(text)


def clear(home: Path) -> None:
    """Make the node in ``home`` honest again from its next start."""
    (home / ADVERSARY_FILE).unlink(missing_ok=True)
