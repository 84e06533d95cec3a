//! Cameras end to end: `fumegrid-gateway snapshot` (the gateway's capture code, as a technician
//! runs it) against real camera servers on loopback — gst-rtsp-server (H.264 and H.265 from
//! x264enc/x265enc), lighttpd with Digest authentication, our ONVIF device peer — and against
//! faults: a closed port, a camera that never answers, garbage bytes, a stream without a
//! keyframe, a 50 MB "picture". Every failure must be a clear error within a bound, never a
//! hang or a crash.

use std::time::Duration;

use fumegrid_tests::camera::{
    Flood, Garbage, HEIGHT, HttpCamera, OnvifCamera, PASSWORD, RtspCamera, Shot, Silent, USER,
    WIDTH, camera_jpg, gst_decode, h264_nal_types, h265_nal_types, mean_abs_diff, snapshot,
    snapshot_bytes, test_pattern_rgb,
};
use fumegrid_tests::{TempDir, free_port};
use sha2::{Digest, Sha256};

/// A capture bounded by `timeout_ms` must be over well within this.
const LIMIT: Duration = Duration::from_secs(30);

fn creds() -> Vec<&'static str> {
    vec!["--user", USER, "--password", PASSWORD]
}

fn failed_with(shot: &Shot, kind: &str) {
    assert!(!shot.ok, "expected a failure, got {}", shot.json);
    assert_eq!(shot.json["ok"], false, "{}", shot.json);
    assert_eq!(shot.json["kind"], kind, "{}", shot.json);
    assert!(
        !shot.json["hint"].as_str().unwrap_or_default().is_empty(),
        "{}",
        shot.json
    );
    assert!(!shot.stderr.contains("panicked"), "{}", shot.stderr);
}

fn took(shot: &Shot) -> f64 {
    shot.json["elapsed_ms"].as_f64().expect("elapsed_ms")
}

/// The picture a camera served arrives byte for byte, with the SHA-256 of those bytes, over
/// Digest MD5 (Hikvision's path), Digest SHA-256 (Dahua's path) and Basic.
#[test]
fn http_camera_picture_arrives_byte_for_byte() {
    let cam = HttpCamera::start();
    let dir = TempDir::new("camera-http");
    let served = camera_jpg();
    let want_sha = hex::encode(Sha256::digest(&served));
    for path in [
        "ISAPI/Streaming/channels/101/picture",
        "cgi-bin/snapshot.cgi",
        "basic/snap.jpg",
    ] {
        let out = dir.join("picture.jpg");
        let url = cam.url(path);
        let out_s = out.display().to_string();
        let mut args = vec!["--url", &url, "--out", &out_s];
        args.extend(creds());
        let shot = snapshot(&args, LIMIT);
        assert!(shot.ok, "{path}: {} {}", shot.json, shot.stderr);
        assert_eq!(shot.json["media"], "image/jpeg");
        assert_eq!(shot.json["sha256"], want_sha.as_str(), "{path}");
        assert_eq!(shot.json["size"], served.len());
        assert_eq!(shot.json["width"], 640);
        assert_eq!(shot.json["height"], 360);
        assert_eq!(std::fs::read(&out).expect("written"), served, "{path}");
    }
}

#[test]
fn http_camera_wrong_or_missing_password_is_unauthorized() {
    let cam = HttpCamera::start();
    let url = cam.url("ISAPI/Streaming/channels/101/picture");
    let wrong = snapshot(
        &["--url", &url, "--user", USER, "--password", "nope"],
        LIMIT,
    );
    failed_with(&wrong, "unauthorized");
    let none = snapshot(&["--url", &url], LIMIT);
    failed_with(&none, "unauthorized");
    let sha = cam.url("cgi-bin/snapshot.cgi");
    failed_with(
        &snapshot(
            &["--url", &sha, "--user", "root", "--password", PASSWORD],
            LIMIT,
        ),
        "unauthorized",
    );
}

#[test]
fn http_camera_faults_are_clear_errors_within_the_bound() {
    let cam = HttpCamera::start();
    // A page where a picture should be.
    cam.serve("not-a-picture.jpg", b"<html><body>Login</body></html>");
    let url = cam.url("open/not-a-picture.jpg");
    let shot = snapshot(&["--url", &url], LIMIT);
    failed_with(&shot, "garbage");
    assert!(
        shot.json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("SOI"),
        "{}",
        shot.json
    );
    // A wrong path.
    let url = cam.url("open/nothing.jpg");
    let shot = snapshot(&["--url", &url], LIMIT);
    failed_with(&shot, "status");
    assert_eq!(shot.json["error"], "camera answered 404");

    // Nothing listening.
    let url = format!("http://127.0.0.1:{}/snap.jpg", free_port());
    failed_with(&snapshot(&["--url", &url], LIMIT), "unreachable");

    // Accepts, never answers: the bound ends it.
    let silent = Silent::start();
    let url = format!("http://127.0.0.1:{}/snap.jpg", silent.port());
    let shot = snapshot(&["--url", &url, "--timeout-ms", "1500"], LIMIT);
    failed_with(&shot, "timeout");
    assert!(took(&shot) >= 1400.0, "{}", shot.json);

    // Random bytes where HTTP should be.
    let garbage = Garbage::start();
    let url = format!("http://127.0.0.1:{}/snap.jpg", garbage.port());
    failed_with(
        &snapshot(&["--url", &url, "--timeout-ms", "3000"], LIMIT),
        "garbage",
    );
}

/// A 50 MB "picture" is refused: by its Content-Length before any byte is read, and, when the
/// camera streams it without a length, as soon as the bytes read pass `max_bytes` — the rest
/// is never read (the peer cannot get much more than the cap plus socket buffers out).
#[test]
fn a_50_mb_picture_is_refused_without_reading_it() {
    const FIFTY_MB: u64 = 50 * 1024 * 1024;
    let cam = HttpCamera::start();
    cam.serve_sized("big.jpg", FIFTY_MB);
    let url = cam.url("open/big.jpg");
    let shot = snapshot(&["--url", &url, "--max-bytes", "4194304"], LIMIT);
    failed_with(&shot, "too_large");
    assert_eq!(shot.json["error"], "picture larger than 4194304 bytes");

    let flood = Flood::start(FIFTY_MB);
    let url = format!("http://127.0.0.1:{}/snap.jpg", flood.port());
    let shot = snapshot(&["--url", &url, "--max-bytes", "4194304"], LIMIT);
    failed_with(&shot, "too_large");
    // The flood's thread notices the closed connection at its next write.
    fumegrid_tests::wait_until("the flood to stop", Duration::from_secs(10), || {
        let a = flood.sent();
        std::thread::sleep(Duration::from_millis(200));
        a == flood.sent()
    });
    assert!(
        flood.sent() < 4 * 1024 * 1024 + 16 * 1024 * 1024,
        "the gateway read on: {} bytes went out",
        flood.sent()
    );
}

/// An H.264 camera's next keyframe: SPS and PPS first, an IDR slice, the peer's dimensions,
/// the hash of exactly the bytes written out, and decoded on its own by an independent decoder
/// (GStreamer's openh264dec) it is the peer's picture (SMPTE bars).
#[test]
fn rtsp_h264_keyframe_decodes_on_its_own() {
    let cam = RtspCamera::start(false);
    let url = cam.url("h264");
    let mut args = vec!["--rtsp", &url];
    args.extend(creds());
    let (shot, bytes) = snapshot_bytes(&args, LIMIT);
    assert!(shot.ok, "{} {}", shot.json, shot.stderr);
    assert_eq!(shot.json["media"], "video/h264");
    assert_eq!(shot.json["width"], WIDTH);
    assert_eq!(shot.json["height"], HEIGHT);
    assert_eq!(shot.json["size"], bytes.len());
    assert_eq!(
        shot.json["sha256"],
        hex::encode(Sha256::digest(&bytes)).as_str()
    );
    let types = h264_nal_types(&bytes);
    let vcl: Vec<u8> = types.iter().copied().filter(|t| *t != 9).collect();
    assert_eq!(
        vcl.get(..2),
        Some(&[7u8, 8][..]),
        "SPS, PPS first: {types:?}"
    );
    assert!(types.contains(&5), "an IDR slice: {types:?}");
    assert!(
        !types.contains(&1),
        "a keyframe has no non-IDR slice: {types:?}"
    );
}

/// H.265 (retina 0.4.21 depacketizes it): VPS, SPS, PPS, then an IRAP slice; decoded on its own
/// by GStreamer's libde265dec it is the peer's picture.
#[test]
fn rtsp_h265_keyframe_keeps_its_parameter_sets() {
    let cam = RtspCamera::start(false);
    let dir = TempDir::new("camera-rtsp265");
    let out = dir.join("keyframe.h265");
    let out_s = out.display().to_string();
    let url = cam.url("h265");
    let mut args = vec!["--rtsp", &url, "--out", &out_s];
    args.extend(creds());
    let shot = snapshot(&args, LIMIT);
    assert!(shot.ok, "{} {}", shot.json, shot.stderr);
    assert_eq!(shot.json["media"], "video/h265");
    assert_eq!(shot.json["width"], WIDTH);
    assert_eq!(shot.json["height"], HEIGHT);
    let bytes = std::fs::read(&out).expect("keyframe written");
    let types = h265_nal_types(&bytes);
    let params: Vec<u8> = types.iter().copied().filter(|t| *t != 35).collect();
    assert_eq!(
        params.get(..3),
        Some(&[32u8, 33, 34][..]),
        "VPS, SPS, PPS first: {types:?}"
    );
    assert!(
        types.iter().any(|t| (16..=21).contains(t)),
        "an IRAP slice: {types:?}"
    );
    let diff = mean_abs_diff(&gst_decode(&bytes, true), &test_pattern_rgb());
    assert!(
        diff < 16.0,
        "decoded keyframe differs from the bars by {diff:.1}"
    );
}

#[test]
fn rtsp_credentials_basic_and_wrong() {
    let cam = RtspCamera::start(true);
    let url = cam.url("h264");
    let mut args = vec!["--rtsp", &url];
    args.extend(creds());
    let shot = snapshot(&args, LIMIT);
    assert!(shot.ok, "basic: {} {}", shot.json, shot.stderr);
    // Credentials in the URL, as camera manuals write them.
    let in_url = format!("rtsp://{USER}:{PASSWORD}@127.0.0.1:{}/h264", cam.port);
    let shot = snapshot(&["--rtsp", &in_url], LIMIT);
    assert!(shot.ok, "in the URL: {} {}", shot.json, shot.stderr);
    failed_with(
        &snapshot(&["--rtsp", &url, "--user", USER, "--password", "x"], LIMIT),
        "unauthorized",
    );
    failed_with(&snapshot(&["--rtsp", &url], LIMIT), "unauthorized");
}

#[test]
fn rtsp_faults_are_clear_errors_within_the_bound() {
    let cam = RtspCamera::start(false);
    // Keyframes dropped at the source: P-frames only.
    let url = cam.url("nokey");
    let mut args = vec!["--rtsp", &url, "--timeout-ms", "3000"];
    args.extend(creds());
    let shot = snapshot(&args, LIMIT);
    failed_with(&shot, "no_keyframe");
    assert_eq!(shot.json["error"], "no keyframe within 3000 ms");
    // A stream without video.
    let url = cam.url("audio");
    let mut args = vec!["--rtsp", &url];
    args.extend(creds());
    failed_with(&snapshot(&args, LIMIT), "unsupported");
    // A path the camera does not have.
    let url = cam.url("nothing");
    let mut args = vec!["--rtsp", &url];
    args.extend(creds());
    failed_with(&snapshot(&args, LIMIT), "status");

    let url = format!("rtsp://127.0.0.1:{}/h264", free_port());
    failed_with(&snapshot(&["--rtsp", &url], LIMIT), "unreachable");

    let silent = Silent::start();
    let url = format!("rtsp://127.0.0.1:{}/h264", silent.port());
    let shot = snapshot(&["--rtsp", &url, "--timeout-ms", "1500"], LIMIT);
    failed_with(&shot, "timeout");

    let garbage = Garbage::start();
    let url = format!("rtsp://127.0.0.1:{}/h264", garbage.port());
    failed_with(
        &snapshot(&["--rtsp", &url, "--timeout-ms", "3000"], LIMIT),
        "garbage",
    );
}

/// A Motion JPEG stream's next frame is a JPEG of the peer's size.
#[test]
fn rtsp_mjpeg_frame_is_a_jpeg() {
    let cam = RtspCamera::start(false);
    let url = cam.url("mjpeg");
    let mut args = vec!["--rtsp", &url];
    args.extend(creds());
    let (shot, bytes) = snapshot_bytes(&args, LIMIT);
    assert!(shot.ok, "{} {}", shot.json, shot.stderr);
    assert_eq!(shot.json["media"], "image/jpeg");
    assert_eq!(shot.json["width"], WIDTH);
    assert_eq!(shot.json["height"], HEIGHT);
    assert_eq!(bytes.get(..2), Some(&[0xFF, 0xD8][..]));
}

/// ONVIF: GetSnapshotUri through a device service that checks the WS-Security digest, then
/// the picture over HTTP Digest from the URL it named.
#[test]
fn onvif_camera_names_its_snapshot_url() {
    let http = HttpCamera::start();
    let onvif = OnvifCamera::start(&http.url("ISAPI/Streaming/channels/101/picture"));
    let url = onvif.url();
    let mut args = vec!["--onvif", &url];
    args.extend(creds());
    let shot = snapshot(&args, LIMIT);
    assert!(shot.ok, "{} {}", shot.json, shot.stderr);
    assert_eq!(
        shot.json["sha256"],
        hex::encode(Sha256::digest(camera_jpg())).as_str()
    );
    assert_eq!(
        shot.json["snapshot_uri"],
        http.url("ISAPI/Streaming/channels/101/picture").as_str()
    );
    failed_with(
        &snapshot(&["--onvif", &url, "--user", USER, "--password", "x"], LIMIT),
        "unauthorized",
    );
    let down = format!("http://127.0.0.1:{}/onvif/device_service", free_port());
    failed_with(&snapshot(&["--onvif", &down], LIMIT), "unreachable");
}

/// A camera whose clock is an hour off (shop cameras rarely have theirs set) still takes our
/// UsernameToken: `Created` is written in the camera's time, read with GetSystemDateAndTime.
#[test]
fn onvif_camera_with_a_wrong_clock() {
    let http = HttpCamera::start();
    let onvif = OnvifCamera::start_skewed(&http.url("ISAPI/Streaming/channels/101/picture"), 3600);
    let url = onvif.url();
    let mut args = vec!["--onvif", &url];
    args.extend(creds());
    let shot = snapshot(&args, LIMIT);
    assert!(shot.ok, "{} {}", shot.json, shot.stderr);
}

/// `--config` + `--camera` takes the camera from the gateway config's `[[cameras]]` (the whole
/// file validated as the daemon validates it).
#[test]
fn snapshot_of_a_configured_camera() {
    let http = HttpCamera::start();
    let dir = TempDir::new("camera-config");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[gateway]\nid = \"gw-camera\"\n\
             [[devices]]\nid = \"hood1\"\nprofile = \"{}\"\ntcp = \"127.0.0.1:1502\"\n\
             [[cameras]]\nid = \"kitchen\"\ndevices = [\"hood1\"]\nsnapshot_url = \"{}\"\n\
             user = \"{USER}\"\npassword = \"{PASSWORD}\"\ntimeout_ms = 5000\n",
            fumegrid_tests::root()
                .join("device-profiles/tb-compatible.toml")
                .display(),
            http.url("cgi-bin/snapshot.cgi")
        ),
    )
    .expect("config");
    let c = config.display().to_string();
    let shot = snapshot(&["--config", &c, "--camera", "kitchen"], LIMIT);
    assert!(shot.ok, "{} {}", shot.json, shot.stderr);
    assert_eq!(shot.json["camera"], "kitchen");
    assert_eq!(shot.json["width"], 640);
}
