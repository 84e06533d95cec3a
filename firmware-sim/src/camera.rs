//! Simulated HTTP snapshot cameras, one per simulated monitor: `GET /camera/{name}.jpg` answers a
//! JPEG of the kitchen as the scenario has it at this moment, like a Hikvision or Dahua
//! snapshot URL. Started by `--cameras HOST:PORT` on `monitor` and `bus`.
//!
//! What the picture shows (all a pure function of the scenario and its time, [`render`]):
//! - a kitchen: wall, cooker hood and stove;
//! - smoke: a grey haze over the scene whose density follows the device's current
//!   `fume_mg_m3` (none below 0.2 mg/m³, nearly opaque at 4 mg/m³ and above, [`haze_density`]);
//! - the purifier: a box on the wall with a lamp, green and labelled `PURIFIER ON` when
//!   `purifier_on` is 1, red and `PURIFIER OFF` when 0;
//! - an on-screen display as cameras draw it: camera name and scenario time at the top, the
//!   fume, fan and purifier values at the bottom.
//!
//! Tests measure [`lamp_rect`] (the lamp's colour) and [`haze_probe_rect`] (a plain patch of
//! wall that only the haze changes).
//!
//! `--camera-fault NAME=FAULT` makes one camera misbehave ([`CameraFault`]): slow, an HTTP
//! error status, garbage bytes, a truncated JPEG, or a huge body.
//!
//! The same server serves the photos simulated drones took (`fumegrid-sim drone --photos`):
//! `GET /DCIM/...` answers the photo's JPEG as it was taken ([`Photos`]).
//!
//! Requests: `GET` (or `HEAD`) only; with `--camera-user`/`--camera-password` every request
//! needs HTTP basic authentication (else 401 with `WWW-Authenticate: Basic`); an unknown camera
//! is 404. The server holds at most [`MAX_CONNECTIONS`] connections and gives a client
//! [`HEADER_TIMEOUT`] to send its request headers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use fumegrid_common::metric::Metric;
use fumegrid_picture::Rgb;
use fumegrid_picture::caption::draw_text;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use crate::clock::SimClock;
use crate::scenario::Scenario;

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 32;
/// Time a client has to send its request headers (also an idle keep-alive's limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// JPEG quality of the snapshots (a camera's usual "high").
pub const QUALITY: u8 = 85;

/// One simulated camera: it films the monitor whose scenario it shares.
#[derive(Debug, Clone)]
pub struct Camera {
    /// Shown in the picture; the URL is `/camera/{name}.jpg`.
    pub name: String,
    pub scenario: Scenario,
    pub clock: SimClock,
    /// How this camera misbehaves (`--camera-fault`).
    pub fault: CameraFault,
}

/// A camera's misbehaviour, for testing what a gateway does with a bad camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CameraFault {
    #[default]
    None,
    /// `slow:MS`: wait this long before answering.
    Slow(Duration),
    /// `status:CODE`: answer this HTTP status (e.g. 500, 503) with a short text body.
    Status(u16),
    /// `garbage`: `200 image/jpeg` with 64 KiB of bytes that are no picture.
    Garbage,
    /// `truncated`: `200 image/jpeg` with the first half of the real JPEG.
    Truncated,
    /// `huge:MB`: `200 image/jpeg` with a body of MB mebibytes (1..=256) that starts like a JPEG.
    Huge(u64),
}

impl std::str::FromStr for CameraFault {
    type Err = String;

    fn from_str(s: &str) -> Result<CameraFault, String> {
        let bad = || {
            format!(
                "`{s}` is not a camera fault: none, slow:MS, status:CODE, garbage, truncated, huge:MB"
            )
        };
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let num = |lo: u64, hi: u64| -> Result<u64, String> {
            arg.and_then(|a| a.trim().parse::<u64>().ok())
                .filter(|n| (lo..=hi).contains(n))
                .ok_or_else(bad)
        };
        Ok(match (kind, arg) {
            ("none", None) => CameraFault::None,
            ("garbage", None) => CameraFault::Garbage,
            ("truncated", None) => CameraFault::Truncated,
            ("slow", Some(_)) => CameraFault::Slow(Duration::from_millis(num(0, 3_600_000)?)),
            ("status", Some(_)) => CameraFault::Status(num(400, 599)? as u16),
            ("huge", Some(_)) => CameraFault::Huge(num(1, 256)?),
            _ => return Err(bad()),
        })
    }
}

/// The cameras of one simulator process.
#[derive(Debug, Clone)]
pub struct Cameras {
    pub cameras: BTreeMap<String, Camera>,
    /// Basic authentication: `(user, password)`.
    pub auth: Option<(String, String)>,
    pub width: u32,
    pub height: u32,
    /// Photos the simulated drones took, served under `/DCIM/` (`drone --photos`).
    pub photos: Photos,
}

/// Photos taken, by path (`/DCIM/...`): the newest [`Photos::KEPT`], as a drone's card would
/// hold them. Shared between the drone loop that takes them and the server.
#[derive(Debug, Clone, Default)]
pub struct Photos(Arc<std::sync::Mutex<std::collections::VecDeque<(String, Bytes)>>>);

impl Photos {
    /// Photos kept; older ones are gone (404).
    pub const KEPT: usize = 256;

    /// Keeps `bytes` under `path` (which begins with `/DCIM/`).
    pub fn put(&self, path: String, bytes: Vec<u8>) {
        if let Ok(mut p) = self.0.lock() {
            if p.len() == Self::KEPT {
                p.pop_front();
            }
            p.push_back((path, Bytes::from(bytes)));
        }
    }

    /// The photo at `path`.
    pub fn get(&self, path: &str) -> Option<Bytes> {
        let p = self.0.lock().ok()?;
        p.iter()
            .rev()
            .find(|(k, _)| k == path)
            .map(|(_, b)| b.clone())
    }
}

impl Cameras {
    /// The answer to one request (pure but for reading the scenario clock).
    pub fn respond(&self, method: &Method, path: &str, authorization: Option<&[u8]>) -> Reply {
        if let Some((user, password)) = &self.auth
            && !basic_auth_ok(authorization, user, password)
        {
            return Reply::Unauthorized;
        }
        if method != Method::GET && method != Method::HEAD {
            return Reply::MethodNotAllowed;
        }
        if path.starts_with("/DCIM/") {
            return self.photos.get(path).map_or(Reply::NotFound, Reply::Photo);
        }
        let Some(name) = path
            .strip_prefix("/camera/")
            .and_then(|n| n.strip_suffix(".jpg"))
        else {
            return Reply::NotFound;
        };
        match self.cameras.get(name) {
            Some(cam) => Reply::Snapshot(cam.clone(), self.width, self.height),
            None => Reply::NotFound,
        }
    }
}

/// What [`Cameras::respond`] decided.
#[derive(Debug)]
pub enum Reply {
    /// Render this camera's picture at its scenario's current time, at this size.
    Snapshot(Camera, u32, u32),
    /// A drone's photo, as taken.
    Photo(Bytes),
    NotFound,
    Unauthorized,
    MethodNotAllowed,
}

fn basic_auth_ok(header: Option<&[u8]>, user: &str, password: &str) -> bool {
    let Some(h) = header else { return false };
    let Some(b64) = h
        .strip_prefix(b"Basic ")
        .or_else(|| h.strip_prefix(b"basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim_ascii()) else {
        return false;
    };
    decoded == format!("{user}:{password}").as_bytes()
}

/// Haze density 0..=0.9 for a fume concentration in mg/m³: none up to 0.2, then rising
/// linearly to 0.9 at 4.0 (a sensor fault's 9999 is simply the most haze).
pub fn haze_density(fume_mg_m3: f64) -> f64 {
    if !fume_mg_m3.is_finite() {
        return 0.0;
    }
    ((fume_mg_m3 - 0.2) / 3.8 * 0.9).clamp(0.0, 0.9)
}

/// Where the purifier lamp is, `(x0, y0, x1, y1)`.
pub fn lamp_rect(w: u32, h: u32) -> (u32, u32, u32, u32) {
    (w * 78 / 100, h * 24 / 100, w * 86 / 100, h * 34 / 100)
}

/// A patch of plain wall (left of the hood, under the OSD's top line) that only haze changes.
pub fn haze_probe_rect(w: u32, h: u32) -> (u32, u32, u32, u32) {
    (w * 5 / 100, h * 25 / 100, w * 25 / 100, h * 55 / 100)
}

const WALL: [u8; 3] = [214, 200, 170];
const FLOOR: [u8; 3] = [120, 100, 80];
const STEEL: [u8; 3] = [150, 155, 160];
const STOVE: [u8; 3] = [45, 45, 50];
const FLAME: [u8; 3] = [250, 140, 30];
const BOX: [u8; 3] = [235, 235, 235];
const LAMP_ON: [u8; 3] = [30, 210, 60];
const LAMP_OFF: [u8; 3] = [220, 30, 30];
const SMOKE: [u8; 3] = [125, 125, 120];
const OSD: [u8; 3] = [255, 255, 255];
const OSD_BACK: [u8; 3] = [0, 0, 0];

/// The camera's picture of `cam` at scenario time `t` (seconds).
pub fn render(cam: &Camera, t: f64, w: u32, h: u32) -> Rgb {
    let v = |m: Metric| cam.scenario.value(m, t);
    let fume = v(Metric::FumeMgM3);
    let purifier_on = v(Metric::PurifierOn) >= 0.5;
    let fan_on = v(Metric::FanOn) >= 0.5;
    let s = (w / 320).max(1);

    let mut img = Rgb::filled(w, h, WALL);
    img.fill_rect(0, h * 80 / 100, w, h, FLOOR);
    // Cooker hood over the stove, the stove with a flame while the fan runs (cooking).
    img.fill_rect(
        w * 35 / 100,
        h * 12 / 100,
        w * 65 / 100,
        h * 30 / 100,
        STEEL,
    );
    img.fill_rect(
        w * 30 / 100,
        h * 62 / 100,
        w * 70 / 100,
        h * 80 / 100,
        STOVE,
    );
    if fan_on {
        img.fill_rect(
            w * 42 / 100,
            h * 58 / 100,
            w * 48 / 100,
            h * 62 / 100,
            FLAME,
        );
        img.fill_rect(
            w * 52 / 100,
            h * 58 / 100,
            w * 58 / 100,
            h * 62 / 100,
            FLAME,
        );
    }
    // The purifier: a white box on the wall (its lamp and labels come after the smoke).
    img.fill_rect(w * 74 / 100, h * 20 / 100, w * 95 / 100, h * 48 / 100, BOX);

    // Smoke: thicker near the ceiling (it rises), with slow plumes that drift with time. The
    // plume pattern is separable (a column term times a row term), computed once per column.
    let d = haze_density(fume);
    if d > 0.0 {
        let cols: Vec<f64> = (0..w)
            .map(|x| (f64::from(x) / f64::from(w) * 9.0 + t / 7.0).sin())
            .collect();
        for (y, row) in img.data.chunks_exact_mut(w as usize * 3).enumerate() {
            let y = y as f64;
            let rise = 1.0 - 0.3 * y / f64::from(h);
            let wave = (y / f64::from(h) * 5.0 - t / 11.0).cos();
            for (p, col) in row.chunks_exact_mut(3).zip(&cols) {
                let a = (d * rise * (0.85 + 0.15 * col * wave)).clamp(0.0, 1.0);
                for (c, smoke) in p.iter_mut().zip(SMOKE) {
                    *c = (f64::from(*c) * (1.0 - a) + f64::from(smoke) * a) as u8;
                }
            }
        }
    }

    // The lamp and the purifier's labels stay readable through smoke (they are lit).
    let (lx0, ly0, lx1, ly1) = lamp_rect(w, h);
    let lamp = if purifier_on { LAMP_ON } else { LAMP_OFF };
    img.fill_rect(lx0, ly0, lx1, ly1, lamp);
    draw_text(&mut img, w * 75 / 100, h * 21 / 100, s, "PURIFIER", STOVE);
    let state = if purifier_on { "ON" } else { "OFF" };
    draw_text(&mut img, w * 75 / 100, h * 37 / 100, 2 * s, state, lamp);

    // On-screen display, as a camera draws it: name and time at the top, values at the bottom.
    let t_whole = t.max(0.0).floor() as u64;
    let lines_top = [
        cam.name.clone(),
        format!(
            "t={:02}:{:02}:{:02} ({} s) {}",
            t_whole / 3600,
            t_whole / 60 % 60,
            t_whole % 60,
            t_whole,
            cam.scenario.name()
        ),
    ];
    let lines_bottom = [
        format!("fume {fume:.2} mg/m3"),
        format!(
            "fan {} {:.1} A  purifier {} {:.1} A",
            if fan_on { "on" } else { "off" },
            v(Metric::FanCurrentA),
            if purifier_on { "on" } else { "off" },
            v(Metric::PurifierCurrentA),
        ),
    ];
    for (i, line) in lines_top.iter().enumerate() {
        osd_line(&mut img, s, s * 2 + i as u32 * 10 * s, line);
    }
    for (i, line) in lines_bottom.iter().enumerate() {
        osd_line(
            &mut img,
            s,
            h.saturating_sub((22 - 10 * i as u32) * s),
            line,
        );
    }
    img
}

/// A line of OSD text on a black strip, at (x, y).
fn osd_line(img: &mut Rgb, s: u32, y: u32, text: &str) {
    let x = 2 * s;
    let cols = (img.width.saturating_sub(2 * x) / (8 * s)) as usize;
    let text: String = text.chars().take(cols).collect();
    img.fill_rect(
        x - s,
        y - s,
        x + 8 * s * text.len() as u32 + s,
        y + 9 * s,
        OSD_BACK,
    );
    draw_text(img, x, y, s, &text, OSD);
}

/// The JPEG of `cam` at scenario time `t`.
pub fn snapshot(cam: &Camera, t: f64, w: u32, h: u32) -> Vec<u8> {
    fumegrid_picture::encode_jpeg(&render(cam, t, w, h), QUALITY)
}

/// Binds `host:port` (port 0 picks one) for [`serve`].
pub async fn bind(host: &str, port: u16) -> Result<TcpListener, String> {
    TcpListener::bind((host, port))
        .await
        .map_err(|e| format!("--cameras {host}:{port}: cannot listen: {e}"))
}

/// Serves the cameras on `listener` forever, one task per connection.
pub async fn serve(listener: TcpListener, cameras: Arc<Cameras>) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of file descriptors and the like: back off instead of spinning.
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let cams = cameras.clone();
        let service = hyper::service::service_fn(move |req| handle(cams.clone(), req));
        let conn = http.serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            // Header timeouts, resets and the like: the client's problem.
            let _ = conn.await;
            drop(permit);
        });
    }
}

/// The answer of a camera that was asked for its picture, faults included.
async fn snapshot_reply(cam: Camera, w: u32, h: u32) -> (StatusCode, Bytes, &'static str) {
    const JPEG: &str = "image/jpeg";
    match cam.fault {
        CameraFault::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, Bytes::from_static(b"camera fault\n"), "text/plain");
        }
        CameraFault::Garbage => {
            // Deterministic noise (xorshift), never starting like a JPEG.
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            let bytes: Vec<u8> = (0..64 * 1024)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8 & 0x7F
                })
                .collect();
            return (StatusCode::OK, Bytes::from(bytes), JPEG);
        }
        CameraFault::Huge(mib) => {
            let mut bytes = vec![0x5Au8; (mib * 1024 * 1024) as usize];
            bytes[..4].copy_from_slice(&[0xFF, 0xD8, 0xFF, 0xE0]);
            return (StatusCode::OK, Bytes::from(bytes), JPEG);
        }
        CameraFault::Slow(d) => tokio::time::sleep(d).await,
        CameraFault::None | CameraFault::Truncated => {}
    }
    let t = cam.clock.now();
    let fault = cam.fault;
    // Rendering takes tens of milliseconds: off the runtime thread, which also serves Modbus TCP.
    match tokio::task::spawn_blocking(move || snapshot(&cam, t, w, h)).await {
        Ok(mut jpeg) => {
            if fault == CameraFault::Truncated {
                jpeg.truncate(jpeg.len() / 2);
            }
            (StatusCode::OK, Bytes::from(jpeg), JPEG)
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Bytes::from_static(b"rendering failed\n"),
            "text/plain",
        ),
    }
}

async fn handle(
    cameras: Arc<Cameras>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    let head = req.method() == Method::HEAD;
    let reply = cameras.respond(req.method(), req.uri().path(), auth.as_deref());
    let (status, body, kind) = match reply {
        Reply::Snapshot(cam, w, h) => snapshot_reply(cam, w, h).await,
        Reply::Photo(bytes) => (StatusCode::OK, bytes, "image/jpeg"),
        Reply::NotFound => (
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"no such camera\n"),
            "text/plain",
        ),
        Reply::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(b"authentication required\n"),
            "text/plain",
        ),
        Reply::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"GET only\n"),
            "text/plain",
        ),
    };
    let len = body.len();
    let mut resp = Response::new(Full::new(if head { Bytes::new() } else { body }));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::UNAUTHORIZED {
        h.insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"fumegrid-sim\""),
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        h.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::wire::Media;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const W: u32 = 640;
    const H: u32 = 480;

    fn cameras(auth: Option<(&str, &str)>) -> Cameras {
        // Frozen at t = 600 s: inside the exceedance plateau and after the purifier went off.
        let clock = SimClock::new(600.0, 0.0);
        let cam = |name: &str, scenario| {
            (
                name.to_string(),
                Camera {
                    name: name.to_string(),
                    scenario,
                    clock,
                    fault: CameraFault::None,
                },
            )
        };
        Cameras {
            cameras: [
                cam("noodle-house", Scenario::Normal),
                cam("bbq-grill", Scenario::Exceedance),
                cam("hotpot", Scenario::PurifierOff),
            ]
            .into_iter()
            .collect(),
            auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
            width: W,
            height: H,
            photos: Photos::default(),
        }
    }

    #[test]
    fn drone_photos_are_served_as_taken_behind_the_same_auth() {
        let c = cameras(Some(("admin", "12345")));
        c.photos
            .put("/DCIM/1/IMG_0001.JPG".into(), vec![0xFF, 0xD8, 1, 2]);
        let ok = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("admin:12345")
        );
        assert!(matches!(
            c.respond(&Method::GET, "/DCIM/1/IMG_0001.JPG", None),
            Reply::Unauthorized
        ));
        match c.respond(&Method::GET, "/DCIM/1/IMG_0001.JPG", Some(ok.as_bytes())) {
            Reply::Photo(b) => assert_eq!(&b[..], &[0xFF, 0xD8, 1, 2]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            c.respond(&Method::GET, "/DCIM/1/IMG_0002.JPG", Some(ok.as_bytes())),
            Reply::NotFound
        ));
        for i in 0..Photos::KEPT {
            c.photos.put(format!("/DCIM/2/{i}.JPG"), vec![1]);
        }
        assert!(
            c.photos.get("/DCIM/1/IMG_0001.JPG").is_none(),
            "the oldest photo gives way"
        );
        assert!(c.photos.get("/DCIM/2/0.JPG").is_some());
    }

    async fn start(cams: Cameras) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(serve(listener, Arc::new(cams)));
        addr
    }

    /// One HTTP/1.1 request over a real socket: (status, headers, body).
    pub(super) async fn request(
        addr: std::net::SocketAddr,
        method: &str,
        path: &str,
        extra: &str,
    ) -> (u16, String, Vec<u8>) {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: cam\r\nConnection: close\r\n{extra}\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut resp = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut resp))
            .await
            .expect("answer within 30 s")
            .expect("read");
        let split = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("header end");
        let head = String::from_utf8_lossy(&resp[..split]).to_string();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head, resp[split + 4..].to_vec())
    }

    async fn picture(addr: std::net::SocketAddr, name: &str) -> Rgb {
        let (status, head, body) = request(addr, "GET", &format!("/camera/{name}.jpg"), "").await;
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("content-type: image/jpeg"), "{head}");
        assert_eq!(fumegrid_picture::sniff(&body), Some("image/jpeg"));
        let img = fumegrid_picture::decode(&body, Media::Jpeg).expect("a JPEG");
        assert_eq!((img.width, img.height), (W, H));
        img
    }

    fn dist(a: [f64; 3], b: [u8; 3]) -> f64 {
        (0..3)
            .map(|c| (a[c] - f64::from(b[c])).powi(2))
            .sum::<f64>()
            .sqrt()
    }

    #[tokio::test]
    async fn smoke_and_purifier_show_in_the_picture() {
        let addr = start(cameras(None)).await;
        let clean = picture(addr, "noodle-house").await;
        let smoky = picture(addr, "bbq-grill").await;
        let idle = picture(addr, "hotpot").await;

        // Smoke: the plain wall patch is near the wall colour in clean air (fume 0.55 mg/m³)
        // and far from it, toward the smoke grey, at 3 mg/m³.
        let (x0, y0, x1, y1) = haze_probe_rect(W, H);
        let wall_clean = clean.mean(x0, y0, x1, y1);
        let wall_smoky = smoky.mean(x0, y0, x1, y1);
        assert!(dist(wall_clean, WALL) < 15.0, "clean wall {wall_clean:?}");
        assert!(dist(wall_smoky, WALL) > 60.0, "smoky wall {wall_smoky:?}");
        assert!(
            dist(wall_smoky, SMOKE) < dist(wall_clean, SMOKE) - 50.0,
            "smoky {wall_smoky:?} vs clean {wall_clean:?}"
        );

        // Purifier: the lamp is green while on, red while off.
        let (x0, y0, x1, y1) = lamp_rect(W, H);
        let on = clean.mean(x0 + 4, y0 + 4, x1 - 4, y1 - 4);
        let off = idle.mean(x0 + 4, y0 + 4, x1 - 4, y1 - 4);
        assert!(on[1] > 150.0 && on[0] < 90.0, "lamp on {on:?}");
        assert!(off[0] > 150.0 && off[1] < 90.0, "lamp off {off:?}");
        // ... and the smoky kitchen's purifier (on) is green too.
        let smoky_lamp = smoky.mean(x0 + 4, y0 + 4, x1 - 4, y1 - 4);
        assert!(
            smoky_lamp[1] > 150.0 && smoky_lamp[0] < 90.0,
            "{smoky_lamp:?}"
        );
        // Same fume as the normal kitchen, so the same clean wall: only the purifier differs.
        let (px0, py0, px1, py1) = haze_probe_rect(W, H);
        assert!(dist(idle.mean(px0, py0, px1, py1), WALL) < 15.0);
    }

    #[test]
    fn haze_follows_the_fume_value() {
        let cam = |scenario| Camera {
            name: "x".into(),
            scenario,
            clock: SimClock::new(0.0, 0.0),
            fault: CameraFault::None,
        };
        let (x0, y0, x1, y1) = haze_probe_rect(320, 240);
        let wall_at = |t: f64| {
            let img = render(&cam(Scenario::Exceedance), t, 320, 240);
            dist(img.mean(x0, y0, x1, y1), WALL)
        };
        // Before the event (fume < 1), on the ramp (t = 75 s, about half), on the plateau.
        let (before, ramp, plateau) = (wall_at(30.0), wall_at(75.0), wall_at(600.0));
        assert!(
            before < 15.0 && before < ramp && ramp < plateau,
            "{before} {ramp} {plateau}"
        );
        assert_eq!(haze_density(0.1), 0.0);
        assert_eq!(haze_density(9999.0), 0.9);
        assert_eq!(haze_density(f64::NAN), 0.0);
        assert!(haze_density(1.0) < haze_density(2.0));
    }

    #[tokio::test]
    async fn unknown_camera_auth_and_methods() {
        let addr = start(cameras(Some(("admin", "s3cret")))).await;
        let (status, head, _) = request(addr, "GET", "/camera/hotpot.jpg", "").await;
        assert_eq!(status, 401);
        assert!(head.contains("www-authenticate: Basic"), "{head}");
        // "admin:wrong" and "admin:s3cret" in base64.
        let wrong = "Authorization: Basic YWRtaW46d3Jvbmc=\r\n";
        let right = "Authorization: Basic YWRtaW46czNjcmV0\r\n";
        assert_eq!(
            request(addr, "GET", "/camera/hotpot.jpg", wrong).await.0,
            401
        );
        let (status, _, body) = request(addr, "GET", "/camera/hotpot.jpg", right).await;
        assert_eq!(status, 200);
        assert_eq!(fumegrid_picture::sniff(&body), Some("image/jpeg"));
        assert_eq!(
            request(addr, "GET", "/camera/nosuch.jpg", right).await.0,
            404
        );
        assert_eq!(
            request(addr, "GET", "/camera/hotpot.png", right).await.0,
            404
        );
        assert_eq!(request(addr, "GET", "/", right).await.0, 404);
        assert_eq!(
            request(addr, "POST", "/camera/hotpot.jpg", right).await.0,
            405
        );
        let (status, head, body) = request(addr, "HEAD", "/camera/hotpot.jpg", right).await;
        assert_eq!((status, body.len()), (200, 0), "{head}");
    }
}

#[cfg(test)]
mod fault_tests {
    use super::*;
    use fumegrid_common::wire::Media;

    async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, Vec<u8>) {
        let (status, _, body) = super::tests::request(addr, "GET", path, "").await;
        (status, body)
    }

    #[test]
    fn faults_parse() {
        assert_eq!("none".parse(), Ok(CameraFault::None));
        assert_eq!(
            "slow:1500".parse(),
            Ok(CameraFault::Slow(Duration::from_millis(1500)))
        );
        assert_eq!("status:503".parse(), Ok(CameraFault::Status(503)));
        assert_eq!("huge:50".parse(), Ok(CameraFault::Huge(50)));
        assert_eq!("garbage".parse(), Ok(CameraFault::Garbage));
        assert_eq!("truncated".parse(), Ok(CameraFault::Truncated));
        for bad in [
            "slow",
            "status:200",
            "huge:0",
            "huge:9999",
            "boom",
            "garbage:1",
        ] {
            assert!(bad.parse::<CameraFault>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn faulty_cameras_misbehave_as_asked() {
        let clock = SimClock::new(600.0, 0.0);
        let cams: BTreeMap<String, Camera> = [
            ("ok", CameraFault::None),
            ("slow", CameraFault::Slow(Duration::from_millis(300))),
            ("down", CameraFault::Status(503)),
            ("garbage", CameraFault::Garbage),
            ("cut", CameraFault::Truncated),
            ("huge", CameraFault::Huge(3)),
        ]
        .into_iter()
        .map(|(n, fault)| {
            let cam = Camera {
                name: n.into(),
                scenario: Scenario::Normal,
                clock,
                fault,
            };
            (n.to_string(), cam)
        })
        .collect();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let cameras = Cameras {
            cameras: cams,
            auth: None,
            width: 320,
            height: 240,
            photos: Photos::default(),
        };
        tokio::spawn(serve(listener, Arc::new(cameras)));

        let (status, ok) = get(addr, "/camera/ok.jpg").await;
        assert_eq!(status, 200);
        assert!(fumegrid_picture::decode(&ok, Media::Jpeg).is_ok());

        let start = crate::clock::instant();
        let (status, body) = get(addr, "/camera/slow.jpg").await;
        assert_eq!(status, 200);
        assert!(fumegrid_picture::decode(&body, Media::Jpeg).is_ok());
        assert!(
            crate::clock::instant().saturating_duration_since(start) >= Duration::from_millis(300),
            "answered only after the delay"
        );

        assert_eq!(get(addr, "/camera/down.jpg").await.0, 503);

        let (status, body) = get(addr, "/camera/garbage.jpg").await;
        assert_eq!((status, body.len()), (200, 64 * 1024));
        assert_eq!(fumegrid_picture::sniff(&body), None);
        assert!(fumegrid_picture::decode(&body, Media::Jpeg).is_err());

        let (status, body) = get(addr, "/camera/cut.jpg").await;
        assert_eq!(status, 200);
        assert!(
            body.len() < ok.len() * 3 / 4,
            "{} vs {}",
            body.len(),
            ok.len()
        );

        let (status, body) = get(addr, "/camera/huge.jpg").await;
        assert_eq!((status, body.len()), (200, 3 * 1024 * 1024));
        assert_eq!(fumegrid_picture::sniff(&body), Some("image/jpeg"));
        assert!(fumegrid_picture::decode(&body, Media::Jpeg).is_err());
    }
}
