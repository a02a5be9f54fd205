"""A deterministic WASI preview1 for untrusted jobs: stdin from bytes, capped stdout, and the
job's own arguments, environment and /input and /output folders, if it has them (ADR 0024).

wasmtime's own WASI hands a guest the host's real clock and real randomness, which replicas
would not agree on, so this module defines every preview1 function itself. A job without a
bundle has no preopened directories, no arguments and no environment; no job has sockets: a
request for any of them finds nothing. The folders are served by ``wasi_fs``. Clocks read the
fuel spent so far as nanoseconds; randomness is a fixed SHA-256 stream. Every call costs fuel
for itself and for each byte it moves, so a guest cannot make the host work for free.
I/O: guest memory, and the job's folders. Time: none (fuel stands in for it).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import wasmtime as wt

from hearth.node.sandbox.wasi_fs import FsError, Preopens

MODULE: Final = "wasi_snapshot_preview1"
HOST_CALL_FUEL: Final = 100  # what one call into the host costs, besides its bytes
RANDOM_SEED: Final = b"hearth/wasi/random/1"

ERRNO_SUCCESS: Final = 0
ERRNO_BADF: Final = 8
ERRNO_FAULT: Final = 21
ERRNO_INVAL: Final = 28
ERRNO_NOTSUP: Final = 58
ERRNO_SPIPE: Final = 70

FILETYPE_CHARACTER_DEVICE: Final = 2
RIGHT_FD_READ: Final = 1 << 1
RIGHT_FD_WRITE: Final = 1 << 6
STDIO_FDS: Final = (0, 1, 2)


class ProcExit(Exception):
    """The guest called proc_exit."""

    def __init__(self, code: int) -> None:
        super().__init__(f"exit {code}")
        self.code = code


class OutputTooLarge(Exception):
    """The guest wrote more to stdout than the job allows."""


class FuelExhausted(Exception):
    """A host call cost more fuel than the guest had left."""


class GuestFault(Exception):
    """The guest passed a pointer outside its memory; answered with EFAULT."""


@dataclass
class JobIO:
    """The I/O state of the job now running in this worker."""

    input: bytes
    output_bytes_max: int
    stderr_bytes_max: int
    fuel_max: int
    store: wt.Store
    input_offset: int = 0
    output: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    random_counter: int = 0
    argv: tuple[str, ...] = ()  # empty unless the job has arguments: then "job.wasm", *args
    environ: tuple[str, ...] = ()  # "KEY=value"
    fs: Preopens | None = None  # /input and /output when the job has them (ADR 0024)
    seed: bytes = b""  # the job's (ADR 0022); empty gives the stream of ADR 0005

    def charge(self, byte_count: int) -> None:
        fuel = self.store.get_fuel()
        cost = HOST_CALL_FUEL + byte_count
        if cost > fuel:
            self.store.set_fuel(0)
            raise FuelExhausted
        self.store.set_fuel(fuel - cost)

    def fuel_spent(self) -> int:
        return self.fuel_max - self.store.get_fuel()


class _Memory:
    """Bounds-checked access to the calling instance's exported memory."""

    def __init__(self, caller: wt.Caller) -> None:
        memory = caller.get("memory")
        if not isinstance(memory, wt.Memory):
            raise GuestFault
        self.caller, self.memory = caller, memory

    def read(self, address: int, size: int) -> bytes:
        if address < 0 or size < 0 or address + size > self.memory.data_len(self.caller):
            raise GuestFault
        return bytes(self.memory.read(self.caller, address, address + size))

    def write(self, address: int, data: bytes) -> None:
        if address < 0 or address + len(data) > self.memory.data_len(self.caller):
            raise GuestFault
        self.memory.write(self.caller, data, address)

    def iovecs(self, address: int, count: int) -> list[tuple[int, int]]:
        raw = self.read(address, 8 * count)
        return [struct.unpack_from("<II", raw, 8 * i) for i in range(count)]


class Wasi:
    """The preview1 functions, defined once per engine on a linker; ``job`` is set per run."""

    def __init__(self) -> None:
        self.job: JobIO | None = None

    def current(self) -> JobIO:
        assert self.job is not None, "a WASI call arrived with no job running"
        return self.job

    def define(self, linker: wt.Linker) -> None:
        i32, i64 = wt.ValType.i32(), wt.ValType.i64()
        kinds = {"i": i32, "I": i64}
        for name, (params, handler) in self._table().items():
            results = [] if name == "proc_exit" else [i32]
            func_type = wt.FuncType([kinds[p] for p in params], results)
            linker.define_func(MODULE, name, func_type, self._wrap(handler), access_caller=True)

    def _wrap(self, handler: Callable[..., int | None]) -> Callable[..., int | None]:
        def host_call(caller: wt.Caller, *args: int) -> int | None:
            try:
                return handler(caller, *args)
            except GuestFault:
                return ERRNO_FAULT

        return host_call

    def _table(self) -> dict[str, tuple[str, Callable[..., int | None]]]:
        refuse_fd = self._refuse_fd
        nothing = self._nothing
        return {
            "args_get": ("ii", self._args_get),
            "args_sizes_get": ("ii", self._args_sizes_get),
            "environ_get": ("ii", self._environ_get),
            "environ_sizes_get": ("ii", self._environ_sizes_get),
            "clock_res_get": ("ii", self._clock_res_get),
            "clock_time_get": ("iIi", self._clock_time_get),
            "fd_advise": ("iIIi", refuse_fd),
            "fd_allocate": ("iII", refuse_fd),
            "fd_close": ("i", self._fd_close),
            "fd_datasync": ("i", refuse_fd),
            "fd_fdstat_get": ("ii", self._fd_fdstat_get),
            "fd_fdstat_set_flags": ("ii", refuse_fd),
            "fd_fdstat_set_rights": ("iII", refuse_fd),
            "fd_filestat_get": ("ii", self._fd_filestat_get),
            "fd_filestat_set_size": ("iI", refuse_fd),
            "fd_filestat_set_times": ("iIIi", refuse_fd),
            "fd_pread": ("iiiIi", refuse_fd),
            "fd_prestat_get": ("ii", self._fd_prestat_get),  # /input, /output if the job has them
            "fd_prestat_dir_name": ("iii", self._fd_prestat_dir_name),
            "fd_pwrite": ("iiiIi", refuse_fd),
            "fd_read": ("iiii", self._fd_read),
            "fd_readdir": ("iiiIi", refuse_fd),
            "fd_renumber": ("ii", refuse_fd),
            "fd_seek": ("iIii", self._fd_seek),
            "fd_sync": ("i", refuse_fd),
            "fd_tell": ("ii", self._fd_tell),
            "fd_write": ("iiii", self._fd_write),
            "path_create_directory": ("iii", self._path_create_directory),
            "path_filestat_get": ("iiiii", self._path_filestat_get),
            "path_filestat_set_times": ("iiiiIIi", nothing),
            "path_link": ("iiiiiii", nothing),
            "path_open": ("iiiiiIIii", self._path_open),
            "path_readlink": ("iiiiii", nothing),
            "path_remove_directory": ("iii", nothing),
            "path_rename": ("iiiiii", nothing),
            "path_symlink": ("iiiii", nothing),
            "path_unlink_file": ("iii", nothing),
            "poll_oneoff": ("iiii", self._not_supported),
            "proc_exit": ("i", self._proc_exit),
            "proc_raise": ("i", self._not_supported),
            "random_get": ("ii", self._random_get),
            "sched_yield": ("", self._sched_yield),
            "sock_accept": ("iii", nothing),
            "sock_recv": ("iiiiii", nothing),
            "sock_send": ("iiiii", nothing),
            "sock_shutdown": ("ii", nothing),
        }

    def _nothing(self, caller: wt.Caller, *args: int) -> int:
        # Every directory and socket descriptor the guest could name does not exist.
        self.current().charge(0)
        return ERRNO_BADF

    def _refuse_fd(self, caller: wt.Caller, fd: int, *args: int) -> int:
        self.current().charge(0)
        return ERRNO_NOTSUP if fd in STDIO_FDS else ERRNO_BADF

    def _not_supported(self, caller: wt.Caller, *args: int) -> int:
        self.current().charge(0)
        return ERRNO_NOTSUP

    def _sched_yield(self, caller: wt.Caller) -> int:
        self.current().charge(0)
        return ERRNO_SUCCESS

    def _empty_list(self, caller: wt.Caller, *args: int) -> int:
        self.current().charge(0)
        return ERRNO_SUCCESS

    def _empty_sizes(self, caller: wt.Caller, count_ptr: int, size_ptr: int) -> int:
        self.current().charge(8)
        memory = _Memory(caller)
        memory.write(count_ptr, struct.pack("<I", 0))
        memory.write(size_ptr, struct.pack("<I", 0))
        return ERRNO_SUCCESS

    def _clock_res_get(self, caller: wt.Caller, clock_id: int, result_ptr: int) -> int:
        self.current().charge(8)
        if not 0 <= clock_id <= 3:
            return ERRNO_INVAL
        _Memory(caller).write(result_ptr, struct.pack("<Q", 1))
        return ERRNO_SUCCESS

    def _clock_time_get(
        self, caller: wt.Caller, clock_id: int, precision: int, result_ptr: int
    ) -> int:
        job = self.current()
        job.charge(8)
        if not 0 <= clock_id <= 3:
            return ERRNO_INVAL
        # Fuel spent stands in for nanoseconds: it moves forward, and every replica agrees on it.
        _Memory(caller).write(result_ptr, struct.pack("<Q", job.fuel_spent()))
        return ERRNO_SUCCESS

    def _fd_close(self, caller: wt.Caller, fd: int) -> int:
        self.current().charge(0)
        if self._file_fd(fd):
            return self._fs(lambda fs: fs.close(fd))
        return ERRNO_SUCCESS if fd in STDIO_FDS else ERRNO_BADF

    def _fd_fdstat_get(self, caller: wt.Caller, fd: int, result_ptr: int) -> int:
        self.current().charge(24)
        if self._file_fd(fd):
            return self._fs_out(caller, result_ptr, lambda fs: fs.fdstat(fd))
        if fd not in STDIO_FDS:
            return ERRNO_BADF
        rights = RIGHT_FD_READ if fd == 0 else RIGHT_FD_WRITE
        stat = struct.pack("<BxHxxxxQQ", FILETYPE_CHARACTER_DEVICE, 0, rights, 0)
        _Memory(caller).write(result_ptr, stat)
        return ERRNO_SUCCESS

    def _fd_filestat_get(self, caller: wt.Caller, fd: int, result_ptr: int) -> int:
        self.current().charge(64)
        if self._file_fd(fd):
            return self._fs_out(caller, result_ptr, lambda fs: fs.filestat(fd))
        if fd not in STDIO_FDS:
            return ERRNO_BADF
        stat = bytearray(64)
        stat[16] = FILETYPE_CHARACTER_DEVICE
        _Memory(caller).write(result_ptr, bytes(stat))
        return ERRNO_SUCCESS

    def _fd_read(self, caller: wt.Caller, fd: int, iovs: int, count: int, nread_ptr: int) -> int:
        job = self.current()
        job.charge(0)
        if self._file_fd(fd):
            return self._file_read(caller, fd, iovs, count, nread_ptr)
        if fd != 0:
            return ERRNO_BADF if fd not in STDIO_FDS else ERRNO_NOTSUP
        memory = _Memory(caller)
        total = 0
        for address, length in memory.iovecs(iovs, count):
            chunk = job.input[job.input_offset : job.input_offset + length]
            job.charge(len(chunk))
            memory.write(address, chunk)
            job.input_offset += len(chunk)
            total += len(chunk)
            if len(chunk) < length:
                break
        memory.write(nread_ptr, struct.pack("<I", total))
        return ERRNO_SUCCESS

    def _fd_write(self, caller: wt.Caller, fd: int, iovs: int, count: int, nw_ptr: int) -> int:
        job = self.current()
        job.charge(0)
        if self._file_fd(fd):
            return self._file_write(caller, fd, iovs, count, nw_ptr)
        if fd not in (1, 2):
            return ERRNO_BADF if fd != 0 else ERRNO_NOTSUP
        memory = _Memory(caller)
        total = 0
        for address, length in memory.iovecs(iovs, count):
            job.charge(length)
            data = memory.read(address, length)
            total += length
            if fd == 1:
                if len(job.output) + length > job.output_bytes_max:
                    raise OutputTooLarge(f"output passed {job.output_bytes_max} bytes")
                job.output += data
            else:
                room = job.stderr_bytes_max - len(job.stderr)
                job.stderr += data[: max(room, 0)]  # stderr is for diagnostics: kept, capped
        memory.write(nw_ptr, struct.pack("<I", total))
        return ERRNO_SUCCESS

    # Arguments, environment and the preopened folders (ADR 0024)

    def _strings_get(self, caller: wt.Caller, items: tuple[str, ...], ptrs: int, buf: int) -> int:
        encoded = [item.encode() + b"\0" for item in items]
        self.current().charge(sum(len(e) + 4 for e in encoded))
        memory = _Memory(caller)
        for index, data in enumerate(encoded):
            memory.write(ptrs + 4 * index, struct.pack("<I", buf))
            memory.write(buf, data)
            buf += len(data)
        return ERRNO_SUCCESS

    def _strings_sizes(
        self, caller: wt.Caller, items: tuple[str, ...], count_ptr: int, size_ptr: int
    ) -> int:
        self.current().charge(8)
        memory = _Memory(caller)
        memory.write(count_ptr, struct.pack("<I", len(items)))
        memory.write(size_ptr, struct.pack("<I", sum(len(i.encode()) + 1 for i in items)))
        return ERRNO_SUCCESS

    def _args_get(self, caller: wt.Caller, ptrs: int, buf: int) -> int:
        return self._strings_get(caller, self.current().argv, ptrs, buf)

    def _args_sizes_get(self, caller: wt.Caller, count_ptr: int, size_ptr: int) -> int:
        return self._strings_sizes(caller, self.current().argv, count_ptr, size_ptr)

    def _environ_get(self, caller: wt.Caller, ptrs: int, buf: int) -> int:
        return self._strings_get(caller, self.current().environ, ptrs, buf)

    def _environ_sizes_get(self, caller: wt.Caller, count_ptr: int, size_ptr: int) -> int:
        return self._strings_sizes(caller, self.current().environ, count_ptr, size_ptr)

    def _file_fd(self, fd: int) -> bool:
        fs = self.current().fs
        return fs is not None and fs.has(fd)

    def _fs(self, action: Callable[[Preopens], object]) -> int:
        fs = self.current().fs
        if fs is None:
            return ERRNO_BADF
        try:
            action(fs)
        except FsError as exc:
            return exc.errno
        return ERRNO_SUCCESS

    def _fs_out(self, caller: wt.Caller, address: int, action: Callable[[Preopens], bytes]) -> int:
        out: list[bytes] = []
        errno = self._fs(lambda fs: out.append(action(fs)))
        if errno == ERRNO_SUCCESS:
            _Memory(caller).write(address, out[0])
        return errno

    def _fd_prestat_get(self, caller: wt.Caller, fd: int, result_ptr: int) -> int:
        self.current().charge(8)
        return self._fs_out(caller, result_ptr, lambda fs: fs.prestat(fd))

    def _fd_prestat_dir_name(self, caller: wt.Caller, fd: int, path: int, length: int) -> int:
        self.current().charge(length)
        return self._fs_out(caller, path, lambda fs: fs.prestat_name(fd)[:length])

    def _path_open(
        self,
        caller: wt.Caller,
        fd: int,
        dirflags: int,
        path: int,
        length: int,
        oflags: int,
        rights: int,
        inheriting: int,
        fdflags: int,
        fd_ptr: int,
    ) -> int:
        self.current().charge(length)
        raw = _Memory(caller).read(path, length)
        return self._fs_out(
            caller,
            fd_ptr,
            lambda fs: struct.pack("<I", fs.open(fd, raw, oflags, rights, fdflags)),
        )

    def _path_create_directory(self, caller: wt.Caller, fd: int, path: int, length: int) -> int:
        self.current().charge(length)
        raw = _Memory(caller).read(path, length)
        return self._fs(lambda fs: fs.mkdir(fd, raw))

    def _path_filestat_get(
        self, caller: wt.Caller, fd: int, flags: int, path: int, length: int, result_ptr: int
    ) -> int:
        self.current().charge(64 + length)
        raw = _Memory(caller).read(path, length)
        return self._fs_out(caller, result_ptr, lambda fs: fs.path_filestat(fd, raw))

    def _fd_seek(self, caller: wt.Caller, fd: int, offset: int, whence: int, result: int) -> int:
        self.current().charge(8)
        if not self._file_fd(fd):
            return ERRNO_SPIPE if fd in STDIO_FDS else ERRNO_BADF
        return self._fs_out(
            caller, result, lambda fs: struct.pack("<Q", fs.seek(fd, offset, whence))
        )

    def _fd_tell(self, caller: wt.Caller, fd: int, result: int) -> int:
        self.current().charge(8)
        if not self._file_fd(fd):
            return ERRNO_SPIPE if fd in STDIO_FDS else ERRNO_BADF
        return self._fs_out(caller, result, lambda fs: struct.pack("<Q", fs.tell(fd)))

    def _file_read(self, caller: wt.Caller, fd: int, iovs: int, count: int, nread: int) -> int:
        job = self.current()
        assert job.fs is not None
        memory = _Memory(caller)
        total = 0
        for address, length in memory.iovecs(iovs, count):
            try:
                data = job.fs.read(fd, length)
            except FsError as exc:
                return exc.errno
            job.charge(len(data))
            memory.write(address, data)
            total += len(data)
            if len(data) < length:
                break
        memory.write(nread, struct.pack("<I", total))
        return ERRNO_SUCCESS

    def _file_write(self, caller: wt.Caller, fd: int, iovs: int, count: int, nw_ptr: int) -> int:
        job = self.current()
        assert job.fs is not None
        memory = _Memory(caller)
        total = 0
        for address, length in memory.iovecs(iovs, count):
            job.charge(length)
            try:
                job.fs.write(fd, memory.read(address, length))
            except FsError as exc:
                return exc.errno
            total += length
        memory.write(nw_ptr, struct.pack("<I", total))
        return ERRNO_SUCCESS

    def _proc_exit(self, caller: wt.Caller, code: int) -> None:
        raise ProcExit(code)

    def _random_get(self, caller: wt.Caller, address: int, length: int) -> int:
        job = self.current()
        job.charge(length)
        stream = bytearray()
        while len(stream) < length:
            block = RANDOM_SEED + job.seed + job.random_counter.to_bytes(8, "little")
            stream += hashlib.sha256(block).digest()
            job.random_counter += 1
        _Memory(caller).write(address, bytes(stream[:length]))
        return ERRNO_SUCCESS


def describe(value: Any) -> str:
    """An exception's first line, for a one-line error message."""
    text = str(value).strip()
    return text.splitlines()[0] if text else type(value).__name__
