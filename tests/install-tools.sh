#!/usr/bin/env bash
# Installs what the test suite (./test.sh) needs and this machine lacks; run by
# ./test.sh before anything else. Checks first and installs only what is missing, so on
# a machine that has everything it takes well under a second and changes nothing.
#
#   apt-get (after apt-get update; sudo when not root):
#     redis-server, mosquitto    real servers for the integration tests (started by the
#                                tests on free loopback ports; the packages' services
#                                are not used)
#     redis-tools                redis-cli: tests/scale.rs creates and reshards a Redis
#                                Cluster with it (redis-server --sentinel is the
#                                sentinel)
#     mosquitto-clients          the quickstart and examples/hot-reload.sh
#     prometheus                 a real Prometheus scraping wasmrule, evaluating every
#                                query of examples/grafana/wasmrule.json
#                                (tests/observability.rs; its service is not used)
#     chromium                   headless, loading the web console (tests/observability.rs)
#     wabt                       wat2wasm: the WAT rules and the docs' example
#     clang, lld                 the C rules
#     nodejs, npm                the AssemblyScript and JavaScript rules (when no npm)
#     python3-pip                when python3 has no pip
#   rustup target add wasm32-unknown-unknown
#   npm ci in guest-sdk/assemblyscript and guest-sdk/javascript (from inside each
#     folder: npm 11 does not find the lockfile with --prefix)
#   pip: ziglang and componentize-py, at the versions rules-wasm/build.sh pins
#
# WASMRULE_INSTALL=0 only reports what is missing, and fails if anything is.
set -euo pipefail
cd "$(dirname "$0")/.."

# The pins of rules-wasm/build.sh.
zig_version=0.17.1
componentize_py_version=0.25.1
python=${PYTHON:-python3}
install=${WASMRULE_INSTALL:-1}

say() { printf 'install-tools: %s\n' "$*" >&2; }
# On PATH, or in the sbin directories Debian puts mosquitto in (not on a user's PATH).
has() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 || -x /sbin/$1 ]]; }

if ! has cargo || ! has rustup; then
    say "cargo and rustup not found: install Rust first (https://rustup.rs), then run this again"
    exit 1
fi

# Each apt package, and the command that shows it is installed.
apt_missing=()
for pair in redis-server:redis-server redis-tools:redis-cli mosquitto:mosquitto mosquitto-clients:mosquitto_pub \
    wabt:wat2wasm clang:clang lld:wasm-ld prometheus:prometheus chromium:chromium; do
    has "${pair#*:}" || apt_missing+=("${pair%%:*}")
done
has npm || apt_missing+=(nodejs npm)
has "$python" || apt_missing+=(python3)
"$python" -m pip --version >/dev/null 2>&1 || apt_missing+=(python3-pip)

wasm_target=wasm32-unknown-unknown
rustup target list --installed 2>/dev/null | grep -qx "$wasm_target" || need_target=1
npm_missing=()
[[ -x guest-sdk/assemblyscript/node_modules/.bin/asc ]] || npm_missing+=(guest-sdk/assemblyscript)
[[ -x guest-sdk/javascript/node_modules/.bin/componentize-qjs ]] || npm_missing+=(guest-sdk/javascript)
pip_missing=()
found=$("$python" -m ziglang version 2>/dev/null || true)
[[ $found == "$zig_version" ]] || pip_missing+=("ziglang==$zig_version")
found=$("$python" -c 'import componentize_py; componentize_py.script()' --version 2>/dev/null || true)
[[ $found == "componentize-py $componentize_py_version" ]] ||
    pip_missing+=("componentize-py==$componentize_py_version")

if ((${#apt_missing[@]} + ${#npm_missing[@]} + ${#pip_missing[@]} == 0)) && [[ -z ${need_target:-} ]]; then
    exit 0
fi
if [[ $install == 0 ]]; then
    say "missing (WASMRULE_INSTALL=0, so not installing):"
    ((${#apt_missing[@]} == 0)) || say "  apt-get install ${apt_missing[*]}"
    [[ -z ${need_target:-} ]] || say "  rustup target add $wasm_target"
    for dir in "${npm_missing[@]}"; do say "  (cd $dir && npm ci)"; done
    ((${#pip_missing[@]} == 0)) || say "  $python -m pip install ${pip_missing[*]}"
    exit 1
fi

if ((${#apt_missing[@]} > 0)); then
    sudo=""
    if [[ $(id -u) != 0 ]]; then
        if ! has sudo; then
            say "need root (or sudo) to apt-get install ${apt_missing[*]}"
            exit 1
        fi
        sudo=sudo
    fi
    say "apt-get install ${apt_missing[*]}"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${apt_missing[@]}"
fi
if [[ -n ${need_target:-} ]]; then
    say "rustup target add $wasm_target"
    rustup target add "$wasm_target"
fi
for dir in "${npm_missing[@]}"; do
    say "npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund)
done
if ((${#pip_missing[@]} > 0)); then
    say "pip install ${pip_missing[*]}"
    "$python" -m pip install --quiet "${pip_missing[@]}"
fi
