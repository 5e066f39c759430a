#!/usr/bin/env bash
# Runs one fuzz target for a fixed time (default 600 s) in one process, seeding its corpus first
# if there is none; libFuzzer logs to stderr.
# Usage: fuzz/run-long.sh <target> [seconds]; TIMEOUT=<s> sets the per-input timeout (default 10).
set -euo pipefail
cd "$(dirname "$0")"
target=$1
secs=${2:-600}
export RUSTC_BOOTSTRAP=1 CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-1}
tdir=${CARGO_TARGET_DIR:-/work/target-fuzz}
[ -d "corpus/$target" ] || cargo run --release --target-dir "$tdir" --bin seeds -- corpus
cargo fuzz run -O -a --target-dir "$tdir" "$target" -- \
    -max_total_time="$secs" -timeout="${TIMEOUT:-10}" -rss_limit_mb=2048 -malloc_limit_mb=512 -print_final_stats=1
