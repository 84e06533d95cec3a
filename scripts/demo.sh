#!/usr/bin/env bash
# The demo: a district in miniature on this machine alone, on embedded defaults.
#
#   scripts/demo.sh                 run until Ctrl-C
#   DURATION=180 scripts/demo.sh    stop by itself after 180 s
#
# Starts the aggregator (its own MQTT broker and SQLite store), five simulated oil-fume monitors
# (three on one emulated RS-485 bus at 9600 baud 8E1 — a pty the simulator makes itself — and two
# over Modbus TCP), and a gateway that polls them and forwards everything through its outbox to
# the aggregator. Five restaurants, five stories, all within three minutes:
#
#   noodle-house  normal cooking                     stays normal, no alarm
#   bbq-grill     fume over the 2.0 mg/m³ limit      exceedance      → case for epb
#   hotpot        purifier switched off, fan on      purifier_idle   → case for urban
#   dumplings     purifier current fading            purifier_dirty  → case for urban
#   teahouse      fume sensor stuck at 0.5           sensor_fault    → case for epb
#
# The grill and the hotpot have (simulated) kitchen cameras: their alarms arrive with a picture
# that travels through the outbox to the aggregator and shows in their case on the dashboard.
# A (simulated) patrol drone flies laps over the street, about 110 s each, sending MAVLink to
# the gateway; the five restaurants have their places on the street (firmware-sim/
# demo-patrol.toml), so each pass over a restaurant with an open case lands on that case's
# timeline as an aerial pass, and the dashboard's map shows the street, the cases and the track.
#
# The monitors play their scenarios SPEED times faster than real time, and the gateway's rule
# durations (windows, raise/clear and hold times) are the production defaults divided by SPEED,
# so what takes hours on a street takes minutes here.
#
# The terminal stays quiet: one line per alarm (raised, cleared) and per case event (opened,
# moved, overdue, escalated), read from the aggregator's API, and every 10 s a status line.
# Everything else goes to the run folder: the processes' logs, configs and stores, and
# `tokens.txt` with the API tokens and ready-to-paste curl commands.
#
# Environment:
#   DURATION          seconds to run, then stop (default: until Ctrl-C)
#   SPEED             scenario seconds per wall second, a whole number (default 60)
#   DEMO_DIR          the run folder (default: a new /tmp/fumegrid-demo.XXXXXX); must be empty
#   DRONE             1 (default): the simulated patrol drone over the street (fumegrid-sim
#                     drone, MAVLink to the gateway; docs/drones.md); 0: no drone
#   FUMEGRID_BIN_DIR  use the binaries in this folder instead of building them
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
duration="${DURATION:-}"
speed="${SPEED:-60}"
drone="${DRONE:-1}"
if [[ "$drone" != 0 && "$drone" != 1 ]]; then
    echo "demo: DRONE must be 0 or 1, not \`$drone\`" >&2
    exit 2
fi
if ! [[ "$speed" =~ ^[1-9][0-9]{0,3}$ ]]; then
    echo "demo: SPEED must be a whole number from 1 to 9999, not \`$speed\`" >&2
    exit 2
fi
if [[ -n "$duration" && ! "$duration" =~ ^[1-9][0-9]{0,6}$ ]]; then
    echo "demo: DURATION must be a whole number of seconds, not \`$duration\`" >&2
    exit 2
fi

if [[ -n "${FUMEGRID_BIN_DIR:-}" ]]; then
    bin="$FUMEGRID_BIN_DIR"
else
    echo "demo: building (the first time takes a few minutes)..."
    cargo build --quiet -p fumegrid-gateway -p fumegrid-sim -p fumegrid-aggregator
    bin="${CARGO_TARGET_DIR:-$root/target}/debug"
fi
for b in fumegrid-aggregator fumegrid-gateway fumegrid-sim; do
    [[ -x "$bin/$b" ]] || {
        echo "demo: $bin/$b missing" >&2
        exit 2
    }
done

if [[ -n "${DEMO_DIR:-}" ]]; then
    run_dir="$DEMO_DIR"
    mkdir -p "$run_dir"
    if [[ -n "$(ls -A "$run_dir")" ]]; then
        echo "demo: DEMO_DIR $run_dir is not empty" >&2
        exit 2
    fi
    run_dir="$(cd "$run_dir" && pwd)"
else
    run_dir="$(mktemp -d /tmp/fumegrid-demo.XXXXXX)"
fi
pids=()
cleanup() {
    trap - EXIT INT TERM
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    say "demo stopped; logs, configs, stores and tokens are in $run_dir"
}
trap cleanup EXIT INT TERM

say() { printf '%s  %s\n' "$(date +%H:%M:%S)" "$*"; }

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

# GET a path of the API with bash alone (no curl needed); prints the body.
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
camera_port="$(free_port 18554)"
camera_password="$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"

# --- the aggregator: embedded broker (authentication required) and store ---------------------
printf '%s\n' "$key" >"$run_dir/gateway.key"
printf '%s\n' "$password" >"$run_dir/mqtt-password"
cat >"$run_dir/broker-users.toml" <<TOML
[[users]]
username = "gw-demo-01"
password = "$password"
TOML
# API tokens: the file keeps only their SHA-256; the tokens themselves go to tokens.txt.
new_token() { # name role [department] -> prints the token, appends the entry to api-tokens.toml
    local t
    t="$("$bin/fumegrid-aggregator" new-token --name "$1" --role "$2" ${3:+--department "$3"} \
        2>&1 >>"$run_dir/api-tokens.toml")"
    printf '\n' >>"$run_dir/api-tokens.toml"
    printf '%s' "${t##*: }"
}
: >"$run_dir/api-tokens.toml"
operator_token="$(new_token dispatch-desk operator)"
epb_token="$(new_token epb-duty department epb)"
urban_token="$(new_token urban-duty department urban)"
viewer_token="$(new_token leader viewer)"
reporter_token="$(new_token hotline-app reporter)"
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
site = "Demo street"
grid_cell = "DEMO-01"
TOML
# Each restaurant's place on the street: the sites of the drone's patrol route.
declare -A shop_name=(
    [noodle-house]="兰州拉面 Noodle house" [bbq-grill]="老王烧烤 Wang's BBQ"
    [hotpot]="蜀香火锅 Hotpot" [dumplings]="东北饺子 Dumplings" [teahouse]="锦江茶馆 Teahouse"
)
while read -r dev lat lon; do
    cat >>"$run_dir/aggregator.toml" <<TOML
[[gateways.devices]]
id = "$dev"
name = "${shop_name[$dev]:-$dev}"
lat = $lat
lon = $lon
TOML
done < <(awk -F' *= *' '/^\[\[sites\]\]/ { d = ""; next }
    $1 == "device" { gsub(/"/, "", $2); d = $2 }
    $1 == "lat" && d != "" { lat = $2 }
    $1 == "lon" && d != "" { print d, lat, $2; d = "" }' firmware-sim/demo-patrol.toml)
# The restaurants are 80 m apart: a drone within 40 m is over one of them; the drone's laps
# take about 110 s, so a lap away (30 s) ends a pass, judged at most a minute after it.
cat >>"$run_dir/aggregator.toml" <<TOML
[drones]
pass_distance_m = 40.0
pass_gap_s = 30
pass_close_after_s = 60
TOML
: >"$run_dir/tokens.txt"
chmod 600 "$run_dir"/api-tokens.toml "$run_dir"/gateway.key "$run_dir"/mqtt-password \
    "$run_dir"/broker-users.toml "$run_dir"/tokens.txt
"$bin/fumegrid-aggregator" run --config "$run_dir/aggregator.toml" ${duration:+--duration "$((duration + 5))"} \
    >"$run_dir/aggregator.out" 2>"$run_dir/aggregator.log" &
pids+=($!)
wait_for "$run_dir/aggregator.out" '^broker:' "the aggregator"

# --- simulated monitors ----------------------------------------------------------------------
"$bin/fumegrid-sim" bus --pty "$run_dir/rs485-1" --baud 9600 --parity even --turnaround-ms 5 "${sim_time[@]}" \
    --slave "1:$profiles/generic-f32-input.toml:normal" \
    --slave "2:$profiles/scaled-u16-holding.toml:exceedance" \
    --slave "3:$profiles/coil-state-monitor.toml:purifier_off" \
    --cameras "127.0.0.1:$camera_port" --camera noodle-house=1 --camera bbq-grill=2 --camera hotpot=3 \
    --camera-user demo --camera-password "$camera_password" \
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
# A production duration (default of gateway/src/rules/config.rs) at the demo's speed: divided
# by SPEED and rounded, at least 1 s.
at_speed() {
    local v=$((($1 + speed / 2) / speed))
    echo $((v < 1 ? 1 : v))
}
eval_every=$(at_speed 60)
offline_after=$(at_speed 300)
# Offline means several missed polls whatever the speed (the gateway polls once a second).
((offline_after < 10)) && offline_after=10
# A picture on an open alarm's updates at most every 10 production minutes (at least 10 s).
camera_update=$(at_speed 600)
((camera_update < 10)) && camera_update=10
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

# Readings go up as clock-aligned periods (production default 60 s). The demo's monitors run
# $speed times faster than real time, so it reports every 10 s to keep the dashboard moving; raw
# polls still go up around every alarm (raw_before_s/raw_after_s, production values).
[report]
period_s = 10

# The production defaults with every duration divided by the demo's speed ($speed): the monitors
# play their scenarios $speed times faster than real time. Counts and thresholds are unchanged;
# the jump limits (per second) are multiplied by the speed for the same reason.
[rules]
standard = "gb18483_2001"
eval_every_s = $eval_every
window_s = $((eval_every * 10))
raise_after = 3
clear_after = 5
purifier_idle_after_s = $(at_speed 600)
baseline_learn_s = $(at_speed 3600)
purifier_dirty_after_s = $(at_speed 1800)
offline_after_s = $offline_after
stuck_after_s = $(at_speed 1800)
fault_after_s = $(at_speed 60)
clear_hold_s = $(at_speed 60)
update_every_s = $(at_speed 300)
max_jump = { fume_mg_m3 = $((5 * speed)).0, particulate_mg_m3 = $((10 * speed)).0, nmhc_mg_m3 = $((20 * speed)).0 }

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
# The simulator's snapshot cameras (docs/simulator.md): a picture with every alarm of the device
# a camera watches, and on an operator's request from the dashboard.
[[cameras]]
id = "cam-bbq-grill"
devices = ["bbq-grill"]
snapshot_url = "http://127.0.0.1:$camera_port/camera/bbq-grill.jpg"
user = "demo"
password = "$camera_password"
update_every_s = $camera_update

[[cameras]]
id = "cam-hotpot"
devices = ["hotpot"]
snapshot_url = "http://127.0.0.1:$camera_port/camera/hotpot.jpg"
user = "demo"
password = "$camera_password"
update_every_s = $camera_update
TOML

if [[ "$drone" == 1 ]]; then
    drone_port="$(free_port 14550)"
    photo_port="$(free_port 18090)"
    cat >>"$run_dir/gateway.toml" <<TOML

# A patrol drone (fumegrid-sim drone: MAVLink 2 at 10 Hz over the street; docs/drones.md). It
# photographs each restaurant it passes; the gateway fetches each photo from the drone's camera
# server and sends it up as evidence, so the photo lands in the case with the aerial pass.
[[drones]]
id = "uav-demo"
connection = "udpin:127.0.0.1:$drone_port"
item_every_s = 10    # the production default is 60: a track item a minute
photo_url = "http://127.0.0.1:$photo_port/DCIM/1/{name}"
photo_user = "demo"
photo_password = "$camera_password"
TOML
fi

"$bin/fumegrid-gateway" validate --config "$run_dir/gateway.toml" >"$run_dir/gateway-validate.out"

A="http://127.0.0.1:$api_port"
cat >"$run_dir/tokens.txt" <<INFO
fumegrid demo: API tokens and things to try (docs/api.md, docs/cases.md)

  dashboard        $A/   (paste the viewer token)
  aggregator API   $A/api/v1   (OpenAPI at $A/api/v1/openapi.json)
  MQTT broker      127.0.0.1:$mqtt_port (authentication required)
  RS-485 bus       $run_dir/rs485-1 (3 monitors); Modbus TCP monitors on ports $port1, $port2

API tokens (api-tokens.toml keeps only their SHA-256):
  operator           $operator_token
  department epb     $epb_token
  department urban   $urban_token
  viewer             $viewer_token
  reporter (Open311) $reporter_token

OP=$operator_token
EPB=$epb_token
URBAN=$urban_token
VIEWER=$viewer_token
REPORTER=$reporter_token
A=$A

# What the monitors report, the open alarms, the cases:
curl -s -H "Authorization: Bearer \$VIEWER" \$A/api/v1/devices
curl -s -H "Authorization: Bearer \$VIEWER" "\$A/api/v1/alarms?state=open"
curl -s -H "Authorization: Bearer \$OP" \$A/api/v1/cases

# The bbq-grill exceedance case is with epb: sign for it, then report it handled
# (<id> from the list above, e.g. C20251103-0001):
curl -s -H "Authorization: Bearer \$EPB" -d '{"action":"accept","note":"inspector on the way"}' \$A/api/v1/cases/<id>/transitions
curl -s -H "Authorization: Bearer \$EPB" -d '{"action":"handle","note":"filters replaced"}' \$A/api/v1/cases/<id>/transitions
# The purifier cases are with urban: the same with \$URBAN. The operator verifies and closes:
curl -s -H "Authorization: Bearer \$OP" -d '{"action":"verify"}' \$A/api/v1/cases/<id>/transitions
curl -s -H "Authorization: Bearer \$OP" -d '{"action":"close"}' \$A/api/v1/cases/<id>/transitions

# A citizen report over Open311 with the reporter token, then following it (no token needed):
curl -s \$A/open311/v2/services.json
curl -s -d "api_key=\$REPORTER" -d service_code=exceedance -d "description=thick smoke from the kitchen vent" \\
     -d "address_string=12 Demo street" -d lat=30.65542 -d long=104.08138 \$A/open311/v2/requests.json
# (Its point is on the drone's route: the map shows it, and the drone's next lap over it lands on
# the new case as an aerial pass.)
curl -s \$A/open311/v2/requests.json

# Case statistics:
curl -s -H "Authorization: Bearer \$VIEWER" \$A/api/v1/stats/cases

# The map: the restaurants with their alarms, cases and drone passes, the drone's last hour:
curl -s -H "Authorization: Bearer \$VIEWER" \$A/api/v1/map
INFO

cat <<INFO
$(date +%H:%M:%S)  demo running at speed $speed (scenario seconds per wall second)${duration:+ for $duration s}
          dashboard  $A/   (viewer token: $viewer_token)
          tokens and curl examples: $run_dir/tokens.txt
          logs: $run_dir/{aggregator,gateway}.log
          expect within 3 minutes: exceedance (bbq-grill), purifier idle (hotpot), purifier dirty
          (dumplings), sensor fault (teahouse), each opening a case; noodle-house stays normal.$(
    [[ "$drone" == 1 ]] && printf '\n%s' "          and a patrol drone passing the restaurants, its passes on their open cases."
)
INFO
"$bin/fumegrid-gateway" run --config "$run_dir/gateway.toml" --stats-interval 30 \
    --log info,reading=off,poll=debug ${duration:+--duration "$duration"} \
    >"$run_dir/gateway.out" 2>"$run_dir/gateway.log" &
gw=$!
pids+=("$gw")
if [[ "$drone" == 1 ]]; then
    "$bin/fumegrid-sim" drone --to "127.0.0.1:$drone_port" ${duration:+--duration "$duration"} \
        --photos "127.0.0.1:$photo_port" --photo-user demo --photo-password "$camera_password" \
        >"$run_dir/drone.out" 2>"$run_dir/drone.err" &
    pids+=($!)
fi

# --- the quiet terminal: what the API says, as it changes -----------------------------------
# Values of one flat JSON object (no nested objects), read with bash's regex alone.
jstr() { # object key -> string value in $REPLY (empty when absent or null)
    local re="\"$2\":\"([^\"]*)\""
    REPLY=""
    [[ $1 =~ $re ]] && REPLY="${BASH_REMATCH[1]}"
    return 0
}
jval() { # object key -> scalar (number, true, false, null) in $REPLY
    local re="\"$2\":([^,}\"]*)"
    REPLY=""
    [[ $1 =~ $re ]] && REPLY="${BASH_REMATCH[1]}"
    return 0
}
hhmm() { # ms -> local "MM-DD HH:MM"
    date -d "@$(($1 / 1000))" '+%m-%d %H:%M %Z'
}

declare -A alarm_phase=() case_state=() case_flags=()
watch_once() {
    local body obj id phase kind device msg state flags line sup
    # Alarm episodes (flat objects): one line when raised, one when cleared.
    body="$(api_get '/api/v1/alarms?state=all&limit=1000' 2>/dev/null)" || return 0
    [[ $body == '{"alarms":'* ]] || return 0
    open_alarms=0
    alarm_devices=" "
    while IFS= read -r obj; do
        jstr "$obj" id && id=$REPLY
        [[ -n $id ]] || continue # the list's own object when it is empty
        jstr "$obj" phase && phase=$REPLY
        jval "$obj" suppressed && sup=$REPLY
        jstr "$obj" device && device=$REPLY
        if [[ $phase != cleared && $sup == false ]]; then
            open_alarms=$((open_alarms + 1))
            alarm_devices+="$device "
        fi
        [[ $phase == updated ]] && phase=raised
        [[ ${alarm_phase[$id]:-} == "$phase" ]] && continue
        alarm_phase[$id]=$phase
        jstr "$obj" kind && kind=$REPLY
        jstr "$obj" message && msg=${REPLY:0:160}
        line="alarm $phase  $device  $kind"
        [[ $sup == true ]] && line+=" (suppressed)"
        say "$line — $msg"
    done < <(grep -o '{[^{}]*}' <<<"$body")

    # Cases: the list, with each case's nested `alarms` and objects (`origin`, `position`, any
    # other a later version adds) folded away so that every
    # case is one flat object. One line when a case appears, changes state, turns overdue or
    # escalates (alarm transitions linked to it are the alarm lines above).
    body="$(api_get '/api/v1/cases?limit=1000' 2>/dev/null)" || return 0
    [[ $body == '{'*'"cases":'* ]] || return 0
    declare -gA cases_by_state=()
    while IFS= read -r obj; do
        jstr "$obj" id && id=$REPLY
        [[ -n $id ]] || continue
        jstr "$obj" state && state=$REPLY
        cases_by_state[$state]=$((${cases_by_state[$state]:-0} + 1))
        flags=""
        jval "$obj" sign_for_overdue && [[ $REPLY == true ]] && flags+=" sign-for-overdue"
        jval "$obj" handle_overdue && [[ $REPLY == true ]] && flags+=" handling-overdue"
        jval "$obj" escalated && [[ $REPLY == true ]] && flags+=" escalated"
        local dept cat dev site
        jstr "$obj" department && dept=$REPLY
        if [[ -z ${case_state[$id]:-} ]]; then
            jstr "$obj" category && cat=$REPLY
            jstr "$obj" origin_device && dev=$REPLY
            jstr "$obj" site && site=$REPLY
            line="case $id opened: $cat${dev:+ at $dev}${site:+ ($site)}, $state${dept:+ to $dept}"
            jval "$obj" sign_for_deadline_ms
            [[ $REPLY =~ ^[0-9]+$ ]] && line+=", sign for by $(hhmm "$REPLY")"
            jval "$obj" handle_deadline_ms
            [[ $REPLY =~ ^[0-9]+$ ]] && line+=", handle by $(hhmm "$REPLY")"
            say "$line"
        elif [[ ${case_state[$id]} != "$state" ]]; then
            say "case $id ${case_state[$id]} → $state${dept:+ (with $dept)}"
        fi
        if [[ -n $flags && ${case_flags[$id]:-} != "$flags" ]]; then
            say "case $id now$flags"
        fi
        case_state[$id]=$state
        case_flags[$id]=$flags
    done < <(sed -E 's/"alarms":\[[^]]*\]//g
        s/"origin":\{[^{}]*"device":"([^"]*)"[^{}]*\}/"origin_device":"\1"/g
        s/("[a-z_]+"):\{[^{}]*\}/\1:0/g' <<<"$body" | grep -o '{[^{}]*}')
}

# Drone passes: one line per pass recorded at a restaurant (the map lists each place's passes
# of the last hour as flat objects, keys in order).
declare -A pass_seen=()
watch_passes() {
    local body obj drone place dist cases
    body="$(api_get /api/v1/map 2>/dev/null)" || return 0
    [[ $body == '{'*'"sites":'* ]] || return 0
    while IFS= read -r obj; do
        [[ -n ${pass_seen[$obj]:-} ]] && continue
        pass_seen[$obj]=1
        jstr "$obj" drone && drone=$REPLY
        jstr "$obj" place && place=${REPLY#*/}
        jval "$obj" min_distance_m && dist=${REPLY%.*}
        cases="$(grep -o '"cases":\[[^]]*\]' <<<"$obj" | grep -o 'C[0-9]*-[0-9]*' | paste -sd, -)"
        say "drone $drone passed over $place within ${dist} m${cases:+ — aerial pass on case ${cases//,/, }}"
    done < <(grep -o '{"cases":\[[^]]*\],"drone":[^{}]*}' <<<"$body")
}

status_line() {
    local body devices=0 ok=0 d states="" s
    body="$(api_get /api/v1/devices 2>/dev/null)" || return 0
    while IFS= read -r d; do
        d=${d#\"device\":\"}
        d=${d%\"}
        devices=$((devices + 1))
        [[ $alarm_devices == *" $d "* ]] || ok=$((ok + 1))
    done < <(grep -o '"device":"[^"]*"' <<<"$body")
    for s in reported registered dispatched accepted handled verified closed rejected; do
        [[ -n ${cases_by_state[$s]:-} ]] && states+="${states:+, }${cases_by_state[$s]} $s"
    done
    say "status: $devices devices reporting, $ok ok; $open_alarms alarm$([[ $open_alarms == 1 ]] || echo s) open; cases: ${states:-none}"
}

open_alarms=0
alarm_devices=" "
declare -A cases_by_state=()
next_status=$((SECONDS + 10))
while kill -0 "$gw" 2>/dev/null; do
    sleep 2
    kill -0 "$gw" 2>/dev/null || break
    watch_once
    [[ "$drone" == 1 ]] && watch_passes
    if ((SECONDS >= next_status)); then
        status_line
        next_status=$((SECONDS + 10))
    fi
done
wait "$gw" || say "the gateway exited with status $?; see $run_dir/gateway.log"
