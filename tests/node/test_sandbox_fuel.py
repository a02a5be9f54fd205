"""A module's own size costs fuel (ADR 0005): data segments and code are charged before it runs."""

from __future__ import annotations

import wasmtime

from hearth.node.sandbox import ErrorKind, SandboxPool
from hearth.node.sandbox.model import CODE_FUEL_PER_BYTE, WASM_SECTIONS_SCANNED_MAX, module_fuel
from hearth.node.sandbox.shipped import wasm_bytes
from tests.node.test_sandbox import pool, request  # noqa: F401 - pool is a fixture

MIB = 1 << 20
HELLO_CODE = """
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 20)
  (data (i32.const 16) "hello\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 6))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
"""


def hello(extra: str = "") -> bytes:
    return wasmtime.wat2wasm(f"(module {HELLO_CODE} {extra})")


def with_data_segment(size_bytes: int) -> bytes:
    """The same code as ``hello()`` with one more (active) data segment of ``size_bytes``."""
    return hello(f'(data (i32.const 65536) "{"ab" * (size_bytes // 2)}")')


async def test_a_1_mib_data_segment_costs_its_bytes_in_fuel(pool: SandboxPool) -> None:  # noqa: F811
    small, big = hello(), with_data_segment(MIB)
    plain = await pool.run(request(small))
    heavy = await pool.run(request(big))
    assert plain.ok and heavy.ok, (plain.error_message, heavy.error_message)
    assert plain.output == heavy.output == b"hello\n"
    # Every byte is read (1 fuel) and every data byte copied (1 more): >= 2 MiB more, exactly
    # the difference in the charge, since the code that runs is the same.
    assert heavy.fuel_used - plain.fuel_used == module_fuel(big) - module_fuel(small)
    assert heavy.fuel_used - plain.fuel_used >= 2 * MIB
    again = await pool.run(request(big))
    assert again.fuel_used == heavy.fuel_used  # deterministic, cached compile or not


async def test_a_module_larger_than_its_fuel_runs_out_before_compiling(
    pool: SandboxPool,  # noqa: F811
) -> None:
    big = with_data_segment(MIB)
    enough_for_small = 100_000
    assert module_fuel(hello()) < enough_for_small < module_fuel(big)
    assert (await pool.run(request(hello(), fuel_max=enough_for_small))).ok
    result = await pool.run(request(big, fuel_max=enough_for_small))
    assert result.error_kind is ErrorKind.OUT_OF_FUEL
    assert result.fuel_used == enough_for_small
    assert "module's size" in result.error_message


def test_code_costs_more_per_byte_than_data() -> None:
    functions = "".join(
        f"(func $f{i} (param i32) (result i32) (i32.add (local.get 0) (i32.const {i})))"
        for i in range(2000)
    )
    big_code = hello(functions)
    extra_bytes = len(big_code) - len(hello())
    extra_fuel = module_fuel(big_code) - module_fuel(hello())
    assert extra_fuel > CODE_FUEL_PER_BYTE * extra_bytes // 2  # most of it is code
    assert module_fuel(wasm_bytes("spin")) > len(wasm_bytes("spin"))


def test_the_charge_of_malformed_bytes_is_their_length() -> None:
    for junk in (b"\0asm\x01\0\0\0", b"\0asm\x01\0\0\0\x0a\xff\xff\xff\xff\xff", b"\0asm"):
        assert module_fuel(junk) == len(junk)
    truncated = hello()[:-3]
    assert module_fuel(truncated) >= len(truncated)


def test_a_module_of_endless_sections_is_charged_as_code_past_the_scan() -> None:
    """Custom sections may repeat: past the scan's limit the rest is charged as code, so code
    cannot hide behind them, and the scan of 32 MiB of tiny sections stays quick."""
    custom = b"\x00\x01\x00"  # an empty-named custom section of one byte
    padded = b"\0asm\x01\0\0\0" + custom * (WASM_SECTIONS_SCANNED_MAX + 10)
    rest = 10 * len(custom)
    assert module_fuel(padded) == len(padded) + CODE_FUEL_PER_BYTE * rest
    huge = b"\0asm\x01\0\0\0" + custom * (11 << 20)
    assert module_fuel(huge) > CODE_FUEL_PER_BYTE * (len(huge) - 4096)
