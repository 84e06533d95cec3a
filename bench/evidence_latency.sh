#!/usr/bin/env bash
# Evidence latency and cost on loopback (issue 13): from an alarm raised at the gateway (the
# transition's ts_ms, stamped by its rule engine) to that alarm's picture stored at the
# aggregator (all parts committed, SHA-256 checked, bytes in the blob store: the picture's
# stored_ms, or, for a capture whose bytes the aggregator already held, the time that capture
# arrived). Same machine, same clock. Also: the gateway's resident memory between captures and
# at its peak, and its CPU per capture (against a run of the same gateway without cameras).
#
#   bench/evidence_latency.sh [CAMERAS=4] [SECONDS=300] [KIND=rtsp|http]
#
# CAMERAS simulated monitors (Modbus TCP, one `fumegrid-sim monitor` each) in the `exceedance`
# scenario, time-compressed 60× and started at scenario time 30 s: each raises about 4 s after
# it starts and clears after its plateau; every monitor is restarted every CYCLE (38 s), the
# monitors staggered by CYCLE/CAMERAS after their first cycle, so a run of SECONDS gives about
# SECONDS/CYCLE raises per monitor. Each monitor is watched by its own camera:
#   rtsp: the RTSP peer of the tests (tests/peers/rtsp_camera.py, Debian's gst-rtsp-server,
#         H.264 640×360 at 10 fps with a 1 s GOP, `--shared`: one running encoder, as a real
#         camera, so a capture joins mid-GOP and waits for the next keyframe; all cameras share
#         that one stream). A background RTSP client keeps that stream running.
#   http: the simulator's HTTP snapshot camera of that monitor (`monitor --cameras`, a 640×480
#         JPEG drawn from the scenario at that moment).
# Rules as bench/alarm_latency.sh (6 s windows, judged every second, updates every 2 s); cameras
# also take a picture on alarm updates every 10 s. Release builds. Needs
# scripts/install-test-deps.sh. Prints every raise of the camera run that got no picture, and
# the gateway's camera_failed events. BUILD=0 uses the release binaries as they are; BASELINE=0
# skips the run without cameras (no CPU per capture then).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cameras="${1:-4}"
seconds="${2:-300}"
kind="${3:-rtsp}"
cycle=38
[[ "$kind" == rtsp || "$kind" == http ]] || { echo "KIND is rtsp or http" >&2; exit 2; }
cd "$root"
[[ "${BUILD:-1}" == 1 ]] && cargo build --release --quiet --workspace --bins
bin="${CARGO_TARGET_DIR:-$root/target}/release"
dir="$(mktemp -d /tmp/fumegrid-evidence-latency.XXXXXX)"
trap 'touch "$dir/stop"; kill $(cat "$dir"/sim-*.pid 2>/dev/null) $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
mqtt="$(free_port 19841)"
api="$(free_port 19091)"
base="$(free_port 25100)"
cport="$(free_port 25300)"
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
        if [[ "$1" == 1 && "$kind" == rtsp ]]; then
            printf '[[cameras]]\nid = "cam-%02d"\ndevices = ["m%02d"]\nrtsp = "rtsp://127.0.0.1:%s/h264"\nupdate_every_s = 10\n' "$i" "$i" "$rtsp"
        elif [[ "$1" == 1 ]]; then
            printf '[[cameras]]\nid = "cam-%02d"\ndevices = ["m%02d"]\nsnapshot_url = "http://127.0.0.1:%s/camera/1.jpg"\nupdate_every_s = 10\n' "$i" "$i" $((cport + i))
        fi
    done
}
gw_config 1 >"$dir/gw-cam.toml"
gw_config 0 >"$dir/gw-nocam.toml"

if [[ "$kind" == rtsp ]]; then
    /usr/bin/python3 tests/peers/rtsp_camera.py --port "$rtsp" --shared >"$dir/rtsp.out" 2>"$dir/rtsp.err" &
    for _ in $(seq 1 100); do grep -q '^ready' "$dir/rtsp.out" 2>/dev/null && break; sleep 0.1; done
    gst-launch-1.0 -q rtspsrc location="rtsp://127.0.0.1:$rtsp/h264" protocols=tcp ! fakesink >/dev/null 2>&1 &
fi
"$bin/fumegrid-aggregator" run --config "$dir/agg.toml" --log warn >"$dir/agg.out" 2>"$dir/agg.log" &
for _ in $(seq 1 100); do grep -q '^broker:' "$dir/agg.out" 2>/dev/null && break; sleep 0.1; done

# Monitor i, restarted every cycle until $dir/stop exists. Its first run starts i × cycle /
# cameras further into the scenario and is that much shorter, so the monitors' later raises are
# staggered (the first ones, from the plateau at the gateway's start, are not).
monitor_loop() { # $1 = i
    local i=$1 lag start_at=30 duration=$cycle
    lag=$(awk -v i="$i" -v c="$cycle" -v n="$cameras" 'BEGIN {print i * c / n}')
    start_at=$(awk -v l="$lag" 'BEGIN {print 30 + l * 60}')
    duration=$(awk -v l="$lag" -v c="$cycle" 'BEGIN {print c - l}')
    while [[ ! -e "$dir/stop" ]]; do
        local cam=()
        [[ "$kind" == http ]] && cam=(--cameras "127.0.0.1:$((cport + i))")
        "$bin/fumegrid-sim" monitor --tcp "127.0.0.1:$((base + i))" --profile "$root/device-profiles/tb-compatible.toml" \
            --scenario exceedance --speed 60 --start-at "$start_at" --duration "$duration" "${cam[@]}" >/dev/null 2>>"$dir/sim.err" &
        echo $! >"$dir/sim-$i.pid"
        wait $! || true
        start_at=30 duration=$cycle
    done
}

running() { # alive and not a zombie
    local st
    st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
    [[ -n "$st" && "$st" != Z ]]
}

# Runs one gateway for SECONDS against fresh monitors; prints "cpu_ticks hwm_kib rss_kib_samples...".
run_gateway() { # $1 = config
    rm -f "$dir/stop"
    for i in $(seq 0 $((cameras - 1))); do monitor_loop "$i" & done
    "$bin/fumegrid-gateway" run --config "$1" --duration "$seconds" --log warn 2>>"$dir/gw.log" &
    local gw=$! rss=() s hwm=0 ticks=0 t
    # Sampled every second while it runs (it stops by itself after SECONDS): the last CPU and
    # VmHWM seen are its figures.
    while running "$gw"; do
        sleep 1
        s=$(awk '/^VmRSS/ {print $2}' "/proc/$gw/status" 2>/dev/null || true)
        [[ -n "$s" ]] && rss+=("$s")
        s=$(awk '/^VmHWM/ {print $2}' "/proc/$gw/status" 2>/dev/null || true)
        [[ -n "$s" ]] && hwm=$s
        t=$(awk '{print $14 + $15}' "/proc/$gw/stat" 2>/dev/null || true)
        [[ -n "$t" ]] && ticks=$t
    done
    wait "$gw" || true
    touch "$dir/stop"
    kill $(cat "$dir"/sim-*.pid 2>/dev/null) 2>/dev/null || true
    sleep 1
    echo "$ticks $hwm ${rss[*]}"
}
nocam="0 0"
[[ "${BASELINE:-1}" == 1 ]] && nocam="$(run_gateway "$dir/gw-nocam.toml")"
cam_start_ms="$(date +%s%3N)"
cam="$(run_gateway "$dir/gw-cam.toml")"
sleep 3

python3 - "$cameras" "$seconds" "$(getconf CLK_TCK)" "$dir/agg.sqlite3" "$cam_start_ms" "$kind" "$nocam" "$cam" <<'PY'
import sqlite3, sys
cameras, seconds, hz, db, cam_start, kind = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]), sys.argv[6]
nocam, cam = ([int(x) for x in a.split()] for a in sys.argv[7:9])
c = sqlite3.connect(db)
# Raised transitions of the run with cameras.
raised = dict(((g, a), ts) for g, a, ts in c.execute(
    "SELECT gateway, alarm_id, ts_ms FROM alarm_transitions WHERE phase = 'raised' AND ts_ms >= ?", (cam_start,)))
# Every alarm-raised capture: a picture row (first capture of its bytes) or a later capture of
# bytes already held; the picture is there for its alarm when both the bytes are stored and
# that capture has arrived.
caps = c.execute(
    "SELECT gateway, alarm, captured_ms, stored_ms FROM pictures WHERE source = 'camera' AND state = 'stored' "
    "AND trigger = 'alarm_raised' "
    "UNION ALL SELECT k.gateway, k.alarm, k.captured_ms, max(p.stored_ms, k.received_ms) FROM picture_captures k "
    "JOIN pictures p ON p.sha256 = k.sha256 WHERE p.state = 'stored' AND k.trigger = 'alarm_raised'").fetchall()
got = {}
for g, a, captured, stored in caps:
    if (g, a) in raised:
        got[(g, a)] = (captured - raised[(g, a)], stored - raised[(g, a)])
lat = sorted(v[1] for v in got.values())
cap = sorted(v[0] for v in got.values())
missing = sorted(set(raised) - set(got))
failed = c.execute("SELECT ts_ms, message FROM events WHERE kind = 'camera_failed' AND ts_ms >= ?", (cam_start,)).fetchall()
for a in missing:
    print(f"raise without a picture: {a[1]}")
for ts, msg in failed:
    print(f"camera_failed: {msg[:200]}")
if not lat:
    sys.exit("no alarm-raised picture stored")
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
pics = c.execute("SELECT count(*), avg(size) FROM pictures WHERE source = 'camera' AND state = 'stored'").fetchone()
later = c.execute("SELECT count(*) FROM picture_captures").fetchone()[0]
n = pics[0] + later
print(f"evidence-latency kind={kind} cameras={cameras} seconds={seconds} raises={len(raised)} with_picture={len(lat)} "
      f"camera_failed_events={len(failed)}")
print(f"raised->stored p50_ms={q(lat, .5)} p99_ms={q(lat, .99)} max_ms={lat[-1]} "
      f"(raised->captured p50_ms={q(cap, .5)} p99_ms={q(cap, .99)} max_ms={cap[-1]})")
def mem(run):
    ticks, hwm, *rss = run
    return ticks, hwm / 1024, (sum(rss) / len(rss) / 1024 if rss else 0), (min(rss) / 1024 if rss else 0), (max(rss) / 1024 if rss else 0)
t0, h0, r0, _, _ = mem(nocam)
t1, h1, r1, m1, x1 = mem(cam)
print(f"gateway without cameras: cpu_s={t0 / hz:.2f} rss_mean_mib={r0:.1f} peak_mib={h0:.1f}")
print(f"gateway with {cameras} cameras: cpu_s={t1 / hz:.2f} rss_mean_mib={r1:.1f} rss_min_mib={m1:.1f} "
      f"rss_max_sampled_mib={x1:.1f} peak_mib={h1:.1f} captures={n} (distinct pictures {pics[0]}, "
      f"mean_bytes={pics[1] or 0:.0f})")
if t0:
    print(f"cpu per capture: {(t1 - t0) / hz / max(n, 1) * 1000:.1f} ms (difference of the two runs / captures)")
PY
