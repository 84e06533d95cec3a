//! Report strategies (DESIGN.md §13, issue 14): pure `(state, poll | tick, now) → bodies`.
//!
//! The alarm rules judge every poll first ([`crate::rules`]); this stage only decides what of
//! the poll goes up, so the strategy can never change an alarm. One [`DeviceReport`] per
//! device, fed the readings of each poll with the alarm transitions that poll caused
//! ([`DeviceReport::on_poll`]) and a tick with the tick's transitions ([`DeviceReport::on_tick`]).
//!
//! # Strategies (per device, overridable per metric; [`config`])
//!
//! - `raw`: every reading, as before issue 14.
//! - `period` (default, 60 s): the period metrics of a device go up as one
//!   [`fumegrid_common::wire::Period`] per period `[start, start + period_s)`, `start` a
//!   multiple of `period_s` since the epoch. Per metric: `polls` (readings taken), `count`
//!   (readings of quality ok with a finite value), their avg, min, max and last, and `valid` =
//!   `count ≥ min_valid × expected`, `expected` = period ÷ poll interval (at least 1). A poll
//!   goes into the period that holds its time stamp, except one stamped before the end of the
//!   last period sent (a clock stepped back, a poll delayed past the grace): it counts in the
//!   next period, so every poll counts in exactly one period and no period is sent twice. A
//!   period closes at the first poll of a later period, or on the tick
//!   [`CLOSE_GRACE_MS`] after its end. A period in which the device gave no reading at all is
//!   not sent (the offline alarm says why). The first period after a start is usually partial,
//!   hence flagged invalid: honest, not hidden.
//! - `on_change`: a reading when the value moved by more than `deadband` since the last one
//!   sent, or its quality changed, or `heartbeat_s` passed since the last one sent.
//!
//! # Raw windows around alarms
//!
//! Whatever a poll withholds (period and unchanged on_change readings) goes into a ring of the
//! last `raw_before_s` of polls (at most [`MAX_RING_POLLS`]). When an unsuppressed alarm of
//! the device is raised, the ring goes up as raw readings, and every poll goes up raw in full
//! while any alarm of the device is open and until `raw_after_s` after the last clear.
//! Periods keep being made meanwhile: a raw reading and a period are different bodies, and the
//! aggregator never adds one to the other (docs/wire.md). A reading goes up raw at most once
//! (the ring holds only what was withheld).
//!
//! # Persistence and what a crash loses
//!
//! [`DeviceReport::save`] gives versioned JSON of the open period, the last period's end, the
//! on_change memory and the open alarms; the sink stores it with the rule state (at every
//! period it sends, every 30 s, at the stop). A kill -9 loses the polls of the open period
//! taken since the last save (at most 30 s plus the outbox flush interval; the period is
//! still sent, with those polls missing from `polls` and `count`) and the ring (the raw
//! window of an alarm raised just after the restart starts at the restart).

pub mod config;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, VecDeque};

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Alarm, AlarmPhase, Body, Period, PeriodMetric};
use serde::{Deserialize, Serialize};

pub use config::{ReportConfig, ReportOverrides, Strategy};

/// A period closes on the tick this long after its end, so a poll of its last second that
/// reaches the sink a moment late still counts in it.
pub const CLOSE_GRACE_MS: i64 = 2000;

/// Upper bound of the raw ring, whatever `raw_before_s` and the poll interval say.
pub const MAX_RING_POLLS: usize = 3600;

/// Version of the saved state layout.
pub const STATE_VERSION: u32 = 1;

/// One metric's running aggregate in the open period.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Acc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    unit: Option<String>,
    polls: u32,
    count: u32,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    last: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Open {
    start_ms: i64,
    /// In the order first seen.
    metrics: Vec<(Metric, Acc)>,
}

/// The last reading of an `on_change` metric that went up.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Sent {
    value: Option<f64>,
    quality: Quality,
    ts_ms: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    open: Option<Open>,
    /// End of the last period sent (a multiple of `period_s`): nothing counts before it.
    sent_until_ms: i64,
    last_sent: Vec<(Metric, Sent)>,
    /// Unsuppressed episodes of the device open now.
    alarms: BTreeSet<String>,
    /// Raw polls go up until this time after the last clear.
    raw_until_ms: Option<i64>,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    device: String,
    period_s: u32,
    state: State,
}

/// Why a saved report state was not used.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("saved report state is not readable: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("saved report state has version {found}; this gateway reads up to {STATE_VERSION}")]
    Version { found: u32 },
    #[error("saved report state belongs to device `{found}`, not `{expected}`")]
    Device { found: String, expected: String },
}

/// The report stage of one device.
#[derive(Debug, Clone)]
pub struct DeviceReport {
    device: String,
    cfg: ReportConfig,
    poll_interval_ms: u64,
    st: State,
    /// Withheld readings of the last `raw_before_s`, oldest first (not saved).
    ring: VecDeque<Vec<Reading>>,
    /// Something worth saving changed since [`DeviceReport::saved`].
    dirty: bool,
}

impl DeviceReport {
    pub fn new(device: &str, cfg: ReportConfig, poll_interval_ms: u64) -> DeviceReport {
        DeviceReport {
            device: device.to_string(),
            cfg,
            poll_interval_ms: poll_interval_ms.max(1),
            st: State::default(),
            ring: VecDeque::new(),
            dirty: false,
        }
    }

    pub fn device(&self) -> &str {
        &self.device
    }

    fn period_ms(&self) -> i64 {
        i64::from(self.cfg.period_s.max(1)) * 1000
    }

    /// The readings of one poll of this device, the alarm transitions the rules judged on it,
    /// and the time. Returns what goes up now, oldest first.
    pub fn on_poll(&mut self, readings: &[Reading], alarms: &[Alarm], now_ms: i64) -> Vec<Body> {
        let mut out = Vec::new();
        self.alarms(alarms, &mut out);
        if self.cfg.all_raw() {
            out.extend(readings.iter().cloned().map(Body::Reading));
            return out;
        }
        let ts = readings.first().map_or(now_ms, |r| r.ts_ms);
        let raw = self.in_raw_window(ts);
        let mut withheld = Vec::new();
        for r in readings {
            let mr = self.cfg.of(&r.metric);
            let send = match mr.strategy {
                Strategy::Raw => true,
                Strategy::Period => false,
                Strategy::OnChange => self.changed(r, mr.deadband, mr.heartbeat_s),
            };
            if mr.strategy == Strategy::Period {
                self.count(r, ts, &mut out);
            }
            if send || raw {
                if mr.strategy == Strategy::OnChange {
                    self.remember(r);
                }
                out.push(Body::Reading(r.clone()));
            } else {
                withheld.push(r.clone());
            }
        }
        if !withheld.is_empty() && self.cfg.raw_before_s > 0 {
            self.ring.push_back(withheld);
        }
        self.trim_ring(ts);
        out
    }

    /// The periodic call: the tick's alarm transitions, and closes a period that is due.
    pub fn on_tick(&mut self, alarms: &[Alarm], now_ms: i64) -> Vec<Body> {
        let mut out = Vec::new();
        self.alarms(alarms, &mut out);
        if let Some(open) = &self.st.open
            && now_ms >= open.start_ms + self.period_ms() + CLOSE_GRACE_MS
        {
            self.close(&mut out);
        }
        self.trim_ring(now_ms);
        out
    }

    /// The open period as it stands (the stop saves it rather than sending it half-way).
    pub fn open_period_start(&self) -> Option<i64> {
        self.st.open.as_ref().map(|o| o.start_ms)
    }

    /// Raw polls go up now: an alarm is open, or its after-window has not passed.
    pub fn in_raw_window(&self, ts_ms: i64) -> bool {
        !self.st.alarms.is_empty() || self.st.raw_until_ms.is_some_and(|u| ts_ms < u)
    }

    /// Polls in the ring now.
    pub fn ring_len(&self) -> usize {
        self.ring.len()
    }

    /// True once after something worth saving changed (a period sent, an alarm opened or
    /// closed); the caller saves then.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    fn alarms(&mut self, alarms: &[Alarm], out: &mut Vec<Body>) {
        for a in alarms.iter().filter(|a| a.device == self.device) {
            match a.phase {
                AlarmPhase::Raised | AlarmPhase::Updated
                    if !a.suppressed && self.st.alarms.insert(a.id.clone()) =>
                {
                    self.dirty = true;
                    out.extend(self.ring.drain(..).flatten().map(Body::Reading));
                }
                AlarmPhase::Cleared if self.st.alarms.remove(&a.id) => {
                    self.dirty = true;
                    let after = i64::from(self.cfg.raw_after_s) * 1000;
                    let until = a.cleared_ms.unwrap_or(a.ts_ms).saturating_add(after);
                    self.st.raw_until_ms =
                        Some(self.st.raw_until_ms.map_or(until, |u| u.max(until)));
                }
                _ => {}
            }
        }
    }

    fn trim_ring(&mut self, now_ms: i64) {
        let keep_from = now_ms - i64::from(self.cfg.raw_before_s) * 1000;
        while self.ring.len() > MAX_RING_POLLS
            || self
                .ring
                .front()
                .and_then(|p| p.first())
                .is_some_and(|r| r.ts_ms <= keep_from)
        {
            self.ring.pop_front();
        }
    }

    fn changed(&self, r: &Reading, deadband: f64, heartbeat_s: u32) -> bool {
        let Some((_, last)) = self.st.last_sent.iter().find(|(m, _)| *m == r.metric) else {
            return true;
        };
        if last.quality != r.quality
            || r.ts_ms - last.ts_ms >= i64::from(heartbeat_s) * 1000
            || r.ts_ms < last.ts_ms
        {
            return true;
        }
        match (last.value, r.value) {
            (Some(a), Some(b)) => (b - a).abs() > deadband || (deadband == 0.0 && a != b),
            (None, None) => false,
            _ => true,
        }
    }

    fn remember(&mut self, r: &Reading) {
        let sent = Sent {
            value: r.value,
            quality: r.quality,
            ts_ms: r.ts_ms,
        };
        match self.st.last_sent.iter_mut().find(|(m, _)| *m == r.metric) {
            Some((_, s)) => *s = sent,
            None => self.st.last_sent.push((r.metric, sent)),
        }
    }

    /// Counts one reading of a period metric, closing the open period first when the reading
    /// belongs to a later one.
    fn count(&mut self, r: &Reading, ts: i64, out: &mut Vec<Body>) {
        let p = self.period_ms();
        let start = ts.max(self.st.sent_until_ms).div_euclid(p) * p;
        if self.st.open.as_ref().is_some_and(|o| start > o.start_ms) {
            self.close(out);
        }
        let open = self.st.open.get_or_insert_with(|| Open {
            start_ms: start,
            metrics: Vec::new(),
        });
        let acc = match open.metrics.iter().position(|(m, _)| *m == r.metric) {
            Some(i) => &mut open.metrics[i].1,
            None => {
                open.metrics.push((r.metric, Acc::default()));
                let last = open.metrics.len() - 1;
                &mut open.metrics[last].1
            }
        };
        if acc.unit.is_none() {
            acc.unit.clone_from(&r.unit);
        }
        acc.polls = acc.polls.saturating_add(1);
        if let (Quality::Ok, Some(v)) = (r.quality, r.value.filter(|v| v.is_finite())) {
            acc.count = acc.count.saturating_add(1);
            acc.sum += v;
            acc.min = Some(acc.min.map_or(v, |m| m.min(v)));
            acc.max = Some(acc.max.map_or(v, |m| m.max(v)));
            acc.last = Some(v);
        }
    }

    fn close(&mut self, out: &mut Vec<Body>) {
        let Some(open) = self.st.open.take() else {
            return;
        };
        let p = self.period_ms();
        self.st.sent_until_ms = open.start_ms + p;
        self.dirty = true;
        let expected = (p as u64 / self.poll_interval_ms).max(1) as f64;
        let metrics = open
            .metrics
            .into_iter()
            .map(|(metric, a)| PeriodMetric {
                metric,
                unit: a.unit,
                polls: a.polls,
                count: a.count,
                // A sum of n equal values divided by n can land one ulp outside them
                // (3 × 0.1 / 3 = 0.10000000000000002): the aggregator refuses an average
                // outside min … max, so it is clamped into them.
                avg: match (a.min, a.max) {
                    (Some(lo), Some(hi)) if a.count > 0 => {
                        Some((a.sum / f64::from(a.count)).clamp(lo, hi))
                    }
                    _ => None,
                },
                min: a.min,
                max: a.max,
                last: a.last,
                valid: f64::from(a.count) >= self.cfg.min_valid * expected,
            })
            .collect();
        out.push(Body::Period(Period {
            device: self.device.clone(),
            start_ms: open.start_ms,
            period_s: self.cfg.period_s,
            metrics,
        }));
    }

    /// The state as versioned JSON (the ring is not saved).
    pub fn save(&self) -> Vec<u8> {
        let saved = Saved {
            version: STATE_VERSION,
            device: self.device.clone(),
            period_s: self.cfg.period_s,
            state: self.st.clone(),
        };
        serde_json::to_vec(&saved).unwrap_or_default()
    }

    /// Continues from a saved state. When `period_s` changed, the saved open period is sent
    /// as it was (returned), and the next period starts at a boundary of the new length.
    pub fn restore(
        device: &str,
        cfg: ReportConfig,
        poll_interval_ms: u64,
        bytes: &[u8],
    ) -> Result<(DeviceReport, Vec<Body>), ReportError> {
        let saved: Saved = serde_json::from_slice(bytes)?;
        if saved.version != STATE_VERSION {
            return Err(ReportError::Version {
                found: saved.version,
            });
        }
        if saved.device != device {
            return Err(ReportError::Device {
                found: saved.device,
                expected: device.to_string(),
            });
        }
        let mut rep = DeviceReport::new(device, cfg, poll_interval_ms);
        rep.st = saved.state;
        let mut out = Vec::new();
        if saved.period_s != rep.cfg.period_s {
            let new = rep.cfg.period_s;
            rep.cfg.period_s = saved.period_s;
            rep.close(&mut out);
            rep.cfg.period_s = new;
            let p = rep.period_ms();
            rep.st.sent_until_ms = rep.st.sent_until_ms.div_euclid(p) * p
                + if rep.st.sent_until_ms.rem_euclid(p) == 0 {
                    0
                } else {
                    p
                };
        }
        Ok((rep, out))
    }

    /// [`DeviceReport::restore`], or a fresh stage and the reason the state was not used.
    pub fn restore_or_new(
        device: &str,
        cfg: ReportConfig,
        poll_interval_ms: u64,
        bytes: Option<&[u8]>,
    ) -> (DeviceReport, Vec<Body>, Option<ReportError>) {
        match bytes.map(|b| DeviceReport::restore(device, cfg.clone(), poll_interval_ms, b)) {
            None => (
                DeviceReport::new(device, cfg, poll_interval_ms),
                Vec::new(),
                None,
            ),
            Some(Ok((r, out))) => (r, out, None),
            Some(Err(e)) => (
                DeviceReport::new(device, cfg, poll_interval_ms),
                Vec::new(),
                Some(e),
            ),
        }
    }
}
