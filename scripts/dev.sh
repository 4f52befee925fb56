#!/usr/bin/env bash
# Runs LegalChat for development: the daemon on embedded RocksDB in ./legalchat-data, with
# a self-signed certificate, generated keys and demo accounts, plus the Socket.IO bridge and
# the web app on http://127.0.0.1:3001 (SOCKET_IO_PORT). It prints a token for each demo
# user, the web app's address and how to connect on stderr, then the ready line on stdout.
# Stop with Ctrl-C (graceful: nothing acknowledged is lost).
set -euo pipefail
cd "$(dirname "$0")/.."
export LEGALCHAT_WITH_NODE=1
source scripts/setup.sh
web=bridge-socketio/web
if command -v npm >/dev/null 2>&1; then
  echo "dev: building the web app ($web)" >&2
  (cd "$web" && { npm ls >/dev/null 2>&1 || npm ci --no-audit --no-fund >&2; } && node build.mjs >&2) ||
    echo "dev: the web app did not build; serving Socket.IO only" >&2
else
  echo "dev: npm is missing; serving Socket.IO only (install Node.js and npm for the web app)" >&2
fi
exec cargo run --release -p legalchat-daemon --bin legalchatd -- dev --data-dir "${LEGALCHAT_DATA_DIR:-./legalchat-data}" \
  --web-root "$web/dist/web" "$@"
