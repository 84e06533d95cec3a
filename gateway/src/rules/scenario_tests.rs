//! The simulator's scenarios through the engine, with the short-window config end-to-end tests
//! use: each yields exactly its intended episodes, the normal day and the closed restaurant
//! none.

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase};
use fumegrid_sim::scenario::{self, Scenario};

use super::DeviceRules;
use super::config::{self, RulesConfig, RulesOverrides};

const T0: i64 = 1_700_000_000_000;

/// Short windows for a time-compressed simulator: 10-s average judged every second.
pub(super) fn short_config() -> RulesConfig {
    config::resolve(
        &RulesOverrides::default(),
        &RulesOverrides {
            window_s: Some(10),
            eval_every_s: Some(1),
            purifier_idle_after_s: Some(120),
            baseline_learn_s: Some(60),
            purifier_dirty_after_s: Some(300),
            offline_after_s: Some(10),
            stuck_after_s: Some(120),
            fault_after_s: Some(10),
            clear_hold_s: Some(10),
            update_every_s: Some(60),
            ..Default::default()
        },
    )
}

/// The readings a gateway would decode at scenario time `t` (valid ranges as in
/// `generic-f32-input.toml`).
pub(super) fn readings(s: Scenario, t: f64, ts_ms: i64) -> Vec<Reading> {
    s.values_at(t)
        .into_iter()
        .map(|(metric, v)| {
            let valid = match metric {
                Metric::FumeMgM3 | Metric::ParticulateMgM3 => 0.0..=50.0,
                Metric::NmhcMgM3 => 0.0..=100.0,
                _ => f64::MIN..=f64::MAX,
            };
            Reading {
                device: "d1".into(),
                unit: None,
                metric,
                value: Some(v),
                quality: if valid.contains(&v) {
                    Quality::Ok
                } else {
                    Quality::OutOfRange
                },
                ts_ms,
            }
        })
        .collect()
}

/// One poll per scenario second over `[0, secs)`, each followed by a tick.
fn play(s: Scenario, secs: u32) -> Vec<Alarm> {
    let mut r = DeviceRules::new("d1", short_config());
    let mut out = Vec::new();
    for i in 0..secs {
        let ts = T0 + i64::from(i) * 1000;
        out.extend(r.on_poll(&readings(s, f64::from(i), ts), ts));
        out.extend(r.on_tick(ts));
    }
    out
}

fn raised(alarms: &[Alarm]) -> Vec<(AlarmKind, Option<Metric>, f64)> {
    alarms
        .iter()
        .filter(|a| a.phase == AlarmPhase::Raised)
        .map(|a| (a.kind, a.metric, (a.started_ms - T0) as f64 / 1000.0))
        .collect()
}

fn cleared_s(alarms: &[Alarm], kind: AlarmKind) -> Vec<f64> {
    alarms
        .iter()
        .filter(|a| a.kind == kind && a.phase == AlarmPhase::Cleared)
        .map(|a| (a.cleared_ms.unwrap_or_default() - T0) as f64 / 1000.0)
        .collect()
}

const DAY_PART: u32 = 4 * 3600;

#[test]
fn normal_service_yields_nothing() {
    let alarms = play(Scenario::Normal, DAY_PART);
    assert!(alarms.is_empty(), "{alarms:#?}");
}

#[test]
fn closed_restaurant_yields_nothing() {
    let alarms = play(Scenario::Closed, DAY_PART);
    assert!(alarms.is_empty(), "{alarms:#?}");
}

#[test]
fn exceedance_yields_one_fume_exceedance() {
    let alarms = play(Scenario::Exceedance, DAY_PART);
    let r = raised(&alarms);
    assert_eq!(r.len(), 1, "{alarms:#?}");
    let (kind, metric, started) = r[0];
    assert_eq!(
        (kind, metric),
        (AlarmKind::Exceedance, Some(Metric::FumeMgM3))
    );
    // Fume > 2.0 from 90 s; the 10-s average crosses during the ramp.
    assert!((75.0..=100.0).contains(&started), "started {started}");
    let c = cleared_s(&alarms, AlarmKind::Exceedance);
    assert_eq!(c.len(), 1);
    assert!(
        (scenario::EXCEEDANCE_END_S..=scenario::EXCEEDANCE_END_S + 60.0).contains(&c[0]),
        "cleared {}",
        c[0]
    );
    assert!(alarms.iter().all(|a| !a.suppressed));
}

#[test]
fn purifier_off_yields_one_purifier_idle() {
    let alarms = play(Scenario::PurifierOff, DAY_PART);
    assert_eq!(
        raised(&alarms),
        vec![(AlarmKind::PurifierIdle, None, scenario::EVENT_START_S)],
        "{alarms:#?}"
    );
    let first = &alarms[0];
    assert_eq!(first.ts_ms - first.started_ms, 120_000);
    assert!(cleared_s(&alarms, AlarmKind::PurifierIdle).is_empty());
}

#[test]
fn degradation_yields_one_purifier_dirty() {
    let alarms = play(Scenario::Degradation, DAY_PART);
    let r = raised(&alarms);
    assert_eq!(r.len(), 1, "{alarms:#?}");
    let (kind, metric, started) = r[0];
    assert_eq!((kind, metric), (AlarmKind::PurifierDirty, None));
    // Fume reaches 2× its ~0.51 baseline at ~1440 s; the current 60 % of 1.5 A at ~1980 s.
    assert!((1300.0..=2000.0).contains(&started), "started {started}");
    assert!(cleared_s(&alarms, AlarmKind::PurifierDirty).is_empty());
}

#[test]
fn stuck_sensor_yields_one_fume_sensor_fault() {
    let alarms = play(Scenario::Stuck, DAY_PART);
    let r = raised(&alarms);
    assert_eq!(r.len(), 1, "{alarms:#?}");
    let (kind, metric, started) = r[0];
    assert_eq!(
        (kind, metric),
        (AlarmKind::SensorFault, Some(Metric::FumeMgM3))
    );
    // Frozen from 60 s, stuck after 120 s of it.
    assert_eq!(started, scenario::EVENT_START_S + 120.0);
    assert!(alarms[0].message.contains("stuck"), "{}", alarms[0].message);
}

#[test]
fn out_of_range_yields_one_fume_sensor_fault() {
    let alarms = play(Scenario::OutOfRange, DAY_PART);
    let r = raised(&alarms);
    assert_eq!(
        r,
        vec![(
            AlarmKind::SensorFault,
            Some(Metric::FumeMgM3),
            scenario::EVENT_START_S
        )],
        "{alarms:#?}"
    );
}

#[test]
fn scenarios_under_db11_judge_every_concentration() {
    // Beijing limits: the exceedance scenario's NMHC (~10 mg/m³) and fume both count, each
    // as one episode despite NMHC hovering around its limit.
    let mut cfg = short_config();
    cfg.standard = config::Standard::Db11;
    cfg.limits = config::Standard::Db11.limits().iter().copied().collect();
    let mut r = DeviceRules::new("d1", cfg);
    let mut out = Vec::new();
    for i in 0..DAY_PART {
        let ts = T0 + i64::from(i) * 1000;
        out.extend(r.on_poll(&readings(Scenario::Exceedance, f64::from(i), ts), ts));
    }
    let mut kinds: Vec<(AlarmKind, Option<Metric>)> =
        raised(&out).into_iter().map(|(k, m, _)| (k, m)).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            (AlarmKind::Exceedance, Some(Metric::FumeMgM3)),
            (AlarmKind::Exceedance, Some(Metric::NmhcMgM3)),
        ],
        "{out:#?}"
    );
}
