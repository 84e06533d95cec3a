//! The alarm rule engine (DESIGN.md §5): pure `(state, readings, now) → (state, alarms)`.
//!
//! One [`DeviceRules`] per installed device. The caller feeds it the readings of each poll
//! ([`DeviceRules::on_poll`]) and calls [`DeviceRules::on_tick`] periodically (every second is
//! fine) so that silence is judged too; both return the alarm transitions to put in the outbox.
//! Time is only what the caller passes (`now_ms`, the readings' `ts_ms`): no clocks, no I/O.
//!
//! # Episodes
//!
//! An alarm is an episode with a stable id `{device}:{kind}[:{metric}]:{started_ms}`: one
//! `raised`, then `updated` at least every `update_every_s` while open and whenever an
//! exceedance peak grew by `update_peak_step` (bounded chatter), then one `cleared`. At most one
//! episode is open per (device, kind, metric). `started_ms` is when the condition began (the
//! first over-limit judgment of the streak, the first idle poll, the last valid response), not
//! when it was raised.
//!
//! # Rules
//!
//! - **exceedance** ([`exceedance`]): per concentration metric with a limit. Valid readings
//!   (quality ok, no impossible jump) taken while the fan runs go into per-step aggregates
//!   (sum, count) of `eval_every_s`; at the end of each step the rolling average over the last
//!   `window_s` is judged when it holds at least `min_samples` readings. `raise_after`
//!   consecutive judgments over the limit raise; `clear_after` consecutive judgments below
//!   `clear_fraction` × limit clear; a judgment in between resets both streaks (hysteresis). A
//!   window with no valid fan-on reading at all (fan off, device silent) counts towards clearing
//!   and breaks a raising streak; one with a few readings but under `min_samples` is no judgment
//!   and changes nothing. The fan runs per the poll's `fan_on` (ok or stale), else its
//!   `fan_current_a` ≥ `fan_min_current_a`, else the last known state; a monitor that has never
//!   reported either is judged as if the fan ran.
//!   Flow correction (a configurable assumption): with `reference_flow_m3_h` set and a valid
//!   `flow_m3_h` from the monitor (this poll's or the last valid one), C_ref = C × Q_measured /
//!   Q_ref, as GB 18483 corrects to its reference air volume (2000 m³/h per cooking head).
//! - **purifier_idle** ([`purifier`]), judged on polls: the fan known to run while the purifier
//!   is off (`purifier_on` = 0, or `purifier_current_a` < `purifier_min_current_a`) for
//!   `purifier_idle_after_s`.
//! - **purifier_dirty** ([`purifier`]), judged per step on window averages while the purifier
//!   runs: its current under `purifier_dirty_fraction` × the clean baseline, or the fume average
//!   at `dirty_fume_factor` × the fume baseline while still under the limit and at least half
//!   of it (over the limit it is an exceedance, and a cooking surge is not a dirty purifier),
//!   held for `purifier_dirty_after_s`. Baselines are the mean of every running sample during
//!   the first `baseline_learn_s` of purifier-running time (mean, not median: bounded memory,
//!   and a clean purifier's current is steady), then frozen so that slow fouling cannot drag
//!   them along; `purifier_baseline_a` sets the current baseline by hand.
//! - **device_offline** ([`health`]): no reading of quality ok or out_of_range for
//!   `offline_after_s`; clears on the first one.
//! - **sensor_fault** ([`health`]), per metric: a reading out of its valid range, a
//!   concentration stuck at exactly one value for `stuck_after_s` while the fan runs, or a
//!   change faster than `max_jump` per second; raised after `fault_after_s`.
//!
//! - **threshold** ([`health`]), per metric named in `thresholds` (the only rule that judges a
//!   vendor `x_` metric): a valid reading above `above` or below `below` for `after_s`; clears
//!   once back inside for `clear_hold_s`.
//!
//! Sustained conditions (idle, dirty, sensor faults, thresholds) use one timer shape ([`health::Sustain`]):
//! a condition absent for less than `clear_hold_s` neither restarts the timer nor clears, and a
//! gap of more than `offline_after_s` between observations restarts it (nothing is assumed
//! about time nobody saw).
//!
//! # Suppression
//!
//! Outside `opening_hours` and inside `maintenance` windows a condition is still judged and
//! recorded, as an episode with `suppressed: true` (the aggregator stores it, opens no case).
//! Suppression is decided when an episode is raised. When it ends while the condition persists,
//! the suppressed episode is cleared and a normal one raised (`started_ms` = now, new id). An
//! episode raised unsuppressed stays so when closing time comes: people were already told.
//!
//! # Persistence
//!
//! [`DeviceRules::save`] gives versioned JSON (`{"version":1,...}`) of the whole state (window
//! aggregates, streaks, timers, baselines, open episodes), meant to be stored with the outbox
//! in the same transaction as the alarms it emitted. [`DeviceRules::restore`] continues where
//! it stopped: the same open episodes, no second `raised`. Gateway downtime is not device
//! silence: after a restore the offline timer starts again at the first call, and a window
//! older than `window_s` is dropped rather than judged as empty. If the window shape
//! (`window_s`, `eval_every_s`) changed, the window restarts empty but episodes are kept. A
//! state that cannot be decoded, of an unknown version or of another device is an error
//! ([`RulesError`]); the caller reports it and starts fresh ([`DeviceRules::restore_or_new`]).
//!
//! Memory per device is bounded: `window_s / eval_every_s` step aggregates, at most
//! [`config::MAX_WINDOW_STEPS`].

pub mod config;
mod exceedance;
mod health;
mod purifier;
#[cfg(test)]
mod scenario_tests;
pub mod sink;
#[cfg(test)]
mod tests;

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase};
use serde::{Deserialize, Serialize};

pub use config::{RulesConfig, RulesOverrides, Standard, check, check_resolved, resolve};

use exceedance::{ExState, Window};
use health::HealthState;
use purifier::PurifierState;

/// Version of the saved state layout; upgraded forward only.
pub const STATE_VERSION: u32 = 1;

/// Why a saved rule state was not used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("saved rule state is not readable: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("saved rule state has version {found}; this gateway reads up to {STATE_VERSION}")]
    Version { found: u32 },
    #[error("saved rule state belongs to device `{found}`, not `{expected}`")]
    Device { found: String, expected: String },
}

/// One open alarm episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Episode {
    pub id: String,
    pub kind: AlarmKind,
    pub metric: Option<Metric>,
    pub started_ms: i64,
    pub suppressed: bool,
    pub value: Option<f64>,
    pub peak: Option<f64>,
    pub peak_ms: Option<i64>,
    pub limit: Option<f64>,
    pub message: String,
    /// When the last transition went out, and the peak it carried.
    last_emit_ms: i64,
    last_emit_peak: Option<f64>,
}

/// Last known device signals, kept between polls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Signals {
    fan: Option<bool>,
    purifier_on: Option<bool>,
    purifier_current: Option<f64>,
    flow: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    signals: Signals,
    window: Window,
    exceedance: [ExState; 3],
    purifier: PurifierState,
    health: HealthState,
    /// Timer per metric named in `thresholds` (absent in states saved before thresholds).
    #[serde(default)]
    thresholds: std::collections::BTreeMap<Metric, health::Sustain>,
    episodes: Vec<Episode>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    device: String,
    step_ms: i64,
    window_steps: usize,
    state: State,
}

#[derive(Deserialize)]
struct SavedHead {
    version: u32,
}

/// The rule engine of one device.
#[derive(Debug, Clone)]
pub struct DeviceRules {
    device: String,
    cfg: RulesConfig,
    /// Derived from `cfg` once.
    step_ms: i64,
    window_steps: usize,
    limits: [Option<f64>; 3],
    max_jump: [f64; Metric::ALL.len()],
    st: State,
}

impl DeviceRules {
    pub fn new(device: &str, cfg: RulesConfig) -> DeviceRules {
        let step_ms = i64::try_from(cfg.eval_every_s.max(1))
            .unwrap_or(60)
            .saturating_mul(1000);
        let window_steps = usize::try_from(
            (cfg.window_s / cfg.eval_every_s.max(1)).clamp(1, config::MAX_WINDOW_STEPS),
        )
        .unwrap_or(1);
        let limits = config::CONCENTRATIONS.map(|m| cfg.limits.get(&m).copied());
        let mut max_jump = [0.0; Metric::ALL.len()];
        for (m, v) in &cfg.max_jump {
            // Custom metrics never get here: the config refuses them in `max_jump`.
            if let Some(i) = m.index() {
                max_jump[i] = *v;
            }
        }
        DeviceRules {
            device: device.to_string(),
            cfg,
            step_ms,
            window_steps,
            limits,
            max_jump,
            st: State::default(),
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    pub fn config(&self) -> &RulesConfig {
        &self.cfg
    }

    /// Open episodes, suppressed or not.
    pub fn open_episodes(&self) -> &[Episode] {
        &self.st.episodes
    }

    /// The readings of one poll of this device (possibly none: a poll that got nothing),
    /// taken at `now_ms`. Their `device` is not checked. Returns the alarm transitions, in order.
    pub fn on_poll(&mut self, readings: &[Reading], now_ms: i64) -> Vec<Alarm> {
        let mut out = Vec::new();
        self.advance(now_ms, &mut out);
        let responded = self.update_signals(readings);
        let fan_running = self.st.signals.fan.unwrap_or(true);
        let purifier_running = self.purifier_running();
        for r in readings {
            let valid = self.judge_sensor(r, fan_running, now_ms, &mut out);
            if let (Some(v), true) = (valid, fan_running) {
                self.add_sample(r.metric, v, purifier_running);
            }
            self.judge_threshold(r, now_ms, &mut out);
        }
        self.judge_idle(now_ms, responded, &mut out);
        self.judge_offline(now_ms, responded, &mut out);
        self.end_suppression(now_ms, &mut out);
        out
    }

    /// Periodic call without readings: closes due steps and judges silence.
    pub fn on_tick(&mut self, now_ms: i64) -> Vec<Alarm> {
        let mut out = Vec::new();
        self.advance(now_ms, &mut out);
        self.judge_offline(now_ms, false, &mut out);
        self.end_suppression(now_ms, &mut out);
        out
    }

    /// The whole state as versioned JSON.
    pub fn save(&self) -> Vec<u8> {
        let saved = Saved {
            version: STATE_VERSION,
            device: self.device.clone(),
            step_ms: self.step_ms,
            window_steps: self.window_steps,
            state: self.st.clone(),
        };
        // Only finite floats are ever stored, so serialising cannot fail.
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// Continues from a [`DeviceRules::save`]d state (see the module doc for what a restart
    /// changes).
    pub fn restore(
        device: &str,
        cfg: RulesConfig,
        bytes: &[u8],
    ) -> Result<DeviceRules, RulesError> {
        let head: SavedHead = serde_json::from_slice(bytes)?;
        if head.version != STATE_VERSION {
            return Err(RulesError::Version {
                found: head.version,
            });
        }
        let saved: Saved = serde_json::from_slice(bytes)?;
        if saved.device != device {
            return Err(RulesError::Device {
                found: saved.device,
                expected: device.to_string(),
            });
        }
        let mut rules = DeviceRules::new(device, cfg);
        rules.st = saved.state;
        if saved.step_ms != rules.step_ms || saved.window_steps != rules.window_steps {
            rules.st.window = Window::default();
        }
        rules.st.window.resumed = true;
        rules.st.health.silent_since = None;
        Ok(rules)
    }

    /// [`DeviceRules::restore`], or a fresh engine and the reason the state was not used.
    pub fn restore_or_new(
        device: &str,
        cfg: RulesConfig,
        bytes: Option<&[u8]>,
    ) -> (DeviceRules, Option<RulesError>) {
        match bytes.map(|b| DeviceRules::restore(device, cfg.clone(), b)) {
            None => (DeviceRules::new(device, cfg), None),
            Some(Ok(r)) => (r, None),
            Some(Err(e)) => (DeviceRules::new(device, cfg), Some(e)),
        }
    }

    /// Takes the poll's fan, purifier and flow signals; true if the device answered at all.
    fn update_signals(&mut self, readings: &[Reading]) -> bool {
        let s = &mut self.st.signals;
        let mut responded = false;
        let mut fan_state = None;
        let mut fan_current = None;
        for r in readings {
            let fresh = matches!(r.quality, Quality::Ok | Quality::Stale);
            responded |= matches!(r.quality, Quality::Ok | Quality::OutOfRange);
            let Some(v) = r.value.filter(|v| v.is_finite() && fresh) else {
                continue;
            };
            match r.metric {
                Metric::FanOn => fan_state = Some(v >= 0.5),
                Metric::FanCurrentA => fan_current = Some(v >= self.cfg.fan_min_current_a),
                Metric::PurifierOn => s.purifier_on = Some(v >= 0.5),
                Metric::PurifierCurrentA if r.quality == Quality::Ok => {
                    s.purifier_current = Some(v);
                }
                Metric::FlowM3H if r.quality == Quality::Ok && v > 0.0 => s.flow = Some(v),
                _ => {}
            }
        }
        if let Some(on) = fan_state.or(fan_current) {
            s.fan = Some(on);
        }
        responded
    }

    /// Purifier known to run: not reported off and drawing current (when it reports current).
    fn purifier_running(&self) -> bool {
        let s = &self.st.signals;
        (s.purifier_on.is_some() || s.purifier_current.is_some())
            && s.purifier_on != Some(false)
            && s.purifier_current
                .is_none_or(|c| c >= self.cfg.purifier_min_current_a)
    }

    fn suppressed_at(&self, now_ms: i64) -> bool {
        if self
            .cfg
            .maintenance
            .iter()
            .any(|&(from, to)| (from..to).contains(&now_ms))
        {
            return true;
        }
        if self.cfg.opening_hours.is_empty() {
            return false;
        }
        let local_min = (now_ms.div_euclid(60_000) + i64::from(self.cfg.utc_offset_minutes))
            .rem_euclid(1440) as u16;
        !self.cfg.opening_hours.iter().any(|&(start, end)| {
            if start < end {
                (start..end).contains(&local_min)
            } else {
                local_min >= start || local_min < end
            }
        })
    }

    fn find(&self, kind: AlarmKind, metric: Option<Metric>) -> Option<usize> {
        self.st
            .episodes
            .iter()
            .position(|e| e.kind == kind && e.metric == metric)
    }

    fn is_open(&self, kind: AlarmKind, metric: Option<Metric>) -> bool {
        self.find(kind, metric).is_some()
    }

    /// Opens an episode unless one of this kind and metric is open.
    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        out: &mut Vec<Alarm>,
        kind: AlarmKind,
        metric: Option<Metric>,
        started_ms: i64,
        now_ms: i64,
        value: Option<f64>,
        limit: Option<f64>,
        message: String,
    ) {
        if self.is_open(kind, metric) {
            return;
        }
        let id = match metric {
            Some(m) => format!("{}:{}:{}:{started_ms}", self.device, kind.name(), m.name()),
            None => format!("{}:{}:{started_ms}", self.device, kind.name()),
        };
        let tracks_peak = kind == AlarmKind::Exceedance;
        let e = Episode {
            id,
            kind,
            metric,
            started_ms,
            suppressed: self.suppressed_at(now_ms),
            value,
            peak: value.filter(|_| tracks_peak),
            peak_ms: value.filter(|_| tracks_peak).map(|_| now_ms),
            limit,
            message,
            last_emit_ms: now_ms,
            last_emit_peak: value.filter(|_| tracks_peak),
        };
        out.push(self.alarm(&e, AlarmPhase::Raised, now_ms, None));
        self.st.episodes.push(e);
    }

    /// Records the current value of an open episode; true when an `updated` is due.
    fn touch(&mut self, i: usize, now_ms: i64, value: Option<f64>) -> bool {
        let step = self.cfg.update_peak_step;
        let every = i64::try_from(self.cfg.update_every_s)
            .unwrap_or(i64::MAX / 2000)
            .saturating_mul(1000);
        let Some(e) = self.st.episodes.get_mut(i) else {
            return false;
        };
        e.value = value.or(e.value);
        if let (Some(v), Some(p)) = (value, e.peak)
            && v > p
        {
            e.peak = Some(v);
            e.peak_ms = Some(now_ms);
        }
        let grew = match (e.peak, e.last_emit_peak) {
            (Some(p), Some(last)) => p >= last + step * last.abs(),
            _ => false,
        };
        grew || now_ms - e.last_emit_ms >= every
    }

    /// Sends `updated` for an open episode.
    fn emit_update(&mut self, out: &mut Vec<Alarm>, i: usize, now_ms: i64, message: String) {
        let Some(e) = self.st.episodes.get_mut(i) else {
            return;
        };
        e.message = message;
        e.last_emit_ms = now_ms;
        e.last_emit_peak = e.peak;
        let e = e.clone();
        out.push(self.alarm(&e, AlarmPhase::Updated, now_ms, None));
    }

    fn clear(
        &mut self,
        out: &mut Vec<Alarm>,
        i: usize,
        now_ms: i64,
        value: Option<f64>,
        message: String,
    ) {
        if i >= self.st.episodes.len() {
            return;
        }
        let mut e = self.st.episodes.remove(i);
        e.value = value.or(e.value);
        e.message = message;
        out.push(self.alarm(&e, AlarmPhase::Cleared, now_ms, Some(now_ms)));
    }

    fn alarm(&self, e: &Episode, phase: AlarmPhase, ts_ms: i64, cleared_ms: Option<i64>) -> Alarm {
        Alarm {
            id: e.id.clone(),
            device: self.device.clone(),
            kind: e.kind,
            metric: e.metric,
            phase,
            started_ms: e.started_ms,
            ts_ms,
            cleared_ms,
            value: e.value,
            peak: e.peak,
            peak_ms: e.peak_ms,
            limit: e.limit,
            suppressed: e.suppressed,
            message: e.message.clone(),
        }
    }

    /// Suppressed episodes whose suppression ended are closed and raised again, unsuppressed.
    fn end_suppression(&mut self, now_ms: i64, out: &mut Vec<Alarm>) {
        if !self.st.episodes.iter().any(|e| e.suppressed) || self.suppressed_at(now_ms) {
            return;
        }
        let ended: Vec<Episode> = self
            .st
            .episodes
            .iter()
            .filter(|e| e.suppressed)
            .cloned()
            .collect();
        for e in ended {
            if let Some(i) = self.find(e.kind, e.metric) {
                self.clear(
                    out,
                    i,
                    now_ms,
                    None,
                    format!(
                        "{} (suppression ended; the condition continues as a new alarm)",
                        e.message
                    ),
                );
            }
            self.raise(
                out, e.kind, e.metric, now_ms, now_ms, e.value, e.limit, e.message,
            );
        }
    }
}

/// "45 s", "12 min", "2 h 05 min".
fn human_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {:02} min", s / 3600, (s / 60) % 60)
    }
}

/// "fume", "particulate", "NMHC", else the metric's name.
fn metric_label(m: &Metric) -> &str {
    match m {
        Metric::FumeMgM3 => "fume",
        Metric::ParticulateMgM3 => "particulate",
        Metric::NmhcMgM3 => "NMHC",
        other => other.name(),
    }
}
