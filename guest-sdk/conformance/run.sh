#!/usr/bin/env bash
# Runs the conformance fixtures in this folder against every built module of their rule,
# with `wasmrule test` (the same command rule authors use; case format in
# docs/writing-rules.md).
#
# A fixture <rule>.json names a rule and lists cases: an event and either the commands
# the rule must return (as `wasmrule eval` prints them) or an error; the fixtures here
# expect "rule reported an error", i.e. the rule's own error (tag 1): a trap or a limit
# does not count.
#
# Fixtures of ABI v2 rules (threshold-alert, action-kinds) give each case the Redis its
# reads see ("redis") and expect the reads ("reads") and the actions ("actions", MQTT
# publishes included) as `wasmrule eval` prints them.
#
# The modules tried for a rule are rules-wasm/dist/<rule>.wasm (Rust) and
# rules-wasm/dist/<rule>-*.wasm (other languages: -c, -as, -zig, -wat, ...). Each must
# declare exactly that rule name in its manifest (`wasmrule test` checks it).
#
# Environment: WASMRULE, the wasmrule binary (default target/debug/wasmrule); DIST, the
# folder of modules (default rules-wasm/dist). Exits non-zero if any case fails or a
# fixture has no module.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

wasmrule=${WASMRULE:-${CARGO_TARGET_DIR:-target}/debug/wasmrule}
dist=${DIST:-rules-wasm/dist}
if [[ ! -x $wasmrule ]]; then
    echo "run.sh: no wasmrule binary at $wasmrule (cargo build -p wasmrule, or set WASMRULE)" >&2
    exit 2
fi

failed=0
modules_run=0
for fixture in "$here"/*.json; do
    rule=$(sed -n 's/^ *"rule": *"\([^"]*\)".*/\1/p' "$fixture" | head -n 1)
    shopt -s nullglob
    modules=("$dist/$rule.wasm" "$dist/$rule"-*.wasm)
    shopt -u nullglob
    if ((${#modules[@]} == 0)); then
        echo "FAIL $rule: no module in $dist (run rules-wasm/build.sh)"
        failed=$((failed + 1))
        continue
    fi
    for module in "${modules[@]}"; do
        modules_run=$((modules_run + 1))
        # Behaviour, not speed: a generous deadline, so a busy machine cannot turn a
        # slow-starting component (CPython, QuickJS) into a timeout.
        if out=$("$wasmrule" test --timeout-ms 2000 "$module" "$fixture" 2>&1); then
            echo "$out" | tail -n 1
        else
            echo "$out" | grep -v '^ok ' || true
            failed=$((failed + 1))
        fi
    done
done
echo "conformance: $modules_run modules, $failed failing"
((failed == 0))
