//! The documentation stays true to the code where a machine can tell: every `docs/*.md` is
//! reachable from the index `docs/README.md`, the store schema version the docs state is the
//! one the aggregator writes (`SCHEMA_VERSION`), and every device-profile file that README.md
//! and docs/ name exists.

use std::path::PathBuf;

use fumegrid_aggregator::store::sqlite::SCHEMA_VERSION;
use fumegrid_tests::root;

fn read(p: &PathBuf) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// `docs/*.md`, `README.md` and `device-profiles/README.md`, with their text.
fn documents() -> Vec<(PathBuf, String)> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    v.sort();
    v.push(root().join("README.md"));
    v.push(root().join("device-profiles/README.md"));
    v.into_iter()
        .map(|p| {
            let t = read(&p);
            (p, t)
        })
        .collect()
}

/// Every `needle` followed by digits: (line number, the number).
fn numbers_after(text: &str, needle: &str) -> Vec<(usize, i64)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        for (at, _) in line.match_indices(needle) {
            let digits: String = line
                .get(at + needle.len()..)
                .unwrap_or("")
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                out.push((i + 1, n));
            }
        }
    }
    out
}

#[test]
fn every_doc_is_linked_from_the_docs_index() {
    let index = read(&root().join("docs/README.md"));
    let mut missing = Vec::new();
    for (p, _) in documents() {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.parent()
            .and_then(|d| d.file_name())
            .is_some_and(|d| d == "docs")
            && name != "README.md"
            && !index.contains(&format!("]({name})"))
            && !index.contains(&format!("]({name}#"))
        {
            missing.push(name.to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "docs/README.md does not link {missing:?}: add a row for each to its table"
    );
}

#[test]
fn the_schema_version_the_docs_state_is_the_one_the_aggregator_writes() {
    // The current-version statements: "(currently **N**", "`store schema vN`" (what `validate`
    // prints) and the index's "(schema N". Historical mentions ("added in schema version 2")
    // are not of these forms.
    let forms = ["currently **", "store schema v", "(schema "];
    let mut found = vec![0usize; forms.len()];
    let mut wrong = Vec::new();
    for (p, text) in documents() {
        for (k, form) in forms.iter().enumerate() {
            for (line, n) in numbers_after(&text, form) {
                found[k] += 1;
                if n != SCHEMA_VERSION {
                    wrong.push(format!("{}:{line}: `{form}{n}`", p.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "the aggregator writes store schema {SCHEMA_VERSION}, the docs say otherwise at {wrong:?}"
    );
    for (k, form) in forms.iter().enumerate() {
        assert!(
            found[k] > 0,
            "no `{form}N` statement of the schema version left in the docs: keep one, it is what this test checks"
        );
    }
}

/// (`device-profiles/README.md` is left out: it walks a technician through writing a new
/// profile, `acme-fm200.toml`, that is theirs to create.)
#[test]
fn every_device_profile_the_docs_name_exists() {
    let mut missing = Vec::new();
    for (p, text) in documents()
        .into_iter()
        .filter(|(p, _)| !p.ends_with("device-profiles/README.md"))
    {
        for (i, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("device-profiles/") {
                let rest = line.get(at..).unwrap_or("");
                let name = rest
                    .split(|c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
                    .next()
                    .unwrap_or("");
                if name.ends_with(".toml") && !root().join(name).exists() {
                    missing.push(format!("{}:{}: {name}", p.display(), i + 1));
                }
            }
        }
    }
    assert!(missing.is_empty(), "named but not shipped: {missing:?}");
}
