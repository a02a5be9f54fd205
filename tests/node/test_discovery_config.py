"""Config of discovery (ADR 0036): mDNS on for home profiles, off for the loopback testnet."""

from __future__ import annotations

import pytest

from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE, parse
from hearth.node.profiles import PROFILES, render
from hearth.testnet.launch import default_config

HOME_PROFILES = ("gaming-pc", "home-server", "laptop", "panel-box")


@pytest.mark.parametrize("name", PROFILES)
def test_home_profiles_look_for_their_lan_and_others_do_not(name: str) -> None:
    assert parse(render(name, cpu_count=2)).mdns is (name in HOME_PROFILES)


def test_the_default_and_the_testnet_config_have_no_mdns_and_an_automatic_dht() -> None:
    for text in (TEMPLATE, default_config()):
        config = parse(text)
        assert (config.mdns, config.dht) == (False, "auto")


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('dht = "sometimes"', "node.dht: choose one of"),
        ("mdns = 1", "node.mdns: expected bool"),
    ],
)
def test_bad_discovery_settings_name_the_key(line: str, why: str) -> None:
    key = line.split(" = ")[0]
    text = "\n".join(line if row.startswith(f"{key} = ") else row for row in TEMPLATE.splitlines())
    with pytest.raises(CommandError, match=why):
        parse(text)
