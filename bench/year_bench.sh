#!/usr/bin/env bash
# Data lifecycle at the aggregator (issue 14): a time-compressed year of a district's monitors
# through the real store commit path (60-s periods of 10 metrics per monitor-minute, alarm
# episodes with raw windows and cases), the store's size on disk over simulated time (retention
# sweeps at simulated time when the store has them), then a year's chart of one metric of one
# device and a month's CSV export of one site through the HTTP API, cold and warm.
#
#   bench/year_bench.sh [ARGS...]     # ARGS go to the example, e.g. --monitors 2 --days 365
#
# Release build of aggregator/examples/year_bench.rs (options and method in its header).
# The output is also written to bench/results/year-bench-<date>[-<tag>].txt (TAG=… in the
# environment). Needs `sqlite3` (row counts, dbstat) and GNU `dd` (cold-cache runs).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
cargo build --release --quiet -p fumegrid-aggregator --example year_bench
out="$root/bench/results/year-bench-$(date +%Y-%m-%d)${TAG:+-$TAG}.txt"
mkdir -p "$(dirname "$out")"
{
    echo "# bench/year_bench.sh $*"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) git $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- aggregator common || echo ' (working tree modified)'); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$target/release/examples/year_bench" "$@"
} 2>&1 | tee "$out"
echo "written to ${out#"$root"/}"
