#!/usr/bin/env bash
# Bus efficiency: how close fumegrid-gateway runs one RS-485 bus to its physical limit.
#
#   bench/bus_efficiency.sh [SLAVES=8] [SECONDS=30]
#
# fumegrid-sim emulates one 9600-baud 8E1 bus (line timing on a pty, 5 ms device turnaround)
# with SLAVES monitors of 10 holding registers each (device-profiles/tb-compatible.toml); the
# gateway (release build) polls them as fast as the bus allows. Efficiency = achieved
# transactions/s ÷ the physical maximum from ../shared/tools/rtu_budget.py (frames + two
# 3.5-character silences + turnaround).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
slaves="${1:-8}"
seconds="${2:-30}"
budget="${RTU_BUDGET:-$root/../shared/tools/rtu_budget.py}"
baud=9600 parity=even turnaround=5

cd "$root"
cargo build --release --quiet -p fumegrid-gateway -p fumegrid-sim
bin="$root/target/release"
dir="$(mktemp -d /tmp/fumegrid-bus-bench.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
profile="$root/device-profiles/tb-compatible.toml"

args=()
for i in $(seq 1 "$slaves"); do args+=(--slave "$i:$profile:normal"); done
timeout $((seconds + 30)) "$bin/fumegrid-sim" bus --pty "$dir/bus" --baud "$baud" --parity "$parity" \
    --turnaround-ms "$turnaround" --duration $((seconds + 20)) "${args[@]}" >"$dir/sim.out" 2>"$dir/sim.err" &
for _ in $(seq 1 100); do grep -q '^ready' "$dir/sim.out" && break; sleep 0.1; done

{
    printf '[gateway]\nid = "gw-bench"\n# far below what the bus can do, so the bus is the limit\npoll_interval_ms = 10\n'
    printf '[outbox]\npath = "%s"\n' "$dir/outbox"   # its own, never the system default
    printf '[[buses]]\nname = "bus"\npath = "%s"\nbaud = %s\nparity = "%s"\n' "$dir/bus" "$baud" "$parity"
    for i in $(seq 1 "$slaves"); do
        printf '[[devices]]\nid = "m%02d"\nprofile = "%s"\nbus = "bus"\nslave = %s\n' "$i" "$profile" "$i"
    done
} >"$dir/gateway.toml"

"$bin/fumegrid-gateway" run --config "$dir/gateway.toml" --duration "$seconds" --log warn \
    --stats-file "$dir/stats.json" 2>"$dir/gateway.log"

ok=$(grep -o '"polls_ok": [0-9]*' "$dir/stats.json" | awk '{s += $2} END {print s}')
failed=$(grep -oE '"(no_reply|garbled|exceptions|io_errors)": [0-9]*' "$dir/stats.json" | awk '{s += $2} END {print s}')
tx_s=$(python3 "$budget" --baud "$baud" --parity "$parity" --registers 10 --turnaround-ms "$turnaround")
max=$(sed -E 's/.*at most ([0-9.]+) transactions.*/\1/' <<<"$tx_s")
awk -v ok="$ok" -v s="$seconds" -v max="$max" -v n="$slaves" -v failed="$failed" -v budget="$tx_s" 'BEGIN {
    rate = ok / s
    printf "bus-efficiency slaves=%d seconds=%d polls=%d failed=%d polls/s=%.2f max/s=%.2f efficiency=%.1f%%\n", n, s, ok, failed, rate, max, 100 * rate / max
    printf "  rtu_budget.py: %s\n", budget
}'
rm -rf "$dir"
