//! The working calendar and deadlines counted on it.
//!
//! A day is a *working day* when it is a make-up working day (调休上班), or when it is one of the
//! configured working weekdays (Mon–Fri by default) and not a holiday. Working time is
//! `[start, end)` of each working day in local time (09:00–18:00 by default), local time being
//! UTC plus a fixed offset (480 minutes, China Standard Time, by default; China has no DST).
//!
//! [`add_working`] counts forward from an instant:
//!
//! - [`WorkAmount::Hours`]`(n)`: the instant after `n` hours of working time. Time outside
//!   working hours does not count, so a case dispatched on Friday at 17:00 with a 2 h limit is
//!   due on Monday at 10:00 (or later, when Monday is a holiday).
//! - [`WorkAmount::Days`]`(n)`: `n` times the length of one working day of working time. Started
//!   inside working hours this is the same time of day `n` working days later (Friday 15:00 + 1 d
//!   = Monday 15:00); started outside, the count begins at the next working start, so it ends at
//!   the close of the `n`-th working day (Saturday 10:00 + 1 d = Monday 18:00).
//! - A deadline can fall exactly on the end of working hours (18:00), never inside off time.
//! - `n = 0` returns the start unchanged.
//!
//! Everything is integer milliseconds since the Unix epoch; dates are proleptic Gregorian
//! ([`jiff`]'s civil dates and fixed offsets).

use std::collections::BTreeSet;
use std::fmt;

use fumegrid_common::datetime::{self, Offset, Precision};
use jiff::Timestamp;
use jiff::civil::{self, Time};
use serde::{Deserialize, Serialize};

const MS_PER_MIN: i64 = 60_000;
/// How far [`add_working`] looks ahead, in calendar days from its start: a deadline further out
/// is an error ([`BeyondHorizon`]), never a silently truncated instant. Ten years is far beyond
/// any real time limit and keeps every deadline a valid four-digit-year date-time.
pub const HORIZON_DAYS: i64 = 3660;

/// The largest amount [`WorkAmount`] parses (hours or days).
pub const MAX_AMOUNT: u32 = 10_000;

/// A civil date, e.g. `2025-10-01` (jiff's, with the catalogue's spelling and errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(civil::Date);

impl Date {
    /// Checks the day exists (leap years included).
    pub fn new(year: i32, month: u8, day: u8) -> Option<Date> {
        let year = i16::try_from(year).ok()?;
        let (month, day) = (i8::try_from(month).ok()?, i8::try_from(day).ok()?);
        civil::Date::new(year, month, day).ok().map(Date)
    }

    pub fn year(self) -> i32 {
        i32::from(self.0.year())
    }

    pub fn month(self) -> u8 {
        self.0.month().unsigned_abs()
    }

    pub fn day(self) -> u8 {
        self.0.day().unsigned_abs()
    }

    /// 0 = Monday … 6 = Sunday.
    pub fn weekday(self) -> u8 {
        self.0.weekday().to_monday_zero_offset().unsigned_abs()
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for Date {
    type Err = String;
    fn from_str(s: &str) -> Result<Date, String> {
        match datetime::parse(s) {
            Ok(w) if w.precision == Precision::Day => Ok(Date(w.local.date())),
            Ok(_) => Err(format!("`{s}`: expected a date YYYY-MM-DD")),
            Err(e) if s.len() == 10 && e.starts_with("no such") => {
                Err(format!("`{s}`: no such date"))
            }
            Err(_) => Err(format!("`{s}`: expected a date YYYY-MM-DD")),
        }
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Date, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An amount of working time: `"4h"` (working hours) or `"3d"` (working days) in files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkAmount {
    Hours(u32),
    Days(u32),
}

impl fmt::Display for WorkAmount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkAmount::Hours(h) => write!(f, "{h}h"),
            WorkAmount::Days(d) => write!(f, "{d}d"),
        }
    }
}

impl std::str::FromStr for WorkAmount {
    type Err = String;
    fn from_str(s: &str) -> Result<WorkAmount, String> {
        let bad =
            || format!("`{s}`: expected working hours like \"4h\" or working days like \"3d\"");
        // The unit is the last *character*: slicing at `len - 1` bytes panicked on a
        // multi-byte last character ("1é"), which took the whole aggregator down.
        let (num, unit) = if let Some(n) = s.strip_suffix('h') {
            (n, WorkAmount::Hours as fn(u32) -> WorkAmount)
        } else if let Some(n) = s.strip_suffix('d') {
            (n, WorkAmount::Days as fn(u32) -> WorkAmount)
        } else {
            return Err(bad());
        };
        if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        match num.parse::<u32>() {
            Ok(n) if n <= MAX_AMOUNT => Ok(unit(n)),
            _ => Err(format!("`{s}`: at most {MAX_AMOUNT}")),
        }
    }
}

impl Serialize for WorkAmount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for WorkAmount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<WorkAmount, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A validated working calendar (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Calendar {
    /// Index 0 = Monday … 6 = Sunday.
    pub working_weekdays: [bool; 7],
    /// Minutes after local midnight; `start < end`.
    pub start_min: u32,
    pub end_min: u32,
    pub utc_offset_min: i32,
    pub holidays: BTreeSet<Date>,
    pub makeup_days: BTreeSet<Date>,
}

impl Default for Calendar {
    /// Mon–Fri, 09:00–18:00, UTC+08:00, no holidays.
    fn default() -> Calendar {
        Calendar {
            working_weekdays: [true, true, true, true, true, false, false],
            start_min: 9 * 60,
            end_min: 18 * 60,
            utc_offset_min: 480,
            holidays: BTreeSet::new(),
            makeup_days: BTreeSet::new(),
        }
    }
}

impl Calendar {
    pub fn is_working_day(&self, d: Date) -> bool {
        if self.makeup_days.contains(&d) {
            return true;
        }
        self.working_weekdays[usize::from(d.weekday())] && !self.holidays.contains(&d)
    }

    /// Working time in one working day.
    pub fn day_ms(&self) -> i64 {
        i64::from(self.end_min.saturating_sub(self.start_min)) * MS_PER_MIN
    }

    /// The offset of local time (validated to -12:00..=+14:00 by the catalogue; an offset
    /// beyond jiff's ±25:59:59, which only a hand-built calendar can hold, reads as UTC).
    fn offset(&self) -> Offset {
        datetime::offset_min(self.utc_offset_min).unwrap_or(Offset::UTC)
    }

    /// The local date of an instant (instants beyond the years ±9999 read as the first or last
    /// day).
    pub fn local_date(&self, ms: i64) -> Date {
        let ts = Timestamp::from_millisecond(ms).unwrap_or(if ms < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        });
        Date(self.offset().to_datetime(ts).date())
    }

    /// UTC ms of local midnight starting `d`.
    pub fn local_midnight(&self, d: Date) -> i64 {
        let midnight = d.0.to_datetime(Time::midnight());
        // Only midnights of the first day, east of UTC, fall before jiff's first instant.
        self.offset()
            .to_timestamp(midnight)
            .unwrap_or(Timestamp::MIN)
            .as_millisecond()
    }
}

/// `amount` of working time from a start does not end within [`HORIZON_DAYS`] of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{amount} of working time does not end within {HORIZON_DAYS} days")]
pub struct BeyondHorizon {
    pub amount: WorkAmount,
}

/// The instant after `amount` of working time from `start_ms` (see the module doc), or an
/// error when that is more than [`HORIZON_DAYS`] calendar days later (the scan is bounded).
pub fn add_working(
    start_ms: i64,
    amount: WorkAmount,
    cal: &Calendar,
) -> Result<i64, BeyondHorizon> {
    let mut left = match amount {
        WorkAmount::Hours(h) => i64::from(h) * 3_600_000,
        WorkAmount::Days(d) => i64::from(d) * cal.day_ms(),
    };
    if left <= 0 {
        return Ok(start_ms);
    }
    let mut date = cal.local_date(start_ms);
    let mut cursor = start_ms;
    for _ in 0..HORIZON_DAYS {
        if cal.is_working_day(date) {
            let midnight = cal.local_midnight(date);
            let open = midnight + i64::from(cal.start_min) * MS_PER_MIN;
            let close = midnight + i64::from(cal.end_min) * MS_PER_MIN;
            let from = cursor.max(open);
            if from < close {
                let avail = close - from;
                if left <= avail {
                    return Ok(from + left);
                }
                left -= avail;
            }
        }
        // The last day jiff knows (9999-12-31) has no tomorrow: beyond any horizon.
        let Ok(next) = date.0.tomorrow() else { break };
        date = Date(next);
        cursor = cal.local_midnight(date);
    }
    Err(BeyondHorizon { amount })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add_working_ok(start_ms: i64, amount: WorkAmount, cal: &Calendar) -> i64 {
        add_working(start_ms, amount, cal).expect("within the horizon")
    }

    fn d(s: &str) -> Date {
        s.parse().expect("date")
    }

    /// UTC ms of a local (UTC+8) date and time.
    fn at(date: &str, hh: i64, mm: i64) -> i64 {
        Calendar::default().local_midnight(d(date)) + (hh * 60 + mm) * MS_PER_MIN
    }

    #[test]
    fn dates_round_trip_and_weekdays() {
        assert_eq!(
            Calendar::default().local_midnight(d("1970-01-01")),
            -8 * 3_600_000
        );
        assert_eq!(d("2024-02-29").to_string(), "2024-02-29");
        assert_eq!(
            "2023-02-29".parse::<Date>(),
            Err("`2023-02-29`: no such date".into())
        );
        for bad in [
            "2025-1-01",
            "20250101",
            "2025-01-01T00:00",
            "+02025-01-01",
            "",
        ] {
            assert_eq!(
                bad.parse::<Date>(),
                Err(format!("`{bad}`: expected a date YYYY-MM-DD"))
            );
        }
        let cal = Calendar::default();
        for ms in [i64::MIN, -1, 0, 1_762_131_600_000, i64::MAX] {
            let day = cal.local_date(ms);
            assert_eq!(cal.local_date(cal.local_midnight(day)), day, "{ms}");
        }
        assert_eq!(d("2025-10-03").weekday(), 4); // Friday
        assert_eq!(d("2025-10-05").weekday(), 6); // Sunday
        assert_eq!(d("2025-10-06").weekday(), 0); // Monday
    }

    #[test]
    fn hours_within_one_day_and_from_before_opening() {
        let cal = Calendar::default();
        // Wed 2025-10-15 10:00 + 2 h = 12:00.
        assert_eq!(
            add_working_ok(at("2025-10-15", 10, 0), WorkAmount::Hours(2), &cal),
            at("2025-10-15", 12, 0)
        );
        // 07:30 counts from 09:00.
        assert_eq!(
            add_working_ok(at("2025-10-15", 7, 30), WorkAmount::Hours(2), &cal),
            at("2025-10-15", 11, 0)
        );
        // Ends exactly at closing time, not the next morning.
        assert_eq!(
            add_working_ok(at("2025-10-15", 16, 0), WorkAmount::Hours(2), &cal),
            at("2025-10-15", 18, 0)
        );
        // After closing: next day.
        assert_eq!(
            add_working_ok(at("2025-10-15", 19, 0), WorkAmount::Hours(1), &cal),
            at("2025-10-16", 10, 0)
        );
        assert_eq!(
            add_working_ok(at("2025-10-15", 19, 0), WorkAmount::Hours(0), &cal),
            at("2025-10-15", 19, 0)
        );
    }

    #[test]
    fn hours_across_a_weekend() {
        let cal = Calendar::default();
        // Fri 2025-10-17 17:00 + 2 h = Mon 2025-10-20 10:00.
        assert_eq!(
            add_working_ok(at("2025-10-17", 17, 0), WorkAmount::Hours(2), &cal),
            at("2025-10-20", 10, 0)
        );
        // From Saturday: Monday.
        assert_eq!(
            add_working_ok(at("2025-10-18", 12, 0), WorkAmount::Hours(3), &cal),
            at("2025-10-20", 12, 0)
        );
    }

    #[test]
    fn days_across_a_weekend() {
        let cal = Calendar::default();
        // Fri 15:00 + 1 d = Mon 15:00; + 3 d = Wed 15:00.
        assert_eq!(
            add_working_ok(at("2025-10-17", 15, 0), WorkAmount::Days(1), &cal),
            at("2025-10-20", 15, 0)
        );
        assert_eq!(
            add_working_ok(at("2025-10-17", 15, 0), WorkAmount::Days(3), &cal),
            at("2025-10-22", 15, 0)
        );
        // Saturday: the end of Monday.
        assert_eq!(
            add_working_ok(at("2025-10-18", 10, 0), WorkAmount::Days(1), &cal),
            at("2025-10-20", 18, 0)
        );
    }

    /// China 2025 National Day: 10-01..10-08 off, Sun 09-28 and Sat 10-11 are make-up days.
    fn national_day() -> Calendar {
        let mut cal = Calendar::default();
        for day in 1..=8 {
            cal.holidays.insert(Date::new(2025, 10, day).expect("date"));
        }
        cal.makeup_days.insert(d("2025-09-28"));
        cal.makeup_days.insert(d("2025-10-11"));
        cal
    }

    #[test]
    fn holidays_are_skipped() {
        let cal = national_day();
        // Tue 2025-09-30 17:00 + 2 h: 1 h on 09-30, then holidays to 10-08, Thu 10-09 10:00.
        assert_eq!(
            add_working_ok(at("2025-09-30", 17, 0), WorkAmount::Hours(2), &cal),
            at("2025-10-09", 10, 0)
        );
        assert!(!cal.is_working_day(d("2025-10-01")));
        assert!(Calendar::default().is_working_day(d("2025-10-01")));
    }

    #[test]
    fn makeup_days_count_as_working_days() {
        let cal = national_day();
        // Fri 2025-09-26 17:00 + 2 h: Sunday 09-28 is a make-up day: 10:00 that Sunday.
        assert_eq!(
            add_working_ok(at("2025-09-26", 17, 0), WorkAmount::Hours(2), &cal),
            at("2025-09-28", 10, 0)
        );
        // Fri 10-10 15:00 + 1 d: Saturday 10-11 is a make-up day.
        assert_eq!(
            add_working_ok(at("2025-10-10", 15, 0), WorkAmount::Days(1), &cal),
            at("2025-10-11", 15, 0)
        );
        // Without it, Monday.
        assert_eq!(
            add_working_ok(
                at("2025-10-10", 15, 0),
                WorkAmount::Days(1),
                &Calendar::default()
            ),
            at("2025-10-13", 15, 0)
        );
    }

    #[test]
    fn other_offsets_and_hours() {
        let cal = Calendar {
            utc_offset_min: 0,
            start_min: 8 * 60,
            end_min: 12 * 60,
            ..Calendar::default()
        };
        // 1970-01-02 is a Friday; 11:00 UTC + 2 h: 1 h Friday, 1 h Monday 1970-01-05 → 09:00.
        const MS_PER_DAY: i64 = 86_400_000;
        let fri_11 = MS_PER_DAY + 11 * 3_600_000;
        assert_eq!(
            add_working_ok(fri_11, WorkAmount::Hours(2), &cal),
            4 * MS_PER_DAY + 9 * 3_600_000
        );
        // A working day is 4 h here.
        assert_eq!(cal.day_ms(), 4 * 3_600_000);
    }

    #[test]
    fn amounts_parse() {
        assert_eq!("4h".parse(), Ok(WorkAmount::Hours(4)));
        assert_eq!("3d".parse(), Ok(WorkAmount::Days(3)));
        assert!("3".parse::<WorkAmount>().is_err());
        assert!("h".parse::<WorkAmount>().is_err());
        assert!("2w".parse::<WorkAmount>().is_err());
        assert!("-1d".parse::<WorkAmount>().is_err());
        assert!("+1d".parse::<WorkAmount>().is_err());
        assert!("10001d".parse::<WorkAmount>().is_err());
        assert_eq!("10000h".parse(), Ok(WorkAmount::Hours(10_000)));
    }

    /// Regression: the unit was cut off at a byte index, which panicked (and, with
    /// `panic = "abort"`, killed the aggregator) on a multi-byte last character.
    #[test]
    fn amounts_with_multi_byte_characters_are_errors_not_panics() {
        for s in ["1é", "é", "1日", "日d", "3\u{1F600}", "\u{1F600}h", ""] {
            assert!(s.parse::<WorkAmount>().is_err(), "{s:?}");
        }
    }

    /// A deadline beyond the horizon is an error, never a silently truncated instant.
    #[test]
    fn amounts_beyond_the_horizon_are_errors() {
        let cal = Calendar::default();
        let start = at("2025-10-15", 10, 0);
        // 10000 working days is about 38 years of Mon–Fri.
        assert_eq!(
            add_working(start, WorkAmount::Days(10_000), &cal),
            Err(BeyondHorizon {
                amount: WorkAmount::Days(10_000)
            })
        );
        // A calendar with no working day at all never finds one.
        let none = Calendar {
            working_weekdays: [false; 7],
            ..Calendar::default()
        };
        assert!(add_working(start, WorkAmount::Hours(1), &none).is_err());
        // 2000 working days (about 8 years) is inside.
        let end = add_working_ok(start, WorkAmount::Days(2000), &cal);
        assert!(cal.local_date(end).year() < 2035, "{end}");
    }
}
