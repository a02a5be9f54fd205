"""The small WAT modules shipped with the node (node/sandbox/modules/): demos, tests, benchmark."""

from __future__ import annotations

from importlib import resources

import wasmtime


def module_names() -> list[str]:
    folder = resources.files("hearth.node.sandbox").joinpath("modules")
    names = (entry.name for entry in folder.iterdir())
    return sorted(name.removesuffix(".wat") for name in names if name.endswith(".wat"))


def wat_text(name: str) -> str:
    return (
        resources.files("hearth.node.sandbox").joinpath("modules", f"{name}.wat").read_text("utf-8")
    )


def wasm_bytes(name: str) -> bytes:
    """The shipped module ``name`` compiled from WAT to a wasm binary."""
    return bytes(wasmtime.wat2wasm(wat_text(name)))
