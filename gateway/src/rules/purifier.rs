//! Purifier linkage: `purifier_idle` (installed but not used, 只装不用) and `purifier_dirty`
//! (used but not cleaned, 只用不洗), with the learned clean baselines.

use fumegrid_common::wire::{Alarm, AlarmKind};
use serde::{Deserialize, Serialize};

use super::exceedance::{Bucket, PURIFIER_CURRENT, PURIFIER_FUME};
use super::health::{Sustain, secs_ms};
use super::{DeviceRules, human_duration};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct PurifierState {
    idle: Sustain,
    dirty: Sustain,
    /// Steps with the purifier running seen while learning, and the sums learned from.
    learn_steps: u64,
    learn_current: (f64, u32),
    learn_fume: (f64, u32),
    /// Set once `baseline_learn_s` of running time was seen; frozen afterwards.
    baseline_current: Option<f64>,
    baseline_fume: Option<f64>,
    learned: bool,
}

impl DeviceRules {
    /// Learning from one closed step.
    pub(super) fn learn_baseline(&mut self, b: &Bucket) {
        let p = &mut self.st.purifier;
        if p.learned || (b.n[PURIFIER_CURRENT] == 0 && b.n[PURIFIER_FUME] == 0) {
            return;
        }
        p.learn_steps += 1;
        p.learn_current.0 += b.sum[PURIFIER_CURRENT];
        p.learn_current.1 += b.n[PURIFIER_CURRENT];
        p.learn_fume.0 += b.sum[PURIFIER_FUME];
        p.learn_fume.1 += b.n[PURIFIER_FUME];
        if p.learn_steps.saturating_mul(self.cfg.eval_every_s) >= self.cfg.baseline_learn_s {
            let mean = |(sum, n): (f64, u32)| (n > 0).then(|| sum / f64::from(n));
            p.baseline_current = mean(p.learn_current);
            p.baseline_fume = mean(p.learn_fume);
            p.learned = true;
        }
    }

    /// The clean purifier current: configured, else learned.
    pub fn purifier_baseline_a(&self) -> Option<f64> {
        self.cfg
            .purifier_baseline_a
            .or(self.st.purifier.baseline_current)
    }

    /// `purifier_idle`, judged on each poll the device answered.
    pub(super) fn judge_idle(&mut self, now_ms: i64, responded: bool, out: &mut Vec<Alarm>) {
        let s = &self.st.signals;
        if !responded || (s.purifier_on.is_none() && s.purifier_current.is_none()) {
            return;
        }
        let cond = s.fan == Some(true) && !self.purifier_running();
        let current = s.purifier_current;
        let hold = secs_ms(self.cfg.clear_hold_s);
        let gap = secs_ms(self.cfg.offline_after_s);
        let since = self.st.purifier.idle.observe(cond, now_ms, hold, gap);
        let open = self.find(AlarmKind::PurifierIdle, None);
        let msg = |since: i64| {
            format!(
                "fan running but purifier off{} for {}: installed but not used",
                current.map_or(String::new(), |c| format!(" ({c:.2} A)")),
                human_duration(now_ms - since)
            )
        };
        match (since, open) {
            (Some(s), None) if cond && now_ms - s >= secs_ms(self.cfg.purifier_idle_after_s) => {
                let m = msg(s);
                self.raise(
                    out,
                    AlarmKind::PurifierIdle,
                    None,
                    s,
                    now_ms,
                    current,
                    None,
                    m,
                );
            }
            (Some(_), Some(i)) if self.touch(i, now_ms, current) => {
                let m = msg(self.st.episodes[i].started_ms);
                self.emit_update(out, i, now_ms, m);
            }
            (None, Some(i)) => {
                let m = if self.st.signals.fan == Some(true) {
                    "purifier running again with the fan".to_string()
                } else {
                    "fan stopped".to_string()
                };
                self.clear(out, i, now_ms, current, m);
            }
            _ => {}
        }
    }

    /// `purifier_dirty`, judged at the end of each step on the window averages.
    pub(super) fn judge_dirty(&mut self, w: &Bucket, t: i64, out: &mut Vec<Alarm>) {
        let min = self.cfg.min_samples;
        let avg = |s: usize| (w.n[s] >= min && w.n[s] > 0).then(|| w.sum[s] / f64::from(w.n[s]));
        let current = avg(PURIFIER_CURRENT);
        let fume = avg(PURIFIER_FUME);
        let base_i = self.purifier_baseline_a();
        let by_current = match (current, base_i) {
            (Some(c), Some(b)) => Some(c < self.cfg.purifier_dirty_fraction * b),
            _ => None,
        };
        let base_f = self.st.purifier.baseline_fume;
        let factor = self.cfg.dirty_fume_factor;
        let by_fume = match (fume, base_f) {
            (Some(f), Some(b)) if factor > 0.0 => {
                Some(f >= factor * b && self.limits[0].is_none_or(|l| f >= 0.5 * l && f <= l))
            }
            _ => None,
        };
        if by_current.is_none() && by_fume.is_none() {
            return;
        }
        let cond = by_current == Some(true) || by_fume == Some(true);
        let hold = secs_ms(self.cfg.clear_hold_s);
        let gap = secs_ms(self.cfg.offline_after_s);
        let since = self.st.purifier.dirty.observe(cond, t, hold, gap);
        let open = self.find(AlarmKind::PurifierDirty, None);
        let msg = || {
            let mut parts = Vec::new();
            if let (Some(true), Some(c), Some(b)) = (by_current, current, base_i) {
                parts.push(format!(
                    "purifier current {c:.2} A is {:.0} % of its clean {b:.2} A",
                    100.0 * c / b
                ));
            }
            if let (Some(true), Some(f), Some(b)) = (by_fume, fume, base_f) {
                parts.push(format!(
                    "fume {f:.2} mg/m³ is {:.1}× its {b:.2} baseline while the purifier runs",
                    f / b
                ));
            }
            if parts.is_empty() {
                parts.push("purifier still degraded".to_string());
            }
            format!("{}: used but not cleaned", parts.join("; "))
        };
        match (since, open) {
            (Some(s), None) if cond && t - s >= secs_ms(self.cfg.purifier_dirty_after_s) => {
                let m = msg();
                self.raise(out, AlarmKind::PurifierDirty, None, s, t, current, None, m);
                if let (Some(e), Some(b), Some(a)) =
                    (self.st.episodes.last_mut(), base_i, out.last_mut())
                {
                    let threshold = self.cfg.purifier_dirty_fraction * b;
                    e.limit = Some(threshold);
                    a.limit = Some(threshold);
                }
            }
            (Some(_), Some(i)) if cond && self.touch(i, t, current) => {
                let m = msg();
                self.emit_update(out, i, t, m);
            }
            (None, Some(i)) => {
                self.clear(
                    out,
                    i,
                    t,
                    current,
                    "purifier back to its clean current and fume level".to_string(),
                );
            }
            _ => {}
        }
    }
}
