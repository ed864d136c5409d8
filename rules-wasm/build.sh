#!/usr/bin/env bash
# Builds every rule in rules-wasm/ into rules-wasm/dist/<rule>.wasm.
#
# Rust rules are the crates in rules-wasm/*/Cargo.toml, built for wasm32-unknown-unknown
# with the workspace's `rule` profile (optimised, LTO, panic=abort, stripped).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
dist="$here/dist"
mkdir -p "$dist"

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    echo "build.sh: installing the wasm32-unknown-unknown target (rustup target add)" >&2
    rustup target add wasm32-unknown-unknown
fi

crates=()
for manifest in "$here"/*/Cargo.toml; do
    crates+=("$(basename "$(dirname "$manifest")")")
done

args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done
(cd "$root" && cargo build --quiet --profile rule --target wasm32-unknown-unknown "${args[@]}")

out="$root/target/wasm32-unknown-unknown/rule"
for c in "${crates[@]}"; do
    cp "$out/${c//-/_}.wasm" "$dist/$c.wasm"
    printf '%-40s %7d bytes\n' "dist/$c.wasm" "$(stat -c %s "$dist/$c.wasm")"
done
