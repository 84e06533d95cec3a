//! Every file in `tests/corpus/profiles/` is a device profile with one realistic mistake. Its
//! first line says what loading it must report (see `tests/corpus/README.md`):
//!
//! ```text
//! # expect: <line>: <field path>: <message substring>
//! ```

use std::path::{Path, PathBuf};

use fumegrid_common::profile::Profile;

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/profiles");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// What one corpus file's first line promises.
#[derive(Debug)]
struct Expect {
    line: usize,
    /// Empty for a problem with the whole file (a TOML syntax error).
    field: String,
    message: String,
}

/// Parses `# expect: <line>: <field path>: <message substring>`. The field is split off at the
/// first `": "` after the line, so it may be empty (`# expect: 4: : TOML syntax error`) and the
/// message may itself contain `": "`.
fn expectation(path: &Path) -> Expect {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let first = text.lines().next().unwrap_or_default();
    let malformed = || -> ! {
        panic!(
            "{}: first line must be `# expect: <line>: <field path>: <message substring>`, got `{first}`",
            path.display()
        )
    };
    let Some(rest) = first.strip_prefix("# expect: ") else {
        malformed()
    };
    let mut parts = rest.splitn(3, ": ");
    let (Some(line), Some(field), Some(message)) = (parts.next(), parts.next(), parts.next())
    else {
        malformed()
    };
    let Ok(line) = line.trim().parse() else {
        malformed()
    };
    if message.trim().is_empty() {
        malformed()
    }
    Expect {
        line,
        field: field.trim().to_string(),
        message: message.trim().to_string(),
    }
}

#[test]
fn corpus_has_at_least_ten_broken_profiles() {
    let n = corpus().len();
    assert!(n >= 10, "tests/corpus/profiles has only {n} files");
}

#[test]
fn every_broken_profile_is_reported_at_its_file_line_and_field() {
    let mut failures = Vec::new();
    for path in corpus() {
        let want = expectation(&path);
        let diags = match Profile::load(&path) {
            Ok(_) => {
                failures.push(format!("{}: loaded without error", path.display()));
                continue;
            }
            Err(d) => d,
        };
        let hit = diags.iter().any(|d| {
            d.file == path
                && d.line == want.line
                && d.field == want.field
                && d.message.contains(&want.message)
        });
        if !hit {
            failures.push(format!(
                "{}: expected line {}, field `{}`, message containing `{}`; got:\n{diags}",
                path.display(),
                want.line,
                want.field,
                want.message
            ));
        }
        // What a technician sees starts with the file, so an editor can jump to it.
        let shown = path.display().to_string();
        for d in diags.iter() {
            let text = d.to_string();
            if !text.starts_with(&shown) {
                failures.push(format!("diagnostic does not start with `{shown}`: {text}"));
            }
            if d.line > 0 && !text.starts_with(&format!("{shown}:{}:{}: ", d.line, d.col)) {
                failures.push(format!("diagnostic does not name line:col: {text}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The parser rejects what it should, so a typo in an expectation cannot pass silently.
#[test]
fn expectation_parser_reads_empty_fields_and_rejects_garbage() {
    let dir = std::env::temp_dir().join(format!("fumegrid-expect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, first: &str| {
        let p = dir.join(name);
        std::fs::write(&p, format!("{first}\n[profile]\n")).expect("write");
        p
    };
    let e = expectation(&write("a.toml", "# expect: 4: : TOML syntax error: x"));
    assert_eq!(
        (e.line, e.field.as_str(), e.message.as_str()),
        (4, "", "TOML syntax error: x")
    );
    let e = expectation(&write(
        "b.toml",
        "# expect: 12: points[1].bit: must be 0..=15",
    ));
    assert_eq!(
        (e.line, e.field.as_str(), e.message.as_str()),
        (12, "points[1].bit", "must be 0..=15")
    );
    for bad in [
        "# expect: x: a: b",
        "# expect: 3: a",
        "# nothing",
        "# expect: 3: a: ",
    ] {
        let p = write("c.toml", bad);
        let r = std::panic::catch_unwind(|| expectation(&p));
        assert!(r.is_err(), "accepted `{bad}`");
    }
    std::fs::remove_dir_all(&dir).ok();
}
