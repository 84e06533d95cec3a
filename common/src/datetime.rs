//! Date-times as people write them in config files and query strings, on [`jiff`].
//!
//! [`parse`] reads the RFC 3339 profile of ISO 8601 that both daemons accept:
//! `YYYY-MM-DD`, optionally followed by `T` (or `t`, or a space) and `HH:MM`, `HH:MM:SS` or
//! `HH:MM:SS.f…`, optionally followed by `Z` (or `z`) or `±HH:MM`. jiff checks the values (the
//! day exists, hours ≤ 23, …) and does the calendar arithmetic; this module only keeps out the
//! other ISO 8601 spellings jiff also reads (`20251103`, `+0800`, `[Asia/Shanghai]`, …), so a
//! value means the same to every reader of the file. [`w3c`] prints an instant back at a fixed
//! offset, whole seconds.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::fmt::temporal::DateTimeParser;
pub use jiff::tz::Offset;

/// How much of the time of day was written: a value lasts a day, a minute, a second or a
/// millisecond (finer fractions are cut to milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    Day,
    Minute,
    Second,
    Fraction,
}

impl Precision {
    /// How long a value written to this precision lasts, in ms.
    pub fn lasts_ms(self) -> i64 {
        match self {
            Precision::Day => 86_400_000,
            Precision::Minute => 60_000,
            Precision::Second => 1000,
            Precision::Fraction => 1,
        }
    }
}

/// A parsed date-time: the local date and time as written, its offset if one was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub local: DateTime,
    pub offset: Option<Offset>,
    pub precision: Precision,
}

impl Written {
    /// Unix ms of the first instant of the value; `default` is the offset of a local time.
    pub fn to_ms(&self, default: Offset) -> Result<i64, String> {
        let offset = self.offset.unwrap_or(default);
        offset
            .to_timestamp(self.local)
            .map(Timestamp::as_millisecond)
            .map_err(|e| e.to_string())
    }

    /// Unix ms of the local date and time as if it were UTC.
    pub fn naive_ms(&self) -> Result<i64, String> {
        Written {
            offset: None,
            ..*self
        }
        .to_ms(Offset::UTC)
    }

    /// The offset written, in minutes east of UTC.
    pub fn offset_minutes(&self) -> Option<i32> {
        self.offset.map(|o| o.seconds() / 60)
    }
}

/// A fixed UTC offset from minutes (east positive); `None` beyond ±25:59:59.
pub fn offset_min(minutes: i32) -> Option<Offset> {
    Offset::from_seconds(minutes.checked_mul(60)?).ok()
}

/// The parser of the module doc. The error says what is wrong with `s`, without quoting it
/// (the caller names the field and the value).
pub fn parse(s: &str) -> Result<Written, String> {
    let precision = shape(s.as_bytes())?;
    // jiff reads the same shape; `t`, `z` and the space are the RFC 3339 spellings it may not.
    let canonical: String = s
        .char_indices()
        .map(|(i, c)| match (i, c) {
            (10, 't' | ' ') => 'T',
            (_, 'z') => 'Z',
            _ => c,
        })
        .collect();
    static PARSER: DateTimeParser = DateTimeParser::new();
    let pieces = PARSER
        .parse_pieces(&canonical)
        .map_err(|e| format!("no such date or time ({e})"))?;
    let time = pieces.time().unwrap_or_else(jiff::civil::Time::midnight);
    Ok(Written {
        local: pieces.date().to_datetime(time),
        offset: pieces.to_numeric_offset(),
        precision,
    })
}

/// Checks the profile of the module doc; returns the precision written.
fn shape(b: &[u8]) -> Result<Precision, String> {
    let digits = |from: usize, n: usize| {
        b.get(from..from + n)
            .is_some_and(|p| p.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0, 4) && at(4, b'-') && digits(5, 2) && at(7, b'-') && digits(8, 2)) {
        return Err("not a date YYYY-MM-DD".into());
    }
    if b.len() == 10 {
        return Ok(Precision::Day);
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return Err("expected `T` after the date".into());
    }
    if !(digits(11, 2) && at(13, b':') && digits(14, 2)) {
        return Err("expected HH:MM after `T`".into());
    }
    let mut i = 16;
    let mut precision = Precision::Minute;
    if at(i, b':') {
        if !digits(i + 1, 2) {
            return Err("expected seconds SS after `HH:MM:`".into());
        }
        i += 3;
        precision = Precision::Second;
        if at(i, b'.') {
            let n = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            if n == 0 {
                return Err("expected digits after `.`".into());
            }
            i += 1 + n;
            precision = Precision::Fraction;
        }
    }
    let rest = &b[i..];
    let offset_ok = match rest {
        [] | [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()),
        _ => false,
    };
    if offset_ok {
        Ok(precision)
    } else {
        Err("expected `Z` or an offset ±HH:MM after the time".into())
    }
}

/// An instant at a fixed offset, whole seconds (truncated): `2025-11-03T10:00:00+08:00`, `Z` at
/// offset 0. Instants outside jiff's range (years ±9999) print as its first or last second.
pub fn w3c(ms: i64, offset: Offset) -> String {
    let ts = Timestamp::from_second(ms.div_euclid(1000)).unwrap_or(if ms < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    if offset.is_zero() {
        ts.to_string()
    } else {
        ts.display_with_offset(offset).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str, default_min: i32) -> Result<i64, String> {
        parse(s)?.to_ms(offset_min(default_min).expect("offset"))
    }

    #[test]
    fn the_profile_and_nothing_else() {
        assert_eq!(ms("1970-01-01T00:00:00Z", 0), Ok(0));
        assert_eq!(ms("1970-01-01T08:00+08:00", 0), Ok(0));
        assert_eq!(ms("1970-01-01 08:00:00.5", 480), Ok(500));
        assert_eq!(ms("1970-01-01t00:00:00.123456z", 480), Ok(123));
        assert_eq!(ms("1969-12-31", 0), Ok(-86_400_000));
        let p = |s: &str| parse(s).map(|w| w.precision);
        assert_eq!(p("2025-11-03"), Ok(Precision::Day));
        assert_eq!(p("2025-11-03T02:00Z"), Ok(Precision::Minute));
        assert_eq!(p("2025-11-03T02:00:00-05:00"), Ok(Precision::Second));
        assert_eq!(p("2025-11-03T02:00:00.1"), Ok(Precision::Fraction));
        for bad in [
            "",
            "20251103",
            "2025-11-3",
            "2025-02-29",
            "2025-11-03T24:00:00Z",
            "2025-11-03T02",
            "2025-11-03T02:00:00+0800",
            "2025-11-03T02:00:00+08",
            "2025-11-03T02:00:00.Z",
            "2025-11-03T02:00:00Z[Asia/Shanghai]",
            "2025-11-03T02:00:00,5Z",
            "+002025-11-03",
            "2025-11-03T０2:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn w3c_prints_whole_seconds_at_an_offset() {
        let cst = offset_min(480).expect("offset");
        assert_eq!(w3c(1_762_135_200_999, cst), "2025-11-03T10:00:00+08:00");
        assert_eq!(w3c(-1, Offset::UTC), "1969-12-31T23:59:59Z");
        assert_eq!(
            w3c(0, offset_min(-90).expect("offset")),
            "1969-12-31T22:30:00-01:30"
        );
        assert!(w3c(i64::MAX, cst).starts_with("9999-12-3"));
    }
}
