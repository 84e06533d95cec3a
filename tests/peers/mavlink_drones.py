#!/usr/bin/env python3
"""Two drones and some hostile traffic for fumegrid's drone tests: pymavlink, not our own encoder.

    mavlink_drones.py --to 127.0.0.1:14550 --seconds 14 --ardu-silent 6:11
    mavlink_drones.py --serial /tmp/pty-a --go-file /tmp/go --seconds 14

With `--serial PATH` everything is written to that serial device (one end of a pty pair) as
one byte stream, as a telemetry radio delivers it, instead of UDP datagrams; the noise then comes
from the seeded generator (the run is repeatable). With `--go-file`, it first writes a foreign
heartbeat (system id 77) every 100 ms until that file exists (the test creates it once the
gateway counted one: its port is open), then starts.

- `px4` (system id 1): a PX4-like mix in MAVLink 2: HEARTBEAT (quadrotor, PX4 autopilot),
  SYS_STATUS, BATTERY_STATUS, EXTENDED_SYS_STATE, ALTITUDE at 1 Hz; GLOBAL_POSITION_INT and
  ATTITUDE at 10 Hz, flying north at 10 m/s; one CAMERA_IMAGE_CAPTURED at 2 s.
- `ardu` (system id 2): an ArduPilot-like mix in MAVLink 1 (ArduPilot's ardupilotmega dialect):
  HEARTBEAT (ArduPilotMega autopilot), SYS_STATUS, AHRS2 and MEMINFO (ardupilotmega-only ids)
  at 1 Hz, GLOBAL_POSITION_INT at 10 Hz flying east at 10 m/s. Entirely silent during
  --ardu-silent FROM:TO seconds (a lost link), then back.
- hostile, every 100 ms: a datagram of random bytes, a px4 frame with one payload byte flipped
  (bad CRC), a frame cut in half, a heartbeat from a foreign system id (77).

Prints one JSON line per thing sent (`{"what": "pos", "sys": 1, "ms": <wall ms>, "lat": ...}`,
integers as on the wire) and a last line `{"what": "done", ...counts}`; flushed as it goes.

Written against pymavlink 2.4.50 (scripts/install-test-deps.sh pins it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time

from pymavlink.dialects.v10 import ardupilotmega as ap1
from pymavlink.dialects.v20 import common as c2


class Sink:
    """pymavlink wants a file; frames are taken from pack() instead."""

    def write(self, _b: bytes) -> None:
        pass


def out(**kw) -> None:
    print(json.dumps(kw), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    to = ap.add_mutually_exclusive_group(required=True)
    to.add_argument("--to")
    to.add_argument("--serial")
    ap.add_argument("--go-file")
    ap.add_argument("--seconds", type=float, default=14.0)
    ap.add_argument("--ardu-silent", default="6:11")
    a = ap.parse_args()
    silent_from, silent_to = (float(x) for x in a.ardu_silent.split(":"))
    rng = random.Random(15)
    if a.serial:
        fd = os.open(a.serial, os.O_WRONLY | os.O_NOCTTY)

        def send(b: bytes) -> None:
            while b:
                b = b[os.write(fd, b):]

        def noise_bytes(n: int) -> bytes:
            return bytes(rng.getrandbits(8) for _ in range(n))
    else:
        host, port = a.to.rsplit(":", 1)
        dest = (host, int(port))
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

        def send(b: bytes) -> None:
            sock.sendto(b, dest)

        noise_bytes = os.urandom

    px4 = c2.MAVLink(Sink(), srcSystem=1, srcComponent=1)
    ardu = ap1.MAVLink(Sink(), srcSystem=2, srcComponent=1)
    foreign = c2.MAVLink(Sink(), srcSystem=77, srcComponent=1)
    counts = {"bad_crc": 0, "noise_bytes": 0, "truncated": 0, "foreign": 0, "ardu_only": 0}

    if a.go_file:
        while not os.path.exists(a.go_file):
            send(foreign.heartbeat_encode(c2.MAV_TYPE_GCS, c2.MAV_AUTOPILOT_INVALID, 0, 0,
                                          c2.MAV_STATE_ACTIVE).pack(foreign))
            counts["foreign"] += 1
            time.sleep(0.1)

    start = time.monotonic()
    tick = 0
    photo_sent = False
    while True:
        t = tick / 10.0
        if t >= a.seconds:
            break
        ms = int(time.time() * 1000)
        # px4: north at 10 m/s from 30.655 N, 104.08 E (1e-7 degrees latitude is 1.11 cm).
        lat1 = 306_550_000 + int(t * 10 / 1.11 * 100)
        lon1 = 1_040_800_000
        if tick % 10 == 0:
            send(px4.heartbeat_encode(c2.MAV_TYPE_QUADROTOR, c2.MAV_AUTOPILOT_PX4, 0x81, 0,
                                      c2.MAV_STATE_ACTIVE).pack(px4))
            out(what="hb", sys=1, ms=ms)
            send(px4.sys_status_encode(0, 0, 0, 500, 15200, 1200, 87, 0, 0, 0, 0, 0, 0).pack(px4))
            send(px4.battery_status_encode(0, 0, 1, 250, [3800] * 10, 1200, -1, -1, 87).pack(px4))
            send(px4.extended_sys_state_encode(0, 2).pack(px4))
            send(px4.altitude_encode(int(t * 1e6), 560.0, 560.0, 560.0, 60.0, 60.0, 60.0).pack(px4))
        send(px4.attitude_encode(int(t * 1000), 0.0, 0.0, 0.0, 0.0, 0.0, 0.0).pack(px4))
        send(px4.global_position_int_encode(int(t * 1000), lat1, lon1, 560_000, 60_000, 1000, 0,
                                            0, 0).pack(px4))
        out(what="pos", sys=1, ms=ms, lat=lat1, lon=lon1, alt=560_000, rel=60_000, hdg=0,
            vx=1000, vy=0, battery=87)
        if t >= 2.0 and not photo_sent:
            photo_sent = True
            utc_us = 1_795_456_800_123_000
            send(px4.camera_image_captured_encode(int(t * 1000), utc_us, 1, lat1, lon1, 560_000,
                                                  60_000, [1.0, 0.0, 0.0, 0.0], 7, 1,
                                                  b"/DCIM/100MEDIA/IMG_0007.JPG").pack(px4))
            out(what="photo", sys=1, ms=ms, lat=lat1, lon=lon1, alt=560_000, index=7,
                utc_ms=utc_us // 1000, file="/DCIM/100MEDIA/IMG_0007.JPG")
        # ardu: east at 10 m/s from 30.656 N, 104.08 E.
        if not (silent_from <= t < silent_to):
            lat2 = 306_560_000
            lon2 = 1_040_800_000 + int(t * 10 / 0.958 * 100)
            if tick % 10 == 0:
                send(ardu.heartbeat_encode(ap1.MAV_TYPE_QUADROTOR, ap1.MAV_AUTOPILOT_ARDUPILOTMEGA,
                                           0x81, 4, ap1.MAV_STATE_ACTIVE).pack(ardu))
                out(what="hb", sys=2, ms=ms)
                send(ardu.sys_status_encode(0, 0, 0, 500, 15000, 1500, 64, 0, 0, 0, 0, 0, 0)
                     .pack(ardu))
                send(ardu.ahrs2_encode(0.0, 0.0, 1.57, 560.0, lat2, lon2).pack(ardu))
                send(ardu.meminfo_encode(1000, 20000).pack(ardu))
                counts["ardu_only"] += 2
            send(ardu.global_position_int_encode(int(t * 1000), lat2, lon2, 555_000, 55_000, 0,
                                                 1000, 0, 9000).pack(ardu))
            out(what="pos", sys=2, ms=ms, lat=lat2, lon=lon2, alt=555_000, rel=55_000,
                hdg=9000, vx=0, vy=1000, battery=64)
        # Hostile traffic.
        noise = noise_bytes(rng.randint(1, 300))
        send(noise)
        counts["noise_bytes"] += len(noise)
        bad = bytearray(px4.heartbeat_encode(c2.MAV_TYPE_QUADROTOR, c2.MAV_AUTOPILOT_PX4, 0, 0,
                                              c2.MAV_STATE_ACTIVE).pack(px4))
        bad[12] ^= 0x5A
        send(bytes(bad))
        counts["bad_crc"] += 1
        cut = px4.sys_status_encode(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0).pack(px4)
        send(cut[: len(cut) // 2])
        counts["truncated"] += 1
        send(foreign.heartbeat_encode(c2.MAV_TYPE_GCS, c2.MAV_AUTOPILOT_INVALID, 0, 0,
                                      c2.MAV_STATE_ACTIVE).pack(foreign))
        counts["foreign"] += 1
        tick += 1
        delay = start + tick / 10.0 - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    out(what="done", **counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
