#!/usr/bin/env bash
# Runs the conformance fixtures in this folder against every built module of their rule.
#
# A fixture <rule>.json names a rule and lists cases: an event and either the commands
# the rule must return (as `wasmrule eval` prints them) or "error": true, meaning the
# rule must report an error (tag 1, shown by eval as `failed (rule_error)`). A trap or
# any other failure does not count as the expected error.
#
# The modules tried for a rule are rules-wasm/dist/<rule>.wasm (Rust) and
# rules-wasm/dist/<rule>-*.wasm (other languages: -c, -as, -zig, -wat). Each must also
# declare exactly that rule name in its manifest.
#
# Environment: WASMRULE, the wasmrule binary (default target/debug/wasmrule); DIST, the
# folder of modules (default rules-wasm/dist). Relative paths are from the repository
# root. Exits non-zero if any case fails or no module is found.
#
# Each case is one `wasmrule eval` run for now; `wasmrule test RULE.wasm CASES.json`
# will read these same files.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"

wasmrule=${WASMRULE:-target/debug/wasmrule}
dist=${DIST:-rules-wasm/dist}

if ! command -v jq >/dev/null; then
    echo "run.sh: jq is missing; install it with: apt-get install -y jq" >&2
    exit 2
fi
if [[ ! -x $wasmrule ]]; then
    echo "run.sh: no wasmrule binary at $wasmrule (build it with cargo build -p wasmrule," \
        "or set WASMRULE)" >&2
    exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

failed=0
total=0

# Prints the first lines of a file, indented, for a failure report.
show() { sed -n '1,20s/^/      /p' "$1"; }

for fixture in "$here"/*.json; do
    rule=$(jq -r '.rule' "$fixture")
    count=$(jq '.cases | length' "$fixture")
    shopt -s nullglob
    modules=("$dist/$rule.wasm" "$dist/$rule"-*.wasm)
    shopt -u nullglob
    present=()
    for m in "${modules[@]}"; do [[ -f $m ]] && present+=("$m"); done
    if ((${#present[@]} == 0)); then
        echo "FAIL $rule: no module in $dist (run rules-wasm/build.sh)"
        failed=$((failed + 1))
        continue
    fi

    # One file per case, shared by every module.
    for ((i = 0; i < count; i++)); do
        jq -c ".cases[$i].event" "$fixture" >"$tmp/event-$i.json"
        jq -r ".cases[$i].name" "$fixture" >"$tmp/name-$i"
        if [[ $(jq ".cases[$i].error == true" "$fixture") == true ]]; then
            echo error >"$tmp/kind-$i"
        else
            echo commands >"$tmp/kind-$i"
            jq -r ".cases[$i].commands[]" "$fixture" >"$tmp/expected-$i"
        fi
    done

    for module in "${present[@]}"; do
        ok=0
        bad=0
        name=$("$wasmrule" check "$module" 2>&1 | sed -n 's/^  name: *//p' || true)
        if [[ $name != "$rule" ]]; then
            echo "FAIL $module: manifest name is '${name}', expected '$rule'"
            "$wasmrule" check "$module" 2>&1 | sed 's/^/      /' || true
            failed=$((failed + 1))
            continue
        fi
        for ((i = 0; i < count; i++)); do
            total=$((total + 1))
            rc=0
            "$wasmrule" eval "$module" --event "$tmp/event-$i.json" \
                >"$tmp/out" 2>"$tmp/err" || rc=$?
            case_name=$(cat "$tmp/name-$i")
            if [[ $(cat "$tmp/kind-$i") == error ]]; then
                if ((rc != 0)) && grep -q 'failed (rule_error)' "$tmp/err"; then
                    ok=$((ok + 1))
                    continue
                fi
                echo "FAIL $module: $case_name"
                echo "    expected a rule error, got exit status $rc"
                echo "    stdout:"
                show "$tmp/out"
                echo "    stderr:"
                show "$tmp/err"
            else
                if ((rc == 0)) && cmp -s "$tmp/expected-$i" "$tmp/out"; then
                    ok=$((ok + 1))
                    continue
                fi
                echo "FAIL $module: $case_name"
                echo "    exit status $rc; diff expected actual:"
                diff -u --label expected --label actual "$tmp/expected-$i" "$tmp/out" |
                    sed 's/^/      /' || true
                if [[ -s $tmp/err ]]; then
                    echo "    stderr:"
                    show "$tmp/err"
                fi
            fi
            bad=$((bad + 1))
        done
        failed=$((failed + bad))
        printf '%-4s %-45s %3d/%d cases\n' "$( ((bad == 0)) && echo ok || echo FAIL)" \
            "$module" "$ok" "$count"
    done
done

if ((failed > 0)); then
    echo "conformance: $failed failure(s) in $total case runs"
    exit 1
fi
echo "conformance: all $total case runs passed"
