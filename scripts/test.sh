#!/usr/bin/env bash
# Runs the whole test suite: unit, property and end-to-end tests (real daemons on
# 127.0.0.1 in temporary directories) and a short smoke run of the load generator.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo test --workspace --all-targets "$@"
cargo test --workspace --doc
