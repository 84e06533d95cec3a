//! Every file in tests/corpus/configs/ is a gateway config with one realistic mistake. Its first
//! line says what `validate` must report: `# expect: <line>: <field path>: <message substring>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use fumegrid_gateway::config::GatewayConfig;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/configs");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    v.sort();
    v
}

fn expectation(path: &Path) -> (usize, String, String) {
    let text = std::fs::read_to_string(path).expect("read corpus file");
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").unwrap_or_else(|| {
        panic!(
            "{}: first line must be `# expect: LINE: FIELD: TEXT`",
            path.display()
        )
    });
    let mut parts = rest.splitn(3, ": ");
    let (Some(line), Some(field), Some(msg)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("{}: malformed expectation `{first}`", path.display());
    };
    (
        line.parse().expect("line number"),
        field.to_string(),
        msg.to_string(),
    )
}

#[test]
fn every_broken_config_is_reported_at_its_file_line_and_field() {
    let files = corpus();
    assert!(files.len() >= 10, "corpus has only {} files", files.len());
    for path in files {
        let (line, field, msg) = expectation(&path);
        let diags = match GatewayConfig::load(&path) {
            Ok(_) => panic!("{} loaded without error", path.display()),
            Err(d) => d,
        };
        let hit = diags.iter().any(|d| {
            d.file == path && d.line == line && d.field == field && d.message.contains(&msg)
        });
        assert!(
            hit,
            "{}: expected line {line}, field `{field}`, message containing `{msg}`; got:\n{diags}",
            path.display()
        );
    }
}

#[test]
fn validate_cli_prints_file_line_field_and_exits_2() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus/configs/02-device-on-undefined-bus.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_fumegrid-gateway"))
        .args(["validate", "--config"])
        .arg(&path)
        .output()
        .expect("run validate");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:13:", path.display());
    assert!(
        stderr.contains(&want) && stderr.contains("devices[0].bus"),
        "stderr:\n{stderr}"
    );
}
