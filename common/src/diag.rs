//! Diagnostics for technician-written TOML files (device profiles, gateway config).
//!
//! A technician who mistypes one field should see *every* problem in the file at once, each with
//! file, line and field path, e.g.
//!
//! ```text
//! device-profiles/acme.toml:14:1: points[2].address: overlaps points[1] (input registers 0..=1)
//! ```
//!
//! [`Doc`] parses the text once into toml's spanned tree, deserializes each section (and each
//! element of an array of tables) separately so that one bad point does not hide the next, and
//! keeps an index from field path to source span so that semantic checks made later on typed
//! structs can still name a line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// 1-based; 0 when the problem has no place in the file (e.g. the file cannot be read).
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Field path such as `points[2].address`; empty for the whole file.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.col)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All problems found in one or more files. Empty means valid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter()
    }
    pub fn extend(&mut self, other: Diagnostics) {
        self.0.extend(other.0);
    }
    /// `Ok(v)` when no problem was recorded, else all of them.
    pub fn into_result<T>(self, v: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() { Ok(v) } else { Err(self) }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// The text of one file, kept by the caller while a [`Doc`] borrows from it.
#[derive(Debug, Clone)]
pub struct Source {
    pub file: PathBuf,
    pub text: String,
    read_error: Option<String>,
}

impl Source {
    /// Reads `path`; a read error is reported by [`Doc::new`] like any other problem.
    pub fn read(path: &Path) -> Source {
        match std::fs::read_to_string(path) {
            Ok(text) => Source {
                file: path.to_path_buf(),
                text,
                read_error: None,
            },
            Err(e) => Source {
                file: path.to_path_buf(),
                text: String::new(),
                read_error: Some(format!("cannot read file: {e}")),
            },
        }
    }

    pub fn new(file: impl Into<PathBuf>, text: impl Into<String>) -> Source {
        Source {
            file: file.into(),
            text: text.into(),
            read_error: None,
        }
    }
}

/// A parsed TOML document with a path → span index and the diagnostics found so far.
#[derive(Debug)]
pub struct Doc<'a> {
    file: PathBuf,
    text: &'a str,
    /// Top-level entries, in file order: key, key span, value.
    root: Vec<(String, Range<usize>, Spanned<DeValue<'a>>)>,
    /// `(path, span of key or element)` for every key and array element in the document.
    index: Vec<(String, Range<usize>)>,
    pub diags: Diagnostics,
}

impl<'a> Doc<'a> {
    /// Parses `src`. Read and syntax errors are recorded, not returned, so the caller can go on
    /// and report them with everything else.
    pub fn new(src: &'a Source) -> Doc<'a> {
        let mut doc = Doc {
            file: src.file.clone(),
            text: &src.text,
            root: Vec::new(),
            index: Vec::new(),
            diags: Diagnostics::default(),
        };
        if let Some(e) = &src.read_error {
            doc.push_at(0, 0, "", e.clone());
            return doc;
        }
        let (table, errors) = DeTable::parse_recoverable(&src.text);
        let table = table.into_inner();
        for e in errors {
            let span = e.span().unwrap_or(0..0);
            doc.push_span(span, "", syntax_message(e.message()));
        }
        if !doc.diags.is_empty() {
            // A document with syntax errors is not interpreted further: what toml recovered
            // could produce confusing follow-up errors.
            return doc;
        }
        for (k, v) in table {
            let key_span = k.span();
            let key = k.into_inner().to_string();
            index_value(&key, key_span.clone(), &v, &mut doc.index);
            doc.root.push((key, key_span, v));
        }
        doc
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Top-level keys in file order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.root.iter().map(|(k, _, _)| k.as_str())
    }

    /// Records an error for every top-level key not in `known`.
    pub fn deny_unknown_keys(&mut self, known: &[&str]) {
        let unknown: Vec<(String, Range<usize>)> = self
            .root
            .iter()
            .filter(|(k, _, _)| !known.contains(&k.as_str()))
            .map(|(k, s, _)| (k.clone(), s.clone()))
            .collect();
        for (k, span) in unknown {
            let expected = known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            self.push_span(
                span,
                &k,
                format!("unknown top-level key `{k}`, expected one of {expected}"),
            );
        }
    }

    /// Deserializes the top-level table `key`. Missing → `None` (and an error if `required`).
    pub fn section<T: DeserializeOwned>(&mut self, key: &str, required: bool) -> Option<T> {
        let Some(value) = self.take_root(key) else {
            if required {
                self.push_at(1, 1, key, format!("missing required section [{key}]"));
            }
            return None;
        };
        self.deserialize(key, value)
    }

    /// Deserializes every element of the top-level array `key` (usually `[[key]]` tables) on its
    /// own, so that each bad element is reported. Returns `(index, value)` of the good ones.
    pub fn array<T: DeserializeOwned>(&mut self, key: &str) -> Vec<(usize, T)> {
        let Some(value) = self.take_root(key) else {
            return Vec::new();
        };
        let span = value.span();
        match value.into_inner() {
            DeValue::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    if let Some(v) = self.deserialize(&format!("{key}[{i}]"), item) {
                        out.push((i, v));
                    }
                }
                out
            }
            _ => {
                self.push_span(
                    span,
                    key,
                    format!("expected an array of tables ([[{key}]])"),
                );
                Vec::new()
            }
        }
    }

    fn take_root(&mut self, key: &str) -> Option<Spanned<DeValue<'a>>> {
        let pos = self.root.iter().position(|(k, _, _)| k == key)?;
        Some(self.root.remove(pos).2)
    }

    fn deserialize<T: DeserializeOwned>(
        &mut self,
        path: &str,
        value: Spanned<DeValue<'a>>,
    ) -> Option<T> {
        let whole = value.span();
        match T::deserialize(value.into_deserializer()) {
            Ok(v) => Some(v),
            Err(e) => {
                let span = e.span().unwrap_or(whole);
                // Name the innermost field that contains the error, e.g. `points[2].type`.
                let field = self.path_at(&span).unwrap_or_else(|| path.to_string());
                self.push_span(span, &field, e.message().to_string());
                None
            }
        }
    }

    /// Records an error at the key or element named by `path` (e.g. `points[2].address`); falls
    /// back to the nearest parent that has a place in the file.
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        let span = self.span_of(path);
        self.push_span(span.unwrap_or(0..0), path, message.into());
    }

    fn span_of(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some((_, s)) = self.index.iter().find(|(k, _)| k == p) {
                return Some(s.clone());
            }
            let cut = p.rfind(['.', '['])?;
            p = p.get(..cut)?;
        }
    }

    /// The longest indexed path whose span contains `span`.
    fn path_at(&self, span: &Range<usize>) -> Option<String> {
        self.index
            .iter()
            .filter(|(_, s)| s.start <= span.start && span.end <= s.end.max(s.start + 1))
            .max_by_key(|(k, s)| (k.len(), usize::MAX - (s.end - s.start)))
            .map(|(k, _)| k.clone())
    }

    fn push_span(&mut self, span: Range<usize>, field: &str, message: String) {
        let (line, col) = line_col(self.text, span.start);
        self.push_at(line, col, field, message);
    }

    fn push_at(&mut self, line: usize, col: usize, field: &str, message: String) {
        self.diags.0.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            field: field.to_string(),
            message,
        });
    }
}

fn syntax_message(m: &str) -> String {
    format!("TOML syntax error: {}", m.trim())
}

/// Walks the tree and records the span of every key and array element under its path. For a
/// key, the recorded span covers key through value, so an error inside the value maps back to it.
fn index_value(
    path: &str,
    key_span: Range<usize>,
    v: &Spanned<DeValue<'_>>,
    out: &mut Vec<(String, Range<usize>)>,
) {
    let vs = v.span();
    let whole = key_span.start.min(vs.start)..key_span.end.max(vs.end);
    out.push((path.to_string(), whole));
    match v.get_ref() {
        DeValue::Table(t) => {
            for (k, child) in t.iter() {
                let p = format!("{path}.{}", k.get_ref());
                index_value(&p, k.span(), child, out);
            }
        }
        DeValue::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{path}[{i}]");
                index_value(&p, child.span(), child, out);
            }
        }
        _ => {}
    }
}

/// 1-based line and column of byte offset `at`.
pub fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct P {
        a: u16,
        #[serde(default)]
        b: String,
    }

    #[test]
    fn every_bad_element_is_reported_with_line_and_field() {
        let text = "[[p]]\na = 1\n\n[[p]]\na = \"x\"\n\n[[p]]\na = 2\nc = 3\n";
        let src = Source::new("t.toml", text);
        let mut doc = Doc::new(&src);
        let ok: Vec<(usize, P)> = doc.array("p");
        assert_eq!(ok.len(), 1);
        let d = &doc.diags.0;
        assert_eq!(d.len(), 2, "{}", doc.diags);
        assert_eq!((d[0].line, d[0].field.as_str()), (5, "p[1].a"));
        assert_eq!((d[1].line, d[1].field.as_str()), (9, "p[2].c"));
        assert!(
            d[1].message.contains("unknown field `c`"),
            "{}",
            d[1].message
        );
    }

    #[test]
    fn syntax_error_names_line() {
        let src = Source::new("t.toml", "a = 1\nb = = 2\n");
        let doc = Doc::new(&src);
        assert!(!doc.diags.0.is_empty());
        for d in &doc.diags.0 {
            assert_eq!(d.line, 2, "{d}");
            assert!(d.message.starts_with("TOML syntax error"), "{d}");
        }
    }

    #[test]
    fn semantic_error_finds_field_line() {
        let text = "[[p]]\na = 1\n[[p]]\na = 1\nb = \"q\"\n";
        let src = Source::new("t.toml", text);
        let mut doc = Doc::new(&src);
        let _: Vec<(usize, P)> = doc.array("p");
        doc.error("p[1].b", "bad");
        doc.error("p[1].zzz", "falls back to element");
        assert_eq!(doc.diags.0[0].line, 5);
        assert_eq!(doc.diags.0[1].line, 3);
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
