//! The id rule of gateways, devices, departments and categories, shared by both daemons: an id
//! appears in MQTT topics and in file names, so it is 1..=64 lowercase ASCII letters, digits,
//! `-` or `_`. Ids are taken as written (no trimming): `" gw-1"` is not an id.

use crate::diag::Doc;

/// Where an id appears, for the error of [`check`]: gateway and aggregator ids.
pub const IN_TOPICS: &str = " (it appears in MQTT topics)";

/// Whether `id` follows the rule of the module doc.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// Reports an error at `path` when `id` breaks the rule; `why` follows the rule in the message
/// (e.g. [`IN_TOPICS`], or empty).
pub fn check(doc: &mut Doc<'_>, path: &str, id: &str, why: &str) -> bool {
    let ok = valid_id(id);
    if !ok {
        doc.error(
            path,
            format!("`{id}`: use 1..64 lowercase letters, digits, `-` or `_`{why}"),
        );
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_rule() {
        for ok in ["gw-1", "a", "site_01", &"x".repeat(64)] {
            assert!(valid_id(ok), "{ok:?}");
        }
        for bad in [
            "",
            " gw-1",
            "gw-1\n",
            "GW",
            "gw/1",
            "gw+",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }
}
