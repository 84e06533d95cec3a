#!/usr/bin/env bash
# Installs the third-party peers the end-to-end tests talk to (DESIGN.md §11), only what is missing:
#
#   Debian packages  socat mbpoll mosquitto mosquitto-clients openssl (test certificates) systemd,
#                    chromium with a CJK font (fonts-wqy-zenhei) for the dashboard test
#                    cameras: GStreamer's RTSP server through python3-gi with x264enc (plugins-ugly)
#                    and x265enc (plugins-bad), lighttpd (Digest snapshot camera)
#                    (+ python3-venv when venv is missing)
#   Python venv      target/test-venv with pymodbus, pyserial, schemathesis and pymavlink pinned below
#
# Idempotent: a second run installs nothing and says so. Works on a fresh Debian 12 box that has
# only Rust and python3; uses sudo when not run as root.
set -euo pipefail

PYMODBUS_VERSION="3.9.2" # what ThingsBoard's gateway pins (3.9.x)
PYSERIAL_VERSION="3.5"
SCHEMATHESIS_VERSION="4.32.5" # property-based checks of the API against its OpenAPI document
PYMAVLINK_VERSION="2.4.50"    # the drones' independent MAVLink peer (tests/tests/e2e_drones.rs)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/target/test-venv"

log() { printf 'install-test-deps: %s\n' "$*"; }

as_root() {
    if [[ "$(id -u)" -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*" >&2
        exit 1
    fi
}

apt_updated=0
apt_install() {
    if [[ "$apt_updated" -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

deb_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" == "install ok installed" ]]
}

# --- Debian packages -------------------------------------------------------------------------
missing=()
camera_pkgs=(gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
    gstreamer1.0-plugins-ugly gstreamer1.0-plugins-bad gstreamer1.0-rtsp
    gir1.2-gst-plugins-base-1.0 gir1.2-gst-rtsp-server-1.0 python3-gi lighttpd)
for pkg in socat mbpoll mosquitto mosquitto-clients openssl systemd chromium fonts-wqy-zenhei \
    "${camera_pkgs[@]}"; do
    if deb_installed "$pkg"; then
        log "$pkg: already installed"
    else
        missing+=("$pkg")
    fi
done
if [[ "${#missing[@]}" -gt 0 ]]; then
    apt_install "${missing[@]}"
fi
# The tests start their own mosquitto on a free port; Debian's package also enables a system
# service on 1883, which they neither need nor disturb. The same holds for lighttpd's service on
# port 80: the camera tests run their own lighttpd on a free port with a config of their own.

# The RTSP camera peer (tests/peers/rtsp_camera.py) runs on Debian's python with python3-gi.
if ! /usr/bin/python3 - <<'EOF' >/dev/null 2>&1; then
import sys
import gi
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
need = ("videotestsrc", "x264enc", "x265enc", "rtph264pay", "rtph265pay", "jpegenc",
        "openh264dec", "libde265dec")
sys.exit(0 if all(Gst.ElementFactory.find(e) for e in need) else 1)
EOF
    log "the RTSP camera peer cannot start: /usr/bin/python3 lacks GstRtspServer or an element" >&2
    exit 1
fi
log "RTSP camera peer: GstRtspServer, x264enc, x265enc and the check decoders available"

# --- Python venv -----------------------------------------------------------------------------
# Debian's python3 is /usr/bin/python3; the python3 on PATH may be another interpreter (pyenv).
if [[ -x /usr/bin/python3 ]]; then
    python=/usr/bin/python3
else
    python="$(command -v python3)"
fi

venv_ok() {
    [[ -x "$venv/bin/python" ]] &&
        "$venv/bin/python" - "$PYMODBUS_VERSION" "$PYSERIAL_VERSION" "$SCHEMATHESIS_VERSION" "$PYMAVLINK_VERSION" <<'EOF' >/dev/null 2>&1
import sys
from importlib.metadata import version
want = tuple(sys.argv[1:5])
sys.exit(0 if tuple(version(p) for p in ("pymodbus", "pyserial", "schemathesis", "pymavlink")) == want else 1)
EOF
}

if venv_ok; then
    log "venv $venv: pymodbus==$PYMODBUS_VERSION pyserial==$PYSERIAL_VERSION schemathesis==$SCHEMATHESIS_VERSION pymavlink==$PYMAVLINK_VERSION already installed"
else
    if [[ ! -x "$venv/bin/python" ]]; then
        if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            # Debian splits venv/ensurepip into python3-venv.
            apt_install python3-venv
        fi
        log "creating venv $venv with $python"
        rm -rf "$venv"
        mkdir -p "$(dirname "$venv")"
        "$python" -m venv "$venv"
    fi
    log "pip install pymodbus==$PYMODBUS_VERSION pyserial==$PYSERIAL_VERSION schemathesis==$SCHEMATHESIS_VERSION pymavlink==$PYMAVLINK_VERSION into $venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        "pymodbus==$PYMODBUS_VERSION" "pyserial==$PYSERIAL_VERSION" "schemathesis==$SCHEMATHESIS_VERSION" \
        "pymavlink==$PYMAVLINK_VERSION"
    venv_ok || {
        log "venv check failed after install" >&2
        exit 1
    }
fi

log "done"
