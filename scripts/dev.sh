#!/usr/bin/env bash
# Runs LegalChat for development: the daemon on embedded RocksDB in ./legalchat-data, with
# a self-signed certificate, generated keys and demo accounts. It prints a token for each
# demo user and how to connect on stderr, then the ready line on stdout. Stop with Ctrl-C
# (graceful: nothing acknowledged is lost).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec cargo run --release -p legalchat-daemon --bin legalchatd -- dev --data-dir "${LEGALCHAT_DATA_DIR:-./legalchat-data}" "$@"
