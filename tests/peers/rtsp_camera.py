#!/usr/bin/python3
"""An RTSP camera for the end-to-end tests: Debian's gst-rtsp-server (through python3-gi)
serving GStreamer's videotestsrc, encoded like an IP camera's stream.

Mount points (all the same picture: a fixed test pattern at a fixed size, 1 s GOP):

  /h264      H.264 (x264enc, baseline-like, zerolatency), IDR every `--fps` frames
  /h265      H.265 (x265enc), IDR every `--fps` frames
  /nokey     H.264 whose keyframes are dropped before the payloader: a stream of P-frames
             only, like a camera joined mid-GOP that never sends the next IDR
  /mjpeg     Motion JPEG (RTP/JPEG, jpegenc)
  /audio     G.711 A-law audio only: no video to take

With --user/--password the server asks for credentials (--auth digest or basic).
Prints `ready rtsp://127.0.0.1:PORT` on stdout once listening.

Run with Debian's python (/usr/bin/python3): the python3 on PATH may lack python3-gi.
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def source(args):
    return (
        f"videotestsrc is-live=true pattern={args.pattern} ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1,format=I420"
    )


def launch(args, kind):
    gop = args.fps  # 1 s
    if kind == "h264" or kind == "nokey":
        enc = (
            f"x264enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} "
            f"bframes=0 ! video/x-h264,profile=constrained-baseline ! "
            f"rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    elif kind == "h265":
        enc = (
            f"x265enc name=enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} ! "
            f"rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    elif kind == "mjpeg":
        enc = "jpegenc name=enc ! rtpjpegpay name=pay0 pt=26"
    elif kind == "audio":
        return "( audiotestsrc is-live=true ! alawenc ! rtppcmapay name=pay0 pt=8 )"
    else:
        raise ValueError(kind)
    return f"( {source(args)} ! {enc} )"


def drop_keyframes(pad, info):
    buf = info.get_buffer()
    if buf is not None and not buf.has_flags(Gst.BufferFlags.DELTA_UNIT):
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


def on_configure_nokey(_factory, media):
    enc = media.get_element().get_by_name("enc")
    enc.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, drop_keyframes)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user")
    p.add_argument("--password", default="")
    p.add_argument("--auth", choices=["digest", "basic"], default="digest")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=10)
    p.add_argument("--pattern", default="smpte")
    p.add_argument(
        "--shared",
        action="store_true",
        help="one encoder for all clients, like a real camera's stream: a client joins mid-GOP "
        "and waits for the next keyframe (default: a new encoder per client, keyframe at once)",
    )
    args = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    if args.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        if args.auth == "digest":
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
            auth.add_digest(args.user, args.password, token)
        else:
            auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)

    for kind in ["h264", "h265", "nokey", "mjpeg", "audio"]:
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch(args, kind))
        f.set_shared(args.shared)
        f.set_protocols(GstRtsp.RTSPLowerTrans.TCP | GstRtsp.RTSPLowerTrans.UDP)
        if kind == "nokey":
            f.connect("media-configure", on_configure_nokey)
        if args.user:
            perms = GstRtspServer.RTSPPermissions()
            perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
            perms.add_permission_for_role(
                "user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True
            )
            f.set_permissions(perms)
        mounts.add_factory(f"/{kind}", f)

    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        sys.exit(1)
    print(f"ready rtsp://127.0.0.1:{args.port}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
