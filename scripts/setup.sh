#!/usr/bin/env bash
# Installs what building LegalChat needs beyond the Rust toolchain: libclang (RocksDB's
# bindings) and, when asked, the tools the test suite uses. Safe to run repeatedly.
set -euo pipefail

need=()
# libclang itself (libclang.so, libclang-14.so.1, ...); not libclang-cpp, which some other
# LLVM packages install and which bindgen cannot use.
have_libclang() {
  local d
  for d in /usr/lib/llvm-*/lib /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
    if compgen -G "$d/libclang.so*" >/dev/null || compgen -G "$d/libclang-[0-9]*.so*" >/dev/null; then
      return 0
    fi
  done
  return 1
}
have_libclang || need+=(libclang-dev)
command -v ccache >/dev/null 2>&1 || need+=(ccache)
# The web app is built with Node.js and npm (LEGALCHAT_WITH_NODE=1: scripts/dev.sh). CI
# runs every test: the Socket.IO peer's and the bridge's need Node.js and npm, the web
# app's end-to-end tests a headless Chromium (Debian's; nothing is downloaded at test time).
if [ "${CI:-}" = "true" ] || [ "${LEGALCHAT_WITH_NODE:-}" = "1" ]; then
  command -v node >/dev/null 2>&1 || need+=(nodejs)
  command -v npm >/dev/null 2>&1 || need+=(npm)
fi
if [ "${CI:-}" = "true" ]; then
  command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
  # The attachment tests scan uploads with a real clamd (loaded with a signature file the
  # test writes; no signatures are downloaded).
  [ -x /usr/sbin/clamd ] || command -v clamd >/dev/null 2>&1 || need+=(clamav-daemon)
  # The power-cut tests mount a FUSE filesystem (tests/powercut) through fusermount3.
  command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
fi

if ((${#need[@]})); then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    echo "setup: installing ${need[*]}" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]} (libclang is required to build RocksDB)" >&2
    have_libclang || exit 1
  fi
fi

# Rebuilding RocksDB's C++ takes minutes; ccache brings it to seconds.
if command -v ccache >/dev/null 2>&1; then
  export CC="ccache gcc" CXX="ccache g++"
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/legalchat/ccache}"
fi
