//! Rollups: a series' data summed up per clock-aligned bucket of 1 minute, 10 minutes, 1 hour
//! and 1 day (DESIGN.md §13, issue 14). Pure: what a bucket holds, computed from what lies
//! under it; the stores decide when to compute (SQLite inside ingest's commit, for every bucket
//! the commit touched; the memory store on read, from everything it holds).
//!
//! **Where a bucket's numbers come from, so that nothing counts twice.** A gateway on the
//! `period` strategy sends period aggregates *and*, around alarms, the raw polls they were made
//! of. Each bucket of level `L` (length `res`) therefore takes exactly one source:
//!
//! 1. the **periods** stored for the series whose length is in `(res of L-1, res]` (for 1 minute:
//!    `1 ..= 60` s) and whose start falls in the bucket, if there is any;
//! 2. otherwise what lies one level down: the **raw readings** of the bucket for 1 minute, the
//!    buckets of the level below for the others.
//!
//! So a minute with a 60-s period takes the period only (its raw polls around an alarm stay in
//! the raw table, at full resolution, and count nowhere else), a minute without one takes its raw
//! polls, and a 10-minute bucket adds up its minutes — or 300-s periods if a gateway sends those.
//! The choice depends only on what is stored, never on arrival order: a late period replaces the
//! raw polls of its minute when it comes, and the buckets above follow.
//!
//! **Validity** is carried up as a share of valid sub-periods, HJ 212-2017 style: a bucket
//! counts `expected` sub-periods (the sub-periods of its length: 10 minutes in a 10-minute
//! bucket, `60 / period_s` periods in a minute, 1 for a minute of raw polls) and how many of
//! them are present and valid; it is valid when at least [`VALID_SHARE`] of the expected ones
//! are. A minute of raw polls is valid when at least [`VALID_SHARE`] of its polls were valid.
//! A missing sub-period counts as invalid.

use fumegrid_common::reading::Quality;
use serde::Serialize;

use super::{PeriodVals, quality_code};

/// Bucket lengths in seconds, finest first: 1 minute, 10 minutes, 1 hour, 1 day.
pub const LEVELS: [u32; 4] = [60, 600, 3_600, 86_400];

/// Their names in the API (`resolution=`).
pub const LEVEL_NAMES: [&str; 4] = ["1m", "10m", "1h", "1d"];

/// Share of the expected sub-periods (or of a minute's polls) that must be valid for a bucket
/// to be valid: 3/4 (HJ 212-2017 asks 45 valid minutes for an hourly value).
pub const VALID_SHARE: (u32, u32) = (3, 4);

/// The index in [`LEVELS`] of a resolution in seconds.
pub fn level_of_res(res_s: u32) -> Option<usize> {
    LEVELS.iter().position(|&r| r == res_s)
}

/// The level a period of `period_s` feeds directly: the finest whose length is at least
/// `period_s` (every period is at most a day long).
pub fn level_of_period(period_s: u32) -> usize {
    LEVELS
        .iter()
        .position(|&r| period_s <= r)
        .unwrap_or(LEVELS.len() - 1)
}

/// Start of the level-`level` bucket holding `ts_ms` (UTC, clock-aligned).
pub fn bucket_of(level: usize, ts_ms: i64) -> i64 {
    let len = i64::from(LEVELS[level]) * 1000;
    ts_ms - ts_ms.rem_euclid(len)
}

/// What one bucket of one series holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    /// Sum of the valid values (an average times its count, for a period).
    pub sum: f64,
    /// Valid values.
    pub count: u64,
    /// Polls taken (valid or not).
    pub polls: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The newest valid value and its time: a reading's `ts_ms`, a period's end.
    pub last: Option<(i64, f64)>,
    /// Sub-periods present and valid.
    pub valid_subs: u32,
    /// Sub-periods a full bucket has.
    pub expected: u32,
}

impl Bucket {
    fn empty(expected: u32) -> Bucket {
        Bucket {
            sum: 0.0,
            count: 0,
            polls: 0,
            min: None,
            max: None,
            last: None,
            valid_subs: 0,
            expected,
        }
    }

    /// The average of the valid values, if any.
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Enough valid sub-periods ([`VALID_SHARE`]).
    pub fn valid(&self) -> bool {
        share_reached(u64::from(self.valid_subs), u64::from(self.expected))
    }

    /// Valid sub-periods over expected ones, 0 … 1.
    pub fn valid_share(&self) -> f64 {
        if self.expected == 0 {
            return 0.0;
        }
        (f64::from(self.valid_subs) / f64::from(self.expected)).min(1.0)
    }

    fn add_value(&mut self, v: f64, ts: i64) {
        self.sum += v;
        self.count += 1;
        self.fold_range(Some(v), Some(v), Some((ts, v)));
    }

    fn fold_range(&mut self, min: Option<f64>, max: Option<f64>, last: Option<(i64, f64)>) {
        self.min = fold(self.min, min, f64::min);
        self.max = fold(self.max, max, f64::max);
        // The newest wins; at the same time the larger value, so the order never matters.
        self.last = match (self.last, last) {
            (Some(a), Some(b)) => Some(if (b.0, b.1) > (a.0, a.1) { b } else { a }),
            (a, b) => a.or(b),
        };
    }
}

fn share_reached(valid: u64, of: u64) -> bool {
    of > 0 && valid * u64::from(VALID_SHARE.1) >= of * u64::from(VALID_SHARE.0)
}

fn fold(a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    }
}

/// A raw reading as the 1-minute level reads it: `(ts_ms, value, quality code)`.
pub type Raw = (i64, Option<f64>, i64);

/// A stored period as a bucket reads it: `(start_ms, period_s, aggregates)`.
pub type PeriodAt = (i64, u32, PeriodVals);

/// The level-`level` bucket from the periods that feed it directly (see the module doc),
/// or `None` when there are none.
pub fn from_periods(level: usize, periods: &[PeriodAt]) -> Option<Bucket> {
    let shortest = periods.iter().map(|p| p.1).min()?;
    let mut b = Bucket::empty((LEVELS[level] / shortest.max(1)).max(1));
    for (start, period_s, v) in periods {
        b.count += u64::from(v.count);
        b.polls += u64::from(v.polls);
        if let Some(avg) = v.avg {
            b.sum += avg * f64::from(v.count);
        }
        let end = start + i64::from(*period_s) * 1000;
        b.fold_range(v.min, v.max, v.last.map(|l| (end, l)));
        b.valid_subs += u32::from(v.valid);
    }
    Some(b)
}

/// A 1-minute bucket from its raw readings, or `None` when there are none. Only quality `ok`
/// readings with a value count as valid.
pub fn from_raw(readings: &[Raw]) -> Option<Bucket> {
    if readings.is_empty() {
        return None;
    }
    let ok = quality_code(Quality::Ok);
    let mut b = Bucket::empty(1);
    for &(ts, v, q) in readings {
        b.polls += 1;
        if let (Some(v), true) = (v, q == ok) {
            b.add_value(v, ts);
        }
    }
    b.valid_subs = u32::from(b.count > 0 && share_reached(b.count, b.polls));
    Some(b)
}

/// A level-`level` bucket (`level` ≥ 1) from the buckets of the level below it, or `None` when
/// there are none.
pub fn from_children(level: usize, children: &[Bucket]) -> Option<Bucket> {
    if children.is_empty() || level == 0 {
        return None;
    }
    let mut b = Bucket::empty(LEVELS[level] / LEVELS[level - 1]);
    for c in children {
        b.sum += c.sum;
        b.count += c.count;
        b.polls += c.polls;
        b.fold_range(c.min, c.max, c.last);
        b.valid_subs += u32::from(c.valid());
    }
    Some(b)
}

/// One bucket by the rule of the module doc: its own periods if any, else what lies below.
pub fn compute(level: usize, periods: &[PeriodAt], below: Below<'_>) -> Option<Bucket> {
    from_periods(level, periods).or_else(|| match below {
        Below::Raw(r) => from_raw(r),
        Below::Children(c) => from_children(level, c),
    })
}

/// What lies under a bucket: raw readings (1 minute) or the buckets of the level below.
#[derive(Debug, Clone, Copy)]
pub enum Below<'a> {
    Raw(&'a [Raw]),
    Children(&'a [Bucket]),
}

/// Every bucket of every level of one series, recomputed from all its stored readings and
/// periods: `[level] → [(bucket start, bucket)]`, oldest first. What the memory store answers
/// with, and what the property test holds SQLite's incrementally kept rollups to.
pub fn recompute(readings: &[Raw], periods: &[PeriodAt]) -> [Vec<(i64, Bucket)>; 4] {
    use std::collections::BTreeMap;
    let mut out: [Vec<(i64, Bucket)>; 4] = Default::default();
    let mut raw: BTreeMap<i64, Vec<Raw>> = BTreeMap::new();
    for r in readings {
        raw.entry(bucket_of(0, r.0)).or_default().push(*r);
    }
    for level in 0..LEVELS.len() {
        let mut own: BTreeMap<i64, Vec<PeriodAt>> = BTreeMap::new();
        for p in periods.iter().filter(|p| level_of_period(p.1) == level) {
            own.entry(bucket_of(level, p.0)).or_default().push(*p);
        }
        let mut below: BTreeMap<i64, Vec<Bucket>> = BTreeMap::new();
        if level > 0 {
            for (start, b) in &out[level - 1] {
                below.entry(bucket_of(level, *start)).or_default().push(*b);
            }
        }
        let mut starts: Vec<i64> = own.keys().copied().collect();
        if level == 0 {
            starts.extend(raw.keys());
        } else {
            starts.extend(below.keys());
        }
        starts.sort_unstable();
        starts.dedup();
        for start in starts {
            let ps = own.get(&start).map(Vec::as_slice).unwrap_or(&[]);
            let b = if level == 0 {
                compute(
                    0,
                    ps,
                    Below::Raw(raw.get(&start).map(Vec::as_slice).unwrap_or(&[])),
                )
            } else {
                compute(
                    level,
                    ps,
                    Below::Children(below.get(&start).map(Vec::as_slice).unwrap_or(&[])),
                )
            };
            if let Some(b) = b {
                out[level].push((start, b));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_765_000_020_000; // a whole minute
    const OK: i64 = 0;
    const BAD: i64 = 3;

    fn pv(count: u32, avg: f64, valid: bool) -> PeriodVals {
        PeriodVals {
            polls: 60,
            count,
            avg: (count > 0).then_some(avg),
            min: (count > 0).then_some(avg - 1.0),
            max: (count > 0).then_some(avg + 1.0),
            last: (count > 0).then_some(avg),
            valid,
        }
    }

    #[test]
    fn levels_buckets_and_period_levels() {
        assert_eq!(bucket_of(0, T + 59_999), T);
        assert_eq!(bucket_of(1, T), T - T.rem_euclid(600_000));
        assert_eq!(
            bucket_of(3, -1),
            -86_400_000,
            "before the epoch, still aligned"
        );
        assert_eq!(
            [1, 60, 61, 600, 601, 3600, 86_400].map(level_of_period),
            [0, 0, 1, 1, 2, 2, 3]
        );
        assert_eq!(level_of_res(3600), Some(2));
        assert_eq!(level_of_res(300), None);
    }

    #[test]
    fn a_minute_of_raw_polls_counts_valid_values_only() {
        let raw: Vec<Raw> = vec![
            (T, Some(1.0), OK),
            (T + 1000, Some(3.0), OK),
            (T + 2000, None, BAD),
            (T + 3000, Some(9.0), 1),
        ];
        let b = from_raw(&raw).expect("bucket");
        assert_eq!(
            (b.count, b.polls, b.sum, b.min, b.max),
            (2, 4, 4.0, Some(1.0), Some(3.0))
        );
        assert_eq!(b.last, Some((T + 1000, 3.0)));
        assert!(!b.valid(), "2 of 4 polls valid is below 3/4");
        let b = from_raw(&raw[..2]).expect("bucket");
        assert!(b.valid() && b.valid_share() == 1.0);
        assert_eq!(from_raw(&[]), None);
    }

    #[test]
    fn periods_win_over_raw_polls_and_validity_is_a_share() {
        let raw: Vec<Raw> = vec![(T + 5000, Some(100.0), OK)];
        let periods: Vec<PeriodAt> = vec![(T, 60, pv(58, 2.0, true))];
        let b = compute(0, &periods, Below::Raw(&raw)).expect("bucket");
        assert_eq!(
            (b.count, b.polls),
            (58, 60),
            "the raw poll is not counted again"
        );
        assert_eq!(b.avg(), Some(2.0));
        assert_eq!(
            b.last,
            Some((T + 60_000, 2.0)),
            "a period's last is at its end"
        );
        // Ten minutes: 8 valid minutes of 10 expected → valid (≥ 3/4); 7 → not.
        let minutes: Vec<Bucket> = (0..10)
            .map(|i| from_periods(0, &[(T + i * 60_000, 60, pv(60, i as f64, i < 8))]).expect("m"))
            .collect();
        let ten = from_children(1, &minutes).expect("10m");
        assert_eq!((ten.valid_subs, ten.expected, ten.count), (8, 10, 600));
        assert!(ten.valid());
        assert_eq!(ten.avg(), Some(4.5));
        assert_eq!((ten.min, ten.max), (Some(-1.0), Some(10.0)));
        let seven = from_children(1, &minutes[..7]).expect("10m");
        assert!(!seven.valid(), "missing minutes count as invalid");
        assert!((seven.valid_share() - 0.7).abs() < 1e-12);
        // Ten-second periods: six expected in a minute.
        let tens: Vec<PeriodAt> = (0..5)
            .map(|i| (T + i * 10_000, 10, pv(10, 1.0, true)))
            .collect();
        let m = from_periods(0, &tens).expect("m");
        assert_eq!((m.valid_subs, m.expected), (5, 6));
        assert!(m.valid());
    }

    #[test]
    fn recompute_builds_every_level_and_a_late_period_replaces_raw_polls() {
        let raw: Vec<Raw> = (0..120).map(|s| (T + s * 1000, Some(1.0), OK)).collect();
        let periods: Vec<PeriodAt> = vec![(T + 60_000, 60, pv(60, 3.0, true))];
        let all = recompute(&raw, &periods);
        assert_eq!(all[0].len(), 2);
        assert_eq!(all[0][0].1.avg(), Some(1.0));
        assert_eq!(
            all[0][1].1.avg(),
            Some(3.0),
            "the second minute from its period"
        );
        for buckets in &all[1..] {
            assert_eq!(buckets.len(), 1);
            let b = buckets[0].1;
            assert_eq!((b.count, b.polls), (120, 120));
            assert_eq!(b.avg(), Some(2.0));
        }
        // A day-long period feeds the day directly and wins over the hours below it.
        let day = vec![(bucket_of(3, T), 86_400, pv(86_000, 7.0, true))];
        let all = recompute(&raw, &day);
        assert_eq!(all[3][0].1.avg(), Some(7.0));
        assert_eq!(all[2][0].1.avg(), Some(1.0), "the hour keeps the raw polls");
    }
}
