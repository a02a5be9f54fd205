"""Host profiles for the seed systems: `hearth init --profile NAME` writes a commented config.

A profile (``node/profiles/<name>.toml``, shipped as package data) holds a header comment and
the keys in which that kind of host differs from the default config, each with a trailing
comment saying why. Rendering lays them over the default template with tomlkit, so the host
gets the whole commented file with the profile's values in place, and caps ``cores`` at the
machine's own count. A key (or a section) that this version's config does not know is written
commented out, with a note, so a profile never makes a config the node refuses.
"""

from __future__ import annotations

import os
from importlib import resources

import tomlkit
from tomlkit.items import Item, Table

from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE, parse

UNKNOWN_NOTE = "not known to this version of hearth; uncomment it after an upgrade"
PROFILES = ("gaming-pc", "home-server", "panel-box", "streetlight", "laptop", "regional-site")


def profile_text(name: str) -> str:
    if name not in PROFILES:
        raise CommandError(f"unknown profile {name!r}; choose one of: {', '.join(PROFILES)}")
    return resources.files("hearth.node").joinpath("profiles", f"{name}.toml").read_text()


def header(text: str) -> str:
    """The profile's opening comment: every line before its first table."""
    lines = []
    for line in text.splitlines():
        if line.startswith("["):
            break
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def render(name: str, cpu_count: int | None = None) -> str:
    """The config.toml for profile ``name`` on a machine with ``cpu_count`` cores."""
    text = profile_text(name)
    machine_cores = cpu_count or os.cpu_count() or 1
    doc = tomlkit.parse(TEMPLATE)
    for section, table in tomlkit.parse(text).items():
        assert isinstance(table, Table), f"{name}: {section} is not a table"
        _lay(doc, section, table)
    limits = doc["limits"]
    assert isinstance(limits, Table)
    wanted = int(limits["cores"])
    if wanted > machine_cores:
        capped = tomlkit.item(machine_cores)
        capped.comment(f"the profile offers {wanted}; this machine has {machine_cores}")
        capped.trivia.comment_ws = "  "
        limits["cores"] = capped
    rendered = header(text) + "\n" + tomlkit.dumps(doc).rstrip() + "\n"
    parse(rendered)  # a profile the node would refuse is a bug here, not the host's problem
    return rendered


def _lay(doc: tomlkit.TOMLDocument, section: str, table: Table) -> None:
    """Set the profile's keys of ``section`` in the template; comment out those it lacks."""
    target = doc.get(section)
    known = target if isinstance(target, Table) else None
    unknown = []
    for key, item in _entries(table):
        if known is not None and key in known:
            known[key] = item
        else:
            unknown.append((key, item))
    if not unknown:
        return
    if known is None:
        doc.add(tomlkit.nl())
        doc.add(tomlkit.comment(f"[{section}]  ({UNKNOWN_NOTE})"))
    else:
        known.add(tomlkit.comment(f"({UNKNOWN_NOTE})"))
    for key, item in unknown:
        (doc if known is None else known).add(tomlkit.comment(_line(key, item)))
    if known is not None:
        known.add(tomlkit.nl())


def _entries(table: Table) -> list[tuple[str, Item]]:
    """The table's keys and their items (with their trailing comments), in file order."""
    return [(key.key, item) for key, item in table.value.body if key is not None]


def _line(key: str, item: Item) -> str:
    """``key = value  # why`` as it stood in the profile."""
    trivia = item.trivia
    return (
        f"{key} = {item.as_string()}{trivia.comment_ws if trivia.comment else ''}{trivia.comment}"
    )


def profile_cores(name: str) -> int:
    """The cores the profile offers before any cap (the testnet demo sizes its estimates by it)."""
    limits = tomlkit.parse(profile_text(name))["limits"]
    assert isinstance(limits, Table)
    return int(limits["cores"])
