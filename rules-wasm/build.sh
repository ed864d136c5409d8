#!/usr/bin/env bash
# Builds every rule in rules-wasm/ into rules-wasm/dist/<rule>.wasm.
#
# Rust rules are the crates in rules-wasm/*/Cargo.toml, built for wasm32-unknown-unknown
# with the workspace's `rule` profile (optimised, LTO, panic=abort, stripped).
#
# The two seed rules also exist in C, AssemblyScript, Zig and hand-written WebAssembly
# text (rules-wasm/c, assemblyscript, zig, wat), built into
# dist/<rule>-<c|as|zig|wat>.wasm. They show the ABI works from outside Rust;
# guest-sdk/conformance/run.sh checks that every build of a rule behaves the same.
#
# They also exist as components of the WIT world wasmrule:rule@1.0.0
# (guest-sdk/wit/rule.wit) in Python, JavaScript and Rust (rules-wasm/python,
# javascript, component/<rule>), built into dist/<rule>-<py|js|component>.wasm.
#
# The ABI v2 rule threshold-alert (reads Redis, publishes alerts) exists in Rust, C,
# AssemblyScript, Zig and WAT, built the same way; guest-sdk/conformance/
# threshold-alert.json holds every build to the same reads and actions.
#
# threshold-alert also exists as components of the v2 world wasmrule:rule@2.0.0
# (guest-sdk/wit-v2/rule.wit) in Python, JavaScript and Rust (rules-wasm/python-v2,
# javascript-v2, component-v2/<rule>), built with py, js and component into
# dist/<rule>-<py|js|component>.wasm like the others.
#
# The EMQX demo's four rules (store-last-message, authz-stats, disconnect-reasons,
# dropped-messages) exist in C and JavaScript too (docs/emqx-migration.md), built the
# same way and checked by their own conformance fixtures.
#
# Usage: rules-wasm/build.sh [rust] [c] [as] [zig] [wat] [py] [js] [component]
#        (no argument: all of them)
#
# Toolchains, pinned (docs/writing-rules.md):
#   rust  rustup target add wasm32-unknown-unknown (added here when missing)
#   c     apt-get install -y clang lld                 (Debian 12: clang 14)
#   as    apt-get install -y nodejs npm (Node >= 20), then
#         (cd guest-sdk/assemblyscript && npm ci)     (assemblyscript 0.28.20)
#   zig   pip install ziglang==0.17.1
#   wat   apt-get install -y wabt
#   py    pip install componentize-py==0.25.1
#   js    apt-get install -y nodejs npm (Node >= 20), then
#         (cd guest-sdk/javascript && npm ci)         (componentize-qjs 0.4.5)
#   component  as rust; wasmrule-componentize (guest-sdk/componentize) is built here
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
dist="$here/dist"
mkdir -p "$dist"

langs=("$@")
if ((${#langs[@]} == 0)); then langs=(rust c as zig wat py js component); fi
for l in "${langs[@]}"; do
    case $l in
    rust | c | as | zig | wat | py | js | component) ;;
    *)
        echo "build.sh: unknown language '$l' (expected rust, c, as, zig, wat, py, js or component)" >&2
        exit 2
        ;;
    esac
done
want() { [[ " ${langs[*]} " == *" $1 "* ]]; }

size() { printf '%-40s %9d bytes\n' "dist/$1" "$(stat -c %s "$dist/$1")"; }

# Check every toolchain the requested languages need before building anything, so a
# missing one is reported at once and with the command that installs it.
zig_version=0.17.1
python=${PYTHON:-python3}
asc="$root/guest-sdk/assemblyscript/node_modules/.bin/asc"
componentize_py_version=0.25.1
componentize_py() { "$python" -c 'import componentize_py; componentize_py.script()' "$@"; }
qjs="$root/guest-sdk/javascript/node_modules/.bin/componentize-qjs"
missing=()
if want c; then
    command -v clang >/dev/null || missing+=("clang (C rules): apt-get install -y clang lld")
    command -v wasm-ld >/dev/null || missing+=("wasm-ld (C rules): apt-get install -y lld")
fi
if want as; then
    if ! command -v node >/dev/null; then
        missing+=("node >= 20 (AssemblyScript rules): apt-get install -y nodejs npm")
    elif [[ ! -x $asc ]]; then
        missing+=("asc (AssemblyScript rules): (cd guest-sdk/assemblyscript && npm ci)")
    fi
fi
if want zig; then
    found=$("$python" -m ziglang version 2>/dev/null || true)
    if [[ $found != "$zig_version" ]]; then
        missing+=("Zig $zig_version (Zig rules; found '${found:-none}'): $python -m pip install ziglang==$zig_version")
    fi
fi
if want wat; then
    command -v wat2wasm >/dev/null || missing+=("wat2wasm (WAT rules): apt-get install -y wabt")
fi
if want py; then
    found=$(componentize_py --version 2>/dev/null || true)
    if [[ $found != "componentize-py $componentize_py_version" ]]; then
        missing+=("componentize-py $componentize_py_version (Python rules; found '${found:-none}'): $python -m pip install componentize-py==$componentize_py_version")
    fi
fi
if want js; then
    if ! command -v node >/dev/null; then
        missing+=("node >= 20 (JavaScript rules): apt-get install -y nodejs npm")
    elif [[ ! -x $qjs ]]; then
        missing+=("componentize-qjs (JavaScript rules): (cd guest-sdk/javascript && npm ci)")
    fi
fi
if ((${#missing[@]} > 0)); then
    echo "build.sh: missing toolchains; install them, or name the languages to build:" >&2
    printf '  %s\n' "${missing[@]}" >&2
    exit 1
fi

# Rust rules, core modules and components alike, are built for wasm32-unknown-unknown.
if want rust || want component; then
    if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
        echo "build.sh: installing the wasm32-unknown-unknown target (rustup target add)" >&2
        rustup target add wasm32-unknown-unknown
    fi
fi

# ---------------------------------------------------------------------------------------
# Rust: the crates in rules-wasm/*/Cargo.toml -> dist/<rule>.wasm
# ---------------------------------------------------------------------------------------
if want rust; then
    # The EMQX 4 backend pack's rules are in emqx4-backend/ beside the library they
    # share (which is no rule: no cdylib).
    crates=()
    for manifest in "$here"/*/Cargo.toml "$here"/emqx4-backend/*/Cargo.toml; do
        grep -q cdylib "$manifest" || continue
        crates+=("$(basename "$(dirname "$manifest")")")
    done

    args=()
    for c in "${crates[@]}"; do args+=(-p "$c"); done
    (cd "$root" && cargo build --quiet --profile rule --target wasm32-unknown-unknown "${args[@]}")

    # cargo writes to CARGO_TARGET_DIR when set (a target directory shared between
    # worktrees), else to the workspace's target/.
    out="${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/rule"
    for c in "${crates[@]}"; do
        cp "$out/${c//-/_}.wasm" "$dist/$c.wasm"
        size "$c.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# C: rules-wasm/c/<rule>.c with guest-sdk/c/wasmrule.h -> dist/<rule>-c.wasm
#
# No libc: -nostdlib, and the header supplies the allocator and memcpy. -O2 for speed
# (against -Oz: 2.6 against 3.0 us per store-last-message event, for 2-3 KB more);
# -mbulk-memory makes copies memory.copy instructions. The exports are named in the
# source (export_name attributes), so no --export flags.
# ---------------------------------------------------------------------------------------
if want c; then
    for src in "$here"/c/*.c; do
        rule=$(basename "$src" .c)
        clang --target=wasm32 -nostdlib -ffreestanding -O2 -mbulk-memory \
            -Wall -Wextra -Werror \
            -Wl,--no-entry -Wl,--strip-all \
            -I "$root/guest-sdk/c" -o "$dist/$rule-c.wasm" "$src"
        size "$rule-c.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# AssemblyScript: rules-wasm/assemblyscript/<rule>.ts with
# guest-sdk/assemblyscript/wasmrule.ts -> dist/<rule>-as.wasm
#
# --runtime stub: a bump allocator and no collector (an instance lives for one event).
# --use abort=: AssemblyScript's abort becomes a trap instead of an import.
# ---------------------------------------------------------------------------------------
if want as; then
    for src in "$here"/assemblyscript/*.ts; do
        rule=$(basename "$src" .ts)
        "$asc" "$src" -o "$dist/$rule-as.wasm" --runtime stub --use abort= -Oz
        size "$rule-as.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# Zig: rules-wasm/zig/<rule>.zig importing guest-sdk/zig/wasmrule.zig as the module
# `wasmrule` -> dist/<rule>-zig.wasm
#
# -rdynamic exports what the SDK marks with @export. --stack 65536: one page of stack
# instead of Zig's default 1 MiB (nothing recurses), so instances start with 2 pages.
# The compiler cache goes under target/, like cargo's.
# ---------------------------------------------------------------------------------------
if want zig; then
    for src in "$here"/zig/*.zig; do
        rule=$(basename "$src" .zig)
        "$python" -m ziglang build-exe -target wasm32-freestanding -fno-entry -rdynamic \
            -O ReleaseSmall --stack 65536 \
            --cache-dir "$root/target/zig-cache" --global-cache-dir "$root/target/zig-cache" \
            --dep wasmrule -Mroot="$src" -Mwasmrule="$root/guest-sdk/zig/wasmrule.zig" \
            -femit-bin="$dist/$rule-zig.wasm"
        size "$rule-zig.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# WebAssembly text: rules-wasm/wat/<rule>.wat -> dist/<rule>-wat.wasm
# ---------------------------------------------------------------------------------------
if want wat; then
    for src in "$here"/wat/*.wat; do
        rule=$(basename "$src" .wat)
        wat2wasm "$src" -o "$dist/$rule-wat.wasm"
        size "$rule-wat.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# Python: rules-wasm/python/<rule>.py with guest-sdk/python/wasmrule.py
# -> dist/<rule>-py.wasm
#
# componentize-py bundles CPython (no network needed) and snapshots the initialised
# interpreter into the component. --stub-wasi replaces every WASI import with a trap:
# without it the component imports WASI and wasmrule refuses it. The rule file is the
# app module (a hyphenated name is fine: it is imported by name, not by syntax). It
# leaves __pycache__ folders beside the sources (ignored by git).
# ---------------------------------------------------------------------------------------
if want py; then
    for src in "$here"/python/*.py; do
        rule=$(basename "$src" .py)
        componentize_py \
            -d "$root/guest-sdk/wit" -w rule componentize "$rule" \
            -p "$here/python" -p "$root/guest-sdk/python" --stub-wasi \
            -o "$dist/$rule-py.wasm" >/dev/null
        size "$rule-py.wasm"
    done
fi

# Python components of the v2 world: rules-wasm/python-v2/<rule>.py with
# guest-sdk/python/wasmrule_v2.py -> dist/<rule>-py.wasm
if want py; then
    for src in "$here"/python-v2/*.py; do
        rule=$(basename "$src" .py)
        componentize_py \
            -d "$root/guest-sdk/wit-v2" -w rule componentize "$rule" \
            -p "$here/python-v2" -p "$root/guest-sdk/python" --stub-wasi \
            -o "$dist/$rule-py.wasm" >/dev/null
        size "$rule-py.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# JavaScript: rules-wasm/javascript/<rule>.js importing guest-sdk/javascript/wasmrule.js
# -> dist/<rule>-js.wasm
#
# componentize-qjs embeds QuickJS and snapshots the evaluated module. --stub-wasi: no
# WASI imports (traps instead); --sync: no component-model async ABI; --opt-size: the
# smaller QuickJS build. Run from the repository root, which is the module root the
# relative SDK import resolves in.
# ---------------------------------------------------------------------------------------
if want js; then
    for src in "$here"/javascript/*.js; do
        rule=$(basename "$src" .js)
        (cd "$root" && "$qjs" --wit guest-sdk/wit --world rule --js "$src" \
            --stub-wasi --sync --opt-size -o "$dist/$rule-js.wasm" >/dev/null)
        size "$rule-js.wasm"
    done
fi

# JavaScript components of the v2 world: rules-wasm/javascript-v2/<rule>.js importing
# guest-sdk/javascript/wasmrule-v2.js -> dist/<rule>-js.wasm
if want js; then
    for src in "$here"/javascript-v2/*.js; do
        rule=$(basename "$src" .js)
        (cd "$root" && "$qjs" --wit guest-sdk/wit-v2 --world rule --js "$src" \
            --stub-wasi --sync --opt-size -o "$dist/$rule-js.wasm" >/dev/null)
        size "$rule-js.wasm"
    done
fi

# ---------------------------------------------------------------------------------------
# Rust components: the crates in rules-wasm/component/<rule>/ (package <rule>-component,
# wit-bindgen against guest-sdk/wit), built like the Rust rules, then made components by
# wasmrule-componentize (guest-sdk/componentize, wit-component) -> dist/<rule>-component.wasm
# ---------------------------------------------------------------------------------------
if want component; then
    rules=()
    for manifest in "$here"/component/*/Cargo.toml; do
        rules+=("$(basename "$(dirname "$manifest")")")
    done

    args=()
    for r in "${rules[@]}"; do args+=(-p "$r-component"); done
    (cd "$root" && cargo build --quiet -p wasmrule-componentize &&
        cargo build --quiet --profile rule --target wasm32-unknown-unknown "${args[@]}")

    out="${CARGO_TARGET_DIR:-$root/target}/wasm32-unknown-unknown/rule"
    for r in "${rules[@]}"; do
        "${CARGO_TARGET_DIR:-$root/target}/debug/wasmrule-componentize" "$out/${r//-/_}_component.wasm" \
            -o "$dist/$r-component.wasm"
        size "$r-component.wasm"
    done

    # The v2 world's crates, rules-wasm/component-v2/<rule>/ (package <rule>-component)
    # -> dist/<rule>-component.wasm
    rules=()
    for manifest in "$here"/component-v2/*/Cargo.toml; do
        rules+=("$(basename "$(dirname "$manifest")")")
    done
    args=()
    for r in "${rules[@]}"; do args+=(-p "$r-component"); done
    (cd "$root" && cargo build --quiet --profile rule --target wasm32-unknown-unknown "${args[@]}")
    for r in "${rules[@]}"; do
        "${CARGO_TARGET_DIR:-$root/target}/debug/wasmrule-componentize" "$out/${r//-/_}_component.wasm" \
            -o "$dist/$r-component.wasm"
        size "$r-component.wasm"
    done
fi
