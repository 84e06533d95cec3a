#!/usr/bin/env bash
# Alarm latency on loopback: from the reading that completes a judgment (the alarm transition's
# ts_ms, stamped by the gateway's rule engine) to the transition stored at the aggregator
# (received_ms, stamped when its batch was committed). Same machine, same clock.
#
#   bench/alarm_latency.sh [DEVICES=32] [SECONDS=50]
#
# DEVICES simulated monitors (Modbus TCP) in the `exceedance` scenario, time-compressed 60×, a
# gateway with short rule windows (6 s, judged every second, updates every 2 s), the aggregator
# with its embedded broker. Prints p50/p90/p99/max over every alarm transition stored.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
devices="${1:-32}"
seconds="${2:-50}"
cd "$root"
cargo build --release --quiet -p fumegrid-gateway -p fumegrid-aggregator -p fumegrid-sim --bins
bin="$root/target/release"
dir="$(mktemp -d /tmp/fumegrid-alarm-latency.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
mqtt="$(free_port 19831)"
api="$(free_port 19081)"
base="$(free_port 25000)"
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
echo "$key" >"$dir/gw.key"
echo "latency-bench-pass" >"$dir/pass"
printf '[[users]]\nusername = "gw-lat"\npassword = "latency-bench-pass"\n' >"$dir/users.toml"
cat >"$dir/agg.toml" <<TOML
[aggregator]
id = "latency-bench"
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
[[gateways]]
id = "gw-lat"
key = "$key"
TOML
{
    printf '[gateway]\nid = "gw-lat"\npoll_interval_ms = 250\n'
    printf '[rules]\nwindow_s = 6\neval_every_s = 1\nraise_after = 3\nclear_after = 4\nmin_samples = 3\nupdate_every_s = 2\n'
    printf '[outbox]\npath = "outbox"\n'
    printf '[uplink]\nhost = "127.0.0.1"\nport = %s\nusername = "gw-lat"\npassword_file = "pass"\nkey_file = "gw.key"\n' "$mqtt"
    for i in $(seq 0 $((devices - 1))); do
        printf '[[devices]]\nid = "m%02d"\nprofile = "%s"\ntcp = "127.0.0.1:%s"\n' "$i" "$root/device-profiles/tb-compatible.toml" $((base + i))
    done
} >"$dir/gw.toml"

"$bin/fumegrid-aggregator" run --config "$dir/agg.toml" --log warn >"$dir/agg.out" 2>"$dir/agg.log" &
for _ in $(seq 1 100); do grep -q '^broker:' "$dir/agg.out" 2>/dev/null && break; sleep 0.1; done
"$bin/fumegrid-sim" fleet --tcp "127.0.0.1:$base" --count "$devices" --profile "$root/device-profiles/tb-compatible.toml" \
    --scenario exceedance --speed 60 --duration $((seconds + 10)) >"$dir/sim.out" 2>"$dir/sim.err" &
for _ in $(seq 1 100); do grep -q '^ready' "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
"$bin/fumegrid-gateway" run --config "$dir/gw.toml" --duration "$seconds" --log warn 2>"$dir/gw.log"
sleep 1

python3 - "$api" "$devices" <<'PY'
import json, sys, urllib.request
api, devices = sys.argv[1], int(sys.argv[2])
def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{api}{path}") as r:
        return json.load(r)
alarms = get("/api/v1/alarms?state=all&limit=10000")["alarms"]
lat = []
by_phase = {}
for a in alarms:
    ep = get(f"/api/v1/alarms/{a['gateway']}/{urllib.parse.quote(a['id'], safe='')}")
    lat += [t["received_ms"] - t["ts_ms"] for t in ep["transitions"]]
    for t in ep["transitions"]:
        by_phase.setdefault(t["phase"], []).append(t["received_ms"] - t["ts_ms"])
lat.sort()
if not lat:
    sys.exit("no alarm transitions stored")
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
kinds = sorted({a["kind"] for a in alarms})
print(f"alarm-latency devices={devices} episodes={len(alarms)} kinds={','.join(kinds)} transitions={len(lat)} "
      f"p50_ms={q(0.50)} p90_ms={q(0.90)} p99_ms={q(0.99)} max_ms={lat[-1]}")
for phase, v in sorted(by_phase.items()):
    v.sort()
    print(f"  {phase}: n={len(v)} p50_ms={v[len(v) // 2]} max_ms={v[-1]}")
PY
