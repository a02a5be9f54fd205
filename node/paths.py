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


def runtime_cache_dir() -> Path:
    """Compiled runtimes, shared by every home of this user on this machine (CPython-on-WASI is
    332 MB and minutes of compiling): ``$HEARTH_CACHE`` if set, else the platform's cache."""
    override = os.environ.get("HEARTH_CACHE")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir(APP_NAME, appauthor=False))


def read_token(path: Path) -> str:
    """The API token in ``path``; ValueError saying what is wrong and how to fix it.

    The token grants everything the local API can do, so a file other users may read (or an
    empty one, which any request could match) is refused rather than trusted.
    """
    try:
        mode = path.stat().st_mode & 0o777
        token = path.read_text().strip()
    except FileNotFoundError:
        raise ValueError(f"no API token at {path}; run `hearth init`") from None
    if mode & 0o077:
        raise ValueError(f"{path} is open to other users (mode {mode:o}); run chmod 600 {path}")
    if not token:
        raise ValueError(f"{path} is empty; delete it and run `hearth init` to make a new token")
    return token
