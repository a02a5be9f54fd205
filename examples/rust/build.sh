#!/bin/sh
# Build topwords.wasm, a WASI command module, with Debian's rustc and its wasm32 standard library:
#   apt-get install rustc libstd-rust-dev-wasm32
# Newer rustc names the target wasm32-wasip1; Debian's 1.63 names it wasm32-wasi.
set -eu
cd "$(dirname "$0")"
if [ -z "${RUSTC:-}" ]; then
    if [ -x /usr/bin/rustc ]; then RUSTC=/usr/bin/rustc; else RUSTC=rustc; fi
fi
if "$RUSTC" --print target-list | grep -qx wasm32-wasip1; then TARGET=wasm32-wasip1; else TARGET=wasm32-wasi; fi
"$RUSTC" --edition 2021 -O --target "$TARGET" -o topwords.wasm topwords.rs
echo "built $(pwd)/topwords.wasm"
