#!/bin/sh
# Build wordstats.wasm, a WASI command module, with Debian's clang, lld and wasi-libc:
#   apt-get install clang lld wasi-libc libclang-rt-dev-wasm32
set -eu
cd "$(dirname "$0")"
"${CC:-clang}" --target=wasm32-wasi --sysroot=/usr -O2 -o wordstats.wasm wordstats.c
echo "built $(pwd)/wordstats.wasm"
