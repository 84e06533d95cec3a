//! Unit and property tests of the pure engine, with explicit time.

use fumegrid_common::diag::{Doc, Source};
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase};
use proptest::prelude::*;

use super::config::{self, RulesConfig, RulesOverrides, Standard};
use super::{DeviceRules, RulesError};

/// 2023-11-14T22:13:20Z, a Tuesday 06:13 in Beijing.
const T0: i64 = 1_700_000_000_000;
const S: i64 = 1000;
const MIN: i64 = 60 * S;

fn reading(m: Metric, v: f64, t: i64) -> Reading {
    Reading {
        device: "d1".into(),
        unit: None,
        metric: m,
        value: Some(v),
        quality: Quality::Ok,
        ts_ms: t,
    }
}

/// One poll of a monitor with fan and purifier states, purifier current and fume.
fn poll(t: i64, fume: f64, fan: bool, purifier: bool) -> Vec<Reading> {
    vec![
        reading(Metric::FanOn, f64::from(u8::from(fan)), t),
        reading(Metric::PurifierOn, f64::from(u8::from(purifier)), t),
        reading(
            Metric::PurifierCurrentA,
            if purifier { 1.5 } else { 0.0 },
            t,
        ),
        // A real sensor never repeats a value exactly for long (that would be stuck).
        reading(Metric::FumeMgM3, fume * (1.0 + 0.001 * noise(t / S)), t),
    ]
}

/// Polls every `every` ms in `[from, to)`, each followed by a tick.
fn run(
    rules: &mut DeviceRules,
    from: i64,
    to: i64,
    every: i64,
    f: impl Fn(i64) -> Vec<Reading>,
) -> Vec<Alarm> {
    let mut out = Vec::new();
    let mut t = from;
    while t < to {
        out.extend(rules.on_poll(&f(t), t));
        out.extend(rules.on_tick(t));
        t += every;
    }
    out
}

fn of(alarms: &[Alarm], kind: AlarmKind, phase: AlarmPhase) -> Vec<&Alarm> {
    alarms
        .iter()
        .filter(|a| a.kind == kind && a.phase == phase)
        .collect()
}

/// Deterministic noise in [-1, 1) from an integer.
fn noise(i: i64) -> f64 {
    let mut z = (i as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

fn default_rules() -> DeviceRules {
    DeviceRules::new("d1", RulesConfig::default())
}

fn with(o: RulesOverrides) -> RulesConfig {
    config::resolve(&RulesOverrides::default(), &o)
}

#[test]
fn no_alarm_for_a_spike_shorter_than_the_window() {
    let mut r = default_rules();
    // One minute at 4× the limit inside a quiet 0.5 mg/m³ service: the 10-min average peaks
    // at (8 + 9 × 0.5) / 10 = 1.25.
    let spike = T0 + 30 * MIN..T0 + 31 * MIN;
    let alarms = run(&mut r, T0, T0 + 2 * 60 * MIN, 10 * S, |t| {
        poll(t, if spike.contains(&t) { 8.0 } else { 0.5 }, true, true)
    });
    assert!(alarms.is_empty(), "{alarms:#?}");

    // The same level held for 20 minutes is an exceedance: the test can fail.
    let mut r = default_rules();
    let long = T0 + 30 * MIN..T0 + 50 * MIN;
    let alarms = run(&mut r, T0, T0 + 2 * 60 * MIN, 10 * S, |t| {
        poll(t, if long.contains(&t) { 8.0 } else { 0.5 }, true, true)
    });
    assert_eq!(
        of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised).len(),
        1
    );
}

#[test]
fn long_exceedance_with_noise_around_the_limit_is_one_episode() {
    let mut r = default_rules();
    let (start, end) = (T0 + 30 * MIN, T0 + 150 * MIN);
    // Around the limit: a slow ±0.3 wave and ±1.0 per-reading noise on 2.05 mg/m³, so the
    // 10-min average wanders over and under 2.0 but never under 0.8 × 2.0.
    let level = |t: i64| {
        if (start..end).contains(&t) {
            let wave = 0.3 * (std::f64::consts::TAU * (t - start) as f64 / (40 * MIN) as f64).sin();
            2.05 + wave + noise(t / S)
        } else {
            0.5 + 0.05 * noise(t / S)
        }
    };
    let alarms = run(&mut r, T0, T0 + 240 * MIN, 10 * S, |t| {
        poll(t, level(t), true, true)
    });
    let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
    let cleared = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Cleared);
    assert_eq!((raised.len(), cleared.len()), (1, 1), "{alarms:#?}");
    assert_eq!(raised[0].id, cleared[0].id);
    assert_eq!(
        raised[0].id,
        format!("d1:exceedance:fume_mg_m3:{}", raised[0].started_ms)
    );
    assert!(raised[0].started_ms >= start && raised[0].started_ms < start + 30 * MIN);
    assert!(raised[0].ts_ms >= raised[0].started_ms + 2 * MIN);
    // Cleared once the window is clean (10 min) and 5 judgments under 1.6 mg/m³ went by.
    let c = cleared[0].cleared_ms.unwrap_or_default();
    assert!(
        c > end && c <= end + 16 * MIN,
        "cleared {} min after the end",
        (c - end) / MIN
    );
    assert_eq!(raised[0].limit, Some(2.0));
    assert!(
        raised[0].message.starts_with("10-min average fume 2.")
            && raised[0]
                .message
                .ends_with("mg/m³ over the 2.0 limit (GB 18483-2001), fan on"),
        "{}",
        raised[0].message
    );
    let peak = cleared[0].peak.unwrap_or_default();
    assert!(peak > 2.0 && peak < 3.0, "{peak}");
    // Updates are bounded: about one per update_every_s, plus a few as the peak grows.
    let updates = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Updated).len();
    assert!((10..=40).contains(&updates), "{updates} updates");
    assert!(
        alarms
            .iter()
            .all(|a| a.kind == AlarmKind::Exceedance && !a.suppressed)
    );
}

#[test]
fn no_exceedance_is_judged_while_the_fan_is_off() {
    let mut r = default_rules();
    // Fume at 5 mg/m³ for two hours with the fan off: nothing is exhausted, nothing judged.
    let alarms = run(&mut r, T0, T0 + 120 * MIN, 10 * S, |t| {
        poll(t, 5.0, false, false)
    });
    assert!(alarms.is_empty(), "{alarms:#?}");
    // The fan starts: after the window fills and three judgments, it is raised.
    let alarms = run(&mut r, T0 + 120 * MIN, T0 + 140 * MIN, 10 * S, |t| {
        poll(t, 5.0, true, true)
    });
    let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    assert!(
        raised[0].ts_ms <= T0 + 124 * MIN,
        "judged on fan-on readings only"
    );
    // The fan stops mid-episode: the episode clears after a whole window without fan-on data
    // plus clear_after steps, and no other alarm comes from the fan-off readings.
    let alarms = run(&mut r, T0 + 140 * MIN, T0 + 180 * MIN, 10 * S, |t| {
        poll(t, 5.0, false, false)
    });
    let cleared = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Cleared);
    assert_eq!(cleared.len(), 1, "{alarms:#?}");
    assert!(
        cleared[0].message.contains("fan off"),
        "{}",
        cleared[0].message
    );
    assert!(of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised).is_empty());
}

#[test]
fn fan_state_falls_back_to_fan_current() {
    let mut r = default_rules();
    let p = |t: i64, amps: f64| {
        vec![
            reading(Metric::FanCurrentA, amps, t),
            reading(Metric::FumeMgM3, 5.0, t),
        ]
    };
    assert!(run(&mut r, T0, T0 + 60 * MIN, 10 * S, |t| p(t, 0.1)).is_empty());
    let alarms = run(&mut r, T0 + 60 * MIN, T0 + 80 * MIN, 10 * S, |t| p(t, 3.2));
    assert_eq!(
        of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised).len(),
        1
    );
}

#[test]
fn purifier_idle_after_the_configured_time_and_not_before() {
    let mut r = default_rules();
    let off_at = T0 + 10 * MIN;
    let p = |t: i64| poll(t, 0.5, true, t < off_at);
    let before = run(&mut r, T0, off_at + 10 * MIN, S, p);
    assert!(before.is_empty(), "{before:#?}");
    let at = run(&mut r, off_at + 10 * MIN, off_at + 10 * MIN + S, S, p);
    assert_eq!(at.len(), 1, "{at:#?}");
    assert_eq!(
        (at[0].kind, at[0].phase, at[0].started_ms, at[0].ts_ms),
        (
            AlarmKind::PurifierIdle,
            AlarmPhase::Raised,
            off_at,
            off_at + 10 * MIN
        )
    );
    assert_eq!(at[0].id, format!("d1:purifier_idle:{off_at}"));
    assert!(at[0].message.contains("installed but not used"));
    // Purifier back on: cleared after clear_hold_s (60 s), not before.
    let on_at = off_at + 30 * MIN;
    let rest = run(&mut r, off_at + 10 * MIN + S, on_at + 5 * MIN, S, |t| {
        poll(t, 0.5, true, t >= on_at)
    });
    let cleared = of(&rest, AlarmKind::PurifierIdle, AlarmPhase::Cleared);
    assert_eq!(cleared.len(), 1);
    assert_eq!(cleared[0].cleared_ms, Some(on_at + 60 * S));
    assert_eq!(
        of(&rest, AlarmKind::PurifierIdle, AlarmPhase::Raised).len(),
        0
    );
    // Short flickers of the purifier do not restart the idle timer.
    let mut r = default_rules();
    let flicker = |t: i64| poll(t, 0.5, true, (t - T0) % (5 * MIN) == 0);
    let alarms = run(&mut r, T0, T0 + 11 * MIN, S, flicker);
    let raised = of(&alarms, AlarmKind::PurifierIdle, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    assert_eq!(raised[0].started_ms, T0 + S);
}

#[test]
fn purifier_idle_needs_the_fan_running() {
    let mut r = default_rules();
    let alarms = run(&mut r, T0, T0 + 60 * MIN, 5 * S, |t| {
        poll(t, 0.05, false, false)
    });
    assert!(alarms.is_empty(), "{alarms:#?}");
}

#[test]
fn purifier_dirty_from_a_declining_current() {
    let cfg = with(RulesOverrides {
        baseline_learn_s: Some(600),
        purifier_dirty_after_s: Some(600),
        ..Default::default()
    });
    let mut r = DeviceRules::new("d1", cfg);
    // Current falls from 1.5 A by 0.1 A every 10 min; fume stays low.
    let p = |t: i64| {
        let amps = 1.5 - 0.1 * ((t - T0) / (10 * MIN)) as f64;
        vec![
            reading(Metric::FanOn, 1.0, t),
            reading(Metric::PurifierOn, 1.0, t),
            reading(Metric::PurifierCurrentA, amps, t),
            reading(Metric::FumeMgM3, 0.5 + 0.01 * noise(t), t),
        ]
    };
    // Until 130 min: from there the current is under purifier_min_current_a, the purifier off.
    let alarms = run(&mut r, T0, T0 + 130 * MIN, 10 * S, p);
    assert_eq!(r.purifier_baseline_a(), Some(1.5));
    let raised = of(&alarms, AlarmKind::PurifierDirty, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    // Under 0.9 A (60 % of 1.5) from 70 min (0.8 A, window full at ~70 min), held 10 min.
    assert!(
        (T0 + 69 * MIN..=T0 + 72 * MIN).contains(&raised[0].started_ms),
        "{}",
        (raised[0].started_ms - T0) / MIN
    );
    assert_eq!(raised[0].ts_ms - raised[0].started_ms, 10 * MIN);
    assert!(raised[0].message.contains("used but not cleaned"));
    assert!((raised[0].limit.unwrap_or_default() - 0.9).abs() < 1e-9);
    let kinds: Vec<_> = alarms
        .iter()
        .map(|a| (a.kind, a.phase, (a.ts_ms - T0) / MIN))
        .collect();
    assert_eq!(
        alarms.len(),
        raised.len() + of(&alarms, AlarmKind::PurifierDirty, AlarmPhase::Updated).len(),
        "{kinds:?}"
    );
}

#[test]
fn device_offline_raises_after_silence_and_clears_on_the_first_answer() {
    let mut r = default_rules();
    let mut out = run(&mut r, T0, T0 + MIN, S, |t| poll(t, 0.5, true, true));
    let last = T0 + MIN - S;
    // Polls fail: readings of quality device_error, and ticks.
    let failed = |t: i64| {
        vec![Reading {
            device: "d1".into(),
            unit: None,
            metric: Metric::FumeMgM3,
            value: None,
            quality: Quality::DeviceError,
            ts_ms: t,
        }]
    };
    out.extend(run(&mut r, T0 + MIN, last + 300 * S, S, failed));
    assert!(of(&out, AlarmKind::DeviceOffline, AlarmPhase::Raised).is_empty());
    out.extend(r.on_tick(last + 300 * S));
    let raised = of(&out, AlarmKind::DeviceOffline, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1);
    assert_eq!(
        (raised[0].started_ms, raised[0].ts_ms),
        (last, last + 300 * S)
    );
    let back = r.on_poll(&poll(last + 400 * S, 0.5, true, true), last + 400 * S);
    assert_eq!(back.len(), 1);
    assert_eq!(
        (back[0].phase, back[0].id.as_str(), back[0].cleared_ms),
        (
            AlarmPhase::Cleared,
            raised[0].id.as_str(),
            Some(last + 400 * S)
        )
    );
}

#[test]
fn gateway_downtime_is_not_device_silence() {
    let mut r = default_rules();
    run(&mut r, T0, T0 + MIN, S, |t| poll(t, 0.5, true, true));
    let bytes = r.save();
    // The gateway was down for two hours; it ticks before the first poll answers.
    let mut r = DeviceRules::restore("d1", RulesConfig::default(), &bytes).expect("restores");
    let later = T0 + 120 * MIN;
    assert!(r.on_tick(later).is_empty());
    let out = run(&mut r, later, later + 10 * MIN, S, |t| {
        poll(t, 0.5, true, true)
    });
    assert!(out.is_empty(), "{out:#?}");
}

#[test]
fn sensor_fault_out_of_range_stuck_and_jumps() {
    let cfg = with(RulesOverrides {
        fault_after_s: Some(30),
        stuck_after_s: Some(600),
        ..Default::default()
    });
    // Out of range for 30 s.
    let mut r = DeviceRules::new("d1", cfg.clone());
    let bad_from = T0 + MIN;
    let alarms = run(&mut r, T0, T0 + 5 * MIN, S, |t| {
        let mut p = poll(t, 0.5, true, true);
        if t >= bad_from {
            p[3].value = Some(9999.0);
            p[3].quality = Quality::OutOfRange;
        }
        p
    });
    let raised = of(&alarms, AlarmKind::SensorFault, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    assert_eq!(
        (raised[0].metric, raised[0].started_ms, raised[0].ts_ms),
        (Some(Metric::FumeMgM3), bad_from, bad_from + 30 * S)
    );
    assert!(
        raised[0].message.contains("valid range"),
        "{}",
        raised[0].message
    );
    assert!(of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised).is_empty());

    // Stuck at exactly 0.7 while the fan runs: faulty after 600 s, raised 30 s later.
    let mut r = DeviceRules::new("d1", cfg.clone());
    let frozen = T0 + MIN;
    let alarms = run(&mut r, T0, T0 + 30 * MIN, S, |t| {
        let mut p = poll(t, 0.5, true, true);
        if t >= frozen {
            p[3].value = Some(0.7);
        }
        p
    });
    let raised = of(&alarms, AlarmKind::SensorFault, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    assert_eq!(raised[0].started_ms, frozen + 600 * S);
    assert_eq!(raised[0].ts_ms, frozen + 630 * S);
    assert!(raised[0].message.contains("stuck"), "{}", raised[0].message);

    // The same constant with the fan off is not stuck.
    let mut r = DeviceRules::new("d1", cfg.clone());
    let alarms = run(&mut r, T0, T0 + 60 * MIN, S, |t| {
        poll(t, 0.05, false, false)
    });
    assert!(alarms.is_empty(), "{alarms:#?}");

    // Impossible jumps every few seconds for a minute; a single one is not raised.
    let mut r = DeviceRules::new("d1", cfg.clone());
    let alarms = run(&mut r, T0, T0 + 10 * MIN, S, |t| {
        let spike = t == T0 + MIN;
        poll(t, if spike { 40.0 } else { 0.5 }, true, true)
    });
    assert!(alarms.is_empty(), "one spike: {alarms:#?}");
    let mut r = DeviceRules::new("d1", cfg);
    let jumpy = T0 + MIN..T0 + 3 * MIN;
    let alarms = run(&mut r, T0, T0 + 10 * MIN, S, |t| {
        let spike = jumpy.contains(&t) && (t / S) % 5 == 0;
        poll(t, if spike { 40.0 } else { 0.5 }, true, true)
    });
    let raised = of(&alarms, AlarmKind::SensorFault, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    assert!(
        raised[0].message.contains("jumped"),
        "{}",
        raised[0].message
    );
    assert_eq!(
        of(&alarms, AlarmKind::SensorFault, AlarmPhase::Cleared).len(),
        1
    );
}

/// Vendor extras (`x_` metrics) are not judged unless a threshold names them: out of range,
/// stuck or jumping, they raise nothing, and naming one in `max_jump` is a config error at its
/// line that points to `thresholds`.
#[test]
fn custom_metrics_are_ignored_by_the_rules() {
    let cfg = with(RulesOverrides {
        fault_after_s: Some(30),
        stuck_after_s: Some(60),
        ..Default::default()
    });
    let x = Metric::parse("x_status_word").expect("valid");
    let mut r = DeviceRules::new("d1", cfg);
    let alarms = run(&mut r, T0, T0 + 30 * MIN, S, |t| {
        let mut p = poll(t, 0.5, true, true);
        // Jumps between 0 and 65535 every poll, and is out of range half the time.
        let wild = if (t / S) % 2 == 0 { 0.0 } else { 65535.0 };
        let mut extra = reading(x, wild, t);
        extra.unit = Some("code".into());
        if wild > 0.0 {
            extra.quality = Quality::OutOfRange;
        }
        p.push(extra);
        // And a second one stuck at one value.
        let mut stuck = reading(Metric::parse("x_fixed").expect("valid"), 7.0, t);
        stuck.unit = Some("code".into());
        p.push(stuck);
        p
    });
    assert!(alarms.is_empty(), "{alarms:#?}");

    let (_, diags) = check_text("[rules]\nwindow_s = 600\nmax_jump = { x_status_word = 1.0 }\n");
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(
        (diags[0].0, diags[0].1.as_str()),
        (3, "rules.max_jump.x_status_word")
    );
    assert!(diags[0].2.contains("thresholds"), "{}", diags[0].2);
}

/// A threshold names a vendor `x_` metric: a valid reading above it for `after_s` raises one
/// `threshold` episode with the metric, value, bound and unit; readings that are not valid
/// neither raise nor clear it; back inside for `clear_hold_s` clears it. The rest of the rules
/// do not change (same exceedance episodes with and without the threshold).
#[test]
fn a_threshold_judges_a_custom_metric_and_nothing_else_changes() {
    let x = Metric::parse("x_oil_temp_c").expect("valid");
    let temp = |t: i64| -> f64 {
        // 60 °C, 95 °C from minute 10 to minute 20, 60 °C again.
        if (10 * MIN..20 * MIN).contains(&(t - T0)) {
            95.0
        } else {
            60.0
        }
    };
    let polls = |t: i64| {
        let mut p = poll(t, if t - T0 > 40 * MIN { 6.0 } else { 0.5 }, true, true);
        let mut r = reading(x, temp(t), t);
        r.unit = Some("°C".into());
        // Every 7th poll the vendor value is garbage: never judged either way.
        if (t / S) % 7 == 0 {
            r.quality = Quality::OutOfRange;
            r.value = Some(-1.0);
        }
        p.push(r);
        p
    };
    let cfg = with(RulesOverrides {
        thresholds: Some(
            [(
                x,
                config::ThresholdSpec {
                    above: Some(90.0),
                    below: Some(5.0),
                    after_s: Some(120),
                },
            )]
            .into(),
        ),
        ..Default::default()
    });
    let mut r = DeviceRules::new("d1", cfg);
    let alarms = run(&mut r, T0, T0 + 60 * MIN, S, polls);
    let raised = of(&alarms, AlarmKind::Threshold, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1, "{alarms:#?}");
    let a = raised[0];
    assert_eq!(
        (a.metric, a.limit, a.value),
        (Some(x), Some(90.0), Some(95.0))
    );
    assert_eq!(a.started_ms, T0 + 10 * MIN);
    assert_eq!(a.ts_ms, T0 + 12 * MIN, "raised after after_s = 120 s");
    assert_eq!(a.id, format!("d1:threshold:x_oil_temp_c:{}", T0 + 10 * MIN));
    assert!(
        a.message.contains("95 °C, above its threshold of 90 °C"),
        "{}",
        a.message
    );
    let cleared = of(&alarms, AlarmKind::Threshold, AlarmPhase::Cleared);
    assert_eq!(cleared.len(), 1, "{alarms:#?}");
    assert_eq!(
        cleared[0].ts_ms,
        T0 + 21 * MIN,
        "clears after clear_hold_s (60 s) inside"
    );

    // The same polls without the threshold give the same other episodes.
    let mut plain = DeviceRules::new("d1", RulesConfig::default());
    let others = run(&mut plain, T0, T0 + 60 * MIN, S, polls);
    let not_threshold: Vec<_> = alarms
        .iter()
        .filter(|a| a.kind != AlarmKind::Threshold)
        .cloned()
        .collect();
    assert!(others.iter().any(|a| a.kind == AlarmKind::Exceedance));
    assert_eq!(not_threshold, others);

    // A restart in the middle of the episode keeps it (one raise in all).
    let mut r = DeviceRules::new("d1", r.config().clone());
    let first = run(&mut r, T0, T0 + 15 * MIN, S, polls);
    let saved = r.save();
    let mut r = DeviceRules::restore("d1", r.config().clone(), &saved).expect("restore");
    let rest = run(&mut r, T0 + 15 * MIN, T0 + 30 * MIN, S, polls);
    let raises = first
        .iter()
        .chain(&rest)
        .filter(|a| a.kind == AlarmKind::Threshold && a.phase == AlarmPhase::Raised)
        .count();
    assert_eq!(raises, 1);
    assert_eq!(
        of(&rest, AlarmKind::Threshold, AlarmPhase::Cleared).len(),
        1
    );
}

/// A state saved before thresholds existed still restores.
#[test]
fn a_state_saved_without_thresholds_restores() {
    let mut r = default_rules();
    run(&mut r, T0, T0 + 5 * MIN, S, |t| poll(t, 0.5, true, true));
    let mut v: serde_json::Value = serde_json::from_slice(&r.save()).expect("json");
    v["state"]
        .as_object_mut()
        .expect("state")
        .remove("thresholds");
    let bytes = serde_json::to_vec(&v).expect("json");
    DeviceRules::restore("d1", RulesConfig::default(), &bytes).expect("older state restores");
}

/// Every way to write a threshold wrong is reported at its key.
#[test]
fn thresholds_are_checked_at_their_key() {
    let text = "[rules]\nthresholds = { x_a = {}, x_b = { above = 1.0, below = 2.0 }, \
                fan_on = { below = 0.5 }, x_c = { above = 1.0, after_s = 100000 }, \
                x_ok = { below = -3.5 } }\n";
    let (o, diags) = check_text(text);
    let fields: Vec<&str> = diags.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(
        fields,
        [
            "rules.thresholds.fan_on",
            "rules.thresholds.x_a",
            "rules.thresholds.x_b",
            "rules.thresholds.x_c"
        ],
        "{diags:#?}"
    );
    assert!(diags.iter().all(|d| d.0 == 2), "{diags:#?}");
    let cfg = config::resolve(&o, &RulesOverrides::default());
    let ok = Metric::parse("x_ok").expect("valid");
    assert_eq!(cfg.thresholds.keys().collect::<Vec<_>>(), [&ok]);
    assert_eq!(
        cfg.thresholds[&ok].after_s,
        config::defaults::THRESHOLD_AFTER_S
    );
}

#[test]
fn restart_in_the_middle_of_an_episode_keeps_one_episode() {
    for gap in [0, 30 * S, 3 * 60 * MIN] {
        let cfg = RulesConfig::default();
        let mut r = DeviceRules::new("d1", cfg.clone());
        let high = T0 + 10 * MIN..T0 + 80 * MIN;
        let level = |t: i64| if high.contains(&t) { 3.0 } else { 0.5 };
        let mut alarms = run(&mut r, T0, T0 + 40 * MIN, 10 * S, |t| {
            poll(t, level(t), true, true)
        });
        assert_eq!(r.open_episodes().len(), 1);
        let bytes = r.save();
        drop(r);
        let mut r = DeviceRules::restore("d1", cfg, &bytes).expect("restores");
        assert_eq!(r.open_episodes().len(), 1);
        // Time continues (after `gap` of gateway downtime, shifting the rest of the day).
        let shifted = |t: i64| level(t - gap);
        alarms.extend(run(
            &mut r,
            T0 + 40 * MIN + gap,
            T0 + 150 * MIN + gap,
            10 * S,
            |t| poll(t, shifted(t), true, true),
        ));
        let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
        let cleared = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Cleared);
        assert_eq!(
            (raised.len(), cleared.len()),
            (1, 1),
            "gap {gap}: {alarms:#?}"
        );
        assert_eq!(raised[0].id, cleared[0].id);
        assert!(
            alarms.iter().all(|a| a.kind == AlarmKind::Exceedance),
            "gap {gap}: {alarms:#?}"
        );
    }
}

#[test]
fn unusable_state_is_an_error_and_the_device_starts_fresh() {
    let cfg = RulesConfig::default();
    assert!(matches!(
        DeviceRules::restore("d1", cfg.clone(), b"{not json"),
        Err(RulesError::Decode(_))
    ));
    assert!(matches!(
        DeviceRules::restore("d1", cfg.clone(), br#"{"version":99}"#),
        Err(RulesError::Version { found: 99 })
    ));
    let other = DeviceRules::new("d2", cfg.clone()).save();
    assert!(matches!(
        DeviceRules::restore("d1", cfg.clone(), &other),
        Err(RulesError::Device { .. })
    ));
    let (r, err) = DeviceRules::restore_or_new("d1", cfg.clone(), Some(b"garbage"));
    assert!(err.is_some());
    assert!(r.open_episodes().is_empty());
    let (_, err) = DeviceRules::restore_or_new("d1", cfg, None);
    assert!(err.is_none());
    let v: serde_json::Value =
        serde_json::from_slice(&default_rules().save()).expect("state is JSON");
    assert_eq!(v["version"], 1);
}

#[test]
fn a_changed_window_restarts_the_window_but_keeps_episodes() {
    let mut r = default_rules();
    run(&mut r, T0, T0 + 40 * MIN, 10 * S, |t| {
        poll(t, 3.0, true, true)
    });
    let cfg = with(RulesOverrides {
        window_s: Some(300),
        ..Default::default()
    });
    let mut r = DeviceRules::restore("d1", cfg, &r.save()).expect("restores");
    assert_eq!(r.open_episodes().len(), 1);
    let alarms = run(&mut r, T0 + 40 * MIN, T0 + 60 * MIN, 10 * S, |t| {
        poll(t, 3.0, true, true)
    });
    assert!(of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised).is_empty());
}

#[test]
fn suppressed_outside_opening_hours_then_a_normal_alarm_when_they_begin() {
    // Open 10:00-22:00 Beijing time; T0 is 06:13 there.
    let cfg = with(RulesOverrides {
        opening_hours: Some(vec!["10:00-22:00".into()]),
        ..Default::default()
    });
    let mut r = DeviceRules::new("d1", cfg);
    let opens = T0 + (3 * 60 + 46) * MIN + 40 * S; // 10:00 local
    let alarms = run(&mut r, T0, opens + 30 * MIN, 10 * S, |t| {
        poll(t, 3.0, true, true)
    });
    let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
    let cleared = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Cleared);
    assert_eq!((raised.len(), cleared.len()), (2, 1), "{alarms:#?}");
    assert!(raised[0].suppressed && cleared[0].suppressed);
    assert_eq!(cleared[0].id, raised[0].id);
    assert_eq!(cleared[0].cleared_ms, Some(opens));
    assert!(!raised[1].suppressed);
    assert_eq!(raised[1].started_ms, opens);
    assert_ne!(raised[1].id, raised[0].id);
}

#[test]
fn maintenance_window_suppresses() {
    let cfg = with(RulesOverrides {
        maintenance: Some(vec![config::MaintenanceWindow {
            from: config::TimeSpec::Text("2023-11-15T06:00:00+08:00".into()),
            to: config::TimeSpec::Ms(T0 + 60 * MIN),
        }]),
        ..Default::default()
    });
    assert_eq!(
        cfg.maintenance,
        vec![(T0 - 13 * MIN - 20 * S, T0 + 60 * MIN)]
    );
    let mut r = DeviceRules::new("d1", cfg);
    let off_at = T0 + 5 * MIN;
    let alarms = run(&mut r, T0, T0 + 30 * MIN, 10 * S, |t| {
        poll(t, 0.5, true, t < off_at)
    });
    let raised = of(&alarms, AlarmKind::PurifierIdle, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1);
    assert!(raised[0].suppressed);
    let alarms = run(&mut r, T0 + 30 * MIN, T0 + 70 * MIN, 10 * S, |t| {
        poll(t, 0.5, true, false)
    });
    assert_eq!(
        of(&alarms, AlarmKind::PurifierIdle, AlarmPhase::Cleared).len(),
        1
    );
    let raised = of(&alarms, AlarmKind::PurifierIdle, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1);
    assert!(!raised[0].suppressed);
    assert_eq!(raised[0].started_ms, T0 + 60 * MIN);
}

#[test]
fn flow_correction_to_the_reference_flow() {
    let cfg = with(RulesOverrides {
        reference_flow_m3_h: Some(4000.0),
        ..Default::default()
    });
    let p = |t: i64, flow: f64| {
        let mut p = poll(t, 1.5, true, true);
        p.push(reading(Metric::FlowM3H, flow, t));
        p
    };
    // 1.5 mg/m³ at twice the reference flow is 3.0 at the reference flow.
    let mut r = DeviceRules::new("d1", cfg.clone());
    let alarms = run(&mut r, T0, T0 + 30 * MIN, 10 * S, |t| p(t, 8000.0));
    let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1);
    assert!((raised[0].value.unwrap_or_default() - 3.0).abs() < 0.01);
    assert!(
        raised[0].message.contains("4000 m³/h"),
        "{}",
        raised[0].message
    );
    let mut r = DeviceRules::new("d1", cfg);
    assert!(run(&mut r, T0, T0 + 30 * MIN, 10 * S, |t| p(t, 4000.0)).is_empty());
}

#[test]
fn standards_set_limits_and_custom_overrides() {
    let db = with(RulesOverrides {
        standard: Some(Standard::Db11),
        ..Default::default()
    });
    assert_eq!(db.limits.get(&Metric::FumeMgM3), Some(&1.0));
    assert_eq!(db.limits.get(&Metric::NmhcMgM3), Some(&10.0));
    let mut r = DeviceRules::new("d1", db);
    let alarms = run(&mut r, T0, T0 + 30 * MIN, 10 * S, |t| {
        let mut p = poll(t, 0.5, true, true);
        p.push(reading(Metric::NmhcMgM3, 12.0, t));
        p
    });
    let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
    assert_eq!(raised.len(), 1);
    assert_eq!(raised[0].metric, Some(Metric::NmhcMgM3));
    assert!(raised[0].message.contains("DB11/1488-2018"));
}

#[test]
fn window_memory_is_bounded() {
    let mut r = default_rules();
    run(&mut r, T0, T0 + 24 * 60 * MIN, 10 * S, |t| {
        poll(t, 0.5, true, true)
    });
    assert_eq!(r.st.window.closed.len(), 10);
    // A day of silence is skipped in bounded work.
    r.on_tick(T0 + 400 * 24 * 60 * MIN);
    assert!(r.st.window.closed.len() <= 10);
}

// ---- config ----

fn check_text(text: &str) -> (RulesOverrides, Vec<(usize, String, String)>) {
    let src = Source::new("gw.toml", text);
    let mut doc = Doc::new(&src);
    let o: RulesOverrides = doc.section("rules", false).unwrap_or_default();
    config::check(&o, &mut doc, "rules");
    config::check_resolved(
        &config::resolve(&o, &RulesOverrides::default()),
        &mut doc,
        "rules",
    );
    let d = doc
        .diags
        .iter()
        .map(|d| (d.line, d.field.clone(), d.message.clone()))
        .collect();
    (o, d)
}

#[test]
fn default_rules_toml_is_valid_and_is_the_defaults() {
    let (o, diags) = check_text(config::DEFAULT_RULES_TOML);
    assert!(diags.is_empty(), "{diags:?}");
    assert_eq!(
        config::resolve(&o, &RulesOverrides::default()),
        RulesConfig::default()
    );
}

#[test]
fn check_reports_every_problem_at_its_line_and_field() {
    let text = "[rules]\nclear_fraction = 1.5\nwindow_s = 600\neval_every_s = 70\n\
                limits = { fume_mg_m3 = -1, fan_on = 1 }\nopening_hours = [\"10:00-14:00\", \"25:00-26:00\"]\n\
                maintenance = [{ from = 2025-03-01T22:00:00+08:00, to = \"2025-03-01T21:00:00+08:00\" }, { from = \"yesterday\", to = 5 }]\n\
                utc_offset_minutes = 2000\nmax_jump = { fan_on = 1.0 }\n";
    let (_, diags) = check_text(text);
    let fields: Vec<(usize, &str)> = diags.iter().map(|(l, f, _)| (*l, f.as_str())).collect();
    for want in [
        (2, "rules.clear_fraction"),
        (5, "rules.limits.fume_mg_m3"),
        (5, "rules.limits.fan_on"),
        (6, "rules.opening_hours[1]"),
        (7, "rules.maintenance[0].to"),
        (7, "rules.maintenance[1].from"),
        (8, "rules.utc_offset_minutes"),
        (9, "rules.max_jump.fan_on"),
        (3, "rules.window_s"),
    ] {
        assert!(fields.contains(&want), "{want:?} missing in {diags:#?}");
    }
    assert_eq!(diags.len(), 9, "{diags:#?}");
}

#[test]
fn unknown_keys_and_custom_without_limits_are_refused() {
    let (_, diags) = check_text("[rules]\nwindow = 600\n");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].1, "rules.window");
    assert!(diags[0].2.contains("unknown field"), "{}", diags[0].2);
    let (_, diags) = check_text("[rules]\nstandard = \"custom\"\n");
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].1, "rules.limits");
    let (_, diags) = check_text("[rules]\nstandard = \"gb\"\n");
    assert!(diags[0].2.contains("gb18483_2001"), "{}", diags[0].2);
}

#[test]
fn device_overrides_win_over_site_over_defaults() {
    let site = RulesOverrides {
        window_s: Some(300),
        limits: Some([(Metric::NmhcMgM3, 8.0)].into_iter().collect()),
        opening_hours: Some(vec!["10:00-14:00".into()]),
        ..Default::default()
    };
    let device = RulesOverrides {
        window_s: Some(120),
        limits: Some([(Metric::FumeMgM3, 1.5)].into_iter().collect()),
        opening_hours: Some(vec![]),
        ..Default::default()
    };
    let c = config::resolve(&site, &device);
    assert_eq!(c.window_s, 120);
    assert_eq!(c.eval_every_s, 60);
    assert_eq!(c.limits.get(&Metric::FumeMgM3), Some(&1.5));
    assert_eq!(c.limits.get(&Metric::NmhcMgM3), Some(&8.0));
    assert!(c.opening_hours.is_empty());
    assert_eq!(
        config::resolve(&site, &RulesOverrides::default()).window_s,
        300
    );
}

#[test]
fn rfc3339_and_hours_parse() {
    let p = config::parse_rfc3339;
    assert_eq!(p("1970-01-01T00:00:00Z"), Ok((0, Some(0))));
    assert_eq!(p("2023-11-14T22:13:20Z"), Ok((T0, Some(0))));
    assert_eq!(
        p("2023-11-15T06:13:20+08:00").map(|(ms, o)| ms - i64::from(o.unwrap_or(0)) * MIN),
        Ok(T0)
    );
    assert_eq!(p("2023-11-14T22:13:20.5z"), Ok((T0 + 500, Some(0))));
    assert_eq!(p("2024-02-29 12:00"), Ok((1_709_208_000_000, None)));
    assert_eq!(
        p("2024-03-01T00:00:00-01:30"),
        Ok((1_709_251_200_000, Some(-90)))
    );
    assert_eq!(p("1969-12-31T23:59:59Z"), Ok((-1000, Some(0))));
    for bad in [
        "",
        "2023-02-29T00:00:00Z",
        "2023-13-01",
        "2023-11-14T24:00:00Z",
        "2023-11-14T10:00Z+",
        "yesterday",
        "2023-11-14T10:00:00+0800",
    ] {
        assert!(p(bad).is_err(), "{bad}");
    }
    assert_eq!(config::parse_hours("10:30-14:00"), Ok((630, 840)));
    assert_eq!(config::parse_hours("22:00-02:00"), Ok((1320, 120)));
    assert_eq!(config::parse_hours("17:00-24:00"), Ok((1020, 1440)));
    for bad in [
        "10-14",
        "10:00-10:00",
        "00:00-24:00",
        "24:00-02:00",
        "9:00-10:00",
    ] {
        assert!(config::parse_hours(bad).is_err(), "{bad}");
    }
}

// ---- properties ----

fn short_cfg() -> RulesConfig {
    with(RulesOverrides {
        window_s: Some(10),
        eval_every_s: Some(1),
        ..Default::default()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// However the readings wander while at or above 85 % of the limit, a long exceedance is
    /// at most one episode, and exactly one `cleared` follows when the fume comes down.
    #[test]
    fn hysteresis_keeps_one_episode(
        levels in proptest::collection::vec(1.7f64..4.0, 30..400),
    ) {
        let mut r = DeviceRules::new("d1", short_cfg());
        let mut alarms = run(&mut r, T0, T0 + 20 * S, S, |t| poll(t, 0.5, true, true));
        let start = T0 + 20 * S;
        let n = levels.len() as i64;
        alarms.extend(run(&mut r, start, start + n * S, S, |t| {
            poll(t, levels[((t - start) / S) as usize], true, true)
        }));
        alarms.extend(run(&mut r, start + n * S, start + (n + 60) * S, S, |t| poll(t, 0.5, true, true)));
        let raised = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Raised);
        let cleared = of(&alarms, AlarmKind::Exceedance, AlarmPhase::Cleared);
        prop_assert!(raised.len() <= 1);
        prop_assert_eq!(raised.len(), cleared.len());
        if let (Some(a), Some(b)) = (raised.first(), cleared.first()) {
            prop_assert_eq!(&a.id, &b.id);
        }
        prop_assert!(r.open_episodes().is_empty());
    }

    /// A spike shorter than the window whose excess over the background fits under the limit
    /// over one window never raises, however high it is.
    #[test]
    fn short_spike_within_budget_never_raises(
        tens in 1i64..60,
        at_s in 0i64..3600,
    ) {
        let cfg = with(RulesOverrides { max_jump: Some([(Metric::FumeMgM3, 0.0)].into_iter().collect()), ..Default::default() });
        let mut r = DeviceRules::new("d1", cfg);
        // Background 0.5: the window (600 s) can absorb 600 × 1.5 mg/m³·s of excess.
        // Polls every 10 s: each sample of the spike stands for 10 s.
        let spike_s = tens * 10;
        let height = 0.5 + 0.95 * 600.0 * 1.5 / spike_s as f64;
        let from = T0 + 600 * S + at_s * S;
        let alarms = run(&mut r, T0, T0 + 2 * 3600 * S, 10 * S, |t| {
            poll(t, if (from..from + spike_s * S).contains(&t) { height } else { 0.5 }, true, true)
        });
        prop_assert!(alarms.is_empty(), "{:#?}", alarms);
    }

    /// Saving and restoring at any moment (without downtime) changes nothing.
    #[test]
    fn save_and_restore_is_invisible(
        levels in proptest::collection::vec(0.0f64..4.0, 60..300),
        fan in proptest::collection::vec(any::<bool>(), 60..300),
        split in 0usize..300,
    ) {
        let p = |t: i64| {
            let i = ((t - T0) / S) as usize;
            let on = fan[(i / 20) % fan.len()] || i.is_multiple_of(3);
            poll(t, levels[(i / 4) % levels.len()], on, on && !i.is_multiple_of(7))
        };
        let end = T0 + 600 * S;
        let mut straight = DeviceRules::new("d1", short_cfg());
        let all = run(&mut straight, T0, end, S, p);
        let cut = T0 + (split as i64) * S;
        let mut first = DeviceRules::new("d1", short_cfg());
        let mut parts = run(&mut first, T0, cut, S, p);
        let mut second = DeviceRules::restore("d1", short_cfg(), &first.save()).expect("restores");
        parts.extend(run(&mut second, cut, end, S, p));
        prop_assert_eq!(all, parts);
    }
}
