//! The shipped unit files pass `systemd-analyze verify` and score at most 2.0 ("OK") in
//! `systemd-analyze security --offline=yes`.

use std::path::{Path, PathBuf};
use std::process::Command;

use fumegrid_tests::*;

fn units() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("systemd"))
        .expect("systemd/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    v.sort();
    v
}

/// A copy of `unit` whose ExecStart binaries are the ones just built (verify checks they exist).
fn installed_copy(dir: &TempDir, unit: &Path) -> PathBuf {
    let text = std::fs::read_to_string(unit).expect("read unit");
    let bin_dir = bin("fumegrid-gateway")
        .parent()
        .map(Path::to_path_buf)
        .expect("bin dir");
    let text = text.replace("/usr/bin/", &format!("{}/", bin_dir.display()));
    let out = dir.join(
        unit.file_name()
            .and_then(|n| n.to_str())
            .expect("unit name"),
    );
    std::fs::write(&out, text).expect("write unit copy");
    out
}

#[test]
fn units_verify_and_are_hardened() {
    let units = units();
    let names: Vec<String> = units.iter().map(|u| u.display().to_string()).collect();
    assert!(
        units
            .iter()
            .any(|u| u.ends_with("fumegrid-gateway.service")),
        "{names:?}"
    );
    let dir = TempDir::new("units");
    for unit in units {
        let copy = installed_copy(&dir, &unit);
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze installed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Lines about the host's own units (not ours) are not our concern.
        let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("fumegrid")).collect();
        assert!(
            out.status.success() && ours.is_empty(),
            "{}: verify failed:\n{stderr}",
            unit.display()
        );

        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&copy)
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|rest| rest.split(": ").nth(1))
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
        assert!(score <= 2.0, "{}: exposure {score} > 2.0", unit.display());
    }
}
