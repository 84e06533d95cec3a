//! Cost of alarm-rule evaluation per reading: 1M readings (12 metrics per poll) of 32 devices,
//! one poll per device per second of simulated time, each followed by a tick.
//!
//! ```text
//! cargo run --release -p fumegrid-gateway --example rules_bench
//! ```
//!
//! A quarter of the devices go through an exceedance and back, one in eight has its purifier
//! off, so raises, updates and clears are part of the measurement.

use fumegrid_common::clock::Clock;
use std::hint::black_box;

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_gateway::rules::{DeviceRules, RulesConfig, RulesOverrides, resolve};

const DEVICES: usize = 32;
const READINGS: usize = 1_000_000;
const T0: i64 = 1_700_000_000_000;

fn noise(i: u64) -> f64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
}

fn value(m: Metric, dev: usize, sec: i64) -> f64 {
    let n = noise((sec as u64) << 8 | (dev as u64) << 4 | m.index().unwrap_or(0) as u64);
    // Every fourth device exceeds from 10 to 30 min of each hour.
    let high = dev.is_multiple_of(4) && (600..1800).contains(&sec.rem_euclid(3600));
    let purifier_off = dev % 8 == 1;
    match m {
        Metric::FumeMgM3 => (if high { 2.8 } else { 0.55 }) + 0.05 * n,
        Metric::ParticulateMgM3 => 1.5 + 0.05 * n,
        Metric::NmhcMgM3 => 4.0 + 0.1 * n,
        Metric::FanOn => 1.0,
        Metric::PurifierOn => f64::from(u8::from(!purifier_off)),
        Metric::FanCurrentA => 3.2 + 0.05 * n,
        Metric::PurifierCurrentA => {
            if purifier_off {
                0.0
            } else {
                1.5 + 0.02 * n
            }
        }
        Metric::FlowM3H => 6000.0 + 100.0 * n,
        Metric::TemperatureC => 35.0 + 0.3 * n,
        Metric::HumidityPct => 50.0 + n,
        Metric::PurifierRuntimeH => 1000.0 + sec as f64 / 3600.0,
        Metric::FanRuntimeH => 1200.0 + sec as f64 / 3600.0,
        Metric::Custom(_) => 0.0,
    }
}

fn bench(name: &str, cfg: &RulesConfig) {
    let mut engines: Vec<DeviceRules> = (0..DEVICES)
        .map(|d| DeviceRules::new(&format!("dev-{d:02}"), cfg.clone()))
        .collect();
    let mut polls: Vec<Vec<Reading>> = (0..DEVICES)
        .map(|d| {
            Metric::ALL
                .iter()
                .map(|&metric| Reading {
                    device: format!("dev-{d:02}"),
                    unit: None,
                    metric,
                    value: None,
                    quality: Quality::Ok,
                    ts_ms: 0,
                })
                .collect()
        })
        .collect();
    let per_poll = Metric::ALL.len();
    let rounds = READINGS.div_ceil(per_poll * DEVICES);
    let mut alarms = 0usize;
    let mut fed = 0usize;
    let start = Clock::system().instant();
    for sec in 0..rounds as i64 {
        let now = T0 + sec * 1000;
        for (d, (engine, poll)) in engines.iter_mut().zip(&mut polls).enumerate() {
            for r in poll.iter_mut() {
                r.value = Some(value(r.metric, d, sec));
                r.ts_ms = now;
            }
            alarms += engine.on_poll(poll, now).len();
            alarms += engine.on_tick(now).len();
            fed += per_poll;
        }
    }
    let elapsed = fumegrid_common::clock::Clock::system().instant() - start;
    let state_bytes: usize = engines.iter().map(|e| e.save().len()).sum::<usize>() / DEVICES;
    println!(
        "{name}: {fed} readings, {DEVICES} devices, {:.1} s simulated: {:.1} ns/reading \
         ({:.2} µs/poll incl. tick), {alarms} alarm transitions, saved state {state_bytes} B/device",
        rounds as f64,
        elapsed.as_nanos() as f64 / fed as f64,
        elapsed.as_nanos() as f64 / (fed / per_poll) as f64 / 1000.0,
    );
    black_box(engines);
}

fn main() {
    bench(
        "defaults (600 s window, 60 s step)",
        &RulesConfig::default(),
    );
    let short = resolve(
        &RulesOverrides::default(),
        &RulesOverrides {
            window_s: Some(600),
            eval_every_s: Some(1),
            ..Default::default()
        },
    );
    bench("worst case (600 s window, 1 s step)", &short);
}
