"""A real full disk for tests: a small tmpfs mounted on a folder, and a file that fills it.

Mounting needs root (CAP_SYS_ADMIN); without it the tests that use this are skipped, saying so.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FILLER_NAME = "filler"
FILL_CHUNK_BYTES = 1 << 20


def mount_small_disk(folder: Path, size_mb: int) -> str | None:
    """Mount a ``size_mb`` tmpfs on ``folder``; None if mounted, else why not."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0700", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        return f"cannot mount a tmpfs to fill (needs root/CAP_SYS_ADMIN): {mounted.stderr.strip()}"
    return None


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], check=True)


@contextmanager
def small_disk(folder: Path, size_mb: int) -> Iterator[Path]:
    """A ``size_mb`` tmpfs on ``folder`` for the body (the test is skipped if it cannot be)."""
    why_not = mount_small_disk(folder, size_mb)
    if why_not:
        pytest.skip(why_not)
    try:
        yield folder
    finally:
        unmount(folder)


def fill(folder: Path) -> Path:
    """Write a file in ``folder`` until the disk says ENOSPC; return it (delete it to free)."""
    filler = folder / FILLER_NAME
    chunk = b"\0" * FILL_CHUNK_BYTES
    with filler.open("ab", buffering=0) as handle:
        while True:
            try:
                written = handle.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
            if written < len(chunk):  # a short write: the disk is full; the next one fails
                chunk = chunk[:4096]
    while True:  # and the last few pages too
        try:
            with filler.open("ab", buffering=0) as handle:
                handle.write(b"\0")
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return filler
            raise


def free(filler: Path) -> None:
    os.unlink(filler)
