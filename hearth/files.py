"""The SDK's side of jobs with files (ADR 0024): inputs chunked and uploaded (only the chunks the
node lacks), and an output tree downloaded and checked chunk by chunk into a folder.

Files are read and written one chunk at a time, so a 1 GB input never sits in memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

from hearth.node import chunks

Progress = Callable[[str, int, int], None]  # (stage, bytes done, bytes total)
OUTPUT_MB_MAX_DEFAULT = 1024
OUTPUT_FILES_MAX_DEFAULT = 1000
MISSING_BATCH = 10_000
# A winner must fetch the input before its lease ends, and the derived lease counts only the
# run (protocol/lease.py): a job with files gets a lease that allows this slow a transfer too.
LEASE_TRANSFER_BYTES_PER_S = 2 * 1024 * 1024
LEASE_BASE_S = 60


def lease_s_for(input_bytes: int, deadline_s: int) -> int:
    return min(deadline_s, LEASE_BASE_S + input_bytes // LEASE_TRANSFER_BYTES_PER_S)


class FilesError(Exception):
    """An input cannot be read, or an output not written; the message says which and why."""


def no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class JobFiles:
    """Inputs, arguments, environment and output folder of one job (all optional)."""

    inputs: tuple[Path, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    stdin: Path | None = None
    output_dir: Path | None = None
    output_mb_max: int = OUTPUT_MB_MAX_DEFAULT
    output_files_max: int = OUTPUT_FILES_MAX_DEFAULT

    @classmethod
    def of(
        cls,
        inputs: Iterable[str | Path] = (),
        args: Iterable[str] = (),
        env: Mapping[str, str] | None = None,
        stdin: str | Path | None = None,
        output_dir: str | Path | None = None,
        **bounds: int,
    ) -> JobFiles:
        return cls(
            inputs=tuple(Path(p) for p in inputs),
            args=tuple(args),
            env=tuple(sorted((env or {}).items())),
            stdin=None if stdin is None else Path(stdin),
            output_dir=None if output_dir is None else Path(output_dir),
            **bounds,
        )

    @property
    def used(self) -> bool:
        return bool(self.inputs or self.args or self.env or self.stdin or self.output_dir)


def input_files(inputs: Iterable[Path]) -> list[tuple[str, Path]]:
    """(path under /input, host file), sorted: a file goes in by its name, a folder's contents
    go in as they are. A missing path, a link or a name given twice is refused."""
    found: dict[str, Path] = {}
    for given in inputs:
        if given.is_dir():
            pairs = [
                (p.relative_to(given).as_posix(), p) for p in sorted(given.rglob("*")) if _file(p)
            ]
        elif given.is_file():
            pairs = [(given.name, given)]
        else:
            raise FilesError(f"input {given} does not exist")
        for name, path in pairs:
            problem = chunks.check_path(name)
            if problem:
                raise FilesError(f"input {path}: its name is {problem}")
            if name in found:
                raise FilesError(f"two inputs would be /input/{name}: {found[name]} and {path}")
            found[name] = path
    return sorted(found.items())


def _file(path: Path) -> bool:
    if path.is_symlink():
        raise FilesError(f"input {path} is a link; give the file it points to")
    return path.is_file()


class BlobApi(Protocol):
    def _call(self, method: str, path: str, **kwargs: Any) -> Any: ...


def upload(
    api: BlobApi, files: JobFiles, stdin: bytes = b"", progress: Progress = no_progress
) -> tuple[bytes, int]:
    """Upload every chunk of the inputs the node lacks, then the bundle; its hash. ``stdin``
    is used when no stdin file is given. Returns the bundle's hash and the input's bytes."""
    named = input_files(files.inputs)
    if files.stdin is not None and not files.stdin.is_file():
        raise FilesError(f"stdin file {files.stdin} does not exist")
    for key, _ in files.env:
        problem = chunks.check_env_name(key)
        if problem:
            raise FilesError(problem)
    sources = [path for _, path in named] + ([files.stdin] if files.stdin else [])
    refs = {path: _ref(path) for path in sources}
    total = sum(ref.size_bytes for ref in refs.values())
    lacking = _missing(api, [d for ref in refs.values() for d in ref.chunks])
    done = total - sum(
        size for ref in refs.values() for d, size in ref.chunk_sizes() if d in lacking
    )
    progress("upload", done, total)
    for path, ref in refs.items():
        for digest, piece in zip(ref.chunks, chunks.read_pieces(path), strict=True):
            if digest in lacking:
                if hashlib.sha256(piece).digest() != digest:
                    raise FilesError(f"input {path} changed while it was being uploaded")
                api._call("PUT", "/v1/blobs", content=piece)
                lacking.discard(digest)
                done += len(piece)
                progress("upload", done, total)
    bounded = files.output_dir is not None
    bundle = chunks.Bundle(
        args=files.args,
        env=files.env,
        stdin=refs[files.stdin] if files.stdin else None,
        files=tuple((name, refs[path]) for name, path in named),
        output_bytes_max=files.output_mb_max << 20 if bounded else 0,
        output_files_max=files.output_files_max if bounded else 0,
    )
    if stdin and files.stdin is None:
        step = chunks.CHUNK_BYTES
        pieces = [stdin[i : i + step] for i in range(0, len(stdin), step)]
        digests = [api._call("PUT", "/v1/blobs", content=piece)["hash"] for piece in pieces]
        ref = chunks.FileRef(len(stdin), tuple(bytes.fromhex(d) for d in digests))
        bundle = dataclasses.replace(bundle, stdin=ref)
    data = bundle.encode()
    digest = bytes.fromhex(api._call("PUT", "/v1/blobs", content=data)["hash"])
    return digest, bundle.input_bytes


def _ref(path: Path) -> chunks.FileRef:
    try:
        return chunks.ref_of(path)[0]
    except chunks.ManifestError as exc:
        raise FilesError(str(exc)) from None


def _missing(api: BlobApi, digests: list[bytes]) -> set[bytes]:
    lacking: set[bytes] = set()
    unique = list(dict.fromkeys(digests))
    for start in range(0, len(unique), MISSING_BATCH):
        batch = [d.hex() for d in unique[start : start + MISSING_BATCH]]
        answer = api._call("POST", "/v1/blobs/missing", json={"hashes": batch})
        lacking.update(bytes.fromhex(h) for h in answer["missing"])
    return lacking


def tree_of(data: bytes) -> chunks.Tree | None:
    if chunks.kind_of(data) != "tree":
        return None
    return chunks.decode_tree(data)


def wait_fetched(api: BlobApi, job_id: str, total: int, progress: Progress) -> None:
    """Wait for the node to fetch the output's chunks from the workers."""
    after = -1
    while True:
        status = api._call(
            "GET", f"/v1/jobs/{job_id}/outputs", params={"wait_s": 20, "after_bytes": after}
        )
        progress("fetch", status["done_bytes"], status["total_bytes"])
        if status["state"] == "failed":
            raise FilesError(f"the node could not fetch the output: {status['error']}")
        if status["state"] == "done":
            return
        after = status["done_bytes"]


def download(
    api: BlobApi, tree: chunks.Tree, output_dir: Path, progress: Progress = no_progress
) -> tuple[bytes, tuple[str, ...]]:
    """Write the tree's files under ``output_dir`` (each chunk hash-checked); (stdout, paths)."""
    total = tree.total_bytes
    done = 0
    stdout = b"".join(_chunk(api, digest) for digest in tree.stdout.chunks)
    done += len(stdout)
    root = output_dir.resolve()
    for name, ref in tree.files:
        target = root / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with target.open("wb") as out:
                for digest in ref.chunks:
                    piece = _chunk(api, digest)
                    out.write(piece)
                    done += len(piece)
                    progress("download", done, total)
        except OSError as exc:
            raise FilesError(f"cannot write {target}: {exc.strerror or exc}") from None
    progress("download", total, total)
    return stdout, tuple(name for name, _ in tree.files)


def _chunk(api: BlobApi, digest: bytes) -> bytes:
    data = api._call("GET", f"/v1/blobs/{digest.hex()}")
    if not isinstance(data, bytes) or hashlib.sha256(data).digest() != digest:
        raise FilesError(f"the node returned a bad chunk {digest.hex()[:16]}")
    return data
