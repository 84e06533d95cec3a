//! Device health: `device_offline` and `sensor_fault`; and [`Sustain`], the timer every
//! sustained condition uses.

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Alarm, AlarmKind};
use serde::{Deserialize, Serialize};

use super::{DeviceRules, human_duration, metric_label};

/// How long a condition has held, tolerant of short absences.
///
/// `observe` returns when the condition started, or `None` once it has been absent for
/// `hold_ms` (shorter absences do not restart it). A gap of more than `gap_ms` between
/// observations forgets it: nobody saw the time in between.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Sustain {
    since: Option<i64>,
    absent_since: Option<i64>,
    last_obs: Option<i64>,
}

impl Sustain {
    pub fn observe(&mut self, cond: bool, now_ms: i64, hold_ms: i64, gap_ms: i64) -> Option<i64> {
        if self.last_obs.is_some_and(|l| now_ms - l > gap_ms) {
            self.since = None;
            self.absent_since = None;
        }
        self.last_obs = Some(now_ms);
        if cond {
            self.since.get_or_insert(now_ms);
            self.absent_since = None;
        } else if self.since.is_some() {
            let absent = *self.absent_since.get_or_insert(now_ms);
            if now_ms - absent >= hold_ms {
                self.since = None;
                self.absent_since = None;
            }
        }
        self.since
    }
}

const N: usize = Metric::ALL.len();

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct HealthState {
    /// Since when no valid response came; reset by a restore (downtime is not silence).
    pub silent_since: Option<i64>,
    fault: [Sustain; N],
    /// Last ok value and its time, per metric (jumps).
    prev_ok: [Option<(f64, i64)>; N],
    /// Value and since when it has not changed, per concentration, while the fan runs.
    stuck: [Option<(f64, i64)>; 3],
}

enum Fault {
    Range(Option<f64>),
    Jump { from: f64, to: f64, dt_s: f64 },
    Stuck { value: f64, since: i64 },
}

pub(super) fn secs_ms(s: u64) -> i64 {
    i64::try_from(s)
        .unwrap_or(i64::MAX / 1000)
        .saturating_mul(1000)
}

impl DeviceRules {
    /// Judges one reading for sensor faults; returns its value if it may be averaged.
    pub(super) fn judge_sensor(
        &mut self,
        r: &Reading,
        fan_running: bool,
        now_ms: i64,
        out: &mut Vec<Alarm>,
    ) -> Option<f64> {
        // Custom `x_` metrics are vendor extras: shown, never judged.
        let mi = r.metric.index()?;
        let h = &mut self.st.health;
        let fault = match (r.quality, r.value) {
            (Quality::OutOfRange, v) => Some(Fault::Range(v)),
            (Quality::Ok, Some(v)) if v.is_finite() => {
                let mut fault = None;
                // Nothing is assumed about values nobody saw.
                let gap = secs_ms(self.cfg.offline_after_s);
                if h.prev_ok[mi].is_some_and(|(_, pts)| r.ts_ms - pts > gap) {
                    h.prev_ok[mi] = None;
                    if mi < 3 {
                        h.stuck[mi] = None;
                    }
                }
                let max = self.max_jump[mi];
                if let (true, Some((pv, pts))) = (max > 0.0, h.prev_ok[mi]) {
                    let dt_s = ((r.ts_ms - pts) as f64 / 1000.0).max(1.0);
                    if (v - pv).abs() / dt_s > max {
                        fault = Some(Fault::Jump {
                            from: pv,
                            to: v,
                            dt_s,
                        });
                    }
                }
                h.prev_ok[mi] = Some((v, r.ts_ms));
                if mi < 3 {
                    // Metric order puts the three concentrations first.
                    match h.stuck[mi] {
                        _ if !fan_running => h.stuck[mi] = None,
                        Some((sv, since)) if sv == v => {
                            if fault.is_none() && r.ts_ms - since >= secs_ms(self.cfg.stuck_after_s)
                            {
                                fault = Some(Fault::Stuck { value: v, since });
                            }
                        }
                        _ => h.stuck[mi] = Some((v, r.ts_ms)),
                    }
                }
                fault
            }
            // Stale or no answer: nothing to judge about the sensor.
            _ => return None,
        };
        let valid = match (&fault, r.value) {
            (None, Some(v)) => Some(v),
            _ => None,
        };
        let hold = secs_ms(self.cfg.clear_hold_s);
        let gap = secs_ms(self.cfg.offline_after_s);
        let since = h.fault[mi].observe(fault.is_some(), now_ms, hold, gap);
        let open = self.find(AlarmKind::SensorFault, Some(r.metric));
        match (since, fault, open) {
            (Some(s), Some(f), None) if now_ms - s >= secs_ms(self.cfg.fault_after_s) => {
                let msg = self.fault_message(r.metric, &f, now_ms);
                self.raise(
                    out,
                    AlarmKind::SensorFault,
                    Some(r.metric),
                    s,
                    now_ms,
                    r.value,
                    None,
                    msg,
                );
            }
            (Some(_), Some(f), Some(i)) if self.touch(i, now_ms, r.value) => {
                let msg = self.fault_message(r.metric, &f, now_ms);
                self.emit_update(out, i, now_ms, msg);
            }
            (None, _, Some(i)) => {
                let msg = format!(
                    "{} readings believable again for {}",
                    metric_label(&r.metric),
                    human_duration(hold)
                );
                self.clear(out, i, now_ms, r.value, msg);
            }
            _ => {}
        }
        valid
    }

    fn fault_message(&self, m: Metric, f: &Fault, now_ms: i64) -> String {
        let (label, unit) = (metric_label(&m), m.unit());
        match f {
            Fault::Range(Some(v)) => {
                format!("{label} reads {v} {unit}, outside the sensor's valid range")
            }
            Fault::Range(None) => format!("{label} reads a value that is not a number"),
            Fault::Jump { from, to, dt_s } => format!(
                "{label} jumped from {from:.2} to {to:.2} {unit} in {dt_s:.0} s (believable: {} per s)",
                m.index().map_or(0.0, |i| self.max_jump[i])
            ),
            Fault::Stuck { value, since } => format!(
                "{label} stuck at exactly {value} {unit} for {} while the fan runs",
                human_duration(now_ms - since)
            ),
        }
    }

    /// `threshold`: a technician's own limit on one metric (`thresholds`), judged on valid
    /// readings only; other readings neither raise nor clear it.
    pub(super) fn judge_threshold(&mut self, r: &Reading, now_ms: i64, out: &mut Vec<Alarm>) {
        let Some(t) = self.cfg.thresholds.get(&r.metric).copied() else {
            return;
        };
        let (Quality::Ok, Some(v)) = (r.quality, r.value.filter(|v| v.is_finite())) else {
            return;
        };
        let breach = t.breached(v);
        let hold = secs_ms(self.cfg.clear_hold_s);
        let gap = secs_ms(self.cfg.offline_after_s);
        let since = self.st.thresholds.entry(r.metric).or_default().observe(
            breach.is_some(),
            now_ms,
            hold,
            gap,
        );
        let unit = r.unit.as_deref().unwrap_or(r.metric.unit());
        let with_unit = |x: f64| match unit {
            "" => format!("{x}"),
            u => format!("{x} {u}"),
        };
        let label = metric_label(&r.metric);
        let describe = |bound: f64| {
            let side = if t.above == Some(bound) {
                "above"
            } else {
                "below"
            };
            format!(
                "{label} reads {}, {side} its threshold of {}",
                with_unit(v),
                with_unit(bound)
            )
        };
        let open = self.find(AlarmKind::Threshold, Some(r.metric));
        match (since, breach, open) {
            (Some(s), Some(bound), None) if now_ms - s >= secs_ms(t.after_s) => {
                let msg = describe(bound);
                self.raise(
                    out,
                    AlarmKind::Threshold,
                    Some(r.metric),
                    s,
                    now_ms,
                    Some(v),
                    Some(bound),
                    msg,
                );
            }
            (Some(_), Some(bound), Some(i)) if self.touch(i, now_ms, Some(v)) => {
                let msg = describe(bound);
                self.emit_update(out, i, now_ms, msg);
            }
            (None, _, Some(i)) => {
                let msg = format!(
                    "{label} back inside its threshold for {} ({})",
                    human_duration(hold),
                    with_unit(v)
                );
                self.clear(out, i, now_ms, Some(v), msg);
            }
            _ => {}
        }
    }

    /// `device_offline`: raised after `offline_after_s` without a valid response.
    pub(super) fn judge_offline(&mut self, now_ms: i64, responded: bool, out: &mut Vec<Alarm>) {
        let open = self.find(AlarmKind::DeviceOffline, None);
        if responded {
            self.st.health.silent_since = Some(now_ms);
            if let Some(i) = open {
                let started = self.st.episodes[i].started_ms;
                let msg = format!(
                    "responding again after {} without a valid response",
                    human_duration(now_ms - started)
                );
                self.clear(out, i, now_ms, None, msg);
            }
            return;
        }
        let since = *self.st.health.silent_since.get_or_insert(now_ms);
        let msg = || format!("no valid response for {}", human_duration(now_ms - since));
        match open {
            None if now_ms - since >= secs_ms(self.cfg.offline_after_s) => {
                let m = msg();
                self.raise(
                    out,
                    AlarmKind::DeviceOffline,
                    None,
                    since,
                    now_ms,
                    None,
                    None,
                    m,
                );
            }
            Some(i) if self.touch(i, now_ms, None) => {
                let started = self.st.episodes[i].started_ms;
                let m = format!("no valid response for {}", human_duration(now_ms - started));
                self.emit_update(out, i, now_ms, m);
            }
            _ => {}
        }
    }
}
