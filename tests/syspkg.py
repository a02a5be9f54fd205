"""System programs a test needs, installed from Debian's packages by the test run itself.

CI starts from a clean checkout on a fresh machine: a test that needs Chromium, mosquitto,
nftables or clang calls ``require`` and gets the program's path. When it is missing and the run is
root on a Debian-like machine, ``require`` installs the package with apt-get (one install at a time
across processes, under a file lock); when it cannot, the test is skipped with the reason, never
passed silently.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

_LOCK = Path("/tmp/hearth-tests-apt.lock")
_INSTALL_TIMEOUT_S = 1200
_updated = False


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    return subprocess.run(
        ["apt-get", "-q", "-y", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=_INSTALL_TIMEOUT_S,
        check=False,
    )


def _install(packages: tuple[str, ...]) -> str | None:
    """Install ``packages``; None on success, else why not (one line)."""
    global _updated
    if os.geteuid() != 0:
        return "not root, so Debian packages cannot be installed"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    with _LOCK.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = _apt("install", "--no-install-recommends", *packages)
        if result.returncode != 0 and not _updated:
            _updated = True
            _apt("update")
            result = _apt("install", "--no-install-recommends", *packages)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["apt-get failed"])[-1]
        return f"apt-get install {' '.join(packages)} failed: {last}"
    return None


def require(binary: str, *packages: str) -> str:
    """The path of ``binary``, installing Debian's ``packages`` if it is missing; else skip."""
    found = shutil.which(binary)
    if found is not None:
        return found
    why = _install(packages or (binary,))
    found = shutil.which(binary)
    if found is None:
        pytest.skip(f"{binary} is not available: {why or 'installed, but not on PATH'}")
    return found


def require_files(paths: list[str], *packages: str) -> None:
    """Make sure files from Debian's ``packages`` exist (libraries, headers); else skip."""
    if all(Path(p).exists() for p in paths):
        return
    why = _install(packages)
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        pytest.skip(f"{missing[0]} is not available: {why or 'not in the packages installed'}")


def require_root(what: str) -> None:
    """Skip unless the run is root (network namespaces, nftables)."""
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (network namespaces and nftables)")
