#!/usr/bin/env bash
# The demo: a district in miniature on this machine alone, on embedded defaults.
#
#   scripts/demo.sh                 run until Ctrl-C
#   DURATION=60 scripts/demo.sh     stop by itself after 60 s
#
# Starts the aggregator (its own MQTT broker and SQLite store), five simulated oil-fume monitors
# (three on one emulated RS-485 bus at 9600 baud 8E1 — a pty the simulator makes itself — and two
# over Modbus TCP), and a gateway that polls them and forwards everything through its outbox to
# the aggregator. Prints the aggregator's API address; one line per poll scrolls by, and every
# 10 s what the aggregator has stored. Needs only the Rust toolchain.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration="${DURATION:-}"
speed="${SPEED:-10}" # scenario seconds per wall second, so the exceedance shows up soon

echo "demo: building (the first time takes a few minutes)..."
cargo build --quiet -p fumegrid-gateway -p fumegrid-sim -p fumegrid-aggregator
bin="$root/target/debug"
run_dir="$(mktemp -d /tmp/fumegrid-demo.XXXXXX)"
pids=()
cleanup() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "demo: stopped; logs and stores in $run_dir"
}
trap cleanup EXIT INT TERM

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}

wait_for() { # file, pattern, what
    for _ in $(seq 1 200); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "demo: $3 did not start; see $run_dir" >&2
    exit 1
}

# GET a path of the API with bash alone (no curl needed).
api_get() {
    exec 4<>"/dev/tcp/127.0.0.1/$api_port" || return 1
    printf 'GET %s HTTP/1.0\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n' "$1" "$viewer_token" >&4
    sed '1,/^\r$/d' <&4
    exec 4<&-
}

profiles="$root/device-profiles"
sim_time=(--speed "$speed" ${duration:+--duration "$((duration + 10))"})
key="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
password="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
mqtt_port="$(free_port 18830)"
api_port="$(free_port 18080)"

# --- the aggregator: embedded broker (authentication required) and store ---------------------
printf '%s\n' "$key" >"$run_dir/gateway.key"
printf '%s\n' "$password" >"$run_dir/mqtt-password"
cat >"$run_dir/broker-users.toml" <<TOML
[[users]]
username = "gw-demo-01"
password = "$password"
TOML
# API tokens: the file keeps only their SHA-256; the tokens themselves are printed below.
new_token() { # name role [department] -> prints the token, appends the entry to tokens.toml
    local t
    t="$("$bin/fumegrid-aggregator" new-token --name "$1" --role "$2" ${3:+--department "$3"} \
        2>&1 >>"$run_dir/api-tokens.toml")"
    printf '\n' >>"$run_dir/api-tokens.toml"
    printf '%s' "${t##*: }"
}
: >"$run_dir/api-tokens.toml"
operator_token="$(new_token dispatch-desk operator)"
epb_token="$(new_token epb-duty department epb)"
viewer_token="$(new_token leader viewer)"
cat >"$run_dir/aggregator.toml" <<TOML
[aggregator]
id = "demo-district"
[store]
path = "aggregator.sqlite3"
[api]
listen = "127.0.0.1:$api_port"
tokens_file = "api-tokens.toml"
[broker]
mode = "embedded"
listen = "127.0.0.1:$mqtt_port"
credentials_file = "broker-users.toml"
[[gateways]]
id = "gw-demo-01"
key = "$key"
TOML
chmod 600 "$run_dir"/api-tokens.toml "$run_dir"/gateway.key "$run_dir"/mqtt-password "$run_dir"/broker-users.toml
"$bin/fumegrid-aggregator" run --config "$run_dir/aggregator.toml" ${duration:+--duration "$((duration + 5))"} \
    >"$run_dir/aggregator.out" 2>"$run_dir/aggregator.log" &
pids+=($!)
wait_for "$run_dir/aggregator.out" '^broker:' "the aggregator"

# --- simulated monitors ----------------------------------------------------------------------
"$bin/fumegrid-sim" bus --pty "$run_dir/rs485-1" --baud 9600 --parity even --turnaround-ms 5 "${sim_time[@]}" \
    --slave "1:$profiles/generic-f32-input.toml:normal" \
    --slave "2:$profiles/scaled-u16-holding.toml:exceedance" \
    --slave "3:$profiles/coil-state-monitor.toml:purifier_off" \
    >"$run_dir/bus.out" 2>"$run_dir/bus.err" &
pids+=($!)
wait_for "$run_dir/bus.out" '^ready' "the RS-485 bus simulator"
port1="$(free_port 15020)"
"$bin/fumegrid-sim" monitor --tcp "127.0.0.1:$port1" --profile "$profiles/tb-compatible.toml" --slave 1 \
    --scenario degradation "${sim_time[@]}" >"$run_dir/tcp1.out" 2>"$run_dir/tcp1.err" &
pids+=($!)
wait_for "$run_dir/tcp1.out" '^ready' "TCP monitor 1"
port2="$(free_port $((port1 + 1)))"
"$bin/fumegrid-sim" monitor --tcp "127.0.0.1:$port2" --profile "$profiles/generic-f32-input.toml" --slave 1 \
    --scenario stuck "${sim_time[@]}" >"$run_dir/tcp2.out" 2>"$run_dir/tcp2.err" &
pids+=($!)
wait_for "$run_dir/tcp2.out" '^ready' "TCP monitor 2"

# --- the gateway -----------------------------------------------------------------------------
cat >"$run_dir/gateway.toml" <<TOML
[gateway]
id = "gw-demo-01"
site = "Demo street"
poll_interval_ms = 1000

[outbox]
path = "outbox"

[uplink]
host = "127.0.0.1"
port = $mqtt_port
username = "gw-demo-01"
password_file = "mqtt-password"
key_file = "gateway.key"

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
cat <<INFO

  dashboard        http://127.0.0.1:$api_port/   (paste the viewer token)
  aggregator API   http://127.0.0.1:$api_port/api/v1   (docs/api.md; OpenAPI at /api/v1/openapi.json)
  API tokens       operator $operator_token
                   epb dept $epb_token
                   viewer   $viewer_token
  MQTT broker      127.0.0.1:$mqtt_port (authentication required)
  RS-485 bus       $run_dir/rs485-1 (3 monitors); Modbus TCP monitors on ports $port1, $port2
  try              curl -s -H "Authorization: Bearer $viewer_token" http://127.0.0.1:$api_port/api/v1/devices
                   curl -s -H "Authorization: Bearer $operator_token" http://127.0.0.1:$api_port/api/v1/cases
                   (the bbq-grill exceedance opens a case for epb within a few minutes; move it with
                   curl -s -H "Authorization: Bearer $epb_token" -d '{"action":"accept"}' \\
                     http://127.0.0.1:$api_port/api/v1/cases/<id>/transitions)

INFO
"$bin/fumegrid-gateway" run --config "$run_dir/gateway.toml" --stats-interval 30 \
    --log info,reading=off,poll=debug ${duration:+--duration "$duration"} &
gw=$!
pids+=("$gw")
while kill -0 "$gw" 2>/dev/null; do
    sleep 10
    kill -0 "$gw" 2>/dev/null || break
    echo "demo: aggregator has stored: $(api_get /api/v1/stats 2>/dev/null | grep -o '"items_accepted":[0-9]*' || echo '?')"
done
