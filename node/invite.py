"""Invites: one line that carries a network's bootstrap addresses and its private-network key.

``hearth invite`` prints it, ``hearth init --join LINE`` uses it (ADR 0036). The line is
``hearth-invite-1:`` and the base64url (no padding) of a JSON object
``{"bootstrap": [multiaddr, ...], "psk": "<64 hex>" or null}``: copy-paste safe in any shell,
and a truncated or altered line fails to decode or to validate, with one line saying so.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import tomlkit
from tomlkit.items import Table

from hearth.node import paths
from hearth.node.commands.common import CommandError

PREFIX: Final = "hearth-invite-1:"
LINE_CHARS_MAX: Final = 8192
BOOTSTRAP_ADDRS_MAX: Final = 16
SWARM_KEY_FILE: Final = "swarm.key"
PSK_BYTES: Final = 32


@dataclass(frozen=True)
class Invite:
    bootstrap: tuple[str, ...]
    psk: bytes | None


def encode(invite: Invite) -> str:
    body = {"bootstrap": list(invite.bootstrap), "psk": invite.psk.hex() if invite.psk else None}
    text = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    return PREFIX + base64.urlsafe_b64encode(text).decode().rstrip("=")


def _bad(why: str) -> CommandError:
    return CommandError(f"invite: {why}; ask for a fresh line from `hearth invite`", exit_code=2)


def decode(line: str) -> Invite:
    """The invite in ``line``; CommandError (one line) if it is not a whole, valid invite."""
    from hearth.p2p.discovery import parse_peer_addr

    line = line.strip()
    if len(line) > LINE_CHARS_MAX:
        raise _bad(f"the line is {len(line)} characters, more than {LINE_CHARS_MAX}")
    if not line.startswith(PREFIX):
        raise _bad(f"the line does not start with {PREFIX!r}")
    payload = line[len(PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        body: Any = json.loads(raw)
    except (binascii.Error, ValueError):
        raise _bad("the line is damaged or cut short") from None
    if not isinstance(body, dict) or set(body) != {"bootstrap", "psk"}:
        raise _bad("the line is damaged or cut short")
    addrs = body["bootstrap"]
    if not isinstance(addrs, list) or not 1 <= len(addrs) <= BOOTSTRAP_ADDRS_MAX:
        raise _bad(f"it must name 1 to {BOOTSTRAP_ADDRS_MAX} bootstrap addresses")
    for addr in addrs:
        try:
            parse_peer_addr(str(addr))
        except ValueError:
            raise _bad(f"{addr!r} is not a peer address") from None
    return Invite(tuple(str(a) for a in addrs), _psk(body["psk"]))


def _psk(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        key = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        key = b""
    if len(key) != PSK_BYTES:
        raise _bad("its private-network key is not 64 hex characters")
    return key


def read_swarm_key(home: Path) -> bytes | None:
    """The private-network key in ``home`` (``swarm.key``, 64 hex characters), if any."""
    path = home / SWARM_KEY_FILE
    if not path.exists():
        return None
    try:
        key = bytes.fromhex(path.read_text().strip())
    except ValueError:
        key = b""
    if len(key) != PSK_BYTES:
        raise CommandError(f"{path} must hold 64 hex characters")
    return key


def invite_for(home: Path, listen_addrs: list[str], configured: tuple[str, ...]) -> Invite:
    """This node's own addresses (if it runs) and its bootstrap list, with its network's key."""
    own = [a for a in listen_addrs if "/ip4/0.0.0.0/" not in a and "/ip6/::/" not in a]
    addrs = list(dict.fromkeys([*own, *configured]))[:BOOTSTRAP_ADDRS_MAX]
    if not addrs:
        raise CommandError(
            "nothing to invite to: start this node (`hearth node start`) or set "
            "node.bootstrap in config.toml"
        )
    return Invite(tuple(addrs), read_swarm_key(home))


def join(home: Path, invite: Invite) -> None:
    """Write the invite's key (``swarm.key``) and add its addresses to node.bootstrap."""
    if invite.psk is not None:
        existing = read_swarm_key(home)
        if existing is not None and existing != invite.psk:
            raise CommandError(
                f"{home} already belongs to another private network ({SWARM_KEY_FILE} differs); "
                "set HEARTH_HOME to a new folder to join this one"
            )
        if existing is None:
            fd = os.open(home / SWARM_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(invite.psk.hex() + "\n")
    path = paths.config_path(home)
    doc = tomlkit.parse(path.read_text())
    node = doc.get("node")
    if not isinstance(node, Table):
        node = tomlkit.table()
        doc["node"] = node
    known = [str(a) for a in node.get("bootstrap", [])]
    node["bootstrap"] = list(dict.fromkeys([*known, *invite.bootstrap]))
    path.write_text(tomlkit.dumps(doc))
