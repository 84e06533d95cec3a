//! Fault injection per simulated slave, from a spec `KIND[@EVERY]`:
//!
//! | spec | effect on an affected request |
//! |---|---|
//! | `none` | answer correctly (the default) |
//! | `no-reply` | stay silent, like a dead or unpowered slave |
//! | `late:MS` | answer correctly but MS milliseconds late (set MS above the gateway's timeout) |
//! | `crc` | answer correctly but with a corrupted CRC (RTU); with a wrong transaction id (TCP) |
//! | `exception:CODE` | answer with Modbus exception CODE (1..=255), e.g. `exception:4` |
//! | `garbage` | answer with deterministic random-looking bytes as long as the real reply |
//! | `truncated` | send the first part of the reply and nothing more (TCP: the whole MBAP header and half the PDU; RTU: half the frame) |
//! | `overlong` | TCP: the reply with 65535 in the MBAP length field; RTU: the reply followed by bytes past the 256-byte frame limit |
//! | `bad-count` | the reply's byte count says 2 bytes more than it carries (RTU: with a valid CRC) |
//! | `other-unit` | a well-formed reply from unit id + 1 instead of the unit asked (RTU: with a valid CRC) |
//!
//! `@EVERY` applies the fault to every EVERYth request to this slave (the 1st..(EVERY-1)th are
//! answered correctly); without it every request is affected. Example: `no-reply@3`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    None,
    NoReply,
    Late(Duration),
    Crc,
    Exception(u8),
    Garbage,
    Truncated,
    Overlong,
    BadCount,
    OtherUnit,
}

/// A fault and how often it strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    /// Affects requests number EVERY, 2·EVERY, ... (1-based count of requests to this slave).
    pub every: u32,
}

impl Default for Fault {
    fn default() -> Fault {
        Fault {
            kind: FaultKind::None,
            every: 1,
        }
    }
}

impl Fault {
    /// The fault to apply to the `n`th request (1-based), if any.
    pub fn for_request(&self, n: u64) -> Option<FaultKind> {
        if self.kind == FaultKind::None || n == 0 || !n.is_multiple_of(u64::from(self.every)) {
            None
        } else {
            Some(self.kind)
        }
    }
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let s = s.trim();
        let (kind_s, every) = match s.split_once('@') {
            Some((k, e)) => {
                let every: u32 = e.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                    format!("fault `{s}`: @EVERY must be a whole number >= 1, not `{e}`")
                })?;
                (k, every)
            }
            None => (s, 1),
        };
        let (name, arg) = match kind_s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (kind_s, None),
        };
        let name = name.to_ascii_lowercase().replace('_', "-");
        let kind = match (name.as_str(), arg) {
            ("none", None) => FaultKind::None,
            ("no-reply", None) => FaultKind::NoReply,
            ("late", Some(ms)) => {
                let ms: u64 = ms
                    .parse()
                    .ok()
                    .filter(|ms| *ms <= 3_600_000)
                    .ok_or_else(|| {
                        format!("fault `{s}`: late:MS needs milliseconds 0..=3600000, not `{ms}`")
                    })?;
                FaultKind::Late(Duration::from_millis(ms))
            }
            ("crc", None) => FaultKind::Crc,
            ("exception", Some(code)) => {
                let code: u8 = code.parse().ok().filter(|c| *c >= 1).ok_or_else(|| {
                    format!("fault `{s}`: exception:CODE needs a code 1..=255, not `{code}`")
                })?;
                FaultKind::Exception(code)
            }
            ("garbage", None) => FaultKind::Garbage,
            ("truncated", None) => FaultKind::Truncated,
            ("overlong", None) => FaultKind::Overlong,
            ("bad-count", None) => FaultKind::BadCount,
            ("other-unit", None) => FaultKind::OtherUnit,
            ("late" | "exception", None) => {
                return Err(format!(
                    "fault `{s}`: `{name}` needs an argument, e.g. late:500 or exception:4"
                ));
            }
            (_, Some(_))
                if matches!(
                    name.as_str(),
                    "none"
                        | "no-reply"
                        | "crc"
                        | "garbage"
                        | "truncated"
                        | "overlong"
                        | "bad-count"
                        | "other-unit"
                ) =>
            {
                return Err(format!("fault `{s}`: `{name}` takes no argument"));
            }
            _ => {
                return Err(format!(
                    "unknown fault `{s}`, expected one of: none, no-reply, late:MS, crc, exception:CODE, garbage, truncated, overlong, bad-count, other-unit (optionally @EVERY)"
                ));
            }
        };
        Ok(Fault { kind, every })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::None => f.write_str("none")?,
            FaultKind::NoReply => f.write_str("no-reply")?,
            FaultKind::Late(d) => write!(f, "late:{}", d.as_millis())?,
            FaultKind::Crc => f.write_str("crc")?,
            FaultKind::Exception(c) => write!(f, "exception:{c}")?,
            FaultKind::Garbage => f.write_str("garbage")?,
            FaultKind::Truncated => f.write_str("truncated")?,
            FaultKind::Overlong => f.write_str("overlong")?,
            FaultKind::BadCount => f.write_str("bad-count")?,
            FaultKind::OtherUnit => f.write_str("other-unit")?,
        }
        if self.every != 1 {
            write!(f, "@{}", self.every)?;
        }
        Ok(())
    }
}

/// A read reply PDU (function, byte count, data) whose byte count says 2 bytes more than it
/// carries; other PDUs are returned unchanged.
pub fn bad_count(pdu: &[u8]) -> Vec<u8> {
    let mut p = pdu.to_vec();
    if p.len() >= 2 && matches!(p[0], 1..=4) {
        p[1] = p[1].wrapping_add(2);
    }
    p
}

/// `len` deterministic random-looking bytes for the `n`th request to slave `id`.
pub fn garbage(id: u8, n: u64, len: usize) -> Vec<u8> {
    let mut z = (u64::from(id) << 56) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len)
        .map(|_| {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (x ^ (x >> 31)) as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let p = |s: &str| s.parse::<Fault>();
        assert_eq!(p("none"), Ok(Fault::default()));
        assert_eq!(p("no-reply").map(|f| f.kind), Ok(FaultKind::NoReply));
        assert_eq!(
            p("late:500"),
            Ok(Fault {
                kind: FaultKind::Late(Duration::from_millis(500)),
                every: 1
            })
        );
        assert_eq!(
            p("crc@3"),
            Ok(Fault {
                kind: FaultKind::Crc,
                every: 3
            })
        );
        assert_eq!(
            p("exception:4").map(|f| f.kind),
            Ok(FaultKind::Exception(4))
        );
        assert_eq!(p("garbage@10").map(|f| f.every), Ok(10));
        for bad in [
            "late:3600001",
            "late",
            "late:x",
            "exception:0",
            "exception:300",
            "crc@0",
            "crc@x",
            "crc:1",
            "truncated:3",
            "boom",
            "",
        ] {
            assert!(p(bad).is_err(), "{bad} should not parse");
        }
        for s in [
            "none",
            "no-reply",
            "late:250",
            "crc@3",
            "exception:4",
            "garbage@2",
            "truncated",
            "overlong@2",
            "bad-count",
            "other-unit@5",
        ] {
            assert_eq!(p(s).map(|f| f.to_string()), Ok(s.to_string()));
        }
    }

    #[test]
    fn every_nth_request() {
        let f: Fault = "crc@3".parse().expect("valid");
        let hits: Vec<u64> = (1..=9).filter(|n| f.for_request(*n).is_some()).collect();
        assert_eq!(hits, vec![3, 6, 9]);
        assert_eq!(Fault::default().for_request(1), None);
    }

    #[test]
    fn garbage_is_deterministic() {
        assert_eq!(garbage(1, 5, 25), garbage(1, 5, 25));
        assert_ne!(garbage(1, 5, 25), garbage(1, 6, 25));
        assert_eq!(garbage(1, 5, 25).len(), 25);
    }
}
