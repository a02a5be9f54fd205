"""Node plug-ins: behaviour a testnet loads into a daemon at a few fixed hooks, nothing more.

A plug-in is named by ``plugin.toml`` in the node's data directory::

    factory = "hearth.testnet.adversaries:make"   # module:callable, called once at start
    [options]                              # handed to the factory as it is
    behaviour = "wrong-result"

A node without that file loads nothing, imports nothing and runs every hook as a plain
``if plugin is None`` test, so the production path does no plug-in work. The daemon knows only
the hooks below, never what a plug-in is for; the research testnet's adversaries
(testnet/adversaries/) are the plug-ins in use. Hooks:

- ``drops_run(run)``: asked before the node carries out a ``RunJob``; True drops it,
  as a worker that keeps an award and never delivers would;
- ``transform_result(run, output)``: what the node reports as the output of a job that ran;
- ``run(context)``: a background task for the node's lifetime, with the node's parts and its
  Clock (a plug-in reads time from that clock, never the wall clock).
"""

from __future__ import annotations

import dataclasses
import importlib
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from hearth.ledger.base import LedgerBase
from hearth.node.clock import Clock
from hearth.node.commands.common import CommandError
from hearth.p2p.transport import Transport
from hearth.protocol.effects import RunJob
from hearth.protocol.engine import Engine
from hearth.protocol.identity import Identity

PLUGIN_FILE = "plugin.toml"


@dataclasses.dataclass(frozen=True)
class PluginContext:
    """What a plug-in's background task may use: the running node's parts and its clock."""

    engine: Engine
    transport: Transport
    ledger: LedgerBase
    clock: Clock


class NodePlugin(Protocol):
    name: str

    def drops_run(self, run: RunJob) -> bool: ...

    def transform_result(self, run: RunJob, output: bytes) -> bytes: ...

    async def run(self, context: PluginContext) -> None: ...


class PluginFactory(Protocol):
    def __call__(self, options: Mapping[str, Any], identity: Identity) -> NodePlugin: ...


def load(home: Path, identity: Identity) -> NodePlugin | None:
    """The plug-in ``home/plugin.toml`` names, or None (an honest node) when there is none."""
    path = home / PLUGIN_FILE
    if not path.exists():
        return None
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise CommandError(f"{path}: not valid TOML ({exc})") from None
    factory, options = raw.get("factory"), raw.get("options", {})
    if not isinstance(factory, str) or ":" not in factory or not isinstance(options, dict):
        raise CommandError(f'{path}: needs factory = "module:callable" and an [options] table')
    module_name, _, attribute = factory.partition(":")
    try:
        make: PluginFactory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise CommandError(f"{path}: cannot load {factory} ({exc})") from None
    return make(options, identity)
