//! Fuzz targets of this crate, and what every crate's bounded fuzz tests share.
//!
//! A target is a plain function over bytes that must not panic for any input and checks what
//! must hold beyond that (a value that parses re-serialises to one that parses the same). The
//! `fuzz/` crate (cargo-fuzz, outside the workspace) runs them under libFuzzer; each crate's
//! tests run them over the seed corpus in `fuzz/seeds/<target>/` plus a bounded number of
//! random and mutated inputs (proptest), so `cargo nextest run` catches a regression in seconds.
//! See BENCHMARKS.md, "Fuzzing", for the long runs.

use std::path::{Path, PathBuf};

use crate::diag::Source;
use crate::profile::Profile;
use crate::wire::{self, Batch, Status};

/// Key the wire target seals and opens with.
pub const FUZZ_KEY: &[u8] = b"fuzz-key-of-a-gateway-32-bytes!!";

/// Sealed and plain wire payloads (`up` batches, `status`), and topics. The first line of the
/// input is the topic, the rest the payload.
pub fn wire_payload(data: &[u8]) {
    let (topic, payload) = split_line(data);
    let _ = wire::parse_topic(&String::from_utf8_lossy(topic));
    if let Ok(b) = wire::open::<Batch>(payload, FUZZ_KEY) {
        reseal(&b);
    }
    if let Ok(b) = serde_json::from_slice::<Batch>(payload) {
        reseal(&b);
    }
    let _ = serde_json::from_slice::<Status>(payload);
}

/// Largest inflated output the `inflate_up` target allows (the aggregator's default payload bound).
pub const FUZZ_INFLATE_MAX: usize = 1 << 20;

/// A compressed `up` payload as the aggregator takes it: inflate with a hard bound, then open
/// the seal; what opens re-seals, compresses and inflates back to the same batch. The output
/// of [`wire::inflate`] never exceeds the bound, whatever the input claims.
pub fn inflate_up(data: &[u8]) {
    match wire::decode_up(data, FUZZ_INFLATE_MAX) {
        Ok(sealed) => {
            assert!(sealed.len() <= FUZZ_INFLATE_MAX.max(data.len()));
            if let Ok(b) = wire::open::<Batch>(&sealed, FUZZ_KEY) {
                reseal(&b);
                let packed = wire::compress(&wire::seal(&b, FUZZ_KEY));
                let back = wire::inflate(&packed, FUZZ_INFLATE_MAX).expect("own output inflates");
                assert!(wire::open::<Batch>(&back, FUZZ_KEY).is_ok());
            }
        }
        Err(wire::InflateError::TooLarge { limit }) => assert_eq!(limit, FUZZ_INFLATE_MAX),
        Err(wire::InflateError::Corrupt(_)) => {}
    }
}

fn reseal(b: &Batch) {
    let sealed = wire::seal(b, FUZZ_KEY);
    let back: Batch = wire::open(&sealed, FUZZ_KEY).expect("a sealed batch opens");
    // f64 values need not survive JSON bit for bit (NaN is refused); compare the JSON.
    assert_eq!(
        serde_json::to_value(&back).ok(),
        serde_json::to_value(b).ok(),
        "seal/open changed a batch"
    );
}

/// Device profiles (TOML), then every point decoding arbitrary register words from the input.
pub fn profile(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(p) = Profile::from_source(&Source::new("fuzz.toml", text.into_owned())) else {
        return;
    };
    let words: Vec<u16> = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)]))
        .collect();
    for pt in &p.points {
        let w = usize::from(pt.width());
        for win in words.windows(w.max(1)).take(64) {
            let v = pt.decode_words(win);
            let _ = pt.in_range(v);
        }
        let _ = pt.decode_bit(data.first().is_some_and(|b| b & 1 == 1));
    }
}

/// `(first line, rest)` of `data`.
pub fn split_line(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            data.get(..i).unwrap_or(data),
            data.get(i + 1..).unwrap_or(&[]),
        ),
        None => (data, &[]),
    }
}

/// `fuzz/seeds/<target>/` of the workspace.
pub fn seeds_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(target)
}

/// Every file of `fuzz/seeds/<target>/`, sorted by name; panics when there are none (a target
/// without seeds fuzzes blind).
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = seeds_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let out: Vec<Vec<u8>> = files
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

/// One edit of a seed: `(position, operation, byte)`; position is taken modulo the length.
pub type Edit = (u16, u8, u8);

/// `seed` with `edits` applied (replace, insert, delete, duplicate a run, or put a
/// multi-byte UTF-8 character in): cheap structure-aware-ish mutations for the bounded runs.
pub fn mutate(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for &(pos, op, byte) in edits {
        let at = if v.is_empty() {
            0
        } else {
            usize::from(pos) % (v.len() + 1)
        };
        match op % 6 {
            0 => {
                if let Some(b) = v.get_mut(at) {
                    *b = byte;
                }
            }
            1 => v.insert(at, byte),
            2 => {
                if at < v.len() {
                    v.remove(at);
                }
            }
            3 => {
                let end = (at + usize::from(byte % 16)).min(v.len());
                let run: Vec<u8> = v.get(at..end).map(<[u8]>::to_vec).unwrap_or_default();
                v.splice(at..at, run);
            }
            4 => {
                let ch = ['é', '日', '😀', '\u{0}', '"', '\\'][usize::from(byte) % 6];
                let mut buf = [0u8; 4];
                v.splice(at..at, ch.encode_utf8(&mut buf).bytes());
            }
            _ => {
                let digits = ["0", "-1", "99999999999999999999", "1e309", "NaN", "[]"]
                    [usize::from(byte) % 6];
                v.splice(at..at, digits.bytes());
            }
        }
    }
    v
}

/// Random inputs and mutated seeds per target per test run (a few seconds).
pub const CASES: u32 = 256;

/// The bounded runs' proptest settings: [`CASES`] cases, no failure files.
#[cfg(any(test, feature = "proptest"))]
pub fn config() -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: CASES,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    }
}

/// Inputs for a bounded run of `target`: random bytes, or a seed with a few [`mutate`] edits.
#[cfg(any(test, feature = "proptest"))]
pub fn seeded(target: &'static str) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let seeds = seeds(target);
    let n = seeds.len();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        (0..n, proptest::collection::vec(any::<Edit>(), 0..12))
            .prop_map(move |(i, e)| mutate(&seeds[i], &e)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn seeds_pass() {
        for s in seeds("wire_payload") {
            wire_payload(&s);
        }
        for s in seeds("profile") {
            profile(&s);
        }
    }

    #[test]
    fn mutations_stay_in_bounds() {
        assert_eq!(mutate(b"", &[(5, 2, 0), (9, 0, 1)]), b"");
        assert_eq!(mutate(b"ab", &[(1, 0, b'x')]), b"ax");
        assert_eq!(mutate(b"ab", &[(2, 1, b'x')]), b"abx");
        assert!(String::from_utf8(mutate(b"1d", &[(1, 4, 0)])).is_ok());
    }

    proptest! {
        #![proptest_config(config())]
        #[test]
        fn wire_payload_bounded(data in seeded("wire_payload")) {
            wire_payload(&data);
        }

        #[test]
        fn inflate_up_bounded(data in seeded("inflate_up")) {
            inflate_up(&data);
        }

        #[test]
        fn profile_bounded(data in seeded("profile")) {
            profile(&data);
        }
    }
}
