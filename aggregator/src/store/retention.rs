//! Retention per resolution (issue 14, DESIGN.md §13): how long each kind of row is kept, which
//! rows a pass may delete, and which it must not. Pure: cutoffs and pinned windows as functions
//! of `(policy, now)`; the SQLite sweeper (`store/sqlite.rs`, [`super::sqlite::Sweeper`]) deletes
//! by them in short transactions, and the daemon's loop (`crate::sweeper`) runs it.
//!
//! **What is kept how long** (`[retention]`, docs/aggregator-config.md):
//!
//! | rows | key | default |
//! |---|---|---|
//! | raw polls (`readings`) | `raw_days` | 30 |
//! | the 1-minute level: 60-s periods and 1-minute rollups | `minute_days` | 90 |
//! | periods of any other length (10-s, 300-s, …) | `other_periods_days` | 90 |
//! | 10-minute rollups | `ten_minute_days` | 3650 |
//! | hourly rollups | `hourly_days` | 3650 |
//! | daily rollups | `daily_days` | 3650 |
//!
//! A row is expired when its time (a reading's `ts_ms`, a period's or bucket's start) is before
//! `now − days` on the aggregator's clock. A coarser level is never kept shorter than a finer one
//! (checked by the config), so a chart that falls back to a coarser resolution always finds it.
//!
//! **Case evidence is pinned.** The raw readings and periods of a device inside the evidence
//! window of an alarm episode linked to a case — from its raise minus `case_margin_s` to its
//! clear plus `case_margin_s` (to the end of time while it is open) — are never swept while the
//! case exists, and cases are never deleted. The margin stands for the gateway's raw windows
//! (`raw_before_s`/`raw_after_s`, 300 s by default): a gateway configured with longer windows
//! needs a margin at least as long for all its raw polls to stay.
//!
//! **Rollups after a sweep.** Rollup buckets are stored and outlive what they were computed
//! from. Ingest recomputes a bucket from what lies under it; once part of that is swept, a late
//! item would make the bucket forget the swept part. So a bucket that is already stored and
//! whose sources may have been swept ([`source_cutoff`]) is *frozen*: the late item is stored
//! in its own table (and swept with it), the bucket is left as it was, and the event is counted
//! (`fumegrid_retention_frozen_buckets_total`).

use super::rollup;

const DAY_MS: i64 = 86_400_000;

/// `[retention]` as the store uses it (days; the config checks the ranges and the order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw_days: u32,
    pub minute_days: u32,
    pub other_periods_days: u32,
    pub ten_minute_days: u32,
    pub hourly_days: u32,
    pub daily_days: u32,
    /// Seconds added before the raise and after the clear of a case's alarm episode.
    pub case_margin_s: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            raw_days: 30,
            minute_days: 90,
            other_periods_days: 90,
            ten_minute_days: 3650,
            hourly_days: 3650,
            daily_days: 3650,
            case_margin_s: 300,
        }
    }
}

/// The instants before which rows are expired, ms on the aggregator's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    pub raw: i64,
    /// 60-s periods and 1-minute rollups.
    pub minute: i64,
    /// Periods whose length is not 60 s.
    pub other_periods: i64,
    /// Rollups by level ([`rollup::LEVELS`]): 1 minute, 10 minutes, 1 hour, 1 day.
    pub rollups: [i64; 4],
}

impl Retention {
    pub fn cutoffs(&self, now_ms: i64) -> Cutoffs {
        let cut = |days: u32| now_ms.saturating_sub(i64::from(days) * DAY_MS);
        Cutoffs {
            raw: cut(self.raw_days),
            minute: cut(self.minute_days),
            other_periods: cut(self.other_periods_days),
            rollups: [
                cut(self.minute_days),
                cut(self.ten_minute_days),
                cut(self.hourly_days),
                cut(self.daily_days),
            ],
        }
    }

    /// The order the config enforces: each key with the finer key it must not be shorter than.
    /// `(key, days, finer key, its days)` for every violation.
    pub fn order_violations(&self) -> Vec<(&'static str, u32, &'static str, u32)> {
        let chain = [
            ("raw_days", self.raw_days),
            ("minute_days", self.minute_days),
            ("ten_minute_days", self.ten_minute_days),
            ("hourly_days", self.hourly_days),
            ("daily_days", self.daily_days),
        ];
        let mut out: Vec<_> = chain
            .windows(2)
            .filter(|w| w[1].1 < w[0].1)
            .map(|w| (w[1].0, w[1].1, w[0].0, w[0].1))
            .collect();
        if self.other_periods_days < self.raw_days {
            out.push((
                "other_periods_days",
                self.other_periods_days,
                "raw_days",
                self.raw_days,
            ));
        }
        out
    }
}

/// The instant before which a stored level-`level` bucket's sources may have been swept: for a
/// minute, its raw polls or sub-minute periods (a minute that is one 60-s period has no stored
/// row, see [`rollup`]); above, the buckets one level down and the periods that feed the level
/// directly.
pub fn source_cutoff(c: &Cutoffs, level: usize) -> i64 {
    match level {
        0 => c.raw.max(c.other_periods),
        l => c.rollups[l - 1].max(c.other_periods),
    }
}

/// The evidence window of an episode `[started − margin, cleared + margin)`; an open episode
/// (no clear) reaches to the end of time.
pub fn pin(started_ms: i64, cleared_ms: Option<i64>, margin_s: u32) -> (i64, i64) {
    let m = i64::from(margin_s) * 1000;
    (
        started_ms.saturating_sub(m),
        cleared_ms.map_or(i64::MAX, |c| c.saturating_add(m).saturating_add(1)),
    )
}

/// The ranges `[from, to)` before `cutoff` that no pin covers: what a sweep may delete. Pins in
/// any order, overlapping or not; the first range starts at `i64::MIN`.
pub fn sweepable(mut pins: Vec<(i64, i64)>, cutoff: i64) -> Vec<(i64, i64)> {
    pins.sort_unstable();
    let mut out = Vec::new();
    let mut from = i64::MIN;
    for (lo, hi) in pins {
        if lo >= cutoff {
            break;
        }
        if lo > from {
            out.push((from, lo));
        }
        from = from.max(hi);
        if from >= cutoff {
            return out;
        }
    }
    if from < cutoff {
        out.push((from, cutoff));
    }
    out
}

/// The rollup level of a stored bucket length, for the sweeper's per-level counts.
pub fn level_name(level: usize) -> &'static str {
    rollup::LEVEL_NAMES.get(level).copied().unwrap_or("?")
}

/// What one sweep pass deleted, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    pub raw: u64,
    pub minute_periods: u64,
    pub other_periods: u64,
    /// Rollup buckets by level.
    pub rollups: [u64; 4],
}

impl Swept {
    pub fn total(&self) -> u64 {
        self.raw + self.minute_periods + self.other_periods + self.rollups.iter().sum::<u64>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cutoffs_follow_the_days_and_the_order_is_checked() {
        let r = Retention::default();
        let now = 400 * DAY_MS;
        let c = r.cutoffs(now);
        assert_eq!(c.raw, 370 * DAY_MS);
        assert_eq!((c.minute, c.other_periods), (310 * DAY_MS, 310 * DAY_MS));
        assert_eq!(c.rollups[1], now - 3650 * DAY_MS);
        assert!(r.order_violations().is_empty());
        let bad = Retention {
            minute_days: 20,
            hourly_days: 10,
            other_periods_days: 5,
            ..r
        };
        let keys: Vec<_> = bad.order_violations().iter().map(|v| v.0).collect();
        assert_eq!(keys, ["minute_days", "hourly_days", "other_periods_days"]);
        assert_eq!(
            source_cutoff(&c, 0),
            c.raw,
            "a minute's shortest-lived source"
        );
        assert_eq!(source_cutoff(&c, 1), c.minute);
        assert_eq!(source_cutoff(&c, 2), c.rollups[1].max(c.other_periods));
    }

    #[test]
    fn pins_cut_holes_in_what_may_be_swept() {
        assert_eq!(sweepable(vec![], 100), [(i64::MIN, 100)]);
        // Two overlapping windows and one after the cutoff.
        let pins = vec![(50, 70), (10, 20), (15, 30), (200, 300)];
        assert_eq!(sweepable(pins, 100), [(i64::MIN, 10), (30, 50), (70, 100)]);
        // An open episode pins everything after its start.
        assert_eq!(
            sweepable(vec![pin(40_000, None, 10)], 100_000),
            [(i64::MIN, 30_000)]
        );
        assert_eq!(pin(40_000, Some(50_000), 10), (30_000, 60_001));
        // A window that straddles the cutoff leaves nothing after it.
        assert_eq!(sweepable(vec![(90, 120)], 100), [(i64::MIN, 90)]);
        assert_eq!(sweepable(vec![(i64::MIN, 5)], 100), [(5, 100)]);
    }
}
