"""Scenario [network] lab keys and the delay stage's netlink messages: pure, no root needed."""

from __future__ import annotations

import collections
import random
import struct

import pytest

from hearth.testnet.netns import delay
from hearth.testnet.scenario import ScenarioError, parse_scenario

LAB = """
[network]
public = 1
[network.links.dsl]
delay_ms = 10
jitter_ms = 3
loss_pct = 0.5
[[network.homes]]
count = 2
link = "dsl"
"""


def test_lab_keys_give_the_topology_and_the_node_count() -> None:
    scenario = parse_scenario(LAB)
    assert scenario.lab is not None
    assert scenario.testnet_nodes == 3
    assert scenario.lab.slot_names() == ["p0", "h0n0", "h1n0"]
    assert scenario.lab.spec.link("dsl").loss_pct == 0.5
    assert parse_scenario("[network]\nloss_pct = 1\n").lab is None


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[[network.homes]]\nrouter = "cone"\n', "router must be one of"),
        ("[network.links.x]\ndelay_ms = 5\njitter_ms = 6\n", "jitter_ms must be 0..delay_ms"),
        ('[[network.faults]]\nkind = "partition"\nat_s = 5\nside = ["h0"]\n', "needs heal_s"),
        (
            '[[network.faults]]\nkind = "partition"\nat_s = 5\nheal_s = 9\nside = ["h7"]\n',
            "names no node",
        ),
        ('[[network.faults]]\nkind = "kill"\nat_s = 5\nnode = "h0"\n', "takes a public node"),
        ("[testnet]\nnodes = 5\n", "lab has 3 nodes; remove testnet.nodes"),
        ('[[network.homes]]\nlink = "fibre"\n', "no link class named 'fibre'"),
    ],
)
def test_a_wrong_lab_is_refused_with_the_line_and_the_fix(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(LAB + extra, source="lab.toml")


def test_packet_ids_are_read_and_verdicts_accept_them() -> None:
    attr = struct.pack("=HH", 4 + 7, delay.NFQA_PACKET_HDR) + struct.pack("!IHB", 4242, 0x0800, 2)
    attr += b"\0" * (-len(attr) % 4)
    body = struct.pack("!BBH", 2, 0, 0) + attr
    message = struct.pack("=IHHII", 16 + len(body), (3 << 8) | 0, 0, 0, 0) + body
    assert list(delay.parse(message + message)) == [((3 << 8), 4242)] * 2
    verdict = delay.verdict(0, 4242)
    assert struct.unpack_from("!II", verdict, 16 + 4 + 4) == (delay.NF_ACCEPT, 4242)


def test_the_stage_releases_in_arrival_order_within_delay_plus_minus_jitter() -> None:
    stage = delay.DelayStage.__new__(delay.DelayStage)
    stage.delay_s, stage.jitter_s = 0.040, 0.010
    stage.random = random.Random(1)
    stage.pending = collections.deque()
    stage.last_release = 0.0
    for packet_id in range(200):
        stage.on_packet(packet_id, now=packet_id * 0.001)
    releases = [at for at, _ in stage.pending]
    assert releases == sorted(releases)
    assert all(
        0.030 <= at - i * 0.001 <= 0.050 + 0.001 * 200 for i, (at, _) in enumerate(stage.pending)
    )
    assert stage.due(0.0) == []
    assert stage.due(10.0) == list(range(200))
