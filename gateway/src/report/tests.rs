//! Unit and property tests of the report stage, with explicit time.

use std::collections::BTreeMap;

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase, Body, Period};
use proptest::prelude::*;

use super::config::{MetricReport, ReportConfig, Strategy as Kind};
use super::{CLOSE_GRACE_MS, DeviceReport};

/// 2023-11-14T22:13:20Z: 20 s into a minute.
const T0: i64 = 1_700_000_000_000;
const S: i64 = 1000;

fn reading(m: Metric, v: Option<f64>, q: Quality, t: i64) -> Reading {
    Reading {
        device: "d1".into(),
        unit: None,
        metric: m,
        value: v,
        quality: q,
        ts_ms: t,
    }
}

fn poll(t: i64, fume: f64) -> Vec<Reading> {
    vec![
        reading(Metric::FumeMgM3, Some(fume), Quality::Ok, t),
        reading(Metric::FanOn, Some(1.0), Quality::Ok, t),
    ]
}

fn periods(bodies: &[Body]) -> Vec<&Period> {
    bodies
        .iter()
        .filter_map(|b| match b {
            Body::Period(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn raw_count(bodies: &[Body]) -> usize {
    bodies
        .iter()
        .filter(|b| matches!(b, Body::Reading(_)))
        .count()
}

fn alarm(phase: AlarmPhase, t: i64) -> Alarm {
    Alarm {
        id: format!("d1:exceedance:fume_mg_m3:{T0}"),
        device: "d1".into(),
        kind: AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase,
        started_ms: T0,
        ts_ms: t,
        cleared_ms: (phase == AlarmPhase::Cleared).then_some(t),
        value: Some(3.0),
        peak: Some(3.0),
        peak_ms: Some(t),
        limit: Some(2.0),
        suppressed: false,
        message: String::new(),
    }
}

/// A full minute of 1-Hz polls is one period on the minute, with every aggregate, valid.
#[test]
fn a_minute_of_polls_is_one_aligned_valid_period() {
    let mut r = DeviceReport::new("d1", ReportConfig::default(), 1000);
    let start = (T0 / 60_000 + 1) * 60_000;
    let mut out = Vec::new();
    for i in 0..60 {
        out.extend(r.on_poll(&poll(start + i * S, 1.0 + i as f64), &[], start + i * S));
    }
    assert!(out.is_empty(), "nothing goes up inside the period: {out:?}");
    out.extend(r.on_tick(&[], start + 60 * S + CLOSE_GRACE_MS));
    let p = periods(&out);
    assert_eq!(p.len(), 1, "{out:?}");
    let p = p[0];
    assert_eq!(
        (p.start_ms, p.period_s, p.device.as_str()),
        (start, 60, "d1")
    );
    let fume = &p.metrics[0];
    assert_eq!(fume.metric, Metric::FumeMgM3);
    assert_eq!((fume.polls, fume.count), (60, 60));
    assert_eq!(
        (fume.avg, fume.min, fume.max, fume.last),
        (Some(30.5), Some(1.0), Some(60.0), Some(60.0))
    );
    assert!(fume.valid);
    assert_eq!(raw_count(&out), 0);
}

/// A minute of one value whose sum rounds (60 × 0.1 / 60 is not 0.1 in floating point): the
/// average stays inside min … max, which the aggregator checks (it refused the whole batch).
#[test]
fn an_average_of_equal_values_is_that_value() {
    let mut r = DeviceReport::new("d1", ReportConfig::default(), 1000);
    let start = (T0 / 60_000 + 1) * 60_000;
    let mut out = Vec::new();
    for i in 0..60 {
        out.extend(r.on_poll(&poll(start + i * S, 0.1), &[], start + i * S));
    }
    out.extend(r.on_tick(&[], start + 60 * S + CLOSE_GRACE_MS));
    let p = periods(&out);
    assert_eq!(p.len(), 1, "{out:?}");
    let fume = &p[0].metrics[0];
    assert_ne!(
        (0..60).map(|_| 0.1).sum::<f64>() / 60.0,
        0.1,
        "the sum does round"
    );
    assert_eq!(
        (fume.avg, fume.min, fume.max),
        (Some(0.1), Some(0.1), Some(0.1))
    );
}

/// `valid` needs `min_valid` of the expected polls valid: 45 of 60 is, 44 is not; readings
/// that are not ok count in `polls`, not in `count` or the aggregates.
#[test]
fn the_validity_flag_follows_min_valid_of_the_expected_polls() {
    for (ok, want) in [(45, true), (44, false)] {
        let mut r = DeviceReport::new("d1", ReportConfig::default(), 1000);
        let start = (T0 / 60_000 + 1) * 60_000;
        for i in 0..60 {
            let t = start + i * S;
            let q = if i < ok { Quality::Ok } else { Quality::Stale };
            let _ = r.on_poll(
                &[reading(Metric::FumeMgM3, Some(9.0 + i as f64), q, t)],
                &[],
                t,
            );
        }
        let out = r.on_tick(&[], start + 62 * S);
        let m = &periods(&out)[0].metrics[0];
        assert_eq!((m.polls, m.count, m.valid), (60, ok as u32, want), "{m:?}");
        assert_eq!(
            m.max,
            Some(9.0 + (ok - 1) as f64),
            "stale values are not aggregated"
        );
    }
    // Polled every 10 s: 6 expected, 5 valid (83 %) is enough.
    let mut r = DeviceReport::new("d1", ReportConfig::default(), 10_000);
    let start = (T0 / 60_000 + 1) * 60_000;
    for i in 0..5 {
        let _ = r.on_poll(&poll(start + i * 10 * S, 1.0), &[], start);
    }
    let out = r.on_tick(&[], start + 62 * S);
    assert!(periods(&out)[0].metrics[0].valid);
}

/// The tick does not close a period before its end plus the grace, so a late poll of its last
/// second still counts in it.
#[test]
fn a_period_waits_for_the_grace_before_it_closes() {
    let mut r = DeviceReport::new("d1", ReportConfig::default(), 1000);
    let start = (T0 / 60_000 + 1) * 60_000;
    let _ = r.on_poll(&poll(start, 1.0), &[], start);
    assert!(
        r.on_tick(&[], start + 60 * S + CLOSE_GRACE_MS - 1)
            .is_empty()
    );
    let _ = r.on_poll(&poll(start + 59_999, 1.0), &[], start + 61 * S);
    let out = r.on_tick(&[], start + 60 * S + CLOSE_GRACE_MS);
    assert_eq!(periods(&out)[0].metrics[0].polls, 2);
    // A poll of that period arriving after it was sent counts in the next one, never a
    // second period with the same start.
    let out = r.on_poll(&poll(start + 59_000, 1.0), &[], start + 63 * S);
    assert!(out.is_empty());
    assert_eq!(r.open_period_start(), Some(start + 60 * S));
}

/// Per-metric strategies: `raw` metrics go up every poll, `period` ones in the period, and
/// `on_change` ones when they move by more than the deadband or the heartbeat is due.
#[test]
fn strategies_mix_per_metric() {
    let cfg = ReportConfig {
        metrics: BTreeMap::from([
            (
                Metric::FanOn,
                MetricReport {
                    strategy: Kind::OnChange,
                    deadband: 0.0,
                    heartbeat_s: 30,
                },
            ),
            (
                Metric::FlowM3H,
                MetricReport {
                    strategy: Kind::Raw,
                    deadband: 0.0,
                    heartbeat_s: 300,
                },
            ),
            (
                Metric::TemperatureC,
                MetricReport {
                    strategy: Kind::OnChange,
                    deadband: 0.5,
                    heartbeat_s: 300,
                },
            ),
        ]),
        ..ReportConfig::default()
    };
    let mut r = DeviceReport::new("d1", cfg, 1000);
    let mut sent: Vec<(Metric, i64)> = Vec::new();
    for i in 0..100 {
        let t = T0 + i * S;
        let fan = if (40..50).contains(&i) { 0.0 } else { 1.0 };
        let temp = 20.0 + 0.1 * i as f64; // +0.1 per s: over the 0.5 deadband every 6 s
        let p = vec![
            reading(Metric::FumeMgM3, Some(1.0), Quality::Ok, t),
            reading(Metric::FanOn, Some(fan), Quality::Ok, t),
            reading(Metric::FlowM3H, Some(2000.0), Quality::Ok, t),
            reading(Metric::TemperatureC, Some(temp), Quality::Ok, t),
        ];
        for b in r.on_poll(&p, &[], t) {
            if let Body::Reading(x) = b {
                sent.push((x.metric, (x.ts_ms - T0) / S));
            }
        }
    }
    let at = |m: Metric| -> Vec<i64> { sent.iter().filter(|s| s.0 == m).map(|s| s.1).collect() };
    assert!(at(Metric::FumeMgM3).is_empty(), "fume is in the periods");
    assert_eq!(at(Metric::FlowM3H).len(), 100, "flow is raw");
    assert_eq!(
        at(Metric::FanOn),
        vec![0, 30, 40, 50, 80],
        "changes and heartbeats"
    );
    assert_eq!(
        at(Metric::TemperatureC),
        (0..100).step_by(6).collect::<Vec<_>>()
    );
}

/// Around an alarm: the withheld polls of the last `raw_before_s` go up at the raise, every
/// poll goes up raw while it is open and for `raw_after_s` after the clear, then periods only;
/// no reading goes up raw twice, and periods continue throughout.
#[test]
fn raw_window_before_the_raise_until_after_the_clear() {
    let cfg = ReportConfig {
        raw_before_s: 30,
        raw_after_s: 20,
        ..ReportConfig::default()
    };
    let mut r = DeviceReport::new("d1", cfg, 1000);
    let mut raw_ts: Vec<i64> = Vec::new();
    let mut polls_in_periods = 0;
    for i in 0..300 {
        let t = T0 + i * S;
        let alarms = match i {
            100 => vec![alarm(AlarmPhase::Raised, t)],
            150 => vec![alarm(AlarmPhase::Cleared, t)],
            _ => vec![],
        };
        let mut out = r.on_poll(&poll(t, 1.0), &alarms, t);
        out.extend(r.on_tick(&[], t));
        for b in &out {
            match b {
                Body::Reading(x) if x.metric == Metric::FumeMgM3 => raw_ts.push((x.ts_ms - T0) / S),
                Body::Period(p) => polls_in_periods += p.metrics[0].polls,
                _ => {}
            }
        }
    }
    let want: Vec<i64> = (70..170).collect();
    assert_eq!(
        raw_ts, want,
        "30 s before the raise to 20 s after the clear, each once"
    );
    let _ = r.on_tick(&[], T0 + 400 * S);
    assert!(
        polls_in_periods >= 240,
        "periods continue: {polls_in_periods}"
    );
    assert!(
        r.ring_len() <= 31,
        "the ring is bounded by raw_before_s: {}",
        r.ring_len()
    );
}

/// A suppressed alarm (closed hours, maintenance) opens no raw window.
#[test]
fn a_suppressed_alarm_opens_no_raw_window() {
    let mut r = DeviceReport::new("d1", ReportConfig::default(), 1000);
    let _ = r.on_poll(&poll(T0, 1.0), &[], T0);
    let mut a = alarm(AlarmPhase::Raised, T0 + S);
    a.suppressed = true;
    let out = r.on_poll(&poll(T0 + S, 1.0), &[a], T0 + S);
    assert_eq!(raw_count(&out), 0);
}

/// `raw` for the whole device is the v1 behaviour: every reading as it came, nothing else.
#[test]
fn raw_sends_every_reading_as_it_came() {
    let mut r = DeviceReport::new("d1", ReportConfig::raw(), 1000);
    let p = poll(T0, 1.0);
    let out = r.on_poll(&p, &[], T0);
    assert_eq!(out, p.into_iter().map(Body::Reading).collect::<Vec<_>>());
    assert!(r.on_tick(&[], T0 + 600 * S).is_empty());
}

/// A restart continues the open period (saved mid-way), and a changed period length sends the
/// saved period as it was and starts the next one on a boundary of the new length.
#[test]
fn save_and_restore_continue_the_open_period() {
    let start = (T0 / 60_000 + 1) * 60_000;
    let mut r = DeviceReport::new("d1", ReportConfig::default(), 1000);
    for i in 0..30 {
        let _ = r.on_poll(&poll(start + i * S, 1.0), &[], start + i * S);
    }
    let saved = r.save();
    let (mut back, sent) =
        DeviceReport::restore("d1", ReportConfig::default(), 1000, &saved).expect("restores");
    assert!(sent.is_empty());
    for i in 30..60 {
        let _ = back.on_poll(&poll(start + i * S, 1.0), &[], start + i * S);
    }
    let out = back.on_tick(&[], start + 62 * S);
    assert_eq!(periods(&out)[0].metrics[0].polls, 60);

    let ten = ReportConfig {
        period_s: 600,
        ..ReportConfig::default()
    };
    let (mut changed, sent) = DeviceReport::restore("d1", ten, 1000, &saved).expect("restores");
    assert_eq!(
        periods(&sent)[0].metrics[0].polls,
        30,
        "the old period, as it was"
    );
    let _ = changed.on_poll(&poll(start + 40 * S, 1.0), &[], start + 40 * S);
    let next = changed.open_period_start().expect("open");
    assert_eq!(next % 600_000, 0);
    assert!(next >= start + 60 * S);
    assert!(DeviceReport::restore("d2", ReportConfig::default(), 1000, &saved).is_err());
}

#[derive(Debug, Clone)]
enum Step {
    /// A poll `gap` ms after the previous one, stamped `late` ms before it reaches the stage,
    /// with these qualities of its two metrics.
    Poll {
        gap: i64,
        late: i64,
        ok: (bool, bool),
    },
    /// A tick `gap` ms after the previous step.
    Tick { gap: i64 },
}

fn step() -> impl proptest::strategy::Strategy<Value = Step> {
    prop_oneof![
        4 => (1i64..5_000, 0i64..CLOSE_GRACE_MS, any::<(bool, bool)>())
            .prop_map(|(gap, late, ok)| Step::Poll { gap, late, ok }),
        1 => (1i64..200_000).prop_map(|gap| Step::Tick { gap }),
    ]
}

proptest! {
    /// Every poll counts in exactly one period (polls and valid counts add up), periods are
    /// aligned, sent once each, in order, and a poll delayed less than the grace lands in the
    /// period that holds its time stamp.
    #[test]
    fn every_poll_counts_in_exactly_one_aligned_period(
        steps in proptest::collection::vec(step(), 1..400),
        period_s in prop::sample::select(vec![10u32, 30, 60, 300]),
        offset in 0i64..600_000,
    ) {
        let cfg = ReportConfig { period_s, ..ReportConfig::default() };
        let p_ms = i64::from(period_s) * 1000;
        let mut r = DeviceReport::new("d1", cfg, 1000);
        let mut now = T0 + offset;
        let (mut polls, mut valid) = (0u32, 0u32);
        let mut out = Vec::new();
        // Each poll's stamp, and whether it came in order (no earlier stamp seen after it).
        let mut placed: Vec<(i64, bool)> = Vec::new();
        let mut newest = i64::MIN;
        for s in steps {
            match s {
                Step::Poll { gap, late, ok } => {
                    now += gap;
                    let ts = now - late;
                    let q = |b: bool| if b { Quality::Ok } else { Quality::DeviceError };
                    let p = vec![
                        reading(Metric::FumeMgM3, ok.0.then_some(1.0), q(ok.0), ts),
                        reading(Metric::FlowM3H, ok.1.then_some(2.0), q(ok.1), ts),
                    ];
                    polls += 2;
                    valid += u32::from(ok.0) + u32::from(ok.1);
                    placed.push((ts, ts >= newest));
                    newest = newest.max(ts);
                    out.extend(r.on_poll(&p, &[], now));
                }
                Step::Tick { gap } => {
                    now += gap;
                    out.extend(r.on_tick(&[], now));
                }
            }
        }
        out.extend(r.on_tick(&[], now + p_ms + CLOSE_GRACE_MS));
        let ps = periods(&out);
        prop_assert_eq!(raw_count(&out), 0);
        let sum_polls: u32 = ps.iter().flat_map(|p| &p.metrics).map(|m| m.polls).sum();
        let sum_count: u32 = ps.iter().flat_map(|p| &p.metrics).map(|m| m.count).sum();
        prop_assert_eq!(sum_polls, polls);
        prop_assert_eq!(sum_count, valid);
        for w in ps.windows(2) {
            prop_assert!(w[0].start_ms + p_ms <= w[1].start_ms, "in order, never overlapping");
        }
        for p in &ps {
            prop_assert_eq!(p.start_ms % p_ms, 0);
            prop_assert_eq!(p.period_s, period_s);
            for m in &p.metrics {
                prop_assert!(m.count <= m.polls);
                prop_assert_eq!(m.avg.is_some(), m.count > 0);
                if let (Some(avg), Some(min), Some(max), Some(last)) = (m.avg, m.min, m.max, m.last) {
                    // What the aggregator's check_period refuses otherwise.
                    prop_assert!(min <= avg && avg <= max, "avg {} outside {} … {}", avg, min, max);
                    prop_assert!(min <= last && last <= max);
                }
            }
        }
        // A poll that reaches the stage within the grace and in order lands in the period
        // holding its stamp (one stamped before a newer poll may find its period closed).
        let holding = |ts: i64| ps.iter().any(|p| (p.start_ms..p.start_ms + p_ms).contains(&ts));
        for (ts, in_order) in placed {
            prop_assert!(!in_order || holding(ts), "poll at {} not in its period", ts);
        }
    }
}
