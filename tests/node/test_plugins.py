"""Node plug-ins: an honest home loads none, the testnet's adversaries load and cheat as named.

The daemon knows only the hooks; each adversary is checked here through them, and the fork
gossip on a virtual clock, so that it is seen to take time from the node's Clock.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import cast

import pytest
import trio

from hearth.ledger.audit import HeadGossip
from hearth.ledger.entry import parse_entry
from hearth.ledger.memory import MemoryLedger
from hearth.node.commands.common import CommandError
from hearth.node.plugins import PLUGIN_FILE, PluginContext, load
from hearth.p2p.transport import Transport
from hearth.protocol.effects import RunJob
from hearth.protocol.engine import Engine, EngineConfig
from hearth.protocol.envelope import open_envelope
from hearth.protocol.identity import Identity
from hearth.protocol.job_messages import JobId
from hearth.protocol.messages import TOPIC_HEADS
from hearth.testnet import adversaries
from hearth.testnet.adversaries.fork import FORK_GOSSIP_INTERVAL_S, Forker
from hearth.testnet.adversaries.results import Colluder, LazyCopier, Liar, Staller
from tests.p2p.helpers import seed
from tests.protocol.harness import make_profile

ROOT = Path(__file__).resolve().parents[2]
RUN = RunJob(JobId(b"j" * 16), "wasm", b"m" * 32, b"i" * 32, 1_000, 64, 10_000)
HONEST_OUTPUT = b"the honest output"
CLOCK_MS = 4_102_444_800_000  # 2100-01-01: far from the wall clock, so a wall-clock read shows


def identity(name: str) -> Identity:
    return Identity(seed(name))


def test_a_home_without_a_plugin_file_loads_nothing(tmp_path: Path) -> None:
    assert load(tmp_path, identity("a")) is None


def test_the_daemon_never_imports_the_testnet() -> None:
    """Adversaries live in testnet/; only the CLI commands that drive a testnet may import it."""
    daemon = [p for p in sorted((ROOT / "node").rglob("*.py")) if "commands" not in p.parts]
    found = []
    for path in daemon:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "hearth.testnet"
            ):
                found.append(f"{path.name}:{node.lineno}")
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.startswith("hearth.testnet")]
                found += [f"{path.name}:{node.lineno}" for _ in names]
    assert not found


@pytest.mark.parametrize(
    ("behaviour", "kind"),
    [
        ("wrong-result", Liar),
        ("collude", Colluder),
        ("lazy", LazyCopier),
        ("stall", Staller),
        ("fork", Forker),
    ],
)
def test_each_behaviour_loads_as_its_plugin(tmp_path: Path, behaviour: str, kind: type) -> None:
    adversaries.write(tmp_path, behaviour)
    plugin = load(tmp_path, identity("a"))
    assert plugin is not None and isinstance(plugin, kind) and plugin.name == behaviour
    adversaries.clear(tmp_path)
    assert load(tmp_path, identity("a")) is None


def test_liars_lie_differently_and_colluders_agree() -> None:
    liars = [Liar(identity(name).seed) for name in ("a", "b")]
    lies = {liar.transform_result(RUN, HONEST_OUTPUT) for liar in liars}
    assert len(lies) == 2 and HONEST_OUTPUT not in lies
    colluders = [Colluder(), Colluder()]
    agreed = {c.transform_result(RUN, HONEST_OUTPUT) for c in colluders}
    assert len(agreed) == 1 and HONEST_OUTPUT not in agreed
    assert LazyCopier().transform_result(RUN, HONEST_OUTPUT) == b""


def test_only_the_staller_drops_and_only_the_run() -> None:
    assert Staller().drops_run(RUN)
    assert not any(p.drops_run(RUN) for p in (Liar(b"s"), Colluder(), LazyCopier(), Forker()))
    assert Staller().transform_result(RUN, HONEST_OUTPUT) == HONEST_OUTPUT


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("factory = ", "not valid TOML"),
        ("[options]\n", "module:callable"),
        ('factory = "hearth.testnet.adversaries:nothing"\n', "cannot load"),
        (
            'factory = "hearth.testnet.adversaries:make"\n[options]\nbehaviour = "saint"\n',
            "behaviour",
        ),
    ],
)
def test_a_bad_plugin_file_stops_the_node_saying_why(
    tmp_path: Path, text: str, problem: str
) -> None:
    (tmp_path / PLUGIN_FILE).write_text(text)
    with pytest.raises(CommandError, match=problem):
        load(tmp_path, identity("a"))


class FixedClock:
    def now_ms(self) -> int:
        return CLOCK_MS


class Gossip:
    """Enough of a Transport for the fork task: it records what is published, and when."""

    def __init__(self) -> None:
        self.published: list[tuple[float, str, bytes]] = []
        self.changed = trio.Event()

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append((trio.current_time(), topic, data))
        self.changed.set()
        self.changed = trio.Event()


async def test_the_forker_gossips_a_twin_head_on_the_nodes_clock(autojump_clock: object) -> None:
    me = identity("forker")
    ledger = MemoryLedger(me, now_ms=1_000)
    engine = Engine(EngineConfig(me, make_profile(0)), random.Random(0), ledger)
    gossip = Gossip()
    context = PluginContext(engine, cast(Transport, gossip), ledger, FixedClock())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Forker().run, context)
        while len(gossip.published) < 2:
            await gossip.changed.wait()
        nursery.cancel_scope.cancel()
    (first_s, topic, data), (second_s, _, _) = gossip.published[:2]
    assert topic == TOPIC_HEADS and second_s - first_s == FORK_GOSSIP_INTERVAL_S
    envelope = open_envelope(data, now_ms=CLOCK_MS)
    assert envelope.created_ms == CLOCK_MS
    assert isinstance(envelope.body, HeadGossip)
    twin, real = parse_entry(envelope.body.entry), ledger.entry_at(ledger.head().seq)
    assert (twin.seq, twin.prev_hash) == (real.seq, real.prev_hash) and twin.hash != real.hash
    assert twin.created_ms == CLOCK_MS
