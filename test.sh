#!/usr/bin/env bash
# The test suite: builds the rule modules, then runs every test in the workspace
# (unit tests, SDK doc tests, and integration tests that start their own redis-server
# and mosquitto on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")"
rules-wasm/build.sh
cargo test --workspace
