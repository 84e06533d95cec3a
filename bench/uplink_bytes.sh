#!/usr/bin/env bash
# Uplink bytes per monitor-day (issue 14): simulated monitors with the 10-metric profile
# (generic-f32-input) polled at 1 Hz, one aggregator (embedded broker), and side by side, each
# polling its own DEVICES monitors:
#   raw-plain  [report] strategy = "raw", [uplink] compress = false  (the v1 wire, before issue 14)
#   raw-gzip   strategy = "raw", compress = true
#   default    the defaults: 60-s periods, gzip
#   offline    the defaults without [uplink]: what the outbox holds during an outage
# Counts the bytes of the MQTT PUBLISH payloads of the batches each gateway sent (its
# `payload_bytes`, logged at the stop; MQTT headers not included), over a span that ends just
# after a period boundary (so every period of the span was sent), and scales to a day.
#
#   bench/uplink_bytes.sh [SECONDS=300] [DEVICES=4]
#
# Binaries from $FUMEGRID_BIN_DIR (e.g. $CARGO_TARGET_DIR/debug); else a release build is made.
# Bytes do not depend on the build.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-300}"
devices="${2:-4}"
cd "$root"
if [[ -n "${FUMEGRID_BIN_DIR:-}" ]]; then
    bin="$FUMEGRID_BIN_DIR"
else
    cargo build --release --quiet -p fumegrid-gateway -p fumegrid-aggregator -p fumegrid-sim --bins
    bin="${CARGO_TARGET_DIR:-$root/target}/release"
fi
dir="$(mktemp -d /tmp/fumegrid-uplink.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
mqtt="$(free_port 19930)"
api="$(free_port 19180)"
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
names=(raw-plain raw-gzip default offline)
extra=("compress = false
[report]
strategy = \"raw\"" "[report]
strategy = \"raw\"" "" "")
: >"$dir/users.toml"
cat >"$dir/agg.toml" <<TOML
[aggregator]
id = "uplink-bench"
[store]
path = "agg.sqlite3"
[api]
listen = "127.0.0.1:$api"
anonymous = "viewer"
[broker]
mode = "embedded"
listen = "127.0.0.1:$mqtt"
credentials_file = "users.toml"
TOML
echo "$key" >"$dir/gw.key"
base="$(free_port 19600)"
for i in "${!names[@]}"; do
    n="${names[$i]}"
    echo "pass-$n" >"$dir/$n.pass"
    printf '[[users]]\nusername = "gw-%s"\npassword = "pass-%s"\n' "$n" "$n" >>"$dir/users.toml"
    printf '[[gateways]]\nid = "gw-%s"\nkey = "%s"\n' "$n" "$key" >>"$dir/agg.toml"
    {
        printf '[gateway]\nid = "gw-%s"\npoll_interval_ms = 1000\n[outbox]\npath = "outbox-%s"\n' "$n" "$n"
        if [[ "$n" != offline ]]; then
            printf '[uplink]\nhost = "127.0.0.1"\nport = %s\nusername = "gw-%s"\npassword_file = "%s.pass"\nkey_file = "gw.key"\n' "$mqtt" "$n" "$n"
        fi
        printf '%s\n' "${extra[$i]}"
        for d in $(seq 0 $((devices - 1))); do
            printf '[[devices]]\nid = "m%02d"\nprofile = "%s/device-profiles/generic-f32-input.toml"\ntcp = "127.0.0.1:%s"\n' \
                "$d" "$root" $((base + i * devices + d))
        done
    } >"$dir/$n.toml"
done

"$bin/fumegrid-sim" fleet --tcp "127.0.0.1:$base" --count $((4 * devices)) \
    --profile "$root/device-profiles/generic-f32-input.toml" --scenario normal --duration $((secs + 180)) \
    >"$dir/sim.log" 2>&1 &
"$bin/fumegrid-aggregator" run --config "$dir/agg.toml" --log warn >"$dir/agg.out" 2>"$dir/agg.log" &
for _ in $(seq 1 200); do grep -q '^broker:' "$dir/agg.out" 2>/dev/null && break; sleep 0.1; done
grep -q '^broker:' "$dir/agg.out" || { echo "uplink: aggregator did not start:" >&2; cat "$dir/agg.log" >&2; exit 1; }
sleep 1

start=$(date +%s.%N)
# End 4 s after a minute boundary: the last period closed (2 s grace) and was sent.
end=$(awk -v s="$start" -v d="$secs" 'BEGIN { e = s + d; printf "%.3f", (int(e / 60) + 1) * 60 + 4 }')
pids=()
for n in "${names[@]}"; do
    "$bin/fumegrid-gateway" run --config "$dir/$n.toml" --log warn,fumegrid_gateway::cmd::run=info 2>"$dir/$n.log" &
    pids+=($!)
done
sleep "$(awk -v e="$end" -v n="$(date +%s.%N)" 'BEGIN { printf "%.3f", e - n }')"
kill -TERM "${pids[@]}"
for p in "${pids[@]}"; do wait "$p" || true; done
span=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')

echo "span ${span} s, ${devices} monitors per gateway, 10 metrics at 1 Hz"
for n in raw-plain raw-gzip default; do
    bytes="$(grep -o 'payload_bytes=[0-9]*' "$dir/$n.log" | cut -d= -f2)"
    items="$(grep -o 'items_sent=[0-9]*' "$dir/$n.log" | cut -d= -f2)"
    awk -v n="$n" -v b="$bytes" -v i="$items" -v s="$span" -v d="$devices" 'BEGIN {
        printf "%-10s payload_bytes=%d items=%d bytes/item=%.1f per monitor-day: %.3f MB\n", n, b, i, b / i, b / s * 86400 / d / 1e6
    }'
done
ob="$(grep -o 'outbox flushed items=[0-9]* bytes=[0-9]*' "$dir/offline.log" | tail -1)"
obytes="$(echo "$ob" | grep -o 'bytes=[0-9]*' | cut -d= -f2)"
awk -v b="$obytes" -v s="$span" -v d="$devices" 'BEGIN {
    day = b / s * 86400 / d
    printf "offline    outbox (%s) per monitor-day: %.3f MB; 10 monitors fill the default 256 MiB outbox in %.1f days\n", "'"$ob"'", day / 1e6, 268435456 / (10 * day)
}'
