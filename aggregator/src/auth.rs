//! API tokens: who is calling, as a case [`Actor`].
//!
//! Tokens live in a TOML file named by `[api] tokens_file`, hashed: only the SHA-256 of each
//! token is stored, so the file (or a backup of it) does not let anyone call the API.
//! `fumegrid-aggregator new-token` makes a random token and prints the entry to add.
//!
//! ```toml
//! [[tokens]]
//! name = "dispatch-desk"       # shown as the actor in case timelines
//! role = "operator"            # operator | department | viewer | reporter
//! sha256 = "9f86d0…"           # hex SHA-256 of the token
//!
//! [[tokens]]
//! name = "epb-duty"
//! role = "department"
//! department = "epb"           # a catalogue department id (required for role department)
//! sha256 = "…"
//! ```

use std::collections::HashMap;
use std::path::Path;

use fumegrid_common::diag::{Diagnostics, Doc, Source};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::cases::{Actor, Catalogue, Role};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    role: String,
    #[serde(default)]
    department: Option<String>,
    sha256: String,
}

/// The known tokens, by SHA-256. `Debug` prints names only.
#[derive(Clone, Default)]
pub struct Tokens(HashMap<[u8; 32], Actor>);

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.0.values().map(|a| a.id.as_str()).collect();
        names.sort_unstable();
        write!(f, "Tokens({names:?})")
    }
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl Tokens {
    /// Tokens from `(token, actor)` pairs (tests, tools).
    pub fn from_plain<'a>(pairs: impl IntoIterator<Item = (&'a str, Actor)>) -> Tokens {
        Tokens(pairs.into_iter().map(|(t, a)| (sha256(t), a)).collect())
    }

    /// The actor a presented token stands for.
    pub fn actor(&self, token: &str) -> Option<&Actor> {
        self.0.get(&sha256(token))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Reads and checks a tokens file against the catalogue's departments; every problem is
    /// reported with file, line and field.
    pub fn load(path: &Path, catalogue: &Catalogue) -> Result<Tokens, Diagnostics> {
        Tokens::from_source(&Source::read(path), catalogue)
    }

    /// [`Tokens::load`] of text already read (`src.file` names it in diagnostics).
    pub fn from_source(src: &Source, catalogue: &Catalogue) -> Result<Tokens, Diagnostics> {
        let mut doc = Doc::new(src);
        if !doc.diags.is_empty() {
            return Err(doc.diags);
        }
        doc.deny_unknown_keys(&["tokens"]);
        let entries: Vec<(usize, TokenEntry)> = doc.array("tokens");
        let mut map = HashMap::new();
        let mut names = HashMap::new();
        for (i, t) in entries {
            let at = |f: &str| format!("tokens[{i}].{f}");
            if t.name.trim().is_empty() || t.name.len() > 64 {
                doc.error(&at("name"), "must be 1 to 64 characters");
                continue;
            }
            if names.insert(t.name.clone(), i).is_some() {
                doc.error(&at("name"), format!("`{}` is listed twice", t.name));
                continue;
            }
            let role = match (t.role.as_str(), &t.department) {
                ("operator", None) => Role::Operator,
                ("viewer", None) => Role::Viewer,
                ("reporter", None) => Role::Reporter,
                ("department", Some(d)) => {
                    if catalogue.department(d).is_none() {
                        doc.error(
                            &at("department"),
                            format!("no department `{d}` in the case catalogue"),
                        );
                        continue;
                    }
                    Role::Department {
                        department: d.clone(),
                    }
                }
                ("department", None) => {
                    doc.error(&at("department"), "required for role `department`");
                    continue;
                }
                ("operator" | "viewer" | "reporter", Some(_)) => {
                    doc.error(
                        &at("department"),
                        format!(
                            "only role `department` takes a department, not `{}`",
                            t.role
                        ),
                    );
                    continue;
                }
                (other, _) => {
                    doc.error(
                        &at("role"),
                        format!(
                            "unknown role `{other}`; expected operator, department, viewer or reporter"
                        ),
                    );
                    continue;
                }
            };
            let Some(hash) = unhex32(&t.sha256.to_ascii_lowercase()) else {
                doc.error(
                    &at("sha256"),
                    "must be 64 hex digits (the SHA-256 of the token; see `new-token`)",
                );
                continue;
            };
            let actor = Actor {
                id: t.name.clone(),
                role,
            };
            if map.insert(hash, actor).is_some() {
                doc.error(&at("sha256"), "the same token is listed twice");
            }
        }
        if doc.diags.is_empty() {
            Ok(Tokens(map))
        } else {
            Err(doc.diags)
        }
    }
}

/// A new random token (256 bits, hex).
pub fn random_token() -> Option<String> {
    random_hex(32)
}

/// `bytes` random bytes in hex; none without OS randomness.
pub fn random_hex(bytes: usize) -> Option<String> {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).ok()?;
    Some(hex::encode(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Tokens, Diagnostics> {
        let dir = std::env::temp_dir().join(format!("fumegrid-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join(format!("t{}.toml", text.len()));
        std::fs::write(&p, text).expect("write");
        Tokens::load(&p, &Catalogue::builtin().expect("catalogue"))
    }

    #[test]
    fn tokens_are_matched_by_hash_and_carry_their_role() {
        let h = hex::encode(sha256("secret-1"));
        let t = load(&format!(
            "[[tokens]]\nname = \"desk\"\nrole = \"operator\"\nsha256 = \"{h}\"\n\n\
             [[tokens]]\nname = \"epb\"\nrole = \"department\"\ndepartment = \"epb\"\nsha256 = \"{}\"\n",
            hex::encode(sha256("secret-2"))
        ))
        .expect("valid");
        assert_eq!(t.actor("secret-1"), Some(&Actor::operator("desk")));
        assert_eq!(t.actor("secret-2"), Some(&Actor::department("epb", "epb")));
        assert_eq!(t.actor(&h), None, "the hash itself is not a token");
        assert_eq!(t.actor(""), None);
    }

    #[test]
    fn every_bad_entry_is_named() {
        let h = hex::encode(sha256("x"));
        let d = load(&format!(
            "[[tokens]]\nname = \"a\"\nrole = \"boss\"\nsha256 = \"{h}\"\n\n\
             [[tokens]]\nname = \"b\"\nrole = \"department\"\nsha256 = \"{h}\"\n\n\
             [[tokens]]\nname = \"c\"\nrole = \"department\"\ndepartment = \"nope\"\nsha256 = \"{h}\"\n\n\
             [[tokens]]\nname = \"d\"\nrole = \"viewer\"\nsha256 = \"abc\"\n\n\
             [[tokens]]\nname = \"e\"\nrole = \"viewer\"\nsha256 = \"{h}\"\ncolour = 1\n"
        ))
        .expect_err("invalid");
        let text = d.to_string();
        for want in [
            "tokens[0].role",
            "unknown role `boss`",
            "tokens[1].department",
            "tokens[2].department",
            "no department `nope`",
            "tokens[3].sha256",
            "colour",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }
}
