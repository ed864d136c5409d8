#!/usr/bin/env bash
# wasmrule quickstart: from a fresh Debian machine to the EMQX "MQTT to Redis" demo
# running, in one command.
#
#   examples/quickstart.sh                 run the demo until Ctrl-C
#   examples/quickstart.sh --duration 30   ... or for 30 seconds
#
# Installs redis-server with apt-get when it is missing (asking sudo if you are not
# root), builds wasmrule and the demo's rules, then runs `wasmrule demo`: an MQTT broker
# inside wasmrule on 127.0.0.1:1883 (override with --broker ADDR), simulated devices,
# the demo's four rules, and a private redis-server on a free loopback port. The screen
# shows the Redis hashes the rules fill. Any extra arguments go to `wasmrule demo`.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

if ! command -v redis-server >/dev/null 2>&1; then
    say "Installing redis-server (apt-get)"
    sudo=""
    [ "$(id -u)" != 0 ] && sudo=sudo
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust first (https://rustup.rs), then run this again." >&2
    exit 1
fi

say "Building wasmrule (release) and the demo's rules (first build: several minutes)"
(cd "$root" && cargo build --release -q -p wasmrule)
"$root/rules-wasm/build.sh" rust >/dev/null

say "Starting the demo (Ctrl-C stops it)"
cd "$root"
exec target/release/wasmrule demo "$@"
