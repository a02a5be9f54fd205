"""`hearth invite` prints one line; `hearth init --join LINE` makes a node of that network."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from hearth.node import invite as invites
from hearth.testnet import launch
from tests.e2e.network import TESTNET_CONFIG, hearth
from tests.e2e.test_rejoin import connected

pytestmark = pytest.mark.integration


def test_a_node_joins_a_private_network_from_an_invite_line(tmp_path: Path) -> None:
    psk = secrets.token_bytes(32)
    (inviter,) = launch.up(tmp_path / "net", 1, configs=[TESTNET_CONFIG], psk=psk)
    joiner_home = tmp_path / "joiner"
    nodes = [inviter]
    try:
        printed = hearth(inviter.home, "invite")
        assert printed.returncode == 0, printed.stderr
        line = printed.stdout.strip()
        assert "\n" not in line and line.startswith(invites.PREFIX)
        as_json = json.loads(hearth(inviter.home, "invite", "--json").stdout)
        assert as_json["bootstrap"] == inviter.info["multiaddrs"]
        assert as_json["private_network"] is True

        joined = hearth(joiner_home, "init", "--join", line, "--json")
        assert joined.returncode == 0, joined.stderr
        assert json.loads(joined.stdout)["joined"] == inviter.info["multiaddrs"]
        assert (joiner_home / "swarm.key").read_text().strip() == psk.hex()
        config = (joiner_home / "config.toml").read_text()
        (joiner_home / "config.toml").write_text(
            config.replace('runtimes = ["wasm", "python"]', 'runtimes = ["wasm"]')
        )
        # No --bootstrap flag: the joiner finds the network from its config alone.
        process = launch.start_process(joiner_home, "127.0.0.3", None, tmp_path / "joiner.out")
        joiner = launch.LaunchedNode(1, joiner_home, "127.0.0.3", process.pid, {})
        nodes.append(joiner)
        joiner.info = launch.wait_until_listening(joiner_home, process, 60)
        peer = inviter.info["peer_id"]
        launch.wait_for(lambda: peer in connected(joiner_home), 20, "the joiner to connect")
    finally:
        launch.stop(nodes)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("not-an-invite", "does not start with"),
        (invites.PREFIX + "eyJib290c3Ry", "damaged or cut short"),
        (invites.encode(invites.Invite(("/ip4/1.2.3.4/tcp/1",), None)), "not a peer address"),
        (invites.PREFIX + "bnVsbA", "damaged or cut short"),  # JSON null
    ],
)
def test_a_bad_invite_line_is_one_clear_error_and_creates_nothing(
    tmp_path: Path, line: str, why: str
) -> None:
    result = hearth(tmp_path / "home", "init", "--join", line)
    assert result.returncode == 2
    assert why in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "home").exists()


def test_joining_another_private_network_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    boot = "/ip4/127.0.0.9/tcp/4001/p2p/12D3KooWGnNSR5D6QY1kKKwtbR3A53bJZ9F7eK4Ezg5hDZ9bpbsW"
    first = invites.encode(invites.Invite((boot,), secrets.token_bytes(32)))
    second = invites.encode(invites.Invite((boot,), secrets.token_bytes(32)))
    assert hearth(home, "init", "--join", first).returncode == 0
    result = hearth(home, "init", "--join", second)
    assert result.returncode == 1 and "another private network" in result.stderr


def test_invite_with_nothing_to_invite_to_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert hearth(home, "init").returncode == 0
    result = hearth(home, "invite")
    assert result.returncode == 1 and "nothing to invite to" in result.stderr
