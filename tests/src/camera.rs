//! Camera peers for the end-to-end tests: real servers on loopback, killed on drop.
//!
//! - [`RtspCamera`]: Debian's gst-rtsp-server through python3-gi (`tests/peers/rtsp_camera.py`):
//!   videotestsrc SMPTE bars 640x360 at 10 fps, 1 s GOP, H.264 (x264enc) at `/h264`, H.265
//!   (x265enc) at `/h265`, keyframes dropped at `/nokey`, MJPEG at `/mjpeg`.
//! - [`HttpCamera`]: lighttpd with mod_auth Digest (htdigest file) serving
//!   `tests/peers/camera.jpg` at a Hikvision path (Digest MD5), a Dahua path (Digest SHA-256), a
//!   Basic path and an open one (`tests/peers/lighttpd-camera/lighttpd.conf.in`).
//! - Faults made here, since no camera misbehaves on request: [`Silent`] (accepts, never
//!   answers), [`Garbage`] (answers random bytes), [`Flood`] (an endless chunked "picture"),
//!   and a closed port ([`crate::free_port`]).
//! - [`snapshot`]: runs `fumegrid-gateway snapshot --json` and returns what it said.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::{Proc, TempDir, bin, free_port, root, wait_until};

/// The peers' user and password.
pub const USER: &str = "admin";
pub const PASSWORD: &str = "12345";
/// The RTSP peer's picture size.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;

/// The JPEG the HTTP camera serves (GStreamer's jpegenc of SMPTE bars, 640x360).
pub fn camera_jpg() -> Vec<u8> {
    std::fs::read(root().join("tests/peers/camera.jpg")).expect("tests/peers/camera.jpg")
}

/// Debian's python, which has python3-gi (STYLE.md: the one on PATH may not).
fn debian_python() -> PathBuf {
    let p = PathBuf::from("/usr/bin/python3");
    assert!(
        p.exists(),
        "/usr/bin/python3 missing: run scripts/install-test-deps.sh"
    );
    p
}

/// The gst-rtsp-server camera.
#[derive(Debug)]
pub struct RtspCamera {
    pub port: u16,
    _proc: Proc,
}

impl RtspCamera {
    /// Asks for `USER`/`PASSWORD` with Digest (`basic == false`) or Basic.
    pub fn start(basic: bool) -> RtspCamera {
        let port = free_port();
        let mut cmd = Command::new(debian_python());
        cmd.arg(root().join("tests/peers/rtsp_camera.py"))
            .args(["--port", &port.to_string(), "--user", USER])
            .args(["--password", PASSWORD])
            .args(["--auth", if basic { "basic" } else { "digest" }]);
        let mut proc = Proc::spawn("rtsp_camera.py", cmd);
        proc.wait_for("ready", Duration::from_secs(30));
        RtspCamera { port, _proc: proc }
    }

    pub fn url(&self, mount: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{mount}", self.port)
    }
}

/// The lighttpd snapshot camera.
#[derive(Debug)]
pub struct HttpCamera {
    pub port: u16,
    pub dir: TempDir,
    _proc: Proc,
}

impl HttpCamera {
    pub fn start() -> HttpCamera {
        let dir = TempDir::new("lighttpd-camera");
        let jpg = camera_jpg();
        for path in [
            "ISAPI/Streaming/channels/101/picture",
            "cgi-bin/snapshot.cgi",
            "basic/snap.jpg",
            "open/snap.jpg",
        ] {
            let p = dir.path().join("www").join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("www dir");
            std::fs::write(&p, &jpg).expect("picture");
        }
        // htdigest lines: user:realm:H(user:realm:password), MD5 for the Hikvision path's
        // realm, SHA-256 for the Dahua path's (lighttpd tells them apart by length).
        use sha2::Digest as _;
        let md5 = hex::encode(md5::Md5::digest(format!("{USER}:IP Camera:{PASSWORD}")));
        let sha = hex::encode(sha2::Sha256::digest(format!("{USER}:Login:{PASSWORD}")));
        std::fs::write(
            dir.join("htdigest"),
            format!("{USER}:IP Camera:{md5}\n{USER}:Login:{sha}\n"),
        )
        .expect("htdigest");
        let port = free_port();
        let template =
            std::fs::read_to_string(root().join("tests/peers/lighttpd-camera/lighttpd.conf.in"))
                .expect("lighttpd.conf.in");
        let conf = template
            .replace("@DIR@", &dir.path().display().to_string())
            .replace("@PORT@", &port.to_string());
        std::fs::write(dir.join("lighttpd.conf"), conf).expect("lighttpd.conf");
        let lighttpd = if Path::new("/usr/sbin/lighttpd").exists() {
            PathBuf::from("/usr/sbin/lighttpd")
        } else {
            PathBuf::from("lighttpd")
        };
        let mut cmd = Command::new(lighttpd);
        cmd.arg("-D").arg("-f").arg(dir.join("lighttpd.conf"));
        let proc = Proc::spawn("lighttpd", cmd);
        wait_until("lighttpd listening", Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port))
        });
        HttpCamera {
            port,
            dir,
            _proc: proc,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// Puts `bytes` at `/open/<name>`.
    pub fn serve(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.dir.path().join("www/open").join(name), bytes).expect("serve");
    }

    /// Puts a sparse file of `len` bytes that begins like a JPEG at `/open/<name>`.
    pub fn serve_sized(&self, name: &str, len: u64) {
        let p = self.dir.path().join("www/open").join(name);
        let mut f = std::fs::File::create(&p).expect("create");
        f.write_all(&camera_jpg()[..64]).expect("head");
        f.set_len(len).expect("set_len");
    }
}

/// A TCP listener on loopback whose connections a function serves, each in a thread; stopped
/// on drop.
#[derive(Debug)]
struct Listener {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Listener {
    fn start(serve: impl Fn(TcpStream) + Send + Sync + 'static) -> Listener {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let serve = Arc::new(serve);
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if s.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    let serve = serve.clone();
                    std::thread::spawn(move || serve(c));
                }
            }
        });
        Listener { port, stop }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Accepts connections and never answers (a hung camera, or the wrong service's port).
#[derive(Debug)]
pub struct Silent(Listener);

impl Silent {
    pub fn start() -> Silent {
        Silent(Listener::start(|mut c| {
            // Read and ignore until the client gives up.
            let mut buf = [0u8; 4096];
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        }))
    }
    pub fn port(&self) -> u16 {
        self.0.port
    }
}

/// Answers every connection with random bytes once it has read something.
#[derive(Debug)]
pub struct Garbage(Listener);

impl Garbage {
    pub fn start() -> Garbage {
        Garbage(Listener::start(|mut c| {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let mut x: u32 = 0x9E37_79B9;
            let junk: Vec<u8> = (0..8192)
                .map(|_| {
                    // xorshift: bytes no protocol parses, the same every run.
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            let _ = c.write_all(&junk);
            while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
        }))
    }
    pub fn port(&self) -> u16 {
        self.0.port
    }
}

/// Answers a GET with `200` and a chunked JPEG-looking body of up to `total` bytes (no
/// `Content-Length`, so only reading can tell its size); counts the bytes it got out.
#[derive(Debug)]
pub struct Flood {
    listener: Listener,
    sent: Arc<AtomicU64>,
}

impl Flood {
    pub fn start(total: u64) -> Flood {
        let sent = Arc::new(AtomicU64::new(0));
        let counter = sent.clone();
        let listener = Listener::start(move |mut c| {
            let mut buf = [0u8; 4096];
            let _ = c.read(&mut buf);
            let head = "HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\
                        Transfer-Encoding: chunked\r\n\r\n";
            if c.write_all(head.as_bytes()).is_err() {
                return;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            chunk[..2].copy_from_slice(&[0xFF, 0xD8]);
            let mut left = total;
            while left > 0 {
                let n = left.min(chunk.len() as u64);
                let frame = format!("{n:x}\r\n");
                let ok = c.write_all(frame.as_bytes()).is_ok()
                    && c.write_all(&chunk[..n as usize]).is_ok()
                    && c.write_all(b"\r\n").is_ok();
                if !ok {
                    return;
                }
                counter.fetch_add(n, Ordering::SeqCst);
                left -= n;
                chunk[..2].copy_from_slice(&[0, 0]);
            }
            let _ = c.write_all(b"0\r\n\r\n");
        });
        Flood { listener, sent }
    }
    pub fn port(&self) -> u16 {
        self.listener.port
    }
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::SeqCst)
    }
}

/// What `fumegrid-gateway snapshot --json` said, and whether it exited 0.
#[derive(Debug)]
pub struct Shot {
    pub ok: bool,
    pub json: Value,
    pub stderr: String,
}

/// Runs `fumegrid-gateway snapshot --json <args>`; panics if it runs longer than `limit`.
pub fn snapshot(args: &[&str], limit: Duration) -> Shot {
    let mut cmd = Command::new(bin("fumegrid-gateway"));
    cmd.arg("snapshot").arg("--json").args(args);
    let mut proc = Proc::spawn("fumegrid-gateway snapshot", cmd);
    let (ok, stderr) = proc.wait_exit(limit);
    let line = proc.stdout_lines().join("\n");
    let json = serde_json::from_str(&line)
        .unwrap_or_else(|e| panic!("snapshot printed no JSON ({e}): {line:?}\nstderr: {stderr}"));
    Shot { ok, json, stderr }
}

/// The NAL units of an Annex B byte stream (start codes `00 00 01` or `00 00 00 01`), without
/// their start codes.
pub fn annex_b_nals(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= bytes.len() {
        if bytes[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| {
            let mut end = starts.get(k + 1).map_or(bytes.len(), |&n| n - 3);
            // A 4-byte start code's leading zero belongs to no NAL.
            while end > s && bytes[end - 1] == 0 && k + 1 < starts.len() {
                end -= 1;
            }
            &bytes[s..end]
        })
        .collect()
}

/// H.264 `nal_unit_type` of each NAL (7 SPS, 8 PPS, 5 IDR slice, 1 non-IDR slice, 6 SEI, 9 AUD).
pub fn h264_nal_types(bytes: &[u8]) -> Vec<u8> {
    annex_b_nals(bytes)
        .iter()
        .filter_map(|n| n.first().map(|b| b & 0x1F))
        .collect()
}

/// H.265 `nal_unit_type` of each NAL (32 VPS, 33 SPS, 34 PPS, 19/20 IDR, 21 CRA, 39 SEI).
pub fn h265_nal_types(bytes: &[u8]) -> Vec<u8> {
    annex_b_nals(bytes)
        .iter()
        .filter_map(|n| n.first().map(|b| (b >> 1) & 0x3F))
        .collect()
}

/// Our ONVIF device peer (`tests/peers/onvif_camera.py`): checks the UsernameToken digest and
/// names `snapshot_uri` in GetSnapshotUri; its clock runs `skew_s` off the machine's.
#[derive(Debug)]
pub struct OnvifCamera {
    pub port: u16,
    _proc: Proc,
}

impl OnvifCamera {
    pub fn start(snapshot_uri: &str) -> OnvifCamera {
        OnvifCamera::start_skewed(snapshot_uri, 0)
    }

    pub fn start_skewed(snapshot_uri: &str, skew_s: i64) -> OnvifCamera {
        let port = free_port();
        let mut cmd = Command::new(debian_python());
        cmd.arg(root().join("tests/peers/onvif_camera.py"))
            .args(["--port", &port.to_string(), "--user", USER])
            .args(["--password", PASSWORD, "--snapshot-uri", snapshot_uri])
            .args(["--skew", &skew_s.to_string()]);
        let mut proc = Proc::spawn("onvif_camera.py", cmd);
        proc.wait_for("ready", Duration::from_secs(20));
        OnvifCamera { port, _proc: proc }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/onvif/device_service", self.port)
    }
}
