#!/usr/bin/env bash
# The test suite, from a fresh Debian machine with Rust: installs what is missing
# (tests/install-tools.sh: apt-get, rustup, npm ci, pip; nothing when all is there;
# WASMRULE_INSTALL=0 only checks), builds the rule modules (every language), then runs
# every test in the workspace (unit tests, SDK doc tests, and integration and
# fault-injection tests that start their own redis-server and mosquitto on free loopback
# ports), then the ABI conformance suite against every language's rules, and the Python
# SDK's fast JSON path against its strict one.
set -euo pipefail
cd "$(dirname "$0")"
tests/install-tools.sh
rules-wasm/build.sh
cargo test --workspace
guest-sdk/conformance/run.sh
python3 guest-sdk/python/test_json_fast.py
