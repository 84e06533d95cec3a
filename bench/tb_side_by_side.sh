#!/usr/bin/env bash
# bench/tb_side_by_side.sh [N=32] [SECONDS=60]
#
# fumegrid-gateway side by side with ThingsBoard IoT Gateway 3.8, in ONE run, on the same N
# simulated oil-fume monitors (Modbus TCP, 10 holding registers, 7 values, polled at 1 Hz), both
# doing the whole job: poll, decode, keep, publish over MQTT, get the broker's/platform's ack.
# The devices, TB set-up, TB launcher, MQTT sink and the /proc meter are the TB peer benchmark's
# (TB_PEER_DIR, read-only, called by path; see its README, "Comparing with fumegrid-gateway").
#
# Starts, in order: mosquitto, devices.py (ports mode: device i on its own port), platform_sink.py,
# TB gateway (as the peer's run.sh does), then per VARIANTS entry one fumegrid-aggregator (release
# build; embedded MQTT broker on a free loopback port, SQLite store synchronous=full, both in the
# run dir) and one fumegrid-gateway (durable outbox in the run dir, [uplink] to that aggregator
# with its own broker account and HMAC key):
#   nolog  `--log info,reading=off` (the production setting): poll, decode, outbox, MQTT uplink;
#   log    the same, plus every reading logged at INFO (target `reading`, text) to a file;
#   cam    nolog plus CAMERAS [4] RTSP cameras (issue 13), each bound to one of the first devices
#          and taking an audit picture every 60 s (the shortest schedule; the first one 60 s
#          after start, inside the window) from the tests' RTSP peer (tests/peers/rtsp_camera.py,
#          H.264 640x360, 1 s GOP, one shared stream kept running): the same Modbus path with
#          cameras configured and capturing, to compare with nolog in the same run.
# All gateways poll the same devices concurrently. After WARMUP s, one meter samples every
# gateway's and every aggregator's process tree over the same SECONDS-s window (same t0/t1 for
# all), using measure.py's own /proc functions (imported from TB_PEER_DIR): CPU = utime+stime
# (+cutime+cstime) delta over the tree, RSS = mean of 1-s VmRSS samples, peak = VmHWM at window end.
# The aggregator is the counterpart of TB's platform side (mosquitto + sink here), not of TB's
# gateway: its figures are printed on their own lines and never added to the gateway's.
#
# Points in the window:
#   TB        values that reached the broker in [t0, t1) (sink log), as measure.py counts them.
#   fumegrid  items the gateway's aggregator accepted (committed to its store, then acked) in
#             [t0, t1): delta of `items_accepted` from its `GET /api/v1/stats`, read at the very
#             t0/t1 of the CPU figures. Also shown: points polled, 7 x (Modbus replies read in
#             [t0, t1)) = delta of tcpi_bytes_received - Recv-Q (`ss -tinp`) of the gateway's
#             sockets to the device ports, / 29 bytes per reply.
# Delivery is then checked after the gateways stopped: every reading the gateway took must be in
# the aggregator's store or still in its outbox (whole run: polls x 7 + events = stored +
# left in the outbox; the gateway logs `uplink stopped items_acked=..` and `outbox flushed
# items=..` at exit), every reading polled in [t0, t1) (by ts_ms) must be in the store, and the
# aggregator must have refused nothing and stored nothing twice.
#
# Prints one summary line per gateway and per aggregator (measure.py's format), the fumegrid/TB
# ratios, then details. Every process is wrapped in `timeout` and stopped by PID.
#
# Environment knobs (defaults in brackets):
#   TB_PEER_DIR [<repo>/../shared/peers/thingsboard]   VENV [/tmp/tbgw-venv] (setup.sh made if missing)
#   WARMUP [20]  VARIANTS ["nolog log"] (add cam for the cameras' variant)  CAMERAS [4]  NETNS [1] (unshare -n, like run.sh)  BUILD [1]
#   FG_BIN [<repo>/target/release/fumegrid-gateway]  AGG_BIN [<repo>/target/release/fumegrid-aggregator]
#   RUN_DIR [/tmp/fumegrid-bench/tb-side-by-side-<time>-N<n>]
#   BUILT_FROM [`git describe --always --dirty` of this checkout]: what to print as the binaries'
#     source when FG_BIN/AGG_BIN were built elsewhere (e.g. a clean `git archive` of a commit)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TB_PEER_DIR="$(cd "${TB_PEER_DIR:-$ROOT/../shared/peers/thingsboard}" && pwd)"
N="${1:-32}"
SECONDS_WIN="${2:-60}"
VENV="${VENV:-${TBGW_VENV:-/tmp/tbgw-venv}}"
WARMUP="${WARMUP:-20}"
VARIANTS="${VARIANTS:-nolog log}"
NETNS="${NETNS:-1}"
BUILD="${BUILD:-1}"
FG_BIN="${FG_BIN:-$ROOT/target/release/fumegrid-gateway}"
AGG_BIN="${AGG_BIN:-$ROOT/target/release/fumegrid-aggregator}"
PROFILE="$ROOT/device-profiles/tb-compatible.toml"
PY="$VENV/bin/python"
export VENV

[[ "$N" =~ ^[0-9]+$ && "$N" -ge 1 ]] || { echo "N must be a positive integer" >&2; exit 2; }
[[ "$SECONDS_WIN" =~ ^[0-9]+$ && "$SECONDS_WIN" -ge 5 ]] || { echo "SECONDS must be >= 5" >&2; exit 2; }
for v in $VARIANTS; do [[ "$v" == log || "$v" == nolog || "$v" == cam ]] || { echo "VARIANTS: log, nolog and/or cam" >&2; exit 2; }; done
CAMERAS="${CAMERAS:-4}"
[[ -f "$TB_PEER_DIR/run.sh" && -f "$TB_PEER_DIR/measure.py" ]] || { echo "no TB peer benchmark at $TB_PEER_DIR" >&2; exit 2; }

# ---- outside the namespace: build, set-up (both may need the network) ------------------------
if [[ -z "${FG_BENCH_IN_NETNS:-}" ]]; then
  if [[ "$BUILD" == 1 ]]; then
    (cd "$ROOT" && cargo build --release -q -p fumegrid-gateway -p fumegrid-aggregator --bins)
  fi
  if [[ ! -x "$PY" ]] || ! { command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]]; }; then
    "$TB_PEER_DIR/setup.sh"
  fi
fi
[[ -x "$FG_BIN" ]] || { echo "no fumegrid-gateway binary at $FG_BIN (cargo build --release -p fumegrid-gateway)" >&2; exit 2; }
[[ -x "$AGG_BIN" ]] || { echo "no fumegrid-aggregator binary at $AGG_BIN (cargo build --release -p fumegrid-aggregator)" >&2; exit 2; }
[[ -x "$PY" ]] || { echo "no venv at $VENV: run $TB_PEER_DIR/setup.sh" >&2; exit 2; }
MOSQUITTO="$(command -v mosquitto || echo /usr/sbin/mosquitto)"

if [[ "$NETNS" == 1 && -z "${FG_BENCH_IN_NETNS:-}" ]]; then
  if command -v unshare >/dev/null && unshare -n true 2>/dev/null; then
    exec unshare -n env FG_BENCH_IN_NETNS=1 BUILD=0 bash "$0" "$@"
  else
    echo "note: cannot create a network namespace; running in the host namespace (loopback only)" >&2
  fi
fi
if [[ -n "${FG_BENCH_IN_NETNS:-}" ]]; then
  ip link set lo up 2>/dev/null || "$PY" - <<'EOF'
import fcntl, socket, struct
s = socket.socket(); ifr = struct.pack("16sH", b"lo", 0)
flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH", b"lo", flags | 1))
EOF
fi

RUN_DIR="${RUN_DIR:-/tmp/fumegrid-bench/tb-side-by-side-$(date +%Y%m%d-%H%M%S)-N$N}"
mkdir -p "$RUN_DIR"
cd "$RUN_DIR"

NV=$(wc -w <<< "$VARIANTS")
# MQTT_PORT (mosquitto), BASE_PORT (devices), then per variant: aggregator MQTT port, API port.
read -r MQTT_PORT BASE_PORT EXTRA_PORTS < <("$PY" - "$N" "$NV" <<'EOF'
import socket, sys
n, nv = int(sys.argv[1]), int(sys.argv[2])
def free(p):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
mq = next(p for p in range(18830, 19830) if free(p))
bp = next(b for b in range(15020, 40000, 50) if all(free(b + i) for i in range(n)) and not (b <= mq < b + n))
taken = {mq, *range(bp, bp + n)}
extra = []
for start in [18840, 18080] * nv:
    p = next(p for p in range(start, start + 1000) if p not in taken and free(p))
    taken.add(p); extra.append(p)
print(mq, bp, *extra)
EOF
)
read -r -a EXTRA <<< "$EXTRA_PORTS"
RTSP_PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

TOTAL=$((WARMUP + SECONDS_WIN + 60))   # hard bound on every process's life
PIDS=()          # timeout wrappers of the helpers, stopped last
FG_PIDS=()       # fumegrid-gateway processes (the binaries themselves)
AGG_PIDS=()      # fumegrid-aggregator processes
running() {  # alive and not a zombie
  local st
  st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || return 1
  [[ -n "$st" && "$st" != Z ]]
}
gone_or_kill() {  # gone_or_kill <pid> <quarter-seconds before SIGKILL>
  for _ in $(seq 1 "$2"); do running "$1" || return 0; sleep 0.25; done
  kill -KILL "$1" 2>/dev/null || true
}
stop_fumegrid_gateways() {  # SIGTERM: clean stop, final outbox flush, writes its stats file
  local pid
  for pid in "${FG_PIDS[@]}"; do running "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${FG_PIDS[@]}"; do gone_or_kill "$pid" 40; done
}
stop_aggregators() {  # after the gateways: commits and acks what is queued, then exits
  local pid
  for pid in "${AGG_PIDS[@]}"; do running "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${AGG_PIDS[@]}"; do gone_or_kill "$pid" 40; done
}
cleanup() {
  local pid
  # fumegrid gateways first, then their aggregators, then TB (SIGINT, its own graceful stop, as
  # run.sh), then the helpers; all by PID.
  stop_fumegrid_gateways
  stop_aggregators
  if [[ -n "${TB_PID:-}" ]] && running "$TB_PID"; then kill -INT "$TB_PID" 2>/dev/null || true; gone_or_kill "$TB_PID" 60; fi
  for pid in "${PIDS[@]}"; do running "$pid" && kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do gone_or_kill "$pid" 20; done
  wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_for() {  # wait_for <seconds> <command...>
  local t=$1; shift
  local end=$(( $(date +%s) + t ))
  until "$@"; do
    [[ $(date +%s) -lt $end ]] || return 1
    sleep 0.2
  done
}
port_open() { "$PY" -c "import socket,sys; s=socket.socket(); s.settimeout(0.5); sys.exit(s.connect_ex(('127.0.0.1',$1)))"; }
child_of() { awk '{print $1}' "/proc/$1/task/$1/children" 2>/dev/null; }
has_child() { [[ -n "$(child_of "$1")" ]]; }
api_get() {  # api_get <port> <path>: body on stdout
  "$PY" -c "import sys, urllib.request as u; sys.stdout.write(u.urlopen('http://127.0.0.1:$1$2', timeout=5).read().decode())"
}
hexrand() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
bin_id() { echo "$("$1" --version) ($1, sha256 $(sha256sum "$1" | cut -c1-12))"; }

echo "run dir: $RUN_DIR  (N=$N window=${SECONDS_WIN}s warm-up=${WARMUP}s fumegrid variants: $VARIANTS; mqtt=127.0.0.1:$MQTT_PORT devices from :$BASE_PORT aggregator mqtt/api ports ${EXTRA[*]} netns=${FG_BENCH_IN_NETNS:-0})"
echo "fumegrid: $(bin_id "$FG_BIN"), $(bin_id "$AGG_BIN"), built from ${BUILT_FROM:-git $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')}; TB peer: $TB_PEER_DIR; $(nproc) CPUs"

# ---- configs ---------------------------------------------------------------------------------
"$PY" "$TB_PEER_DIR/gen_config.py" --n "$N" --mode ports --base-port "$BASE_PORT" --mqtt-port "$MQTT_PORT" \
  --out "$RUN_DIR/tbgw" > gen_config.out
cat > mosquitto.conf <<EOF
listener $MQTT_PORT 127.0.0.1
allow_anonymous true
persistence false
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
log_type notice
EOF
# Per variant, in fg-<variant>/: the aggregator (embedded broker, store) and the gateway (outbox,
# uplink). Relative paths in both configs resolve against that folder, so the outbox and the store
# stay in the run dir (the gateway's default outbox is /var/lib/fumegrid/gateway/outbox).
i=0
for v in $VARIANTS; do
  d="$RUN_DIR/fg-$v"; mkdir -p "$d"
  gw="gw-bench-$v"; key="$(hexrand 32)"; pass="$(hexrand 16)"
  agg_mqtt="${EXTRA[$((2 * i))]}"; agg_api="${EXTRA[$((2 * i + 1))]}"; i=$((i + 1))
  printf '%s\n' "$key" > "$d/gateway.key"
  printf '%s\n' "$pass" > "$d/mqtt-password"
  printf '[[users]]\nusername = "%s"\npassword = "%s"\n' "$gw" "$pass" > "$d/broker-users.toml"
  chmod 600 "$d/gateway.key" "$d/mqtt-password" "$d/broker-users.toml"
  cat > "$d/aggregator.toml" <<EOF
[aggregator]
id = "agg-bench-$v"

[store]
path = "aggregator.sqlite3"
synchronous = "full"

[api]
listen = "127.0.0.1:$agg_api"
# a measurement harness on loopback: read without tokens
anonymous = "viewer"

[broker]
mode = "embedded"
listen = "127.0.0.1:$agg_mqtt"
credentials_file = "broker-users.toml"

[[gateways]]
id = "$gw"
key = "$key"
EOF
  {
    printf '[gateway]\nid = "%s"\npoll_interval_ms = 1000\n' "$gw"
    printf '\n[outbox]\npath = "outbox"\n'
    printf '\n[uplink]\nhost = "127.0.0.1"\nport = %d\nusername = "%s"\npassword_file = "mqtt-password"\nkey_file = "gateway.key"\n' \
      "$agg_mqtt" "$gw"
    for ((k = 0; k < N; k++)); do
      printf '\n[[devices]]\nid = "fume-%03d"\nprofile = "%s"\ntcp = "127.0.0.1:%d"\nslave = 1\n' \
        $((k + 1)) "$PROFILE" $((BASE_PORT + k))
    done
    if [[ "$v" == cam ]]; then
      for ((k = 0; k < CAMERAS && k < N; k++)); do
        printf '\n[[cameras]]\nid = "cam-%03d"\ndevices = ["fume-%03d"]\nrtsp = "rtsp://127.0.0.1:%d/h264"\nschedule_every_s = 60\n' \
          $((k + 1)) $((k + 1)) "$RTSP_PORT"
      done
    fi
  } > "$d/gateway.toml"
  echo "$agg_api" > "$d/api.port"
  "$AGG_BIN" validate --config "$d/aggregator.toml" > "$d/aggregator-validate.out" 2>&1 || { cat "$d/aggregator-validate.out" >&2; exit 1; }
  "$FG_BIN" validate --config "$d/gateway.toml" > "$d/gateway-validate.out" 2>&1 || { cat "$d/gateway-validate.out" >&2; exit 1; }
done

# ---- 1..4: broker, devices, sink, TB gateway (as run.sh) ---------------------------------------
timeout -s TERM -k 5 "$TOTAL" "$MOSQUITTO" -c mosquitto.conf 2> mosquitto.log &
MOSQ_PID=$!; PIDS+=("$MOSQ_PID")
wait_for 10 port_open "$MQTT_PORT" || { echo "mosquitto did not start (see $RUN_DIR/mosquitto.log)" >&2; exit 1; }

timeout -s TERM -k 5 "$TOTAL" "$PY" "$TB_PEER_DIR/devices.py" --n "$N" --mode ports --base-port "$BASE_PORT" \
  --duration "$TOTAL" --stats-file devices_stats.json --stats-period 1 --ready-file devices.ready > devices.log 2>&1 &
DEV_PID=$!; PIDS+=("$DEV_PID")
wait_for 20 test -f devices.ready || { echo "devices did not start (see $RUN_DIR/devices.log)" >&2; exit 1; }

timeout -s TERM -k 5 "$TOTAL" "$PY" "$TB_PEER_DIR/platform_sink.py" --port "$MQTT_PORT" --log sink.log \
  --summary sink_summary.json --duration "$TOTAL" --ready-file sink.ready > sink.out 2>&1 &
SINK_PID=$!; PIDS+=("$SINK_PID")
wait_for 10 test -f sink.ready || { echo "sink did not connect (see $RUN_DIR/sink.out)" >&2; exit 1; }

TBGW_PIDFILE="$RUN_DIR/tbgw.pid" timeout -s INT -k 15 "$TOTAL" "$PY" "$TB_PEER_DIR/tbgw_launch.py" "$RUN_DIR/tbgw" > tbgw.out 2>&1 &
PIDS+=("$!")
wait_for 10 test -s tbgw.pid || { echo "TB gateway did not start (see $RUN_DIR/tbgw.out)" >&2; exit 1; }
TB_PID="$(cat tbgw.pid)"

# The cameras' RTSP peer (Debian's python for python3-gi), and a client keeping its stream running.
if [[ " $VARIANTS " == *" cam "* ]]; then
  timeout -s TERM -k 5 "$TOTAL" /usr/bin/python3 "$ROOT/tests/peers/rtsp_camera.py" --port "$RTSP_PORT" --shared \
    > rtsp.out 2> rtsp.log &
  PIDS+=("$!")
  wait_for 20 grep -q '^ready' rtsp.out || { echo "RTSP peer did not start (see $RUN_DIR/rtsp.log)" >&2; exit 1; }
  timeout -s TERM -k 5 "$TOTAL" gst-launch-1.0 -q rtspsrc location="rtsp://127.0.0.1:$RTSP_PORT/h264" protocols=tcp \
    ! fakesink > /dev/null 2>&1 &
  PIDS+=("$!")
fi

# ---- 5: per variant, fumegrid-aggregator then fumegrid-gateway (release builds, logs to files) ---
GW_ARGS=(--proc "tb-gateway=$TB_PID=tb=sink.log=")
AGG_ARGS=()
for v in $VARIANTS; do
  d="$RUN_DIR/fg-$v"; api="$(cat "$d/api.port")"
  # The aggregator outlives its gateway by 20 s at most if everything else failed.
  timeout -s TERM -k 5 "$((TOTAL + 20))" "$AGG_BIN" run --config "$d/aggregator.toml" --log-format text \
    > "$d/aggregator.out" 2> "$d/aggregator.log" &
  wrap=$!; PIDS+=("$wrap")
  wait_for 5 has_child "$wrap" || { echo "fumegrid-aggregator ($v) did not start" >&2; exit 1; }
  pid="$(child_of "$wrap")"; AGG_PIDS+=("$pid"); echo "$pid" > "$d/aggregator.pid"
  wait_for 20 grep -q '^broker:' "$d/aggregator.out" || { echo "fumegrid-aggregator ($v) not ready (see $d/aggregator.log)" >&2; exit 1; }
  AGG_ARGS+=(--proc "aggregator-$v=$pid=agg=$d/aggregator.log=$api")

  filter=info; [[ "$v" == nolog || "$v" == cam ]] && filter="info,reading=off"
  timeout -s TERM -k 5 "$TOTAL" "$FG_BIN" run --config "$d/gateway.toml" --log "$filter" --log-format text \
    --stats-file "$d/gateway.stats.json" 2> "$d/gateway.log" &
  wrap=$!; PIDS+=("$wrap")
  wait_for 5 has_child "$wrap" || { echo "fumegrid-gateway ($v) did not start" >&2; exit 1; }
  pid="$(child_of "$wrap")"; FG_PIDS+=("$pid"); echo "$pid" > "$d/gateway.pid"
  GW_ARGS+=(--proc "fumegrid-$v=$pid=fg=$d/gateway.log=$api")
done

# ---- 6: one meter, one window, every gateway and aggregator -------------------------------------
set +e
timeout -s TERM -k 5 "$TOTAL" "$PY" - "$TB_PEER_DIR" --n "$N" --warmup "$WARMUP" --seconds "$SECONDS_WIN" \
  --base-port "$BASE_PORT" --dev-stats devices_stats.json --out result.json "${GW_ARGS[@]}" "${AGG_ARGS[@]}" \
  --other "mosquitto=$MOSQ_PID" --other "devices=$DEV_PID" --other "sink=$SINK_PID" <<'EOF' | tee summary.txt
import argparse, datetime, json, os, re, subprocess, sys, time, urllib.request
sys.path.insert(0, sys.argv.pop(1))
import measure as m   # the TB peer's meter: tree_cpu_s, tree_status, tree_ctxt_switches, alive, tree

POINTS_PER_POLL = 7          # tb-compatible profile: 7 values from one read
REPLY_BYTES = 9 + 2 * 10     # Modbus TCP reply to FC 03 x 10 registers: MBAP 7 + FC + count + data

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, required=True)
ap.add_argument("--warmup", type=float, required=True)
ap.add_argument("--seconds", type=float, required=True)
ap.add_argument("--base-port", type=int, required=True)
ap.add_argument("--proc", action="append", required=True, help="label=pid=tb|fg|agg=logfile=api_port")
ap.add_argument("--other", action="append", default=[])
ap.add_argument("--dev-stats")
ap.add_argument("--out", required=True)
a = ap.parse_args()
procs = []
for g in a.proc:
    label, pid, kind, log, api = g.split("=", 4)
    procs.append({"label": label, "pid": int(pid), "kind": kind, "log": log, "api": int(api) if api else None})
others = {k: int(p) for k, p in (o.split("=", 1) for o in a.other)}
dev_ports = range(a.base_port, a.base_port + a.n)

def tcp_bytes_read():
    """{pid: (bytes read by the app from its established TCP sockets to the device ports, number
    of such sockets)}: tcpi_bytes_received minus Recv-Q (received but not read yet), `ss -tinp`."""
    out = subprocess.run(["ss", "-Htinp", "state", "established"], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    acc, cur = {}, None
    for line in out:
        if not line[:1].isspace():
            f = line.split()   # Recv-Q Send-Q Local:Port Peer:Port users:(...)
            peer = int(f[3].rsplit(":", 1)[1])
            cur = (int(f[0]), [int(p) for p in re.findall(r"pid=(\d+)", line)]) if peer in dev_ports else None
            continue
        if cur is None:
            continue
        mb = re.search(r"bytes_received:(\d+)", line)
        got = (int(mb.group(1)) if mb else 0) - cur[0]
        for p in cur[1]:
            b, k = acc.get(p, (0, 0))
            acc[p] = (b + got, k + 1)
        cur = None
    return acc

def api_stats(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/stats", timeout=5) as r:
        return json.load(r)

def dev_stats():
    try:
        with open(a.dev_stats) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

end_warm = time.time() + a.warmup
while time.time() < end_warm:
    for g in procs:
        if not m.alive(g["pid"]):
            sys.exit(f"meter: {g['label']} (pid {g['pid']}) died during warm-up")
    time.sleep(min(0.5, max(0.0, end_warm - time.time())))

def tree_sched_ns(pid):
    """CPU time in ns of the live threads of the tree (/proc/<pid>/task/<tid>/schedstat), a
    finer-grained check of the 10-ms-tick figure from /proc/<pid>/stat."""
    tot = 0
    for p in m.tree(pid):
        try:
            tids = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for t in tids:
            try:
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    tot += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return tot

def threads_ns(pid):
    """{thread name: CPU ns} over the live threads of one process (schedstat, summed by name)."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for t in tids:
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                out[name] = out.get(name, 0) + int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return out

def snap():
    tcp = tcp_bytes_read()
    s = {}
    for g in procs:
        p = g["pid"]
        s[g["label"]] = (m.tree_cpu_s(p), m.tree_ctxt_switches(p), tcp.get(p, (0, 0)), tree_sched_ns(p),
                         threads_ns(p) if g["kind"] != "tb" else {})
    apis = {}
    for port in {g["api"] for g in procs if g["api"]}:
        apis[port] = api_stats(port)
    return s, apis

def host_cpu():  # (busy, total) jiffies of the whole machine, to see other load in the window
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return sum(v) - v[3] - v[4], sum(v)

t0 = time.time(); s0, api0 = snap(); h0 = host_cpu()
o0 = {k: m.tree_cpu_s(p) for k, p in others.items() if m.alive(p)}
d0 = dev_stats()
rss = {g["label"]: [] for g in procs}
thr = {g["label"]: 0 for g in procs}
t_end, next_s = t0 + a.seconds, t0
while True:
    now = time.time()
    if now >= t_end:
        break
    if now >= next_s:
        for g in procs:
            if not m.alive(g["pid"]):
                sys.exit(f"meter: {g['label']} (pid {g['pid']}) died during the window")
            rss[g["label"]].append(m.tree_status(g["pid"], "VmRSS"))
            thr[g["label"]] = max(thr[g["label"]], m.tree_status(g["pid"], "Threads"))
        next_s += 1.0
    time.sleep(max(0.0, min(next_s, t_end) - time.time()))
t1 = time.time(); s1, api1 = snap(); h1 = host_cpu()
o1 = {k: m.tree_cpu_s(p) for k, p in others.items() if m.alive(p)}
d1 = dev_stats()
hwm = {g["label"]: m.tree_status(g["pid"], "VmHWM") for g in procs}
win = t1 - t0
time.sleep(1.5)  # let the sink and the log files catch up with t1

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TS = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z")
def log_ts(line):  # tracing's text format starts with an RFC 3339 UTC timestamp (maybe in ANSI dim)
    mt = TS.search(line, 0, 60)
    return datetime.datetime.fromisoformat(mt.group(1) + "+00:00").timestamp() if mt else None

res = {"n": a.n, "window_s": round(win, 3), "t0": t0, "t1": t1, "gateways": {}, "aggregators": {}}
for g in procs:
    L = g["label"]
    cpu = s1[L][0] - s0[L][0]
    cpu_sched = (s1[L][3] - s0[L][3]) / 1e9
    r = {"pid": g["pid"], "cpu_s": round(cpu, 3), "cpu_s_schedstat": round(cpu_sched, 4), "cpu_pct_of_one_core": round(100 * cpu / win, 2),
         "ctxt_switches_per_s": round((s1[L][1] - s0[L][1]) / win, 1), "threads_max": thr[L],
         "processes": len(m.tree(g["pid"])),
         "rss_mib_steady": round(sum(rss[L]) / len(rss[L]) / 1024, 1),
         "rss_mib_max_sampled": round(max(rss[L]) / 1024, 1), "vmhwm_mib": round(hwm[L] / 1024, 1)}
    if g["kind"] != "tb":   # where the CPU went, by thread name (threads alive at t0 and t1)
        th0, th1 = s0[L][4], s1[L][4]
        r["cpu_s_by_thread"] = {k: round((th1[k] - th0.get(k, 0)) / 1e9, 4)
                                for k in sorted(th1, key=lambda k: th0.get(k, 0) - th1[k]) if th1[k] > th0.get(k, 0)}
    if g["kind"] == "tb":
        points = msgs = 0
        lat = []
        with open(g["log"]) as f:
            for line in f:
                p = line.split()
                if len(p) >= 2 and t0 <= float(p[0]) < t1:
                    points += int(p[1]); msgs += 1
                    if len(p) >= 4:
                        lat.append(float(p[3]))
        lat.sort()
        r.update(points=points, points_method="sink: values delivered to the broker in [t0,t1)",
                 telemetry_msgs=msgs, delivery_latency_ms_p50=lat[len(lat) // 2] if lat else None,
                 delivery_latency_ms_max=lat[-1] if lat else None)
    else:
        a0, a1 = api0[g["api"]], api1[g["api"]]
        points = a1["items_accepted"] - a0["items_accepted"]
        r.update(points=points, points_method="items the aggregator accepted (stored, then acked) in [t0,t1), GET /api/v1/stats",
                 batches_accepted=a1["batches_accepted"] - a0["batches_accepted"],
                 commits=a1["commits"] - a0["commits"],
                 items_duplicate=a1["items_duplicate"] - a0["items_duplicate"],
                 rejects_total=a1["rejects_total"] - a0["rejects_total"],
                 store_errors=a1["store_errors"] - a0["store_errors"])
    if g["kind"] == "fg":
        rb = s1[L][2][0] - s0[L][2][0]
        replies, rest = divmod(rb, REPLY_BYTES)
        r.update(points_polled=POINTS_PER_POLL * replies, tcp_bytes_read=rb, tcp_bytes_remainder=rest, replies=replies,
                 sockets_t0=s0[L][2][1], sockets_t1=s1[L][2][1])
        lines = nbytes = ansi = 0
        with open(g["log"], errors="replace") as f:
            for line in f:
                if " reading: " not in ANSI.sub("", line):
                    continue
                t = log_ts(line)
                if t is not None and t0 <= t < t1:
                    lines += 1; nbytes += len(line.encode()); ansi += "\x1b[" in line
        r.update(reading_lines_in_window=lines,
                 reading_log_bytes_per_line=round(nbytes / lines, 1) if lines else None,
                 reading_lines_with_ansi_escapes=ansi)
    r["points_per_s"] = round(points / win, 2)
    r["cpu_s_per_1000_points"] = round(1000 * cpu / points, 4) if points else None
    r["cpu_s_per_1000_points_schedstat"] = round(1000 * cpu_sched / points, 5) if points else None
    res["aggregators" if g["kind"] == "agg" else "gateways"][L] = r
res["expected_points_per_s"] = a.n * POINTS_PER_POLL
res["host_busy_pct_of_all_cpus"] = round(100 * (h1[0] - h0[0]) / max(1, h1[1] - h0[1]), 2)
res["others_cpu_pct"] = {k: round(100 * (o1[k] - o0[k]) / win, 1) for k in o1 if k in o0}
if d0 and d1 and d1["ts"] > d0["ts"]:
    res["device_requests_per_s_all_gateways"] = round((d1["total"] - d0["total"]) / (d1["ts"] - d0["ts"]), 1)
with open(a.out, "w") as f:
    json.dump(res, f, indent=1)

for L, r in [*res["gateways"].items(), *res["aggregators"].items()]:
    cpk = f"{r['cpu_s_per_1000_points']:.4f}" if r["points"] else "nan"
    print(f"{L} N={a.n} points/s={r['points'] / win:.1f} cpu_s_per_1000_points={cpk} "
          f"rss_mib={r['rss_mib_steady']} peak_rss_mib={r['vmhwm_mib']} "
          f"cpu_pct={r['cpu_pct_of_one_core']} window_s={win:.1f}", flush=True)
tb = res["gateways"].get("tb-gateway")
for L, r in res["gateways"].items():
    if L == "tb-gateway" or not tb or not tb["points"] or not r["points"]:
        continue
    cr = r["cpu_s_per_1000_points"] / tb["cpu_s_per_1000_points"]
    met = lambda ok: "met" if ok else "NOT MET"  # noqa: E731
    print(f"ratio {L}/tb-gateway: cpu_per_point={cr:.4f} rss={r['rss_mib_steady'] / tb['rss_mib_steady']:.3f} "
          f"peak_rss={r['vmhwm_mib'] / tb['vmhwm_mib']:.3f} | targets: cpu/point <= 1/10 of TB's "
          f"{met(cr <= 0.1)}, <= 0.03 cpu_s/1000 {met(r['cpu_s_per_1000_points'] <= 0.03)}, "
          f"rss <= 10 MiB {met(r['rss_mib_steady'] <= 10)} (peak {met(r['vmhwm_mib'] <= 10)})", flush=True)
EOF
rc=${PIPESTATUS[0]}
set -e

# Stop order for the delivery check: gateways (final outbox flush, counters in their logs), then
# the aggregators' final counters, then the aggregators (so the store can be read), then the rest.
stop_fumegrid_gateways
sleep 1   # batches published just before the stop get committed
for v in $VARIANTS; do
  d="$RUN_DIR/fg-$v"
  api_get "$(cat "$d/api.port")" /api/v1/stats > "$d/aggregator.final-stats.json" 2> /dev/null || true
done
stop_aggregators
cleanup
trap - EXIT
if [[ $rc -ne 0 ]]; then echo "measurement failed (rc=$rc); logs in $RUN_DIR" >&2; exit $rc; fi

# ---- 7: details and checks (after every process stopped) ---------------------------------------
"$PY" - "$N" $VARIANTS <<'EOF'
import json, os, re, sqlite3, subprocess, sys
n, variants = int(sys.argv[1]), sys.argv[2:]
r = json.load(open("result.json"))
t0_ms, t1_ms = r["t0"] * 1000, r["t1"] * 1000
print(f"  window: t0={r['t0']:.3f} t1={r['t1']:.3f} ({r['window_s']} s, same for every process); "
      f"expected points/s={r['expected_points_per_s']}; device requests/s (all gateways)="
      f"{r.get('device_requests_per_s_all_gateways')} (TB 7/poll + fumegrid 1/poll each = "
      f"{n * (7 + len(variants))}); others_cpu_pct={r['others_cpu_pct']}; "
      f"whole machine busy={r['host_busy_pct_of_all_cpus']} % of all CPUs (everything, this run included)")
for L, g in [*r["gateways"].items(), *r["aggregators"].items()]:
    keys = [k for k in ("points", "points_polled", "cpu_s", "cpu_s_schedstat", "cpu_s_per_1000_points_schedstat", "threads_max",
                        "processes", "ctxt_switches_per_s", "rss_mib_max_sampled",
                        "telemetry_msgs", "delivery_latency_ms_p50", "delivery_latency_ms_max",
                        "batches_accepted", "commits", "items_duplicate", "rejects_total", "store_errors", "replies",
                        "sockets_t0", "sockets_t1", "tcp_bytes_remainder", "reading_lines_in_window", "reading_log_bytes_per_line",
                        "reading_lines_with_ansi_escapes", "cpu_s_by_thread") if k in g]
    print(f"  {L}: " + ", ".join(f"{k}={g[k]}" for k in keys))
    if g.get("reading_lines_in_window") and g["reading_lines_in_window"] != g["points_polled"]:
        print(f"  NOTE {L}: {g['reading_lines_in_window']} reading lines stamped in the window vs "
              f"{g['points_polled']} points from replies read (boundary: a reply read before t0 logged after it)")
    if g.get("tcp_bytes_remainder") or g.get("sockets_t0", n) != n or g.get("sockets_t1", n) != n:
        print(f"  WARNING {L}: partial reply or reconnect in the window; polled points may be off by a poll", file=sys.stderr)
bad = False
ANSI = re.compile(r"\x1b\[[0-9;]*m")
def last_fields(path, message):
    """key=value fields of the last log line with this message (text format)."""
    found = None
    with open(path, errors="replace") as f:
        for line in f:
            line = ANSI.sub("", line)
            if f" {message} " in line or line.rstrip().endswith(f" {message}") or f": {message} " in line:
                found = dict(re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", line))
    return {k: int(v) if v.isdigit() else v for k, v in (found or {}).items()}
for v in variants:
    d = f"fg-{v}"
    try:
        st = json.load(open(f"{d}/gateway.stats.json"))
    except (OSError, ValueError) as e:
        print(f"  WARNING fumegrid-{v}: no stats file ({e})", file=sys.stderr); bad = True; continue
    tot = {k: sum(s[k] for s in st) for k in ("polls", "polls_ok", "requests", "no_reply", "garbled",
                                                 "exceptions", "io_errors", "breaker_trips", "overruns")}
    print(f"  fumegrid-{v} whole run (stats file, {len(st)} slaves): " + ", ".join(f"{k}={x}" for k, x in tot.items()))
    errs = sum(tot[k] for k in ("no_reply", "garbled", "exceptions", "io_errors", "breaker_trips"))
    if len(st) != n or tot["polls"] != tot["polls_ok"] or errs:
        print(f"  WARNING fumegrid-{v}: failed polls or errors", file=sys.stderr); bad = True
    up = last_fields(f"{d}/gateway.log", "uplink stopped")
    ob = last_fields(f"{d}/gateway.log", "outbox flushed")
    try:
        fin = json.load(open(f"{d}/aggregator.final-stats.json"))
    except (OSError, ValueError) as e:
        print(f"  WARNING aggregator-{v}: no final stats ({e})", file=sys.stderr); bad = True; fin = {}
    db = sqlite3.connect(f"file:{d}/aggregator.sqlite3?mode=ro", uri=True)
    q = lambda sql, *p: db.execute(sql, p).fetchone()[0]  # noqa: E731
    readings = q("SELECT count(*) FROM readings")
    events = q("SELECT count(*) FROM events")
    kinds = dict(db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
    items = q("SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM stream_ranges")  # seqs held (schema 15)
    in_win = q("SELECT count(*) FROM readings WHERE ts_ms >= ? AND ts_ms < ?", t0_ms, t1_ms)
    not_ok = q("SELECT count(*) FROM readings WHERE quality != 0")
    series = q("SELECT count(*) FROM series")
    devices = q("SELECT count(DISTINCT device) FROM series")
    pictures = q("SELECT count(*) FROM pictures")
    db.close()
    # Picture parts are items too (the cam variant): as many as the gateway logged.
    evid = 0
    with open(f"{d}/gateway.log", errors="replace") as f:
        for line in f:
            mt = re.search(r"picture taken .*\bparts=(\d+)", ANSI.sub("", line))
            evid += int(mt.group(1)) if mt else 0
    events += evid
    outbox_kib = int(subprocess.run(["du", "-sk", f"{d}/outbox"], capture_output=True, text=True).stdout.split()[0] or 0)
    taken = tot["polls"] * 7
    left = ob.get("items")
    print(f"  fumegrid-{v} delivery, whole run: readings taken={taken} (polls x 7); "
          f"gateway: items_sent={up.get('items_sent')} items_acked={up.get('items_acked')} acks_refused={up.get('acks_refused')} "
          f"ack_timeouts={up.get('ack_timeouts')}, left in outbox at stop={left} (outbox folder {outbox_kib} KiB, {d}/outbox); "
          f"aggregator: items_accepted={fin.get('items_accepted')} items_duplicate={fin.get('items_duplicate')} "
          f"rejects_total={fin.get('rejects_total')} store_errors={fin.get('store_errors')} mqtt_connects={fin.get('mqtt_connects')}; "
          f"store: readings={readings} (not ok: {not_ok}) events={events - evid} {kinds} picture parts={evid} "
          f"(pictures {pictures}) items={items} series={series} devices={devices}")
    exp_win = r["gateways"][f"fumegrid-{v}"]["points_polled"]
    print(f"  fumegrid-{v} delivery, window: readings stamped in [t0,t1) in the store={in_win}, polled in the window "
          f"(7 x replies)={exp_win}, accepted in the window={r['gateways'][f'fumegrid-{v}']['points']}")
    problems = []
    if left is None or up.get("items_acked") is None:
        problems.append("no `uplink stopped` / `outbox flushed` line in the gateway log")
    elif readings + left < taken:
        problems.append(f"LOST: stored ({readings} readings) + left in outbox ({left}) = {readings + left} < taken {taken}")
    elif readings + left > taken:
        # stored, but the ack had not reached the gateway when it stopped: in both places
        twice = readings + left - taken
        note = f"{twice} item(s) stored but not yet acked at the gateway's stop (also still in its outbox)"
        if up["items_acked"] + left != taken + events:
            problems.append(note + f", and items_acked {up['items_acked']} + left {left} != taken {taken} + events {events}")
        else:
            print(f"  NOTE fumegrid-{v}: " + note)
    if fin.get("items_accepted") != readings + events or items != readings + events:
        problems.append(f"items_accepted {fin.get('items_accepted')} / items table {items} != readings + events {readings + events}")
    if up.get("items_acked") is not None and up["items_acked"] > readings + events:
        problems.append(f"gateway got acks for {up['items_acked']} items, store holds {readings + events}")
    if fin.get("rejects_total") or fin.get("items_duplicate") or fin.get("store_errors"):
        problems.append("aggregator refused, duplicated or failed to store items")
    if abs(in_win - exp_win) > 7:
        problems.append(f"readings stamped in the window {in_win} vs polled {exp_win}")
    if series != n * 7 or devices != n or not_ok:
        problems.append(f"{series} series / {devices} devices / {not_ok} not-ok readings")
    if problems:
        print(f"  WARNING fumegrid-{v} delivery: " + "; ".join(problems), file=sys.stderr); bad = True
    else:
        print(f"  fumegrid-{v} delivery check: ok (every reading taken is in the store or was still in the outbox at stop; "
              f"none refused, none twice)")
s = json.load(open("sink_summary.json"))
if len(s["devices"]) != n:
    print(f"  WARNING: TB telemetry seen from {len(s['devices'])} of {n} devices", file=sys.stderr)
for L, g in r["gateways"].items():
    if g["points_per_s"] < 0.95 * r["expected_points_per_s"]:
        print(f"  WARNING {L}: {g['points_per_s']} points/s, expected {r['expected_points_per_s']}", file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
echo "  files: $RUN_DIR/{result.json,summary.txt,fg-*/{gateway,aggregator}.{toml,log},fg-*/gateway.stats.json,fg-*/aggregator.sqlite3,fg-*/outbox,sink_summary.json,tbgw/logs/}"
