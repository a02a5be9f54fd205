"""Where a node keeps its files: ``$HEARTH_HOME`` if set, else the platform's data directory."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP_NAME = "hearth"


def data_dir() -> Path:
    override = os.environ.get("HEARTH_HOME")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def key_path(home: Path) -> Path:
    return home / "identity.key"


def config_path(home: Path) -> Path:
    return home / "config.toml"


def node_info_path(home: Path) -> Path:
    return home / "node.json"


def token_path(home: Path) -> Path:
    return home / "api.token"


def ledger_path(home: Path) -> Path:
    return home / "ledger.sqlite"


def cache_dir(home: Path) -> Path:
    return home / "cache"
