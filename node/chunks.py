"""Large inputs and outputs as content-addressed chunks: the bundle and tree formats (ADR 0024).

A file travels as chunks of ``CHUNK_BYTES`` (the last one shorter), each an ordinary blob named
by its sha256, so each is hash-checked on arrival and a chunk already on disk is never fetched
again. A *bundle* is a job's input: arguments, environment, an optional stdin file, input files
(seen read-only under /input) and, if the job returns an output directory, its bounds. A *tree*
is such a job's output: its stdout and every file it left under /output, sorted by path. Both
are msgpack arrays under a magic string, stored as one blob: a job's ``input_hash`` names its
bundle and a replica's ``output_hash`` its tree, so replicas vote on the canonical hash of the
whole output tree (paths, sizes and the hash of every chunk).

I/O: the store and the files named; reading streams one chunk at a time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Final

import msgpack

from hearth.node.blobs import PARTIAL_PREFIX, BlobError, BlobStore

CHUNK_BYTES: Final = 1024 * 1024
CHUNK_BYTES_MIN: Final = 64 * 1024
CHUNK_BYTES_MAX: Final = 4 * 1024 * 1024
BUNDLE_MAGIC: Final = "hearth/bundle/1"
TREE_MAGIC: Final = "hearth/tree/1"
MANIFEST_BYTES_MAX: Final = 8 * 1024 * 1024  # ~230k chunks: 230 GB of 1 MiB chunks
FILES_MAX: Final = 10_000  # input files in a bundle, output files in a tree
ARGS_MAX: Final = 256
ARG_BYTES_MAX: Final = 4096
PATH_BYTES_MAX: Final = 1024
PATH_PART_BYTES_MAX: Final = 255
INPUT_GUEST_DIR: Final = "/input"
OUTPUT_GUEST_DIR: Final = "/output"


class ManifestError(BlobError):
    """A bundle or tree is malformed, or a file cannot be chunked or rebuilt."""


@dataclasses.dataclass(frozen=True)
class FileRef:
    """A file as chunks: its size and the sha256 of each ``chunk_bytes`` piece, in order."""

    size_bytes: int
    chunks: tuple[bytes, ...]

    def chunk_sizes(self, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, int]]:
        sizes = []
        for index, digest in enumerate(self.chunks):
            start = index * chunk_bytes
            sizes.append((digest, min(chunk_bytes, self.size_bytes - start)))
        return sizes


@dataclasses.dataclass(frozen=True)
class Bundle:
    """A job's input. ``output_files_max`` 0 means the job returns stdout alone (no tree)."""

    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    stdin: FileRef | None = None
    files: tuple[tuple[str, FileRef], ...] = ()
    output_bytes_max: int = 0
    output_files_max: int = 0

    @property
    def input_bytes(self) -> int:
        total = sum(ref.size_bytes for _, ref in self.files)
        return total + (self.stdin.size_bytes if self.stdin else 0)

    @property
    def wants_tree(self) -> bool:
        return self.output_files_max > 0

    def refs(self) -> list[FileRef]:
        return ([self.stdin] if self.stdin else []) + [ref for _, ref in self.files]

    def encode(self) -> bytes:
        return _pack(
            [
                BUNDLE_MAGIC,
                CHUNK_BYTES,
                list(self.args),
                [list(pair) for pair in self.env],
                None if self.stdin is None else _ref_array(self.stdin),
                [[path, *_ref_array(ref)] for path, ref in self.files],
                self.output_bytes_max,
                self.output_files_max,
            ]
        )


@dataclasses.dataclass(frozen=True)
class Tree:
    """A job's output: its stdout and the files under /output, sorted by path."""

    stdout: FileRef
    files: tuple[tuple[str, FileRef], ...] = ()

    def refs(self) -> list[FileRef]:
        return [self.stdout] + [ref for _, ref in self.files]

    @property
    def total_bytes(self) -> int:
        return sum(ref.size_bytes for ref in self.refs())

    def encode(self) -> bytes:
        return _pack(
            [
                TREE_MAGIC,
                CHUNK_BYTES,
                _ref_array(self.stdout),
                [[path, *_ref_array(ref)] for path, ref in self.files],
            ]
        )


def chunk_list(refs: list[FileRef]) -> list[tuple[bytes, int]]:
    """Every distinct chunk of ``refs`` with its size, in first-use order."""
    seen: dict[bytes, int] = {}
    for ref in refs:
        for digest, size in ref.chunk_sizes():
            seen.setdefault(digest, size)
    return list(seen.items())


def _pack(value: list[Any]) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


def _ref_array(ref: FileRef) -> list[Any]:
    return [ref.size_bytes, list(ref.chunks)]


# Decoding: every field of a peer's manifest is checked before it is used.


def kind_of(data: bytes) -> str:
    """ "bundle", "tree" or "" (a plain blob), from the magic string alone."""
    for magic, kind in ((BUNDLE_MAGIC, "bundle"), (TREE_MAGIC, "tree")):
        if data[1:24].startswith(_pack([magic])[1:]):
            return kind
    return ""


def decode_bundle(data: bytes) -> Bundle:
    fields = _unpack(data, BUNDLE_MAGIC, 8)
    _, _, args, env, stdin, files, output_bytes_max, output_files_max = fields
    _require(isinstance(args, list) and len(args) <= ARGS_MAX, "args")
    for arg in args:
        _require(isinstance(arg, str) and len(arg.encode()) <= ARG_BYTES_MAX, "an arg")
        _require("\0" not in arg, "an arg")
    _require(isinstance(env, list) and len(env) <= ARGS_MAX, "env")
    pairs = []
    for pair in env:
        _require(isinstance(pair, list) and len(pair) == 2, "an env pair")
        key, value = pair
        _require(isinstance(key, str) and isinstance(value, str), "an env pair")
        _require(check_env_name(key) == "" and "\0" not in value, "an env pair")
        _require(len(value.encode()) <= ARG_BYTES_MAX, "an env value")
        pairs.append((key, value))
    _require(pairs == sorted(dict(pairs).items()), "env (sorted, unique)")
    for bound in (output_bytes_max, output_files_max):
        _require(isinstance(bound, int) and 0 <= bound < 2**63, "output bounds")
    _require(output_files_max <= FILES_MAX, "output_files_max")
    return Bundle(
        args=tuple(args),
        env=tuple(pairs),
        stdin=None if stdin is None else _ref(stdin),
        files=_files(files),
        output_bytes_max=output_bytes_max,
        output_files_max=output_files_max,
    )


def decode_tree(data: bytes) -> Tree:
    _, _, stdout, files = _unpack(data, TREE_MAGIC, 4)
    return Tree(stdout=_ref(stdout), files=_files(files))


def _unpack(data: bytes, magic: str, length: int) -> list[Any]:
    _require(len(data) <= MANIFEST_BYTES_MAX, "size")
    try:
        fields = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ManifestError(f"not a {magic}: {exc}") from None
    _require(isinstance(fields, list) and len(fields) == length, "shape")
    _require(fields[0] == magic and fields[1] == CHUNK_BYTES, "magic or chunk size")
    return list(fields)


def _files(files: Any) -> tuple[tuple[str, FileRef], ...]:
    _require(isinstance(files, list) and len(files) <= FILES_MAX, "files")
    out = []
    for item in files:
        _require(isinstance(item, list) and len(item) == 3, "a file")
        path = item[0]
        _require(isinstance(path, str) and check_path(path) == "", f"path {str(path)[:64]!r}")
        out.append((path, _ref(item[1:])))
    paths = [path for path, _ in out]
    _require(paths == sorted(set(paths)), "file order (sorted, unique)")
    _require(not _nested(paths), "files (a path inside another file)")
    return tuple(out)


def _nested(paths: list[str]) -> bool:
    names = set(paths)
    return any(str(parent) in names for path in paths for parent in PurePosixPath(path).parents)


def _ref(value: Any) -> FileRef:
    _require(isinstance(value, list) and len(value) == 2, "a file reference")
    size, chunks = value
    _require(isinstance(size, int) and 0 <= size < 2**63, "a file size")
    _require(isinstance(chunks, list), "a chunk list")
    _require(len(chunks) == -(-size // CHUNK_BYTES), "a chunk count")
    for digest in chunks:
        _require(isinstance(digest, bytes) and len(digest) == 32, "a chunk hash")
    return FileRef(size, tuple(chunks))


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ManifestError(f"bad manifest: {what}")


def check_path(path: str) -> str:
    """Why ``path`` may not name a file under /input or /output ("" if it may)."""
    if not path or len(path.encode()) > PATH_BYTES_MAX or "\0" in path or "\\" in path:
        return "empty, too long or with a NUL or backslash"
    parts = path.split("/")
    if any(part in ("", ".", "..") or len(part.encode()) > PATH_PART_BYTES_MAX for part in parts):
        return "not a plain relative path"
    return ""


def check_env_name(name: str) -> str:
    if not name or "=" in name or "\0" in name or len(name.encode()) > ARG_BYTES_MAX:
        return f"{name[:32]!r} is not an environment variable name"
    return ""


# Files in and out of the store


def read_pieces(path: Path) -> Iterator[bytes]:
    """The file's chunks, read one at a time (never the whole file)."""
    try:
        with path.open("rb") as handle:
            while piece := handle.read(CHUNK_BYTES):
                yield piece
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror or exc}") from None


def ref_of(path: Path) -> tuple[FileRef, list[bytes]]:
    """The FileRef of a file, hashed as it streams; the chunks are not kept."""
    hashes, size = [], 0
    for piece in read_pieces(path):
        hashes.append(hashlib.sha256(piece).digest())
        size += len(piece)
    return FileRef(size, tuple(hashes)), hashes


def store_file(store: BlobStore, path: Path, owner: str = "") -> FileRef:
    """Put the file's chunks in ``store``, one chunk in memory at a time."""
    hashes, size = [], 0
    for piece in read_pieces(path):
        hashes.append(store.put(piece, owner=owner))
        size += len(piece)
    return FileRef(size, tuple(hashes))


def write_file(store: BlobStore, ref: FileRef, target: Path) -> None:
    """Rebuild a file from its chunks in ``store`` (each already hash-checked on arrival)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("wb") as out:
        for digest in ref.chunks:
            try:
                with store.path(digest).open("rb") as chunk:
                    while data := chunk.read(CHUNK_BYTES):
                        out.write(data)
            except FileNotFoundError:
                raise ManifestError(f"chunk {digest.hex()[:16]} is not in the store") from None
            store.touch(digest)


def read_ref(store: BlobStore, ref: FileRef, bytes_max: int) -> bytes:
    """A small file (stdin, stdout) from its chunks; refused past ``bytes_max``."""
    if ref.size_bytes > bytes_max:
        raise ManifestError(f"{ref.size_bytes} bytes is over the limit of {bytes_max}")
    parts = []
    for digest in ref.chunks:
        data = store.get(digest)
        if data is None:
            raise ManifestError(f"chunk {digest.hex()[:16]} is not in the store")
        parts.append(data)
    return b"".join(parts)


def put_bytes(store: BlobStore, data: bytes, owner: str = "") -> FileRef:
    hashes = [
        store.put(data[start : start + CHUNK_BYTES], owner=owner)
        for start in range(0, len(data), CHUNK_BYTES)
    ]
    return FileRef(len(data), tuple(hashes))


def materialise_inputs(store: BlobStore, bundle: Bundle, input_dir: Path) -> None:
    for path, ref in bundle.files:
        write_file(store, ref, input_dir / path)


def collect_output(root: Path, bytes_max: int, files_max: int) -> list[tuple[str, Path]] | str:
    """The regular files under ``root``, sorted by path; or why the output breaks its bounds.

    Directories are walked without following links; a link, device or socket is refused, so a
    guest cannot make the host read outside the folder.
    """
    found: list[tuple[str, Path]] = []
    total = 0
    for directory, dirs, files in os.walk(root, followlinks=False):
        dirs.sort()
        for name in sorted(files + [d for d in dirs if Path(directory, d).is_symlink()]):
            full = Path(directory, name)
            info = full.lstat()
            relative = full.relative_to(root).as_posix()
            if not stat.S_ISREG(info.st_mode) or check_path(relative):
                return f"output {relative[:64]!r} is not a plain file"
            total += info.st_size
            found.append((relative, full))
            if len(found) > files_max:
                return f"output has more than {files_max} files"
            if total > bytes_max:
                return f"output passed {bytes_max} bytes"
    return sorted(found)


def build_tree(
    store: BlobStore, stdout: bytes, files: list[tuple[str, Path]], owner: str = ""
) -> Tree:
    refs = tuple((relative, store_file(store, path, owner)) for relative, path in files)
    return Tree(stdout=put_bytes(store, stdout, owner), files=refs)


Pieces = list[tuple[bytes, Path]]  # (chunk hash, a synced partial file in the store's folder)


def split_file(root: Path, path: Path) -> tuple[FileRef, Pieces]:
    """Cut a file into chunk files beside the store, hashed and synced, without touching the
    store's books: safe off the event loop. ``commit_pieces`` files them, on the loop."""
    pieces: Pieces = []
    size = 0
    try:
        for piece in read_pieces(path):
            fd, name = tempfile.mkstemp(dir=root, prefix=PARTIAL_PREFIX)
            with os.fdopen(fd, "wb") as out:
                out.write(piece)
                out.flush()
                os.fsync(out.fileno())
            pieces.append((hashlib.sha256(piece).digest(), Path(name)))
            size += len(piece)
    except BaseException:
        drop_pieces(pieces)
        raise
    return FileRef(size, tuple(digest for digest, _ in pieces)), pieces


def commit_pieces(store: BlobStore, pieces: Pieces, owner: str) -> None:
    """File each chunk under its name (inside a reservation); the ones already held are dropped."""
    try:
        for digest, partial in pieces:
            if store.has(digest):
                partial.unlink(missing_ok=True)
                continue
            with store.reservation(partial.stat().st_size, owner):
                store.commit(partial, digest, owner)
    finally:
        drop_pieces(pieces)


def drop_pieces(pieces: Pieces) -> None:
    for _, partial in pieces:
        partial.unlink(missing_ok=True)
