//! Rule parameters: the `[rules]` table of the gateway config (site-wide) and the per-device
//! inline table `rules = { ... }` in `[[devices]]`, both [`RulesOverrides`].
//!
//! Every key is optional everywhere. [`resolve`] gives each device its [`RulesConfig`]: the
//! device's value wins, then the site's, then the default documented on the key. Tables
//! (`limits`, `max_jump`) merge per metric (a device can change the fume limit and keep the
//! site's NMHC limit); lists (`opening_hours`, `maintenance`) are replaced as a whole.
//!
//! [`check`] records every problem of one table at its field path (`rules.clear_fraction`,
//! `devices[3].rules.limits.fume_mg_m3`); [`check_resolved`] checks what only the combination
//! can get wrong (`window_s` not a multiple of `eval_every_s`, a custom standard without limits).
//! [`resolve`] itself never fails: it skips what `check` reports.

use std::collections::BTreeMap;
use std::fmt;

use fumegrid_common::datetime;
use fumegrid_common::diag::Doc;
use fumegrid_common::metric::Metric;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

/// The standard whose limits apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Standard {
    /// GB 18483-2001 (national): fume 2.0 mg/m³.
    #[default]
    #[serde(rename = "gb18483_2001")]
    Gb18483,
    /// DB11/1488-2018 (Beijing): fume 1.0, particulate 5.0, NMHC 10.0 mg/m³.
    #[serde(rename = "db11_1488_2018")]
    Db11,
    /// No preset: only the metrics in `limits` are judged.
    #[serde(rename = "custom")]
    Custom,
}

impl Standard {
    /// As printed in alarm messages.
    pub fn label(self) -> &'static str {
        match self {
            Standard::Gb18483 => "GB 18483-2001",
            Standard::Db11 => "DB11/1488-2018",
            Standard::Custom => "custom limit",
        }
    }

    /// The preset limits, mg/m³.
    pub fn limits(self) -> &'static [(Metric, f64)] {
        match self {
            Standard::Gb18483 => &[(Metric::FumeMgM3, 2.0)],
            Standard::Db11 => &[
                (Metric::FumeMgM3, 1.0),
                (Metric::ParticulateMgM3, 5.0),
                (Metric::NmhcMgM3, 10.0),
            ],
            Standard::Custom => &[],
        }
    }
}

/// The metrics judged for exceedance (and for stuck values).
pub const CONCENTRATIONS: [Metric; 3] =
    [Metric::FumeMgM3, Metric::ParticulateMgM3, Metric::NmhcMgM3];

/// A point in time in a maintenance window: unix milliseconds, an RFC 3339 string
/// (`"2025-03-01T22:00:00+08:00"`), or a TOML datetime (`2025-03-01T22:00:00+08:00`, unquoted).
/// Without an offset the time is local (`utc_offset_minutes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSpec {
    Ms(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for TimeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TimeSpec, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TimeSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "unix milliseconds or an RFC 3339 date-time (2025-03-01T22:00:00+08:00)",
                )
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimeSpec, E> {
                Ok(TimeSpec::Ms(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimeSpec, E> {
                i64::try_from(v)
                    .map(TimeSpec::Ms)
                    .map_err(|_| E::custom("too large for unix milliseconds"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TimeSpec, E> {
                Ok(TimeSpec::Text(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TimeSpec, A::Error> {
                // toml hands its native datetimes over as a private one-entry map.
                let dt =
                    toml::value::Datetime::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(TimeSpec::Text(dt.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl TimeSpec {
    /// Unix ms; a local time (no offset) is taken at `utc_offset_minutes`.
    pub fn to_ms(&self, utc_offset_minutes: i32) -> Result<i64, String> {
        match self {
            TimeSpec::Ms(ms) => Ok(*ms),
            TimeSpec::Text(s) => {
                let (naive, offset) = parse_rfc3339(s)?;
                Ok(naive - i64::from(offset.unwrap_or(utc_offset_minutes)) * 60_000)
            }
        }
    }
}

/// One maintenance window `{ from = ..., to = ... }`, from inclusive, to exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceWindow {
    pub from: TimeSpec,
    pub to: TimeSpec,
}

/// One entry of `thresholds`, as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdSpec {
    /// Alarm when the value is above this (in the metric's unit). At least one of `above` and
    /// `below`; with both, `below` < `above` (a band).
    pub above: Option<f64>,
    /// Alarm when the value is below this.
    pub below: Option<f64>,
    /// The condition must hold this long before it is raised, s; 0 = at once. Default 60.
    pub after_s: Option<u64>,
}

/// One resolved threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub after_s: u64,
}

impl Threshold {
    /// The bound `v` is outside of, if any.
    pub fn breached(&self, v: f64) -> Option<f64> {
        match (self.above, self.below) {
            (Some(a), _) if v > a => Some(a),
            (_, Some(b)) if v < b => Some(b),
            _ => None,
        }
    }
}

/// Rule parameters as written: the site-wide `[rules]` table or a device's `rules = { ... }`.
/// Every key is optional; the default is stated on each.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesOverrides {
    /// Limit preset: `"gb18483_2001"` (fume 2.0 mg/m³), `"db11_1488_2018"` (fume 1.0,
    /// particulate 5.0, NMHC 10.0 mg/m³) or `"custom"` (only `limits`). Default `"gb18483_2001"`.
    pub standard: Option<Standard>,
    /// Limits in mg/m³ by metric (`fume_mg_m3`, `particulate_mg_m3`, `nmhc_mg_m3`), over the
    /// standard's. Required (at least one) with `standard = "custom"`. Default: the standard's.
    pub limits: Option<BTreeMap<Metric, f64>>,
    /// Length of the rolling average, s; a multiple of `eval_every_s`. Default 600.
    pub window_s: Option<u64>,
    /// The rolling average is judged once per this step, s. Default 60.
    pub eval_every_s: Option<u64>,
    /// Consecutive judgments over the limit that raise an exceedance. Default 3.
    pub raise_after: Option<u32>,
    /// Consecutive judgments below `clear_fraction` × limit that clear it. Default 5.
    pub clear_after: Option<u32>,
    /// Hysteresis: an exceedance clears below this fraction of the limit, in (0, 1]. Default 0.8.
    pub clear_fraction: Option<f64>,
    /// A judgment needs at least this many valid fan-on readings in the window. Default 5.
    pub min_samples: Option<u32>,
    /// Reference exhaust flow, m³/h (GB 18483: 2000 m³/h per cooking head). When set and the
    /// monitor reports `flow_m3_h`, concentrations are corrected before judging:
    /// C_ref = C × Q_measured / Q_ref. 0 = no correction. Default: no correction.
    pub reference_flow_m3_h: Option<f64>,
    /// For monitors without a `fan_on` point: the fan counts as running at or above this fan
    /// current, A. Default 0.5.
    pub fan_min_current_a: Option<f64>,
    /// Fan running with the purifier off for this long raises `purifier_idle`, s. Default 600.
    pub purifier_idle_after_s: Option<u64>,
    /// Below this purifier current the purifier counts as off, A. Default 0.2.
    pub purifier_min_current_a: Option<f64>,
    /// `purifier_dirty` when the purifier's average current falls below this fraction of its
    /// clean baseline, in (0, 1). Default 0.6.
    pub purifier_dirty_fraction: Option<f64>,
    /// The purifier's clean current, A. 0 = learn it (see `baseline_learn_s`). Default: learn.
    pub purifier_baseline_a: Option<f64>,
    /// Purifier-running time over which the baselines (current, fume) are learned, s: the mean
    /// of every running sample in the first this-many seconds of running. Default 3600.
    pub baseline_learn_s: Option<u64>,
    /// A dirty-purifier condition must hold this long before it is raised, s. Default 1800.
    pub purifier_dirty_after_s: Option<u64>,
    /// `purifier_dirty` also when the fume average while the purifier runs reaches this factor
    /// × its learned baseline (and at least half the fume limit, still under it: over the limit
    /// it is an exceedance). 0 = off; else > 1. Default 2.0.
    pub dirty_fume_factor: Option<f64>,
    /// No valid response (a reading of quality ok or out_of_range) for this long raises
    /// `device_offline`, s. Default 300.
    pub offline_after_s: Option<u64>,
    /// A concentration reading exactly the same value for this long while the fan runs is a
    /// stuck sensor, s. Default 1800.
    pub stuck_after_s: Option<u64>,
    /// A sensor fault (out of range, stuck, impossible jumps) must persist this long before it
    /// is raised, s; 0 = at once. Default 60.
    pub fault_after_s: Option<u64>,
    /// A sustained condition (purifier_idle, purifier_dirty, sensor_fault) clears only once it
    /// has been absent this long, s; shorter gaps do not restart its timer. Default 60.
    pub clear_hold_s: Option<u64>,
    /// Largest believable change per second by metric; a faster change is an impossible jump
    /// (a sensor fault, and the reading is not averaged). 0 = no jump check for that metric.
    /// Default fume 5.0, particulate 10.0, NMHC 20.0 (mg/m³ per s).
    pub max_jump: Option<BTreeMap<Metric, f64>>,
    /// A technician's own limits, by metric: `thresholds = { x_oil_temp_c = { above = 90.0 } }`.
    /// The only way an alarm rule judges a vendor `x_` metric (any metric but the on/off states
    /// may be named). A valid reading above `above` or below `below` for `after_s` raises a
    /// `threshold` alarm; it clears once back inside for `clear_hold_s`. Merged per metric
    /// like `limits`. Default: none.
    pub thresholds: Option<BTreeMap<Metric, ThresholdSpec>>,
    /// Opening hours, local time, `"HH:MM-HH:MM"` (`"22:00-02:00"` spans midnight, `24:00` ends
    /// a day). Outside them conditions are recorded with `suppressed: true`. Default: empty =
    /// always open.
    pub opening_hours: Option<Vec<String>>,
    /// Offset of local time from UTC for opening hours and offset-less datetimes, minutes.
    /// Default 480 (China Standard Time).
    pub utc_offset_minutes: Option<i32>,
    /// Maintenance windows `{ from = ..., to = ... }` (unix ms, RFC 3339 or TOML datetimes);
    /// conditions inside are recorded with `suppressed: true`. Default: none.
    pub maintenance: Option<Vec<MaintenanceWindow>>,
    /// While an alarm is open, an `updated` goes out at least this often, s. Default 300.
    pub update_every_s: Option<u64>,
    /// ... and also whenever the exceedance peak grew by this fraction since the last
    /// transition sent. Default 0.1.
    pub update_peak_step: Option<f64>,
}

/// Defaults of every key, as documented on [`RulesOverrides`].
pub mod defaults {
    pub const WINDOW_S: u64 = 600;
    pub const EVAL_EVERY_S: u64 = 60;
    pub const RAISE_AFTER: u32 = 3;
    pub const CLEAR_AFTER: u32 = 5;
    pub const CLEAR_FRACTION: f64 = 0.8;
    pub const MIN_SAMPLES: u32 = 5;
    pub const FAN_MIN_CURRENT_A: f64 = 0.5;
    pub const PURIFIER_IDLE_AFTER_S: u64 = 600;
    pub const PURIFIER_MIN_CURRENT_A: f64 = 0.2;
    pub const PURIFIER_DIRTY_FRACTION: f64 = 0.6;
    pub const BASELINE_LEARN_S: u64 = 3600;
    pub const PURIFIER_DIRTY_AFTER_S: u64 = 1800;
    pub const DIRTY_FUME_FACTOR: f64 = 2.0;
    pub const OFFLINE_AFTER_S: u64 = 300;
    pub const STUCK_AFTER_S: u64 = 1800;
    pub const FAULT_AFTER_S: u64 = 60;
    pub const CLEAR_HOLD_S: u64 = 60;
    pub const UTC_OFFSET_MINUTES: i32 = 480;
    pub const UPDATE_EVERY_S: u64 = 300;
    pub const UPDATE_PEAK_STEP: f64 = 0.1;
    pub const THRESHOLD_AFTER_S: u64 = 60;
    /// mg/m³ per second.
    pub const MAX_JUMP: [(fumegrid_common::metric::Metric, f64); 3] = [
        (fumegrid_common::metric::Metric::FumeMgM3, 5.0),
        (fumegrid_common::metric::Metric::ParticulateMgM3, 10.0),
        (fumegrid_common::metric::Metric::NmhcMgM3, 20.0),
    ];
}

/// Upper bound on `window_s / eval_every_s`: the rolling window keeps one small aggregate per
/// step, so this bounds memory per device (~50 KB).
pub const MAX_WINDOW_STEPS: u64 = 1440;

/// The parameters one device's rules run with, after [`resolve`].
#[derive(Debug, Clone, PartialEq)]
pub struct RulesConfig {
    pub standard: Standard,
    /// Limit by concentration metric, mg/m³; metrics without one are not judged.
    pub limits: BTreeMap<Metric, f64>,
    pub window_s: u64,
    pub eval_every_s: u64,
    pub raise_after: u32,
    pub clear_after: u32,
    pub clear_fraction: f64,
    pub min_samples: u32,
    /// `None`: no flow correction.
    pub reference_flow_m3_h: Option<f64>,
    pub fan_min_current_a: f64,
    pub purifier_idle_after_s: u64,
    pub purifier_min_current_a: f64,
    pub purifier_dirty_fraction: f64,
    /// `None`: learned.
    pub purifier_baseline_a: Option<f64>,
    pub baseline_learn_s: u64,
    pub purifier_dirty_after_s: u64,
    /// 0 = off.
    pub dirty_fume_factor: f64,
    pub offline_after_s: u64,
    pub stuck_after_s: u64,
    pub fault_after_s: u64,
    pub clear_hold_s: u64,
    /// Per second; metrics absent or 0 are not checked.
    pub max_jump: BTreeMap<Metric, f64>,
    /// A technician's own limits by metric (custom `x_` metrics among them).
    pub thresholds: BTreeMap<Metric, Threshold>,
    /// `(start, end)` minutes of the local day; `start > end` spans midnight. Empty = always.
    pub opening_hours: Vec<(u16, u16)>,
    pub utc_offset_minutes: i32,
    /// `[from, to)` unix ms.
    pub maintenance: Vec<(i64, i64)>,
    pub update_every_s: u64,
    pub update_peak_step: f64,
}

impl Default for RulesConfig {
    fn default() -> Self {
        resolve(&RulesOverrides::default(), &RulesOverrides::default())
    }
}

/// The device's value, else the site's, else the default.
pub fn resolve(site: &RulesOverrides, device: &RulesOverrides) -> RulesConfig {
    use defaults as d;
    macro_rules! pick {
        ($f:ident, $default:expr) => {
            device
                .$f
                .clone()
                .or_else(|| site.$f.clone())
                .unwrap_or($default)
        };
    }
    let standard = pick!(standard, Standard::default());
    let mut limits: BTreeMap<Metric, f64> = standard.limits().iter().copied().collect();
    for o in [site, device] {
        for (m, v) in o.limits.iter().flatten() {
            if CONCENTRATIONS.contains(m) && v.is_finite() && *v > 0.0 {
                limits.insert(*m, *v);
            }
        }
    }
    let mut max_jump: BTreeMap<Metric, f64> = d::MAX_JUMP.into_iter().collect();
    for o in [site, device] {
        for (m, v) in o.max_jump.iter().flatten() {
            if !m.is_state() && v.is_finite() && *v >= 0.0 {
                max_jump.insert(*m, *v);
            }
        }
    }
    max_jump.retain(|_, v| *v > 0.0);
    let mut thresholds = BTreeMap::new();
    for o in [site, device] {
        for (m, t) in o.thresholds.iter().flatten() {
            if threshold_problem(m, t).is_none() {
                let t = Threshold {
                    above: t.above,
                    below: t.below,
                    after_s: t.after_s.unwrap_or(d::THRESHOLD_AFTER_S),
                };
                thresholds.insert(*m, t);
            }
        }
    }
    let utc_offset_minutes = pick!(utc_offset_minutes, d::UTC_OFFSET_MINUTES);
    let opening_hours = pick!(opening_hours, Vec::new())
        .iter()
        .filter_map(|s| parse_hours(s).ok())
        .collect();
    let maintenance = pick!(maintenance, Vec::new())
        .iter()
        .filter_map(|w| {
            let from = w.from.to_ms(utc_offset_minutes).ok()?;
            let to = w.to.to_ms(utc_offset_minutes).ok()?;
            (from < to).then_some((from, to))
        })
        .collect();
    let positive = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
    RulesConfig {
        standard,
        limits,
        window_s: pick!(window_s, d::WINDOW_S),
        eval_every_s: pick!(eval_every_s, d::EVAL_EVERY_S),
        raise_after: pick!(raise_after, d::RAISE_AFTER),
        clear_after: pick!(clear_after, d::CLEAR_AFTER),
        clear_fraction: pick!(clear_fraction, d::CLEAR_FRACTION),
        min_samples: pick!(min_samples, d::MIN_SAMPLES),
        reference_flow_m3_h: positive(device.reference_flow_m3_h.or(site.reference_flow_m3_h)),
        fan_min_current_a: pick!(fan_min_current_a, d::FAN_MIN_CURRENT_A),
        purifier_idle_after_s: pick!(purifier_idle_after_s, d::PURIFIER_IDLE_AFTER_S),
        purifier_min_current_a: pick!(purifier_min_current_a, d::PURIFIER_MIN_CURRENT_A),
        purifier_dirty_fraction: pick!(purifier_dirty_fraction, d::PURIFIER_DIRTY_FRACTION),
        purifier_baseline_a: positive(device.purifier_baseline_a.or(site.purifier_baseline_a)),
        baseline_learn_s: pick!(baseline_learn_s, d::BASELINE_LEARN_S),
        purifier_dirty_after_s: pick!(purifier_dirty_after_s, d::PURIFIER_DIRTY_AFTER_S),
        dirty_fume_factor: pick!(dirty_fume_factor, d::DIRTY_FUME_FACTOR),
        offline_after_s: pick!(offline_after_s, d::OFFLINE_AFTER_S),
        stuck_after_s: pick!(stuck_after_s, d::STUCK_AFTER_S),
        fault_after_s: pick!(fault_after_s, d::FAULT_AFTER_S),
        clear_hold_s: pick!(clear_hold_s, d::CLEAR_HOLD_S),
        max_jump,
        thresholds,
        opening_hours,
        utc_offset_minutes,
        maintenance,
        update_every_s: pick!(update_every_s, d::UPDATE_EVERY_S),
        update_peak_step: pick!(update_peak_step, d::UPDATE_PEAK_STEP),
    }
}

fn threshold_problem(m: &Metric, t: &ThresholdSpec) -> Option<String> {
    let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
    if m.is_state() {
        Some("on/off states are judged by the purifier rules, not by a threshold".into())
    } else if t.above.is_none() && t.below.is_none() {
        Some("needs `above`, `below` or both".into())
    } else if !finite(t.above) || !finite(t.below) {
        Some("`above` and `below` must be numbers".into())
    } else if let (Some(a), Some(b)) = (t.above, t.below)
        && b >= a
    {
        Some(format!("`below` ({b}) must be less than `above` ({a})"))
    } else if t.after_s.is_some_and(|s| s > 86_400) {
        Some("`after_s` must be between 0 and 86400 s".into())
    } else {
        None
    }
}

/// Records every problem of one table at `prefix.field` (`prefix` is `rules` or
/// `devices[3].rules`).
pub fn check(o: &RulesOverrides, doc: &mut Doc<'_>, prefix: &str) {
    let at = |f: &str| format!("{prefix}.{f}");
    let mut err = |f: &str, msg: String| doc.error(&at(f), msg);
    let min_u64 = |v: Option<u64>, min: u64| v.is_some_and(|v| v < min);
    for (key, v, min, max) in [
        ("window_s", o.window_s, 1, 86_400),
        ("eval_every_s", o.eval_every_s, 1, 3_600),
        ("purifier_idle_after_s", o.purifier_idle_after_s, 1, 86_400),
        ("baseline_learn_s", o.baseline_learn_s, 1, 30 * 86_400),
        (
            "purifier_dirty_after_s",
            o.purifier_dirty_after_s,
            0,
            7 * 86_400,
        ),
        ("offline_after_s", o.offline_after_s, 1, 7 * 86_400),
        ("stuck_after_s", o.stuck_after_s, 1, 7 * 86_400),
        ("fault_after_s", o.fault_after_s, 0, 86_400),
        ("clear_hold_s", o.clear_hold_s, 0, 86_400),
        ("update_every_s", o.update_every_s, 1, 86_400),
    ] {
        if min_u64(v, min) || v.is_some_and(|v| v > max) {
            err(key, format!("must be between {min} and {max} s"));
        }
    }
    for (key, v) in [
        ("raise_after", o.raise_after),
        ("clear_after", o.clear_after),
        ("min_samples", o.min_samples),
    ] {
        if v.is_some_and(|v| !(1..=10_000).contains(&v)) {
            err(key, "must be between 1 and 10000".into());
        }
    }
    let bad =
        |v: Option<f64>, ok: &dyn Fn(f64) -> bool| v.is_some_and(|v| !v.is_finite() || !ok(v));
    if bad(o.clear_fraction, &|v| v > 0.0 && v <= 1.0) {
        err("clear_fraction", "must be in (0, 1]".into());
    }
    if bad(o.purifier_dirty_fraction, &|v| v > 0.0 && v < 1.0) {
        err("purifier_dirty_fraction", "must be in (0, 1)".into());
    }
    if bad(o.dirty_fume_factor, &|v| v == 0.0 || v > 1.0) {
        err(
            "dirty_fume_factor",
            "must be 0 (off) or greater than 1".into(),
        );
    }
    if bad(o.update_peak_step, &|v| v > 0.0) {
        err("update_peak_step", "must be greater than 0".into());
    }
    for (key, v) in [
        ("reference_flow_m3_h", o.reference_flow_m3_h),
        ("fan_min_current_a", o.fan_min_current_a),
        ("purifier_min_current_a", o.purifier_min_current_a),
        ("purifier_baseline_a", o.purifier_baseline_a),
    ] {
        if bad(v, &|v| v >= 0.0) {
            err(key, "must be a number, 0 or more".into());
        }
    }
    for (m, v) in o.limits.iter().flatten() {
        let key = format!("limits.{m}");
        if !CONCENTRATIONS.contains(m) {
            err(
                &key,
                "limits apply to fume_mg_m3, particulate_mg_m3 and nmhc_mg_m3 only".into(),
            );
        } else if !v.is_finite() || *v <= 0.0 {
            err(&key, "must be greater than 0 (mg/m³)".into());
        }
    }
    for (m, v) in o.max_jump.iter().flatten() {
        let key = format!("max_jump.{m}");
        if m.is_custom() {
            err(
                &key,
                "no jump limit for custom `x_` metrics; name the metric in `thresholds` to judge it"
                    .into(),
            );
        } else if m.is_state() {
            err(&key, "on/off states have no jump limit".into());
        } else if !v.is_finite() || *v < 0.0 {
            err(&key, "must be 0 (no check) or more, per second".into());
        }
    }
    for (m, t) in o.thresholds.iter().flatten() {
        if let Some(why) = threshold_problem(m, t) {
            err(&format!("thresholds.{m}"), why);
        }
    }
    for (i, s) in o.opening_hours.iter().flatten().enumerate() {
        if let Err(e) = parse_hours(s) {
            err(&format!("opening_hours[{i}]"), e);
        }
    }
    if o.utc_offset_minutes
        .is_some_and(|v| !(-720..=840).contains(&v))
    {
        err("utc_offset_minutes", "must be between -720 and 840".into());
    }
    let offset = o.utc_offset_minutes.unwrap_or(defaults::UTC_OFFSET_MINUTES);
    for (i, w) in o.maintenance.iter().flatten().enumerate() {
        let from = w.from.to_ms(offset);
        let to = w.to.to_ms(offset);
        if let Err(e) = &from {
            err(&format!("maintenance[{i}].from"), e.clone());
        }
        if let Err(e) = &to {
            err(&format!("maintenance[{i}].to"), e.clone());
        }
        if let (Ok(f), Ok(t)) = (from, to)
            && f >= t
        {
            err(
                &format!("maintenance[{i}].to"),
                "must be after `from`".into(),
            );
        }
    }
}

/// Checks what only the resolved combination can get wrong, at `prefix`.
pub fn check_resolved(c: &RulesConfig, doc: &mut Doc<'_>, prefix: &str) {
    if c.eval_every_s > 0 && !c.window_s.is_multiple_of(c.eval_every_s) {
        doc.error(
            &format!("{prefix}.window_s"),
            format!(
                "window_s ({}) must be a multiple of eval_every_s ({})",
                c.window_s, c.eval_every_s
            ),
        );
    } else if c.eval_every_s > 0 && c.window_s / c.eval_every_s > MAX_WINDOW_STEPS {
        doc.error(
            &format!("{prefix}.eval_every_s"),
            format!(
                "window_s / eval_every_s must be at most {MAX_WINDOW_STEPS} (memory per device)"
            ),
        );
    }
    if c.standard == Standard::Custom && c.limits.is_empty() {
        doc.error(
            &format!("{prefix}.limits"),
            "standard = \"custom\" needs at least one limit, e.g. limits = { fume_mg_m3 = 1.5 }",
        );
    }
}

/// `"HH:MM-HH:MM"` → minutes of the day `(start, end)`; `24:00` only as an end.
pub fn parse_hours(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("`{s}` is not HH:MM-HH:MM (e.g. 10:30-14:00, 22:00-02:00)");
    let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
    let hm = |t: &str| -> Option<u16> {
        let (h, m) = t.trim().split_once(':')?;
        if h.len() != 2 || m.len() != 2 {
            return None;
        }
        let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
        (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
    };
    let (start, end) = (hm(a).ok_or_else(bad)?, hm(b).ok_or_else(bad)?);
    if start == 1440 {
        return Err(format!("`{s}`: 24:00 can only end a range"));
    }
    if start == end % 1440 {
        return Err(format!(
            "`{s}` is empty or a whole day: leave opening_hours empty to be always open"
        ));
    }
    Ok((start, end))
}

/// Parses an RFC 3339 date-time ([`fumegrid_common::datetime::parse`]; surrounding blanks are
/// ignored) into (ms as if UTC, offset minutes if written).
pub fn parse_rfc3339(s: &str) -> Result<(i64, Option<i32>), String> {
    let bad = |why: String| format!("`{s}`: {why} (expected e.g. 2025-03-01T22:00:00+08:00)");
    let w = datetime::parse(s.trim()).map_err(bad)?;
    let naive = w.naive_ms().map_err(bad)?;
    Ok((naive, w.offset_minutes()))
}

/// A `[rules]` table with every key at its default, for the printed default config.
pub const DEFAULT_RULES_TOML: &str = r#"# Alarm rules. Every key may also be set per device: rules = { window_s = 300, ... }
[rules]
standard = "gb18483_2001"         # gb18483_2001 (fume 2.0) | db11_1488_2018 (fume 1.0, particulate 5.0, NMHC 10.0) | custom
# limits = { fume_mg_m3 = 1.5 }   # mg/m3, over the standard's; required with "custom"
window_s = 600                    # rolling average of valid readings taken while the fan runs
eval_every_s = 60                 # the average is judged once per step
raise_after = 3                   # consecutive judgments over the limit that raise an exceedance
clear_after = 5                   # consecutive judgments under clear_fraction x limit that clear it
clear_fraction = 0.8
min_samples = 5                   # valid fan-on readings a judgment needs
# reference_flow_m3_h = 4000      # correct to a reference flow: C_ref = C x Q_measured / Q_ref (2000 per cooking head)
fan_min_current_a = 0.5           # without a fan_on point, the fan runs at or above this current
purifier_idle_after_s = 600       # fan on, purifier off this long: purifier_idle
purifier_min_current_a = 0.2      # below this the purifier counts as off
purifier_dirty_fraction = 0.6     # purifier current under this fraction of its clean baseline: purifier_dirty
# purifier_baseline_a = 1.5       # clean current; default: learned
baseline_learn_s = 3600           # purifier-running time over which the baselines are learned
purifier_dirty_after_s = 1800     # a dirty condition must hold this long
dirty_fume_factor = 2.0           # fume at this factor x its baseline (under the limit) while the purifier runs: dirty; 0 = off
offline_after_s = 300             # no valid response this long: device_offline
stuck_after_s = 1800              # same concentration value this long while the fan runs: sensor_fault
fault_after_s = 60                # a sensor fault must persist this long
clear_hold_s = 60                 # a sustained condition clears after being absent this long
max_jump = { fume_mg_m3 = 5.0, particulate_mg_m3 = 10.0, nmhc_mg_m3 = 20.0 }   # per second
opening_hours = []                # e.g. ["10:00-14:00", "17:00-22:00"]; empty = always open
utc_offset_minutes = 480
maintenance = []                  # e.g. [{ from = 2025-03-01T22:00:00+08:00, to = 2025-03-02T06:00:00+08:00 }]
update_every_s = 300              # an open alarm is updated at least this often
update_peak_step = 0.1            # ... and when its peak grew by this fraction
"#;
