"""[network] and [relay] in config.toml (ADR 0035): defaults, values, one clear line when wrong."""

from __future__ import annotations

import pytest

from hearth.node.commands.common import CommandError
from hearth.node.config import parse


def test_defaults_ask_peers_and_relay_only_when_public() -> None:
    config = parse("")
    assert config.announce == () and config.upnp is False
    assert config.relay.hop == "auto" and config.relay.reachability == "auto"
    assert config.relay.relays_to_reserve == 2 and config.relay.hole_punch


def test_values_reach_the_relay_settings() -> None:
    config = parse(
        '[network]\nannounce = ["/ip4/203.0.113.7/tcp/4001"]\nupnp = true\n'
        'reachability = "private"\n[relay]\nhop = "off"\ncircuit_mb = 8\nhole_punch = false\n'
    )
    assert config.announce == ("/ip4/203.0.113.7/tcp/4001",) and config.upnp
    assert config.relay.reachability == "private" and config.relay.hop == "off"
    assert config.relay.circuit_bytes_max == 8 << 20 and not config.relay.hole_punch


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[network]\nannounce = ["203.0.113.7:4001"]', "network.announce"),
        ('[network]\nannounce = ["/ip4/0.0.0.0/tcp/4001"]', "network.announce"),
        ('[network]\nreachability = "maybe"', "network.reachability"),
        ("[network]\nupnp = 1", "network.upnp"),
        ('[relay]\nhop = "sometimes"', "relay.hop"),
        ("[relay]\ncircuit_mb = 0", "relay.circuit_mb"),
        ("[relay]\ncircuit_duration_s = 5", "relay.circuit_duration_s"),
        ("[relay]\nrelays_to_reserve = 99", "relay.relays_to_reserve"),
        ("[relay]\nmagic = 1", "relay.magic"),
    ],
)
def test_a_wrong_value_names_its_key_in_one_line(text: str, names: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse(text)
    message = str(caught.value)
    assert names in message and "\n" not in message
