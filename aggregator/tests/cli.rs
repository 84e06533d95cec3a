//! The binary as an operator uses it: print-default-config → validate → run, stopped by
//! --duration and by SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_fumegrid-aggregator");

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fumegrid-agg-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("dir");
    d
}

/// The default config, with ports 0 and a users file next to it.
fn config(d: &Path) -> PathBuf {
    let out = Command::new(BIN)
        .arg("print-default-config")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)
        .expect("utf8")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:1883", "127.0.0.1:0")
        .replace(
            "/var/lib/fumegrid/aggregator/fumegrid.sqlite3",
            "fumegrid.sqlite3",
        );
    std::fs::write(
        d.join("broker-users.toml"),
        "[[users]]\nusername = \"gw-demo-01\"\npassword = \"change-me-please\"\n",
    )
    .expect("users");
    let p = d.join("aggregator.toml");
    std::fs::write(&p, text).expect("config");
    p
}

#[test]
fn default_config_validates_and_broken_one_names_file_line_field() {
    let d = dir("validate");
    let p = config(&d);
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");

    std::fs::write(&p, "[aggregator]\nid = \"x\"\n[broker]\nmode = \"cloud\"\n").expect("w");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("aggregator.toml:4:1: broker.mode: unknown mode `cloud`"),
        "{stderr}"
    );
}

/// Starts `run`, waits for the two ready lines on stdout, returns the child and the lines.
fn start(p: &Path, extra: &[&str]) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(p)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines().take(2) {
        lines.push(line.expect("line"));
    }
    (child, lines)
}

#[test]
fn run_prints_addresses_and_stops_on_duration_and_sigterm() {
    let d = dir("run");
    let p = config(&d);
    let (mut child, lines) = start(&p, &["--duration", "0.5"]);
    assert!(lines[0].starts_with("api: http://127.0.0.1:"), "{lines:?}");
    assert!(
        lines[1].starts_with("broker: mqtt://127.0.0.1:"),
        "{lines:?}"
    );
    assert!(child.wait().expect("wait").success());

    let (mut child, lines) = start(&p, &["--log-format", "json"]);
    assert_eq!(lines.len(), 2);
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let t0 = fumegrid_common::clock::Clock::system().instant();
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            assert!(s.success(), "exit on SIGTERM: {s}");
            break;
        }
        assert!(
            (fumegrid_common::clock::Clock::system().instant() - t0) < Duration::from_secs(10),
            "did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn print_default_catalogue_prints_the_shipped_file_and_validate_names_it() {
    let out = Command::new(BIN)
        .arg("print-default-catalogue")
        .output()
        .expect("run");
    assert!(out.status.success());
    let shipped = include_str!("../catalogue/default.toml");
    assert_eq!(String::from_utf8_lossy(&out.stdout), shipped);
    // A config naming a copy of it validates and says so.
    let d = dir("catalogue");
    let p = config(&d);
    std::fs::write(d.join("catalogue.toml"), shipped).expect("catalogue");
    let text = std::fs::read_to_string(&p).expect("config").replace(
        "# catalogue = \"catalogue.toml\"",
        "catalogue = \"catalogue.toml\"",
    );
    std::fs::write(&p, text).expect("config");
    let out = Command::new(BIN)
        .args(["validate", "--config"])
        .arg(&p)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("catalogue.toml ("), "{stdout}");
}
