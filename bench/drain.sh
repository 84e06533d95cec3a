#!/usr/bin/env bash
# Drain after an outage: a gateway whose outbox holds N readings (an outage of N readings:
# 1 M ≈ 32 monitors × 7 values at 1 Hz for 75 minutes) reconnects to the aggregator; how fast do
# they reach the aggregator's store (committed, acked and deleted from the outbox)?
#
#   bench/drain.sh [N=1000000]
#
# Real processes, release builds, loopback: fumegrid-aggregator (embedded broker, SQLite with
# synchronous=full) and fumegrid-gateway with its backlog rate limit lifted, so the pipeline's
# capacity is what is measured. Prints readings/s from gateway start to the last item stored.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
n="${1:-1000000}"
cd "$root"
cargo build --release --quiet -p fumegrid-gateway -p fumegrid-aggregator --bins --example outbox_fill
bin="$root/target/release"
dir="$(mktemp -d /tmp/fumegrid-drain.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
mqtt="$(free_port 19830)"
api="$(free_port 19080)"
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
echo "$key" >"$dir/gw.key"
echo "drain-bench-pass" >"$dir/pass"
printf '[[users]]\nusername = "gw-drain"\npassword = "drain-bench-pass"\n' >"$dir/users.toml"
cat >"$dir/agg.toml" <<TOML
[aggregator]
id = "drain-bench"
[store]
path = "agg.sqlite3"
[api]
listen = "127.0.0.1:$api"
# a measurement harness on loopback: read without tokens
anonymous = "viewer"
[broker]
mode = "embedded"
listen = "127.0.0.1:$mqtt"
credentials_file = "users.toml"
max_payload_bytes = 4194304
[[gateways]]
id = "gw-drain"
key = "$key"
TOML
dead="$(free_port 19500)" # nothing listens there: the monitor is "offline", adding almost nothing
cat >"$dir/gw.toml" <<TOML
[gateway]
id = "gw-drain"
probe_interval_ms = 600000
[outbox]
path = "outbox"
max_bytes = 4294967296
[uplink]
host = "127.0.0.1"
port = $mqtt
username = "gw-drain"
password_file = "pass"
key_file = "gw.key"
batch_max_items = 2000
backlog_items_per_s = 100000000
[[devices]]
id = "offline"
profile = "$root/device-profiles/tb-compatible.toml"
tcp = "127.0.0.1:$dead"
TOML

echo "filling the outbox with $n readings..."
"$bin/examples/outbox_fill" "$dir/outbox" "$n"
"$bin/fumegrid-aggregator" run --config "$dir/agg.toml" --log warn >"$dir/agg.out" 2>"$dir/agg.log" &
for _ in $(seq 1 100); do grep -q '^broker:' "$dir/agg.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^broker:' "$dir/agg.out" || { echo "drain: aggregator did not start:" >&2; cat "$dir/agg.log" >&2; exit 1; }

items() {
    exec 4<>"/dev/tcp/127.0.0.1/$api" || return 1
    printf 'GET /api/v1/stats HTTP/1.0\r\n\r\n' >&4
    grep -o '"items_accepted":[0-9]*' <&4 | cut -d: -f2
    exec 4<&-
}
start=$(date +%s.%N)
"$bin/fumegrid-gateway" run --config "$dir/gw.toml" --log warn,fumegrid_gateway::cmd::run=info 2>"$dir/gw.log" &
gw=$!
deadline=$(($(date +%s) + 1800))
while :; do
    got="$(items || echo 0)"
    [[ "${got:-0}" -ge "$n" ]] && break
    if ! kill -0 "$gw" 2>/dev/null || [[ $(date +%s) -gt $deadline ]]; then
        echo "drain: gateway gone or too slow ($got of $n stored); logs:" >&2
        tail -5 "$dir/gw.log" "$dir/agg.log" >&2
        exit 1
    fi
    sleep 0.05
done
end=$(date +%s.%N)
kill -TERM "$gw"
wait "$gw" || true
left="$(grep -o 'outbox flushed items=[0-9]*' "$dir/gw.log" || true)"
awk -v n="$n" -v s="$start" -v e="$end" -v left="$left" 'BEGIN {
    printf "drain readings=%d seconds=%.2f readings/s=%.0f (%s)\n", n, e - s, n / (e - s), left
}'
