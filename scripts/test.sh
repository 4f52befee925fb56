#!/usr/bin/env bash
# Runs the whole test suite: unit, property and end-to-end tests (real daemons on
# 127.0.0.1 in temporary directories) and a short smoke run of the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
# The Socket.IO reference peer's packages: its tests skip without them (and fail under
# CI=true). `npm ls` succeeds only when node_modules matches the lock file.
if command -v npm >/dev/null 2>&1; then
  npm ls --prefix benches/peers/socketio >/dev/null 2>&1 || npm ci --prefix benches/peers/socketio --no-audit --no-fund
fi
cargo test --workspace --all-targets "$@"
# The HTML renderer of rich text (and its XSS corpus) is an opt-in feature of the protocol
# crate, so that apps embedding the SDK do not compile an HTML sanitizer they do not use.
cargo test -p legalchat-protocol --features html --all-targets "$@"
cargo test --workspace --doc
