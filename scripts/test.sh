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

# The bridge and the web app: Node tests with the official socket.io-client against a real
# daemon and bridge, and end-to-end tests in headless Chromium. Without Node.js they are
# skipped here (and fail under CI=true).
web=bridge-socketio/web
if command -v npm >/dev/null 2>&1; then
  cargo build -p legalchat-daemon --bin legalchatd -p legalchat-bridge --bin legalchat-bridge -p legalchat-benches --bin legalchat-load
  (cd "$web" && { npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund; } && node build.mjs)
  # One file at a time: each starts its own daemon and bridge.
  for t in "$web"/test/*.test.mjs; do
    (cd "$web" && node --test "test/$(basename "$t")")
  done
  # A short smoke of the load generator, so that it cannot rot: its comparison of LegalChat
  # (QUIC with a connection per user and multiplexed, and through the bridge with Socket.IO
  # clients) against the Node.js peer, at two rates.
  "${CARGO_TARGET_DIR:-target}/debug/legalchat-load" compare --with-bridge --users 20 --group-size 5 --rate 100 --duration 2 --warmup 1
elif [ "${CI:-}" = "true" ]; then
  echo "test: Node.js and npm are required for the bridge and web app tests under CI" >&2
  exit 1
else
  echo "test: SKIPPED the bridge and web app tests: Node.js and npm are not installed" >&2
fi
