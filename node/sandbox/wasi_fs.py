"""Preopened folders for WASI guests: /input read-only, /output writable and bounded (ADR 0024).

The guest sees at most two preopened directories (fd 3 and 4). Paths are plain relative paths
below them (no "..", no absolute path, no links: the guest can make none, and the host built
/input itself). What a guest can learn is deterministic: sizes, contents and file types; times,
inode and device numbers read as 0. Writes under /output are bounded in bytes and in files, so a
guest cannot fill the host's disk; past a bound the call fails with ENOSPC, the same on every
replica. I/O: the two folders only.
"""

from __future__ import annotations

import dataclasses
import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO, Final

ERRNO_SUCCESS: Final = 0
ERRNO_BADF: Final = 8
ERRNO_EXIST: Final = 20
ERRNO_INVAL: Final = 28
ERRNO_ISDIR: Final = 31
ERRNO_NOENT: Final = 44
ERRNO_NOSPC: Final = 51
ERRNO_NOTDIR: Final = 54
ERRNO_NOTSUP: Final = 58
ERRNO_PERM: Final = 63
ERRNO_ROFS: Final = 69

FILETYPE_DIRECTORY: Final = 3
FILETYPE_REGULAR_FILE: Final = 4
OFLAG_CREAT: Final = 1
OFLAG_DIRECTORY: Final = 2
OFLAG_EXCL: Final = 4
OFLAG_TRUNC: Final = 8
FDFLAG_APPEND: Final = 1
RIGHT_FD_WRITE: Final = 1 << 6
RIGHTS_ALL: Final = (1 << 30) - 1
FIRST_FD: Final = 3
OPEN_FDS_MAX: Final = 256
PATH_BYTES_MAX: Final = 1024


class FsError(Exception):
    def __init__(self, errno: int) -> None:
        super().__init__(errno)
        self.errno = errno


@dataclasses.dataclass
class _Dir:
    host: Path
    writable: bool
    guest_name: str = ""  # set for a preopen


@dataclasses.dataclass
class _File:
    handle: BinaryIO
    writable: bool
    append: bool


class Preopens:
    """The open directories and files of one run."""

    def __init__(
        self, input_dir: str, output_dir: str, output_bytes_max: int, output_files_max: int
    ) -> None:
        self.entries: dict[int, _Dir | _File] = {}
        self.output_bytes_max = output_bytes_max
        self.output_files_left = output_files_max
        self.output_bytes = 0
        fd = FIRST_FD
        for host, guest, writable in ((input_dir, "/input", False), (output_dir, "/output", True)):
            if host:
                self.entries[fd] = _Dir(Path(host), writable, guest)
                fd += 1

    def close_all(self) -> None:
        for entry in self.entries.values():
            if isinstance(entry, _File):
                entry.handle.close()
        self.entries.clear()

    def has(self, fd: int) -> bool:
        return fd in self.entries

    def prestat(self, fd: int) -> bytes:
        entry = self.entries.get(fd)
        if not isinstance(entry, _Dir) or not entry.guest_name:
            raise FsError(ERRNO_BADF)
        return struct.pack("<BxxxI", 0, len(entry.guest_name.encode()))

    def prestat_name(self, fd: int) -> bytes:
        entry = self.entries.get(fd)
        if not isinstance(entry, _Dir) or not entry.guest_name:
            raise FsError(ERRNO_BADF)
        return entry.guest_name.encode()

    def _dir(self, fd: int) -> _Dir:
        entry = self.entries.get(fd)
        if entry is None:
            raise FsError(ERRNO_BADF)
        if not isinstance(entry, _Dir):
            raise FsError(ERRNO_NOTDIR)
        return entry

    def _file(self, fd: int) -> _File:
        entry = self.entries.get(fd)
        if entry is None:
            raise FsError(ERRNO_BADF)
        if not isinstance(entry, _File):
            raise FsError(ERRNO_ISDIR)
        return entry

    def _resolve(self, fd: int, raw: bytes) -> tuple[_Dir, Path]:
        directory = self._dir(fd)
        try:
            path = raw.decode()
        except UnicodeDecodeError:
            raise FsError(ERRNO_INVAL) from None
        path = path.rstrip("/")
        if path in ("", "."):
            return directory, directory.host
        parts = path.split("/")
        if len(raw) > PATH_BYTES_MAX or any(p in ("", ".", "..") for p in parts) or "\0" in path:
            raise FsError(ERRNO_PERM)  # only plain paths below the folder
        host = directory.host
        for part in parts:
            host = host / part
            if host.is_symlink():
                raise FsError(ERRNO_PERM)
        return directory, host

    def _add(self, entry: _Dir | _File) -> int:
        if len(self.entries) >= OPEN_FDS_MAX:
            raise FsError(ERRNO_NOSPC)
        fd = max(self.entries, default=FIRST_FD - 1) + 1
        self.entries[fd] = entry
        return fd

    def open(self, fd: int, raw: bytes, oflags: int, rights: int, fdflags: int) -> int:
        directory, host = self._resolve(fd, raw)
        write = bool(oflags & (OFLAG_CREAT | OFLAG_TRUNC)) or bool(rights & RIGHT_FD_WRITE)
        exists = host.exists()
        if exists and host.is_dir():
            if oflags & (OFLAG_CREAT | OFLAG_TRUNC) and oflags & OFLAG_EXCL:
                raise FsError(ERRNO_EXIST)
            return self._add(_Dir(host, directory.writable))
        if oflags & OFLAG_DIRECTORY:
            raise FsError(ERRNO_NOTDIR if exists else ERRNO_NOENT)
        if write and not directory.writable:
            raise FsError(ERRNO_ROFS)
        if exists and oflags & OFLAG_CREAT and oflags & OFLAG_EXCL:
            raise FsError(ERRNO_EXIST)
        if not exists:
            if not oflags & OFLAG_CREAT:
                raise FsError(ERRNO_NOENT)
            if self.output_files_left <= 0:
                raise FsError(ERRNO_NOSPC)
            self.output_files_left -= 1
        try:
            if write and (not exists or oflags & OFLAG_TRUNC):
                if exists:
                    self.output_bytes -= host.stat().st_size
                host.write_bytes(b"")
            handle = host.open("r+b") if write else host.open("rb")
        except FileNotFoundError:
            raise FsError(ERRNO_NOENT) from None
        except OSError:
            raise FsError(ERRNO_PERM) from None
        return self._add(_File(handle, write, bool(fdflags & FDFLAG_APPEND)))

    def mkdir(self, fd: int, raw: bytes) -> None:
        directory, host = self._resolve(fd, raw)
        if not directory.writable:
            raise FsError(ERRNO_ROFS)
        if host.exists():
            raise FsError(ERRNO_EXIST)
        if self.output_files_left <= 0:
            raise FsError(ERRNO_NOSPC)
        try:
            host.mkdir()
        except OSError:
            raise FsError(ERRNO_NOENT) from None
        self.output_files_left -= 1

    def read(self, fd: int, length: int) -> bytes:
        entry = self._file(fd)
        return entry.handle.read(length)

    def write(self, fd: int, data: bytes) -> None:
        entry = self._file(fd)
        if not entry.writable:
            raise FsError(ERRNO_BADF)
        if entry.append:
            entry.handle.seek(0, os.SEEK_END)
        position = entry.handle.tell()
        size = os.fstat(entry.handle.fileno()).st_size
        growth = max(0, position + len(data) - size)
        if self.output_bytes + growth > self.output_bytes_max:
            raise FsError(ERRNO_NOSPC)
        entry.handle.write(data)
        entry.handle.flush()
        self.output_bytes += growth

    def seek(self, fd: int, offset: int, whence: int) -> int:
        entry = self._file(fd)
        if whence not in (0, 1, 2):
            raise FsError(ERRNO_INVAL)
        target = {0: 0, 1: entry.handle.tell(), 2: os.fstat(entry.handle.fileno()).st_size}
        position = target[whence] + offset
        if position < 0:
            raise FsError(ERRNO_INVAL)
        if entry.writable and position > self.output_bytes_max:
            raise FsError(ERRNO_NOSPC)
        return entry.handle.seek(position)

    def tell(self, fd: int) -> int:
        return self._file(fd).handle.tell()

    def close(self, fd: int) -> None:
        entry = self.entries.get(fd)
        if entry is None:
            raise FsError(ERRNO_BADF)
        if isinstance(entry, _File):
            entry.handle.close()
        del self.entries[fd]

    def fdstat(self, fd: int) -> bytes:
        entry = self.entries.get(fd)
        if entry is None:
            raise FsError(ERRNO_BADF)
        kind = FILETYPE_DIRECTORY if isinstance(entry, _Dir) else FILETYPE_REGULAR_FILE
        return struct.pack("<BxHxxxxQQ", kind, 0, RIGHTS_ALL, RIGHTS_ALL)

    def filestat(self, fd: int) -> bytes:
        entry = self.entries.get(fd)
        if entry is None:
            raise FsError(ERRNO_BADF)
        if isinstance(entry, _Dir):
            return _filestat(FILETYPE_DIRECTORY, 0)
        return _filestat(FILETYPE_REGULAR_FILE, os.fstat(entry.handle.fileno()).st_size)

    def path_filestat(self, fd: int, raw: bytes) -> bytes:
        _, host = self._resolve(fd, raw)
        try:
            info = host.lstat()
        except FileNotFoundError:
            raise FsError(ERRNO_NOENT) from None
        if stat.S_ISDIR(info.st_mode):
            return _filestat(FILETYPE_DIRECTORY, 0)
        return _filestat(FILETYPE_REGULAR_FILE, info.st_size)


def _filestat(kind: int, size: int) -> bytes:
    """dev, ino, filetype, nlink, size, atim, mtim, ctim: only the type and size are real."""
    return struct.pack("<QQBxxxxxxxQQQQQ", 0, 0, kind, 1, size, 0, 0, 0)
