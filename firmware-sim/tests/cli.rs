//! The `fumegrid-sim` binary as tests and technicians use it: ready line, a pty it makes itself,
//! the stats line on exit, exit codes, and `values --json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use fumegrid_common::profile::Profile;
use fumegrid_sim::regmap::expected;
use fumegrid_sim::rtu::{adu, crc_ok};
use fumegrid_sim::scenario::Scenario;

const BIN: &str = env!("CARGO_BIN_EXE_fumegrid-sim");

const PROFILE: &str = r#"
[profile]
id = "cli-test"
[[points]]
metric = "fume_mg_m3"
table = "input"
address = 0
type = "u16"
scale = 0.01
valid = [0.0, 50.0]
[[points]]
metric = "fan_on"
table = "coil"
address = 0
type = "bool"
"#;

fn temp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fumegrid-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write");
    p
}

#[test]
fn bus_on_own_pty_serves_and_reports() {
    let profile = temp("bus.toml", PROFILE);
    let link = profile.with_file_name("bus-link");
    let mut child = Command::new(BIN)
        .arg("bus")
        .arg("--pty")
        .arg(&link)
        .arg("--slave")
        .arg(format!("3:{}:out_of_range", profile.display()))
        .args(["--start-at", "100", "--speed", "0", "--duration", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ready = String::new();
    out.read_line(&mut ready).expect("ready line");
    assert!(ready.starts_with("ready rtu=/dev/"), "{ready}");
    assert!(
        ready.contains(&format!("link={}", link.display())),
        "{ready}"
    );
    assert!(ready.contains("slaves=3"), "{ready}");

    let mut port = serialport::new(link.to_string_lossy(), 9600)
        .parity(serialport::Parity::Even)
        .timeout(Duration::from_millis(500))
        .open_native()
        .expect("open the pty through the link");
    port.write_all(&adu(3, &[4, 0, 0, 0, 1])).expect("write");
    let mut reply = [0u8; 7];
    port.read_exact(&mut reply).expect("reply");
    assert!(crc_ok(&reply));
    let loaded = Profile::load(&profile).expect("valid");
    let want = expected(&loaded, Scenario::OutOfRange, 100.0)[0].1;
    let got = f64::from(u16::from_be_bytes([reply[3], reply[4]])) * 0.01;
    assert_eq!(got, want);
    assert!(
        !loaded.points[0].in_range(got),
        "out_of_range reads outside valid"
    );
    port.write_all(&adu(3, &[1, 0, 0, 0, 1])).expect("write");
    let mut reply = [0u8; 6];
    port.read_exact(&mut reply).expect("coil reply");
    assert_eq!(reply.to_vec(), adu(3, &[1, 1, 1]));
    drop(port);

    let deadline = fumegrid_sim::clock::instant() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            fumegrid_sim::clock::instant() < deadline,
            "did not stop after --duration"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("stderr");
    let stats: serde_json::Value =
        serde_json::from_str(err.lines().last().unwrap_or("")).expect("stats line is JSON");
    assert_eq!(stats["event"], "stats");
    assert_eq!(stats["slaves"][0]["id"], 3);
    assert_eq!(stats["slaves"][0]["requests"], 2);
    assert_eq!(stats["slaves"][0]["replies"], 2);
    assert!(!link.exists(), "the link is removed on exit");
}

#[test]
fn bad_profile_is_a_config_error_with_file_and_line() {
    let bad = temp(
        "bad.toml",
        "[profile]\nid = \"x\"\n[[points]]\nmetric = \"fume\"\n",
    );
    let out = Command::new(BIN)
        .args(["monitor", "--tcp", "127.0.0.1:0", "--profile"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:4:", bad.display())) && err.contains("points[0].metric"),
        "{err}"
    );
    let out = Command::new(BIN)
        .args(["values", "--scenario", "nope", "--at", "1", "--profile"])
        .arg(&bad)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn values_json_matches_expected() {
    let profile = temp("values.toml", PROFILE);
    let out = Command::new(BIN)
        .args([
            "values",
            "--scenario",
            "exceedance",
            "--at",
            "600",
            "--json",
            "--profile",
        ])
        .arg(&profile)
        .output()
        .expect("run");
    assert!(out.status.success());
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let loaded = Profile::load(&profile).expect("valid");
    for (m, v) in expected(&loaded, Scenario::Exceedance, 600.0) {
        assert_eq!(doc["values"][m.name()].as_f64(), Some(v), "{m}");
    }
    assert_eq!(doc["registers"][0]["table"], "input");
}

/// `GET path` over a real socket: (status line, body).
fn http_get(addr: &str, path: &str) -> (String, Vec<u8>) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the cameras");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: cam\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).expect("read");
    let end = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("headers");
    let status = String::from_utf8_lossy(&resp[..end])
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    (status, resp[end + 4..].to_vec())
}

#[test]
fn monitor_with_cameras_serves_snapshots() {
    let profile = temp("cam.toml", PROFILE);
    let mut child = Command::new(BIN)
        .args(["monitor", "--tcp", "127.0.0.1:0", "--slave", "4"])
        .args([
            "--scenario",
            "exceedance",
            "--start-at",
            "600",
            "--speed",
            "0",
        ])
        .args(["--cameras", "127.0.0.1:0", "--camera", "bbq-grill=4"])
        .args(["--camera-size", "320x240", "--duration", "20", "--profile"])
        .arg(&profile)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut ready = String::new();
    out.read_line(&mut ready).expect("ready line");
    let addr = ready
        .split_whitespace()
        .find_map(|f| f.strip_prefix("cameras="))
        .unwrap_or_else(|| panic!("no cameras= in {ready}"))
        .to_string();
    for path in ["/camera/bbq-grill.jpg", "/camera/4.jpg"] {
        let (status, body) = http_get(&addr, path);
        assert!(status.contains(" 200 "), "{path}: {status}");
        let img =
            fumegrid_picture::decode(&body, fumegrid_common::wire::Media::Jpeg).expect("a JPEG");
        assert_eq!((img.width, img.height), (320, 240));
    }
    let (status, _) = http_get(&addr, "/camera/5.jpg");
    assert!(status.contains(" 404 "), "{status}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_camera_options_are_config_errors() {
    let profile = temp("cam-bad.toml", PROFILE);
    let out = Command::new(BIN)
        .args(["monitor", "--tcp", "127.0.0.1:0", "--slave", "4"])
        .args(["--cameras", "127.0.0.1:0", "--camera", "grill=9"])
        .args(["--camera", "1bad name=4", "--camera-size", "10x10"])
        .args([
            "--camera-fault",
            "4=boom",
            "--camera-fault",
            "nosuch=garbage",
        ])
        .arg("--profile")
        .arg(&profile)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("`grill=9`: no simulated monitor with slave id `9`"),
        "{err}"
    );
    assert!(err.contains("`1bad name=4`: NAME must be"), "{err}");
    assert!(err.contains("--camera-size `10x10`"), "{err}");
    assert!(
        err.contains("`4=boom`: `boom` is not a camera fault"),
        "{err}"
    );
    assert!(
        err.contains("`nosuch=garbage`: no camera `nosuch`"),
        "{err}"
    );
    // --camera-user needs --camera-password (clap's usage error, also exit code 2).
    let out = Command::new(BIN)
        .args([
            "monitor",
            "--tcp",
            "127.0.0.1:0",
            "--cameras",
            "127.0.0.1:0",
        ])
        .args(["--camera-user", "admin", "--profile"])
        .arg(&profile)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}
