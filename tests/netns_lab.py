"""The network-namespace lab for tests: ``make_lab(spec)`` builds one, and it is destroyed after.

Skips, saying why, where namespaces cannot be made (not root, no ``ip``/``nft``/``iptables``
and no way to install them, or unshare denied). ip, nft, tc and iptables come from Debian's
iproute2, nftables and iptables through tests/syspkg.py, like the other programs tests need.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hearth.testnet.netns.lab import Lab, unavailable_reason
from hearth.testnet.netns.spec import LabSpec
from tests import syspkg

MakeLab = Callable[[LabSpec], Lab]


def require_netns() -> None:
    syspkg.require_root("the network-namespace lab")
    syspkg.require("ip", "iproute2")
    syspkg.require("tc", "iproute2")
    syspkg.require("nft", "nftables")
    syspkg.require("iptables", "iptables")
    why = unavailable_reason()
    if why:
        pytest.skip(f"the network-namespace lab cannot run here: {why}")


@pytest.fixture
def make_lab() -> Iterator[Callable[[LabSpec], Lab]]:
    require_netns()
    labs: list[Lab] = []

    def make(spec: LabSpec) -> Lab:
        lab = Lab.create(spec)
        labs.append(lab)
        return lab

    yield make
    for lab in labs:
        lab.destroy()


def probe(lab: Lab, slot: str, *args: str, timeout_s: float = 60) -> dict[str, Any]:
    """Run ``python -m hearth.testnet.netns.probe ARGS`` in ``slot``'s namespace; its JSON."""
    argv = [sys.executable, "-m", "hearth.testnet.netns.probe", *args]
    done = lab.run(lab.slot(slot).ns, argv, timeout_s=timeout_s)
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def serve(lab: Lab, slot: str, port: int) -> subprocess.Popen[bytes]:
    """Start the probe's echo server in ``slot`` and wait until it listens."""
    argv = [sys.executable, "-m", "hearth.testnet.netns.probe", "serve", "0.0.0.0", str(port)]
    server = lab.popen(lab.slot(slot).ns, argv, stdout=subprocess.PIPE)
    assert server.stdout is not None
    assert server.stdout.readline().startswith(b"ready")
    return server
