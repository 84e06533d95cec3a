#!/usr/bin/env bash
# The demo: simulated oil-fume monitors and a gateway polling them, on this machine alone.
#
#   scripts/demo.sh                 run until Ctrl-C
#   DURATION=30 scripts/demo.sh     stop by itself after 30 s
#
# Starts three monitors on one emulated RS-485 bus (9600 baud 8E1, a pty the simulator makes
# itself) and two Modbus TCP monitors on loopback, each with another profile and scenario, then
# fumegrid-gateway polling all five; decoded readings scroll by. Needs only the Rust toolchain.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration="${DURATION:-}"
speed="${SPEED:-10}" # scenario seconds per wall second, so the exceedance shows up soon

echo "demo: building (first time takes a few minutes)..."
cargo build --quiet -p fumegrid-gateway -p fumegrid-sim
bin="$root/target/debug"
run_dir="$(mktemp -d /tmp/fumegrid-demo.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo: stopped; logs in $run_dir"
}
trap cleanup EXIT INT TERM

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

wait_ready() { # file, what
    for _ in $(seq 1 100); do
        grep -q '^ready' "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: $2 did not start; see $1 and ${1%.out}.err" >&2
    exit 1
}

profiles="$root/device-profiles"
sim_time=(--speed "$speed" ${duration:+--duration "$((duration + 5))"})

"$bin/fumegrid-sim" bus --pty "$run_dir/rs485-1" --baud 9600 --parity even --turnaround-ms 5 "${sim_time[@]}" \
    --slave "1:$profiles/generic-f32-input.toml:normal" \
    --slave "2:$profiles/scaled-u16-holding.toml:exceedance" \
    --slave "3:$profiles/coil-state-monitor.toml:purifier_off" \
    >"$run_dir/bus.out" 2>"$run_dir/bus.err" &
pids+=($!)
wait_ready "$run_dir/bus.out" "RS-485 bus simulator"

port1="$(free_port 15020)"
"$bin/fumegrid-sim" monitor --tcp "127.0.0.1:$port1" --profile "$profiles/tb-compatible.toml" --slave 1 \
    --scenario degradation "${sim_time[@]}" >"$run_dir/tcp1.out" 2>"$run_dir/tcp1.err" &
pids+=($!)
wait_ready "$run_dir/tcp1.out" "TCP monitor 1"
port2="$(free_port $((port1 + 1)))"
"$bin/fumegrid-sim" monitor --tcp "127.0.0.1:$port2" --profile "$profiles/generic-f32-input.toml" --slave 1 \
    --scenario stuck "${sim_time[@]}" >"$run_dir/tcp2.out" 2>"$run_dir/tcp2.err" &
pids+=($!)
wait_ready "$run_dir/tcp2.out" "TCP monitor 2"

cat >"$run_dir/gateway.toml" <<TOML
[gateway]
id = "gw-demo-01"
site = "Demo street"
poll_interval_ms = 1000

[[buses]]
name = "rs485-1"
path = "$run_dir/rs485-1"
baud = 9600
parity = "even"

[[devices]]
id = "noodle-house"
profile = "$profiles/generic-f32-input.toml"
bus = "rs485-1"
slave = 1

[[devices]]
id = "bbq-grill"
profile = "$profiles/scaled-u16-holding.toml"
bus = "rs485-1"
slave = 2

[[devices]]
id = "hotpot"
profile = "$profiles/coil-state-monitor.toml"
bus = "rs485-1"
slave = 3

[[devices]]
id = "dumplings"
profile = "$profiles/tb-compatible.toml"
tcp = "127.0.0.1:$port1"

[[devices]]
id = "teahouse"
profile = "$profiles/generic-f32-input.toml"
tcp = "127.0.0.1:$port2"
TOML

"$bin/fumegrid-gateway" validate --config "$run_dir/gateway.toml"
echo "demo: gateway polling 5 monitors (bus: $run_dir/rs485-1, TCP: $port1, $port2); Ctrl-C stops"
"$bin/fumegrid-gateway" run --config "$run_dir/gateway.toml" --stats-interval 10 \
    ${duration:+--duration "$duration"} &
pids+=($!)
wait "${pids[-1]}"
