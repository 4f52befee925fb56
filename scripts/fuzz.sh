#!/usr/bin/env bash
# Builds every fuzz target and runs each for a bounded time, starting from the committed
# seed corpus (fuzz/seeds/<target>, read only) and the local one (fuzz/corpus/<target>,
# where new inputs go). Prints per target the executions, the coverage at the end
# (libFuzzer's cov: edges, ft: features), the corpus size and whether it crashed; exits
# non-zero when a target crashed (the input is in fuzz/artifacts/<target>/).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     default: 10 seconds, every target
#
# FUZZ_RUNS=N stops each target after N executions (the seconds still bound it): the long
# campaign recorded in docs/security.md runs FUZZ_RUNS=10000000.
# FUZZ_SANITIZER=none builds without AddressSanitizer (faster to build and to run; our own
# code forbids `unsafe`); the default is cargo-fuzz's, address. cargo-fuzz 0.13.2 must be
# installed; under CI=true it is installed when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-10}"
shift || true
sanitizer="${FUZZ_SANITIZER:-address}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
  echo "fuzz: seconds per target must be a positive number, not '$seconds'" >&2
  exit 2
fi
if [ -n "${FUZZ_RUNS:-}" ] && ! [[ "$FUZZ_RUNS" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: FUZZ_RUNS must be a positive number of executions, not '$FUZZ_RUNS'" >&2
  exit 2
fi

# cargo-fuzz needs nightly compiler flags; this lets the stable toolchain accept them.
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "fuzz: installing cargo-fuzz 0.13.2" >&2
    cargo install cargo-fuzz --version 0.13.2 --locked
  else
    echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --version 0.13.2 --locked" >&2
    exit 2
  fi
fi
# RocksDB's C++ (the daemon's store, linked by the daemon's targets): ccache makes a
# rebuild take seconds, as in scripts/setup.sh.
if command -v ccache >/dev/null 2>&1; then
  export CC="${CC:-ccache gcc}" CXX="${CXX:-ccache g++}"
  export CCACHE_DIR="${CCACHE_DIR:-$HOME/.cache/legalchat/ccache}"
fi

if (($#)); then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "fuzz: building ${#targets[@]} targets (sanitizer: $sanitizer)"
if ! cargo fuzz build --sanitizer "$sanitizer"; then
  echo "fuzz: the build failed; RocksDB's bindings need libclang (scripts/setup.sh installs it)" >&2
  exit 1
fi
# Where cargo put the binaries (CARGO_TARGET_DIR or fuzz/target).
target_dir=$(cargo metadata --manifest-path fuzz/Cargo.toml --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin_dir="$target_dir/$(rustc -vV | sed -n 's/^host: //p')/release"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
crashed=()
rows=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$t/")
  [ -f "fuzz/dicts/$t.dict" ] && args+=(-dict="fuzz/dicts/$t.dict")
  [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  status=0
  "$bin_dir/$t" "${args[@]}" "fuzz/corpus/$t" "${seeds[@]}" >"$logs/$t.log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$logs/$t.log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
  if [ "$status" -eq 0 ]; then
    verdict="ok"
  else
    verdict="CRASHED (exit $status)"
    crashed+=("$t")
    echo "fuzz: $t crashed; the end of its log:" >&2
    tail -40 "$logs/$t.log" >&2
  fi
  rows+=("$(printf '%-14s %12s %7s %8s %7s  %s' "$t" "${execs:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$verdict")")
done

printf '%-14s %12s %7s %8s %7s  %s\n' target executions cov ft corpus result
printf '%s\n' "${rows[@]}"
if ((${#crashed[@]})); then
  echo "fuzz: crashed: ${crashed[*]} (inputs in fuzz/artifacts/<target>/; reproduce: cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)" >&2
  exit 1
fi
