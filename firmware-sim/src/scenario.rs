//! Scenarios: what a simulated monitor measures, as pure functions of scenario time `t` (seconds).
//!
//! Every value is deterministic: the small "noise" on a reading is a hash of `(floor(t), metric)`,
//! so two processes (the simulator and a test computing expectations) agree exactly. States
//! (`fan_on`, `purifier_on`) are 0.0 or 1.0. Runtime counters (`*_runtime_h`) start at 1000 h
//! (purifier) and 1200 h (fan) at `t = 0` and grow by 1 h per scenario hour while their unit runs.
//!
//! The baseline, "normal cooking service" ([`Scenario::Normal`]), for every `t`:
//!
//! | metric | value |
//! |---|---|
//! | `fume_mg_m3` | 0.55 + 0.15·sin(2πt/600) ± 0.02 → 0.38..0.72 (always < 1.0) |
//! | `particulate_mg_m3` | 1.5 + 0.3·sin(2πt/900 + 1) ± 0.05 → 1.15..1.85 |
//! | `nmhc_mg_m3` | 4.0 + 0.6·sin(2πt/1200 + 2) ± 0.1 → 3.3..4.7 |
//! | `fan_on`, `purifier_on` | 1, 1 |
//! | `fan_current_a` | 3.2 ± 0.05 |
//! | `purifier_current_a` | 1.5 ± 0.02 |
//! | `flow_m3_h` | 6000 ± 100 |
//! | `temperature_c` | 35 + 2·sin(2πt/1800) ± 0.3 |
//! | `humidity_pct` | 50 + 5·sin(2πt/2400 + 0.5) ± 1 |
//!
//! Each other scenario is the baseline with the changes its doc comment lists. Event times are
//! the constants of this module ([`EVENT_START_S`], ...).

use std::f64::consts::TAU;
use std::fmt;
use std::str::FromStr;

use fumegrid_common::metric::Metric;

/// When every scenario's event starts (fault, exceedance, purifier off ...), scenario seconds.
pub const EVENT_START_S: f64 = 60.0;
/// Exceedance: length of the ramp up (from [`EVENT_START_S`]) and of the ramp down (from
/// [`EXCEEDANCE_END_S`]).
pub const EXCEEDANCE_RAMP_S: f64 = 30.0;
/// Exceedance: the plateau ends here (60 s + 1800 s); normal again from 1890 s.
pub const EXCEEDANCE_END_S: f64 = EVENT_START_S + 1800.0;
/// Degradation: the decline runs from t = 0 to this time, then holds.
pub const DEGRADATION_S: f64 = 3600.0;
/// Stuck: the fume sensor's constant reading from [`EVENT_START_S`] on (exact in f32 and in
/// integer registers with scale 0.01, 0.1 or 1).
pub const STUCK_FUME_MG_M3: f64 = 0.5;
/// Out of range: the fume sensor's reading from [`EVENT_START_S`] on; outside any sane `valid`.
pub const OUT_OF_RANGE_FUME_MG_M3: f64 = 9999.0;

/// A named timeline of a monitor's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Normal cooking service, all day: fan and purifier on, fume well under 1.0 mg/m³ (max 0.72).
    Normal,
    /// Fume exceedance. Baseline until 60 s; fume ramps linearly over 60..90 s to a plateau of
    /// 2.58..3.42 mg/m³ (baseline + 2.45 ± 0.25) held until 1860 s, ramps down over 1860..1890 s,
    /// baseline from 1890 s. Hence fume > 2.0 for t in [90, 1860] and < 1.0 for t < 60 or
    /// t ≥ 1890. Particulate (+3.0 → ~4.5) and NMHC (+6.0 → ~10) rise with the same envelope.
    /// Fan and purifier stay on.
    Exceedance,
    /// Purifier switched off while cooking (只装不用). Baseline until 60 s; from 60 s on
    /// `purifier_on` = 0 and `purifier_current_a` = 0 (the purifier runtime counter stops) while the
    /// fan stays on at 3.2 A. Fume stays at baseline so that only the idle-purifier rule fires.
    PurifierOff,
    /// Dirty purifier (只用不洗). From t = 0 to 3600 s the purifier current declines linearly
    /// 1.5 → 0.4 A and fume rises linearly 0.5 → 1.8 mg/m³ (± 2 %); both hold after 3600 s.
    /// Particulate rises by up to 80 % along. Fan and purifier stay on.
    Degradation,
    /// Stuck fume sensor. Baseline until 60 s; from 60 s fume reads exactly 0.5 mg/m³ forever
    /// (no noise) while the fan runs and every other metric keeps moving.
    Stuck,
    /// Broken fume sensor. Baseline until 60 s; from 60 s fume reads 9999 mg/m³ (integer
    /// registers saturate, e.g. u16 × 0.01 → 655.35), outside any sane valid range.
    OutOfRange,
    /// Restaurant closed: fan and purifier off, currents and flow 0, fume 0.05, particulate 0.3,
    /// NMHC 2.0 (all ± a little), 22 °C, 55 %. Runtime counters stand still.
    Closed,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Normal,
        Scenario::Exceedance,
        Scenario::PurifierOff,
        Scenario::Degradation,
        Scenario::Stuck,
        Scenario::OutOfRange,
        Scenario::Closed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Normal => "normal",
            Scenario::Exceedance => "exceedance",
            Scenario::PurifierOff => "purifier_off",
            Scenario::Degradation => "degradation",
            Scenario::Stuck => "stuck",
            Scenario::OutOfRange => "out_of_range",
            Scenario::Closed => "closed",
        }
    }

    /// One line for `fumegrid-sim scenarios`.
    pub fn description(self) -> &'static str {
        match self {
            Scenario::Normal => {
                "normal cooking service: fan and purifier on, fume 0.38..0.72 mg/m3 (never >= 1.0)"
            }
            Scenario::Exceedance => {
                "fume ramps up at 60 s to 2.6..3.4 mg/m3 (> 2.0 during 90..1860 s), normal again from 1890 s"
            }
            Scenario::PurifierOff => {
                "from 60 s the purifier is off (purifier_on 0, 0 A) while the fan keeps running"
            }
            Scenario::Degradation => {
                "over 0..3600 s purifier current falls 1.5 -> 0.4 A while fume rises 0.5 -> 1.8 mg/m3"
            }
            Scenario::Stuck => "from 60 s the fume sensor reads exactly 0.5 mg/m3 forever, fan on",
            Scenario::OutOfRange => "from 60 s the fume sensor reads 9999 mg/m3 (sensor fault)",
            Scenario::Closed => "restaurant closed: fan and purifier off, low background readings",
        }
    }

    /// Every metric of [`Metric::ALL`] at scenario time `t_secs`, in that order.
    pub fn values_at(&self, t_secs: f64) -> Vec<(Metric, f64)> {
        Metric::ALL
            .into_iter()
            .map(|m| (m, self.value(m, t_secs)))
            .collect()
    }

    /// One metric at scenario time `t`.
    pub fn value(&self, metric: Metric, t: f64) -> f64 {
        let base = baseline(metric, t);
        let after = t >= EVENT_START_S;
        match (self, metric) {
            (Scenario::Normal, _) => base,

            (Scenario::Exceedance, Metric::FumeMgM3) => {
                base + exceedance_envelope(t) * (2.45 + 0.25 * (TAU * t / 300.0).sin())
            }
            (Scenario::Exceedance, Metric::ParticulateMgM3) => base + exceedance_envelope(t) * 3.0,
            (Scenario::Exceedance, Metric::NmhcMgM3) => base + exceedance_envelope(t) * 6.0,
            (Scenario::Exceedance, _) => base,

            (Scenario::PurifierOff, Metric::PurifierOn | Metric::PurifierCurrentA) if after => 0.0,
            (Scenario::PurifierOff, Metric::PurifierRuntimeH) => {
                1000.0 + t.clamp(0.0, EVENT_START_S) / 3600.0
            }
            (Scenario::PurifierOff, _) => base,

            (Scenario::Degradation, Metric::PurifierCurrentA) => {
                (1.5 - 1.1 * degradation_fraction(t)) + 0.01 * noise(t, metric)
            }
            (Scenario::Degradation, Metric::FumeMgM3) => {
                (0.5 + 1.3 * degradation_fraction(t)) * (1.0 + 0.02 * noise(t, metric))
            }
            (Scenario::Degradation, Metric::ParticulateMgM3) => {
                base * (1.0 + 0.8 * degradation_fraction(t))
            }
            (Scenario::Degradation, _) => base,

            (Scenario::Stuck, Metric::FumeMgM3) if after => STUCK_FUME_MG_M3,
            (Scenario::Stuck, _) => base,

            (Scenario::OutOfRange, Metric::FumeMgM3) if after => OUT_OF_RANGE_FUME_MG_M3,
            (Scenario::OutOfRange, _) => base,

            (Scenario::Closed, m) => closed(m, t),
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    /// Accepts the names of [`Scenario::name`]; `-` may stand for `_` (`purifier-off`).
    fn from_str(s: &str) -> Result<Scenario, String> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name() == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!(
                    "unknown scenario `{s}`, expected one of: {}",
                    names.join(", ")
                )
            })
    }
}

/// 0 before 60 s, ramps to 1 over 60..90 s, 1 until 1860 s, ramps to 0 over 1860..1890 s.
pub fn exceedance_envelope(t: f64) -> f64 {
    let up = ((t - EVENT_START_S) / EXCEEDANCE_RAMP_S).clamp(0.0, 1.0);
    let down = 1.0 - ((t - EXCEEDANCE_END_S) / EXCEEDANCE_RAMP_S).clamp(0.0, 1.0);
    up.min(down)
}

fn degradation_fraction(t: f64) -> f64 {
    (t / DEGRADATION_S).clamp(0.0, 1.0)
}

fn baseline(m: Metric, t: f64) -> f64 {
    let n = noise(t, m);
    let wave = |period: f64, phase: f64| (TAU * t / period + phase).sin();
    match m {
        Metric::FumeMgM3 => 0.55 + 0.15 * wave(600.0, 0.0) + 0.02 * n,
        Metric::ParticulateMgM3 => 1.5 + 0.3 * wave(900.0, 1.0) + 0.05 * n,
        Metric::NmhcMgM3 => 4.0 + 0.6 * wave(1200.0, 2.0) + 0.1 * n,
        Metric::FanOn | Metric::PurifierOn => 1.0,
        Metric::FanCurrentA => 3.2 + 0.05 * n,
        Metric::PurifierCurrentA => 1.5 + 0.02 * n,
        Metric::FlowM3H => 6000.0 + 100.0 * n,
        Metric::TemperatureC => 35.0 + 2.0 * wave(1800.0, 0.0) + 0.3 * n,
        Metric::HumidityPct => 50.0 + 5.0 * wave(2400.0, 0.5) + n,
        Metric::PurifierRuntimeH => 1000.0 + t.max(0.0) / 3600.0,
        Metric::FanRuntimeH => 1200.0 + t.max(0.0) / 3600.0,
        // A vendor extra: a counter that grows like run hours (a whole number of hours, so
        // that any integer register type holds it exactly).
        Metric::Custom(_) => CUSTOM_BASE + (t.max(0.0) / 3600.0).floor(),
    }
}

/// Where the simulator's `x_` metrics start counting.
pub const CUSTOM_BASE: f64 = 5000.0;

fn closed(m: Metric, t: f64) -> f64 {
    let n = noise(t, m);
    match m {
        Metric::FumeMgM3 => 0.05 + 0.005 * n,
        Metric::ParticulateMgM3 => 0.3 + 0.02 * n,
        Metric::NmhcMgM3 => 2.0 + 0.05 * n,
        Metric::FanOn | Metric::PurifierOn => 0.0,
        Metric::FanCurrentA | Metric::PurifierCurrentA | Metric::FlowM3H => 0.0,
        Metric::TemperatureC => 22.0 + 0.2 * n,
        Metric::HumidityPct => 55.0 + n,
        Metric::PurifierRuntimeH => 1000.0,
        Metric::FanRuntimeH => 1200.0,
        Metric::Custom(_) => CUSTOM_BASE + (t.max(0.0) / 3600.0).floor(),
    }
}

/// Deterministic noise in [-1, 1]: a hash (splitmix64) of the whole second and the metric.
pub fn noise(t: f64, m: Metric) -> f64 {
    let sec = t.floor() as i64 as u64;
    let idx = Metric::ALL.iter().position(|x| *x == m).unwrap_or(0) as u64;
    let mut z = sec ^ (idx + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // 53 high bits → [0, 1) → [-1, 1)
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fume(s: Scenario, t: f64) -> f64 {
        s.value(Metric::FumeMgM3, t)
    }

    #[test]
    fn names_parse_back() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        assert_eq!("purifier-off".parse(), Ok(Scenario::PurifierOff));
        let e = "nope".parse::<Scenario>().expect_err("unknown");
        assert!(e.contains("exceedance"), "{e}");
    }

    #[test]
    fn normal_never_reaches_one_over_a_day() {
        for s in 0..86_400 {
            let t = f64::from(s);
            let v = Scenario::Normal.values_at(t);
            let get = |m: Metric| v.iter().find(|(x, _)| *x == m).map(|(_, v)| *v);
            let f = get(Metric::FumeMgM3).unwrap_or(f64::NAN);
            assert!((0.3..1.0).contains(&f), "t={t} fume={f}");
            assert_eq!(get(Metric::FanOn), Some(1.0));
            assert_eq!(get(Metric::PurifierOn), Some(1.0));
        }
    }

    #[test]
    fn values_cover_every_metric_in_order() {
        let v = Scenario::Exceedance.values_at(100.0);
        let ms: Vec<Metric> = v.iter().map(|(m, _)| *m).collect();
        assert_eq!(ms, Metric::ALL.to_vec());
    }

    #[test]
    fn exceedance_window() {
        let s = Scenario::Exceedance;
        for i in 0..=(2 * 3600) {
            let t = f64::from(i);
            let f = fume(s, t);
            if (90.0..=EXCEEDANCE_END_S).contains(&t) {
                assert!(f > 2.0 && (2.5..=3.5).contains(&f), "t={t} fume={f}");
                assert!(s.value(Metric::ParticulateMgM3, t) > 4.0);
            }
            if !(EVENT_START_S..EXCEEDANCE_END_S + EXCEEDANCE_RAMP_S).contains(&t) {
                assert!(f < 1.0, "t={t} fume={f}");
            }
        }
    }

    #[test]
    fn stuck_is_one_exact_constant() {
        let s = Scenario::Stuck;
        for i in 60..5000 {
            let t = f64::from(i) + 0.37;
            assert_eq!(fume(s, t), STUCK_FUME_MG_M3);
            assert_eq!(s.value(Metric::FanOn, t), 1.0);
        }
        assert_ne!(fume(s, 10.0), fume(s, 11.0), "moves before the fault");
    }

    #[test]
    fn purifier_off_and_out_of_range() {
        let p = Scenario::PurifierOff;
        assert_eq!(p.value(Metric::PurifierOn, 59.0), 1.0);
        assert_eq!(p.value(Metric::PurifierOn, 60.0), 0.0);
        assert_eq!(p.value(Metric::PurifierCurrentA, 600.0), 0.0);
        assert_eq!(p.value(Metric::FanOn, 600.0), 1.0);
        assert_eq!(
            p.value(Metric::PurifierRuntimeH, 600.0),
            p.value(Metric::PurifierRuntimeH, 6000.0)
        );
        assert_eq!(fume(Scenario::OutOfRange, 61.0), 9999.0);
        assert!(fume(Scenario::OutOfRange, 59.0) < 1.0);
    }

    #[test]
    fn degradation_declines_and_rises() {
        let d = Scenario::Degradation;
        let i0 = d.value(Metric::PurifierCurrentA, 0.0);
        let i1 = d.value(Metric::PurifierCurrentA, 3600.0);
        assert!(
            (i0 - 1.5).abs() < 0.02 && (i1 - 0.4).abs() < 0.02,
            "{i0} {i1}"
        );
        let f0 = fume(d, 0.0);
        let f1 = fume(d, 3600.0);
        assert!(
            (f0 - 0.5).abs() < 0.02 && (f1 - 1.8).abs() < 0.05,
            "{f0} {f1}"
        );
    }

    #[test]
    fn deterministic_and_counters_grow() {
        for s in Scenario::ALL {
            assert_eq!(s.values_at(1234.5), s.values_at(1234.5));
        }
        let n = Scenario::Normal;
        assert!(n.value(Metric::FanRuntimeH, 7200.0) > n.value(Metric::FanRuntimeH, 3600.0));
        let a = noise(10.2, Metric::FumeMgM3);
        assert_eq!(a, noise(10.9, Metric::FumeMgM3));
        assert!((-1.0..=1.0).contains(&a));
    }
}
