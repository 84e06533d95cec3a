#!/usr/bin/env bash
# Dispatch cases (issue 6): alarms → cases per second through the real SQLite store (the ingest
# path, built-in catalogue), and statistics over 1 M cases (a year of case lives from the pure
# engine): stats::compute in memory, and the API's path (load from SQLite, then compute).
#
#   bench/case_stats.sh [ARGS...]     # ARGS go to the example, e.g. --cases 200000 --store false
#
# Release build of aggregator/examples/case_stats_bench.rs (options in its header). Defaults:
# 20 000 alarms + 20 000 repeats in commits of 100 items (synchronous=full), 1 M cases, SQLite
# part on. About 7 minutes on the 2-CPU build machine, peak RSS about 5.1 GiB, about 4.6 GB of
# temporary files under $TMPDIR (removed at the end). The output is also written to
# bench/results/case_stats-<date>.txt.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo build --release --quiet -p fumegrid-aggregator --example case_stats_bench
out="$root/bench/results/case_stats-$(date +%Y-%m-%d).txt"
mkdir -p "$(dirname "$out")"
{
    echo "# bench/case_stats.sh $*"
    echo "# $(date -u +%Y-%m-%dT%H:%M:%SZ) git $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- aggregator common || echo ' (working tree modified)'); $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$root/target/release/examples/case_stats_bench" "$@"
} 2>&1 | tee "$out"
echo "written to ${out#"$root"/}"
