#!/usr/bin/env bash
# The test suite: builds the rule modules (every language), then runs every test in the
# workspace (unit tests, SDK doc tests, and integration and fault-injection tests that
# start their own redis-server and mosquitto on free loopback ports), then the ABI
# conformance suite against every language's rules.
set -euo pipefail
cd "$(dirname "$0")"
rules-wasm/build.sh
cargo test --workspace
guest-sdk/conformance/run.sh
