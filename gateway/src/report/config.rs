//! `[report]` (every device) and `[devices.report]` (one device, over `[report]`): what goes
//! up for each metric (docs/gateway-config.md, "Report strategies"). A key a device leaves out
//! is the site's; one the site leaves out is the default. `metrics` merge per metric.

use std::collections::BTreeMap;

use fumegrid_common::diag::Doc;
use fumegrid_common::metric::Metric;
use serde::{Deserialize, Serialize};

/// What goes up for one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Every poll as a `reading` (the v1 behaviour).
    Raw,
    /// One `period` item per device and period: avg, min, max, count, polls, last, valid.
    Period,
    /// A `reading` when the value moved by more than `deadband` since the last one sent, its
    /// quality changed, or `heartbeat_s` passed.
    OnChange,
}

/// Longest raw window before a raise or after a clear: one hour.
pub const MAX_RAW_WINDOW_S: u32 = 3600;

/// `[report]` / `[devices.report]` as written; every key optional (defaults in
/// [`ReportConfig::default`]).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportOverrides {
    /// `raw`, `period` or `on_change`, for every metric of the device. Default `period`.
    pub strategy: Option<Strategy>,
    /// Length of a period, aligned to the wall clock (UTC); must divide 600 so that a period
    /// never straddles a 10-minute rollup. Default 60.
    pub period_s: Option<u32>,
    /// Share of the polls a period should have had (period ÷ poll interval) that must be valid
    /// for the period to be flagged `valid`, 0..=1 (HJ 212: 45 of 60 minute values). Default 0.75.
    pub min_valid: Option<f64>,
    /// `on_change`: smallest change (in the metric's unit) that is sent. Default 0 (any change).
    pub deadband: Option<f64>,
    /// `on_change`: a reading is sent at least this often even without a change. Default 300.
    pub heartbeat_s: Option<u32>,
    /// Raw polls kept (in memory) before an alarm of the device is raised, and sent with it;
    /// 0..=3600. Default 300.
    pub raw_before_s: Option<u32>,
    /// Raw polls keep going up this long after the device's last open alarm cleared; 0..=3600.
    /// Default 300.
    pub raw_after_s: Option<u32>,
    /// Per metric: `strategy`, `deadband`, `heartbeat_s` over the keys above, e.g.
    /// `metrics = { fan_on = { strategy = "on_change" } }`. Default: none.
    #[serde(default)]
    pub metrics: BTreeMap<Metric, MetricOverrides>,
}

/// One metric's keys in `metrics`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricOverrides {
    /// Default: the device's `strategy`.
    pub strategy: Option<Strategy>,
    /// Default: the device's `deadband`.
    pub deadband: Option<f64>,
    /// Default: the device's `heartbeat_s`.
    pub heartbeat_s: Option<u32>,
}

/// One metric's strategy, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricReport {
    pub strategy: Strategy,
    pub deadband: f64,
    pub heartbeat_s: u32,
}

/// A device's report strategy, resolved: device, then `[report]`, then defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportConfig {
    pub strategy: Strategy,
    pub period_s: u32,
    pub min_valid: f64,
    pub deadband: f64,
    pub heartbeat_s: u32,
    pub raw_before_s: u32,
    pub raw_after_s: u32,
    pub metrics: BTreeMap<Metric, MetricReport>,
}

impl Default for ReportConfig {
    /// 60-second periods, 75 % valid, raw windows of 5 min before and after alarms.
    fn default() -> Self {
        ReportConfig {
            strategy: Strategy::Period,
            period_s: 60,
            min_valid: 0.75,
            deadband: 0.0,
            heartbeat_s: 300,
            raw_before_s: 300,
            raw_after_s: 300,
            metrics: BTreeMap::new(),
        }
    }
}

impl ReportConfig {
    /// Every poll of every metric, as a gateway before issue 14 sent them.
    pub fn raw() -> ReportConfig {
        ReportConfig {
            strategy: Strategy::Raw,
            ..ReportConfig::default()
        }
    }

    /// What `metric` follows.
    pub fn of(&self, metric: &Metric) -> MetricReport {
        self.metrics.get(metric).copied().unwrap_or(MetricReport {
            strategy: self.strategy,
            deadband: self.deadband,
            heartbeat_s: self.heartbeat_s,
        })
    }

    /// True when no metric can be withheld (every one `raw`): no ring, no periods.
    pub fn all_raw(&self) -> bool {
        self.strategy == Strategy::Raw && self.metrics.values().all(|m| m.strategy == Strategy::Raw)
    }
}

/// Device keys over site keys over defaults.
pub fn resolve(site: &ReportOverrides, device: &ReportOverrides) -> ReportConfig {
    let d = ReportConfig::default();
    let strategy = device.strategy.or(site.strategy).unwrap_or(d.strategy);
    let deadband = device.deadband.or(site.deadband).unwrap_or(d.deadband);
    let heartbeat_s = device
        .heartbeat_s
        .or(site.heartbeat_s)
        .unwrap_or(d.heartbeat_s);
    let mut metrics = BTreeMap::new();
    let mut merged: BTreeMap<Metric, MetricOverrides> = site.metrics.clone();
    for (m, o) in &device.metrics {
        let e = merged.entry(*m).or_default();
        e.strategy = o.strategy.or(e.strategy);
        e.deadband = o.deadband.or(e.deadband);
        e.heartbeat_s = o.heartbeat_s.or(e.heartbeat_s);
    }
    for (m, o) in merged {
        metrics.insert(
            m,
            MetricReport {
                strategy: o.strategy.unwrap_or(strategy),
                deadband: o.deadband.unwrap_or(deadband),
                heartbeat_s: o.heartbeat_s.unwrap_or(heartbeat_s),
            },
        );
    }
    ReportConfig {
        strategy,
        period_s: device.period_s.or(site.period_s).unwrap_or(d.period_s),
        min_valid: device.min_valid.or(site.min_valid).unwrap_or(d.min_valid),
        deadband,
        heartbeat_s,
        raw_before_s: device
            .raw_before_s
            .or(site.raw_before_s)
            .unwrap_or(d.raw_before_s),
        raw_after_s: device
            .raw_after_s
            .or(site.raw_after_s)
            .unwrap_or(d.raw_after_s),
        metrics,
    }
}

/// Every problem of one `[report]` table, each at `{at}.{key}`.
pub fn check(o: &ReportOverrides, doc: &mut Doc<'_>, at: &str) {
    let mut err = |key: &str, msg: &str| doc.error(&format!("{at}.{key}"), msg.to_string());
    if let Some(p) = o.period_s
        && (p == 0 || 600 % p != 0)
    {
        err(
            "period_s",
            "must divide 600 (a period never straddles a 10-minute rollup): e.g. 10, 30, 60, 300, 600",
        );
    }
    if o.min_valid.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
        err(
            "min_valid",
            "must be between 0 and 1 (a share of the polls)",
        );
    }
    let bad_deadband = |v: Option<f64>| v.is_some_and(|v| !v.is_finite() || v < 0.0);
    let bad_heartbeat = |v: Option<u32>| v == Some(0);
    if bad_deadband(o.deadband) {
        err("deadband", "must be 0 or more, in the metric's unit");
    }
    if bad_heartbeat(o.heartbeat_s) {
        err("heartbeat_s", "must be at least 1 s");
    }
    for (key, v) in [
        ("raw_before_s", o.raw_before_s),
        ("raw_after_s", o.raw_after_s),
    ] {
        if v.is_some_and(|v| v > MAX_RAW_WINDOW_S) {
            err(key, "must be at most 3600 s (the ring is kept in memory)");
        }
    }
    for (m, mo) in &o.metrics {
        if bad_deadband(mo.deadband) {
            err(
                &format!("metrics.{m}.deadband"),
                "must be 0 or more, in the metric's unit",
            );
        }
        if bad_heartbeat(mo.heartbeat_s) {
            err(&format!("metrics.{m}.heartbeat_s"), "must be at least 1 s");
        }
    }
}

/// The `[report]` section of the printed default config.
pub const DEFAULT_REPORT_TOML: &str = r#"# What goes up for each metric. Every key may also be set per device: report = { strategy = "raw" },
# and per metric: report = { metrics = { fan_on = { strategy = "on_change" } } }.
[report]
strategy = "period"               # period (aggregates) | raw (every poll) | on_change (deadband + heartbeat)
period_s = 60                     # aligned to the wall clock; must divide 600
min_valid = 0.75                  # share of the expected polls that must be valid for `valid = true`
deadband = 0.0                    # on_change: smallest change sent, in the metric's unit
heartbeat_s = 300                 # on_change: a reading at least this often
raw_before_s = 300                # raw polls kept before an alarm and sent with it
raw_after_s = 300                 # raw polls keep going up this long after the clear
"#;
