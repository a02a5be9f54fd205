"""The node's data directory: creating it, its key (mode 0600), its API token, its config."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from hearth.node import paths
from hearth.node.commands.common import CommandError
from hearth.node.config import TEMPLATE, NodeConfig, load
from hearth.protocol.identity import SEED_BYTES, Identity


def _write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` readable by its owner only, never briefly world-readable."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def init_home(home: Path, config: str | None = None) -> list[str]:
    """Create what is missing in ``home``; return what was created. Never overwrites a key.

    ``config`` is the config.toml to write (a profile's), else the default template."""
    created = []
    try:
        home.mkdir(parents=True, exist_ok=True)
        os.chmod(home, 0o700)
    except OSError as exc:
        raise CommandError(
            f"cannot use {home} as the data directory: {exc.strerror or exc}; "
            "set HEARTH_HOME to a folder you can write"
        ) from None
    if not paths.key_path(home).exists():
        _write_secret(paths.key_path(home), secrets.token_bytes(SEED_BYTES))
        created.append("identity.key")
    if not paths.token_path(home).exists():
        _write_secret(paths.token_path(home), secrets.token_hex(32).encode())
        created.append("api.token")
    if not paths.config_path(home).exists():
        paths.config_path(home).write_text(TEMPLATE if config is None else config)
        created.append("config.toml")
    paths.cache_dir(home).mkdir(exist_ok=True)
    return created


def require_home(home: Path) -> None:
    if home.exists() and not home.is_dir():
        raise CommandError(f"HEARTH_HOME {home} is not a folder; set HEARTH_HOME to a folder")
    if not home.is_dir():
        raise CommandError(f"no data directory at {home}; run `hearth init` (or set HEARTH_HOME)")
    if not paths.key_path(home).exists():
        raise CommandError(f"no identity key in {home}; run `hearth init`")


def load_identity(home: Path) -> Identity:
    require_home(home)
    path = paths.key_path(home)
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise CommandError(f"{path} is readable by others (mode {mode:o}); run chmod 600 {path}")
    seed = path.read_bytes()
    if len(seed) != SEED_BYTES:
        raise CommandError(f"{path} is damaged ({len(seed)} bytes, expected {SEED_BYTES})")
    return Identity(seed)


def load_token(home: Path) -> str:
    """The API token; refused if missing, empty, or readable by other users (one line, a fix)."""
    try:
        return paths.read_token(paths.token_path(home))
    except ValueError as exc:
        raise CommandError(str(exc)) from None


def load_config(home: Path) -> NodeConfig:
    require_home(home)
    return load(paths.config_path(home))
