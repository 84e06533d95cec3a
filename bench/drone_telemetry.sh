#!/usr/bin/env bash
# Drone telemetry (issue 15): DRONES simulated drones (`fumegrid-sim drone`: MAVLink 2 over UDP,
# GLOBAL_POSITION_INT at 10 Hz, HEARTBEAT + SYS_STATUS + BATTERY_STATUS at 1 Hz, a
# CAMERA_IMAGE_CAPTURED over each of the demo street's sites) into one gateway with the default
# decimation and `[uplink] compress = true` (the default). mosquitto is the broker and the
# gateway's `ack_sink` example stands in for the aggregator (it acks every batch at once, so no
# resend inflates the bytes, and counts what arrived). Real time, not compressed: the gateway's
# decimation runs on its own clock.
#
# Measures over SECONDS of flight: the gateway's CPU time (utime + stime from /proc, whole
# process, from the first datagram to the last item acked), its peak RSS, and the uplink
# payload bytes (MQTT PUBLISH payloads of the batches; MQTT headers, hellos and statuses not
# included); scaled to a flight hour.
#
#   bench/drone_telemetry.sh [SECONDS=600] [DRONES=4]
#   PHOTOS=1 bench/drone_telemetry.sh ...   # the photos' bytes too: the simulator serves them
#                                           # (--photos), the drones have photo_url = "{file}"
#
# Builds the release binaries first (CARGO_TARGET_DIR is honoured), unless FUMEGRID_BIN_DIR names
# a folder with fumegrid-gateway, fumegrid-sim and examples/ack_sink (bytes do not depend on the
# build; CPU does).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-600}"
drones="${2:-4}"
cd "$root"
if [[ -n "${FUMEGRID_BIN_DIR:-}" ]]; then
    bin="$FUMEGRID_BIN_DIR"
else
    cargo build --release --quiet -p fumegrid-gateway -p fumegrid-sim --bins
    cargo build --release --quiet -p fumegrid-gateway --example ack_sink
    bin="${CARGO_TARGET_DIR:-$root/target}/release"
fi
dir="$(mktemp -d /tmp/fumegrid-drones.XXXXXX)"
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"' EXIT

free_port() {
    local p=$1
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p"
}
mqtt="$(free_port 19940)"
metrics="$(free_port 19470)"
photos="${PHOTOS:-0}"
photo_port="$(free_port 19480)"
udp="${UDP:-14650}"
key=000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
echo "$key" >"$dir/gw.key"
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\n' "$mqtt" >"$dir/mosquitto.conf"
mosq=/usr/sbin/mosquitto
[[ -x $mosq ]] || mosq=mosquitto
"$mosq" -c "$dir/mosquitto.conf" 2>"$dir/mosquitto.log" &
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$mqtt") 2>/dev/null && break; sleep 0.1; done

tail="${TAIL:-75}" # after the flight: item_every_s (60 s) for the last stretch, and its ack
"$bin/examples/ack_sink" "127.0.0.1:$mqtt" "$key" "$((secs + tail + 15))" >"$dir/sink.json" &
sink=$!
{
    printf '[gateway]\nid = "gw-drones"\n[outbox]\npath = "outbox"\n'
    printf '[uplink]\nhost = "127.0.0.1"\nport = %s\nkey_file = "gw.key"\n' "$mqtt"
    printf '[metrics]\nlisten = "127.0.0.1:%s"\n' "$metrics"
    for i in $(seq "$drones"); do
        printf '[[drones]]\nid = "uav-%s"\nconnection = "udpin:127.0.0.1:%s"\nsystem_id = %s\n' "$i" "$udp" "$i"
        if [[ $photos == 1 ]]; then printf 'photo_url = "{file}"\n'; fi
    done
} >"$dir/gateway.toml"
"$bin/fumegrid-gateway" run --config "$dir/gateway.toml" --log-format json >"$dir/gateway.out" 2>"$dir/gateway.log" &
gw=$!
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$metrics") 2>/dev/null && break; sleep 0.1; done
sleep 3 # hello answered

cpu() { awk '{print $14 + $15}' "/proc/$gw/stat"; }
tck="$(getconf CLK_TCK)"
c0="$(cpu)"
photo_args=()
if [[ $photos == 1 ]]; then photo_args=(--photos "127.0.0.1:$photo_port"); fi
"$bin/fumegrid-sim" drone --to "127.0.0.1:$udp" --count "$drones" --duration "$secs" \
    "${photo_args[@]}" >"$dir/sim.out" 2>"$dir/sim.err"
sleep "$tail"
c1="$(cpu)"
rss="$(awk '/VmHWM/ {print $2}' "/proc/$gw/status")"
curl -s "http://127.0.0.1:$metrics/metrics" >"$dir/metrics.txt" || true
kill -TERM "$gw"
wait "$gw" || true
wait "$sink" || true

sim="$(tail -1 "$dir/sim.err")"
sinkj="$(cat "$dir/sink.json")"
python3 - "$secs" "$drones" "$c0" "$c1" "$tck" "$rss" "$sim" "$sinkj" "$dir/metrics.txt" "$tail" <<'PY'
import json, re, sys
secs, drones = float(sys.argv[1]), int(sys.argv[2])
c0, c1, tck, rss = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
sim, sink = json.loads(sys.argv[7]), json.loads(sys.argv[8])
text = open(sys.argv[9]).read()
tail = float(sys.argv[10])
def total(name, **labels):
    s = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            s += float(line.rsplit(" ", 1)[1])
    return s
cpu_s = (c1 - c0) / tck
hours = secs / 3600.0
b = sink["payload_bytes"]
print(f"flight {secs:.0f} s x {drones} drones: sim sent {sim['frames']} frames, {sim['bytes']} bytes, {sim['photos']} photos")
print(f"gateway: frames {total('fumegrid_mavlink_frames_total'):.0f}, points kept {total('fumegrid_drone_points_total', fate='kept'):.0f}, decimated {total('fumegrid_drone_points_total', fate='decimated'):.0f}, rejected {total('fumegrid_mavlink_rejected_total'):.0f}")
print(f"gateway CPU {cpu_s:.2f} s over {secs + tail:.0f} s = {100 * cpu_s / (secs + tail):.2f} % of one core; peak RSS {rss / 1024:.1f} MiB")
print(f"uplink: {b} payload bytes in {sink['batches']} batches; items {json.dumps(sink['items'])}")
if total('fumegrid_drone_photos_fetched_total') or total('fumegrid_drone_photo_fetch_failures_total'):
    print(f"photos: fetched {total('fumegrid_drone_photos_fetched_total'):.0f} ({total('fumegrid_drone_photo_bytes_total'):.0f} bytes), fetch failures {total('fumegrid_drone_photo_fetch_failures_total'):.0f}")
print(f"per flight hour: {b / hours / drones / 1024:.1f} KiB per drone, {b / hours / 1024:.1f} KiB for {drones} drones; gateway CPU {cpu_s / hours / drones:.1f} s per drone-hour")
PY
