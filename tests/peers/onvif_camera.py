#!/usr/bin/python3
"""An ONVIF device for the end-to-end tests (ours: no ONVIF server is packaged in Debian).

Speaks SOAP 1.2 over HTTP like an IP camera's device and media services (ONVIF Core and Media
specifications; the answers follow the shape of the WSDLs' messages as Hikvision and Dahua
cameras send them):

  POST /onvif/device_service   GetSystemDateAndTime (no credentials), GetCapabilities
  POST /onvif/Media            GetProfiles, GetSnapshotUri (only here, as on many cameras:
                               the client must use the XAddr GetCapabilities names)

Every request but GetSystemDateAndTime must carry a WS-Security UsernameToken with a
PasswordDigest = Base64(SHA-1(nonce + created + password)) for --user/--password, a Created
within 5 minutes of the camera's clock (which runs --skew seconds off the machine's) and a nonce
not seen before; otherwise the answer is HTTP 400 with a SOAP fault env:Sender/ter:NotAuthorized,
as ONVIF Core 5.12 says. GetSnapshotUri names --snapshot-uri.

Prints `ready http://127.0.0.1:PORT/onvif/device_service` once listening. Stdlib only.
"""

import argparse
import base64
import datetime
import hashlib
import sys
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NS = {
    "env": "http://www.w3.org/2003/05/soap-envelope",
    "wsse": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd",
    "wsu": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd",
    "tds": "http://www.onvif.org/ver10/device/wsdl",
    "trt": "http://www.onvif.org/ver10/media/wsdl",
    "tt": "http://www.onvif.org/ver10/schema",
    "ter": "http://www.onvif.org/ver10/error",
}
XMLNS = " ".join(f'xmlns:{k}="{v}"' for k, v in NS.items())
PASSWORD_DIGEST = (
    "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0"
    "#PasswordDigest"
)


def envelope(body):
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<env:Envelope {XMLNS}>'
        f"<env:Header/><env:Body>{body}</env:Body></env:Envelope>"
    )


def fault(code, subcode, reason):
    return envelope(
        f"<env:Fault><env:Code><env:Value>env:{code}</env:Value><env:Subcode>"
        f"<env:Value>ter:{subcode}</env:Value></env:Subcode></env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason></env:Fault>'
    )


class Camera:
    def __init__(self, args):
        self.args = args
        self.seen_nonces = set()

    def now(self):
        return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(
            seconds=self.args.skew
        )

    def authorized(self, root):
        token = root.find("env:Header/wsse:Security/wsse:UsernameToken", NS)
        if token is None:
            return "no UsernameToken"
        user = token.findtext("wsse:Username", default="", namespaces=NS)
        pw = token.find("wsse:Password", NS)
        nonce = token.findtext("wsse:Nonce", default="", namespaces=NS)
        created = token.findtext("wsu:Created", default="", namespaces=NS)
        if pw is None or pw.get("Type") != PASSWORD_DIGEST:
            return "not a PasswordDigest"
        try:
            raw_nonce = base64.b64decode(nonce, validate=True)
            when = datetime.datetime.fromisoformat(created.replace("Z", "+00:00"))
        except Exception as e:  # noqa: BLE001 - any malformed token is refused the same way
            return f"malformed token: {e}"
        want = base64.b64encode(
            hashlib.sha1(raw_nonce + created.encode() + self.args.password.encode()).digest()
        ).decode()
        if user != self.args.user or (pw.text or "").strip() != want:
            return "wrong user or password"
        if abs((self.now() - when).total_seconds()) > 300:
            return f"Created {created} is more than 5 minutes off the camera's clock"
        if nonce in self.seen_nonces:
            return "nonce replayed"
        self.seen_nonces.add(nonce)
        return None

    def answer(self, path, body):
        try:
            root = ET.fromstring(body)
        except ET.ParseError as e:
            return 400, fault("Sender", "WellFormed", f"not XML: {e}")
        call = root.find("env:Body", NS)
        if call is None or len(call) == 0:
            return 400, fault("Sender", "WellFormed", "no Body")
        action = call[0].tag.split("}")[-1]
        if action == "GetSystemDateAndTime" and path == "/onvif/device_service":
            t = self.now()
            return 200, envelope(
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime>"
                "<tt:DateTimeType>Manual</tt:DateTimeType><tt:DaylightSavings>false"
                "</tt:DaylightSavings><tt:TimeZone><tt:TZ>CST-8:00:00</tt:TZ></tt:TimeZone>"
                f"<tt:UTCDateTime><tt:Time><tt:Hour>{t.hour}</tt:Hour><tt:Minute>{t.minute}"
                f"</tt:Minute><tt:Second>{t.second}</tt:Second></tt:Time><tt:Date>"
                f"<tt:Year>{t.year}</tt:Year><tt:Month>{t.month}</tt:Month><tt:Day>{t.day}"
                "</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime>"
                "</tds:GetSystemDateAndTimeResponse>"
            )
        why = self.authorized(root)
        if why is not None:
            print(f"refused {action}: {why}", flush=True)
            return 400, fault("Sender", "NotAuthorized", "Sender not Authorized")
        host = f"http://127.0.0.1:{self.args.port}"
        if action == "GetCapabilities" and path == "/onvif/device_service":
            return 200, envelope(
                "<tds:GetCapabilitiesResponse><tds:Capabilities>"
                f"<tt:Device><tt:XAddr>{host}/onvif/device_service</tt:XAddr></tt:Device>"
                f"<tt:Media><tt:XAddr>{host}/onvif/Media</tt:XAddr><tt:StreamingCapabilities>"
                "<tt:RTPMulticast>true</tt:RTPMulticast><tt:RTP_TCP>true</tt:RTP_TCP>"
                "<tt:RTP_RTSP_TCP>true</tt:RTP_RTSP_TCP></tt:StreamingCapabilities></tt:Media>"
                "</tds:Capabilities></tds:GetCapabilitiesResponse>"
            )
        if action == "GetProfiles" and path == "/onvif/Media":
            profiles = "".join(
                f'<trt:Profiles token="Profile_{i}" fixed="true"><tt:Name>{name}</tt:Name>'
                f'<tt:VideoEncoderConfiguration token="VideoEncoderToken_{i}">'
                f"<tt:Name>VideoEncoder_{i}</tt:Name><tt:Encoding>H264</tt:Encoding>"
                f"<tt:Resolution><tt:Width>{w}</tt:Width><tt:Height>{h}</tt:Height>"
                "</tt:Resolution></tt:VideoEncoderConfiguration></trt:Profiles>"
                for i, name, w, h in [(1, "mainStream", 640, 360), (2, "subStream", 320, 180)]
            )
            return 200, envelope(f"<trt:GetProfilesResponse>{profiles}</trt:GetProfilesResponse>")
        if action == "GetSnapshotUri" and path == "/onvif/Media":
            token = call[0].findtext("trt:ProfileToken", default="", namespaces=NS)
            if token not in ("Profile_1", "Profile_2"):
                return 400, fault("Sender", "InvalidArgVal", f"no profile {token}")
            uri = self.args.snapshot_uri.replace("&", "&amp;").replace("<", "&lt;")
            return 200, envelope(
                "<trt:GetSnapshotUriResponse><trt:MediaUri>"
                f"<tt:Uri>{uri}</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect>"
                "<tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S"
                "</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>"
            )
        return 400, fault("Sender", "ActionNotSupported", f"{action} not supported at {path}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--snapshot-uri", required=True)
    p.add_argument("--skew", type=float, default=0.0, help="camera clock minus machine clock, s")
    args = p.parse_args()
    camera = Camera(args)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 - http.server's name
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(n, 1 << 20))
            status, xml = camera.answer(self.path, body)
            data = xml.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/soap+xml; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, fmt, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"ready http://127.0.0.1:{args.port}/onvif/device_service", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
