#!/usr/bin/env bash
# Evidence latency and cost on loopback (issue 13): from an alarm raised at the gateway (the
# transition's ts_ms, stamped by its rule engine) to that alarm's picture stored at the
# aggregator (stored_ms: all parts committed, SHA-256 checked, bytes in the blob store). Same
# machine, same clock. Also: the gateway's resident memory between captures and at its peak,
# and its CPU per capture (against a run of the same gateway without cameras).
#
#   bench/evidence_latency.sh [CAMERAS=4] [SECONDS=60]
#
# CAMERAS simulated monitors (Modbus TCP) in the `exceedance` scenario, time-compressed 60×, each
# watched by its own camera: the RTSP peer of the tests (tests/peers/rtsp_camera.py, Debian's
# gst-rtsp-server, H.264 640×360 at 10 fps with a 1 s GOP, `--shared`: one running encoder, as a
# real camera, so a capture joins mid-GOP and waits for the next keyframe). A background RTSP
# client keeps that stream running. Rules as bench/alarm_latency.sh (6 s windows, judged every
# second, updates every 2 s), so every monitor raises within about 20 s; cameras also take a
# picture on alarm updates every 10 s. Release builds. Needs scripts/install-test-deps.sh.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cameras="${1:-4}"
seconds="${2:-60}"
cd "$root"
cargo build --release --quiet -p fumegrid-gateway -p fumegrid-aggregator -p fumegrid-sim --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"
dir="$(mktemp -d /tmp/fumegrid-evidence-latency.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
mqtt="$(free_port 19841)"
api="$(free_port 19091)"
base="$(free_port 25100)"
rtsp="$(free_port 18654)"
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
echo "$key" >"$dir/gw.key"
echo "latency-bench-pass" >"$dir/pass"
printf '[[users]]\nusername = "gw-lat"\npassword = "latency-bench-pass"\n' >"$dir/users.toml"
cat >"$dir/agg.toml" <<TOML
[aggregator]
id = "evidence-bench"
[store]
path = "agg.sqlite3"
[api]
listen = "127.0.0.1:$api"
anonymous = "viewer"
[broker]
mode = "embedded"
listen = "127.0.0.1:$mqtt"
credentials_file = "users.toml"
[[gateways]]
id = "gw-lat"
key = "$key"
TOML
gw_config() { # $1 = with cameras (1) or not (0)
    printf '[gateway]\nid = "gw-lat"\npoll_interval_ms = 250\n'
    printf '[rules]\nwindow_s = 6\neval_every_s = 1\nraise_after = 3\nclear_after = 4\nmin_samples = 3\nupdate_every_s = 2\n'
    printf '[outbox]\npath = "outbox-%s"\n' "$1"
    printf '[uplink]\nhost = "127.0.0.1"\nport = %s\nusername = "gw-lat"\npassword_file = "pass"\nkey_file = "gw.key"\n' "$mqtt"
    for i in $(seq 0 $((cameras - 1))); do
        printf '[[devices]]\nid = "m%02d"\nprofile = "%s"\ntcp = "127.0.0.1:%s"\n' "$i" "$root/device-profiles/tb-compatible.toml" $((base + i))
        if [[ "$1" == 1 ]]; then
            printf '[[cameras]]\nid = "cam-%02d"\ndevices = ["m%02d"]\nrtsp = "rtsp://127.0.0.1:%s/h264"\nupdate_every_s = 10\n' "$i" "$i" "$rtsp"
        fi
    done
}
gw_config 1 >"$dir/gw-cam.toml"
gw_config 0 >"$dir/gw-nocam.toml"

/usr/bin/python3 tests/peers/rtsp_camera.py --port "$rtsp" --shared >"$dir/rtsp.out" 2>"$dir/rtsp.err" &
for _ in $(seq 1 100); do grep -q '^ready' "$dir/rtsp.out" 2>/dev/null && break; sleep 0.1; done
gst-launch-1.0 -q rtspsrc location="rtsp://127.0.0.1:$rtsp/h264" protocols=tcp ! fakesink >/dev/null 2>&1 &
"$bin/fumegrid-aggregator" run --config "$dir/agg.toml" --log warn >"$dir/agg.out" 2>"$dir/agg.log" &
for _ in $(seq 1 100); do grep -q '^broker:' "$dir/agg.out" 2>/dev/null && break; sleep 0.1; done

# Runs one gateway for SECONDS against a fresh fleet; prints "cpu_ticks rss_kib_samples... hwm_kib".
run_gateway() { # $1 = config
    "$bin/fumegrid-sim" fleet --tcp "127.0.0.1:$base" --count "$cameras" --profile "$root/device-profiles/tb-compatible.toml" \
        --scenario exceedance --speed 60 --duration $((seconds + 5)) >"$dir/sim.out" 2>"$dir/sim.err" &
    local sim=$!
    for _ in $(seq 1 100); do grep -q '^ready' "$dir/sim.out" 2>/dev/null && break; sleep 0.1; done
    "$bin/fumegrid-gateway" run --config "$1" --duration "$seconds" --log warn 2>>"$dir/gw.log" &
    local gw=$! rss=() s
    for _ in $(seq 1 $((seconds - 1))); do
        sleep 1
        s=$(awk '/^VmRSS/ {print $2}' "/proc/$gw/status" 2>/dev/null || true)
        [[ -n "$s" ]] && rss+=("$s")
    done
    local hwm ticks
    hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$gw/status" 2>/dev/null || echo 0)
    ticks=$(awk '{print $14 + $15}' "/proc/$gw/stat" 2>/dev/null || echo 0)
    wait "$gw" || true
    wait "$sim" || true
    echo "$ticks $hwm ${rss[*]}"
}
nocam="$(run_gateway "$dir/gw-nocam.toml")"
cam="$(run_gateway "$dir/gw-cam.toml")"
sleep 2

python3 - "$api" "$cameras" "$seconds" "$(getconf CLK_TCK)" "$dir/agg.sqlite3" "$nocam" "$cam" <<'PY'
import json, sqlite3, sys, urllib.parse, urllib.request
api, cameras, seconds, hz, db = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
nocam, cam = ([int(x) for x in a.split()] for a in sys.argv[6:8])
c = sqlite3.connect(db)
# Raised transitions of the run with cameras: the episodes its pictures name.
raised = {}
def get(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{api}{path}") as r:
        return json.load(r)
for a in get("/api/v1/alarms?state=all&limit=10000")["alarms"]:
    ep = get(f"/api/v1/alarms/{a['gateway']}/{urllib.parse.quote(a['id'], safe='')}")
    for t in ep["transitions"]:
        if t["phase"] == "raised":
            raised[(a["gateway"], a["id"])] = t["ts_ms"]
pics = c.execute("SELECT gateway, alarm, trigger, captured_ms, stored_ms, size FROM pictures WHERE source = 'camera' AND state = 'stored'").fetchall()
lat = sorted(p[4] - raised[(p[0], p[1])] for p in pics if p[2] == "alarm_raised" and (p[0], p[1]) in raised)
cap = sorted(p[3] - raised[(p[0], p[1])] for p in pics if p[2] == "alarm_raised" and (p[0], p[1]) in raised)
if not lat:
    sys.exit("no alarm-raised picture stored")
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
n = len(pics)
size = sum(p[5] for p in pics) / max(n, 1)
print(f"evidence-latency cameras={cameras} alarm_raised_pictures={len(lat)} raised->stored p50_ms={q(lat, .5)} p99_ms={q(lat, .99)} max_ms={lat[-1]} "
      f"(raised->captured p50_ms={q(cap, .5)} max_ms={cap[-1]})")
def mem(run):
    ticks, hwm, *rss = run
    return ticks, hwm / 1024, (sum(rss) / len(rss) / 1024 if rss else 0), (min(rss) / 1024 if rss else 0)
t0, h0, r0, _ = mem(nocam)
t1, h1, r1, m1 = mem(cam)
print(f"gateway without cameras: cpu_s={t0 / hz:.2f} rss_mean_mib={r0:.1f} peak_mib={h0:.1f}")
print(f"gateway with {cameras} cameras: cpu_s={t1 / hz:.2f} rss_mean_mib={r1:.1f} rss_min_mib={m1:.1f} peak_mib={h1:.1f} pictures={n} mean_bytes={size:.0f}")
print(f"cpu per capture: {(t1 - t0) / hz / max(n, 1) * 1000:.1f} ms (difference of the two runs / pictures)")
PY
