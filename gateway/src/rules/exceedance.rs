//! The rolling window (per-step aggregates) and the exceedance rule.

use std::collections::VecDeque;

use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{Alarm, AlarmKind};
use serde::{Deserialize, Serialize};

use super::config::CONCENTRATIONS;
use super::{DeviceRules, metric_label};

/// Series kept per step: the three concentrations (fan on), then the purifier's current and
/// the fume, both while the purifier runs (fan on).
pub(super) const SERIES: usize = 5;
pub(super) const PURIFIER_CURRENT: usize = 3;
pub(super) const PURIFIER_FUME: usize = 4;

/// Sum and count of valid samples of one step.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Bucket {
    pub sum: [f64; SERIES],
    pub n: [u32; SERIES],
}

impl Bucket {
    fn add(&mut self, series: usize, v: f64) {
        self.sum[series] += v;
        self.n[series] += 1;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Window {
    /// End of the open step; `None` before the first call.
    pub step_end: Option<i64>,
    pub open: Bucket,
    /// Closed steps, oldest first, at most `window_steps`.
    pub closed: VecDeque<Bucket>,
    /// Set by a restore: the first advance skips a gap longer than the window unjudged.
    pub resumed: bool,
}

/// Streaks of one concentration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct ExState {
    over: u32,
    under: u32,
    /// First judgment of the current over-limit streak, and the streak's highest average.
    streak_start: Option<i64>,
    streak_peak: f64,
    streak_peak_ms: i64,
}

impl DeviceRules {
    /// Closes every step that ended at or before `now_ms`, judging each.
    pub(super) fn advance(&mut self, now_ms: i64, out: &mut Vec<Alarm>) {
        let step = self.step_ms;
        let next_boundary = |t: i64| (t.div_euclid(step) + 1) * step;
        let Some(mut end) = self.st.window.step_end else {
            self.st.window.step_end = Some(next_boundary(now_ms));
            return;
        };
        let window_ms = step * self.window_steps as i64;
        if std::mem::take(&mut self.st.window.resumed) && now_ms >= end + window_ms {
            // The gateway was down longer than the window: what it did not see is not judged.
            self.st.window.open = Bucket::default();
            self.st.window.closed.clear();
            self.st.window.step_end = Some(next_boundary(now_ms));
            return;
        }
        // After this many empty steps every streak is saturated: skip the rest of a long gap.
        let cap =
            self.window_steps + self.cfg.raise_after as usize + self.cfg.clear_after as usize + 2;
        let mut closed = 0;
        let first_new = out.len();
        while now_ms >= end {
            if closed >= cap {
                end = next_boundary(now_ms);
                break;
            }
            self.close_step(end, out);
            closed += 1;
            end += step;
        }
        self.st.window.step_end = Some(end);
        // A step is judged when the first reading (or tick) after its end arrives: that is when
        // the transition happens, and what its latency is measured from.
        for a in &mut out[first_new..] {
            a.ts_ms = a.ts_ms.max(now_ms);
        }
    }

    fn close_step(&mut self, t: i64, out: &mut Vec<Alarm>) {
        let w = &mut self.st.window;
        let bucket = std::mem::take(&mut w.open);
        w.closed.push_back(bucket);
        while w.closed.len() > self.window_steps {
            w.closed.pop_front();
        }
        let mut total = Bucket::default();
        for b in &w.closed {
            for s in 0..SERIES {
                total.sum[s] += b.sum[s];
                total.n[s] += b.n[s];
            }
        }
        self.learn_baseline(&bucket);
        for (i, m) in CONCENTRATIONS.into_iter().enumerate() {
            if let Some(limit) = self.limits[i] {
                self.judge_exceedance(i, m, limit, total.sum[i], total.n[i], t, out);
            }
        }
        self.judge_dirty(&total, t, out);
    }

    /// A valid reading taken while the fan runs.
    pub(super) fn add_sample(&mut self, metric: Metric, v: f64, purifier_running: bool) {
        let b = &mut self.st.window.open;
        match metric {
            Metric::FumeMgM3 | Metric::ParticulateMgM3 | Metric::NmhcMgM3 => {
                let corrected = match (self.cfg.reference_flow_m3_h, self.st.signals.flow) {
                    (Some(q_ref), Some(q)) => v * q / q_ref,
                    _ => v,
                };
                b.add(metric.index().unwrap_or(0), corrected);
                if metric == Metric::FumeMgM3 && purifier_running {
                    b.add(PURIFIER_FUME, v);
                }
            }
            Metric::PurifierCurrentA if purifier_running => b.add(PURIFIER_CURRENT, v),
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn judge_exceedance(
        &mut self,
        i: usize,
        m: Metric,
        limit: f64,
        sum: f64,
        n: u32,
        t: i64,
        out: &mut Vec<Alarm>,
    ) {
        let open = self.find(AlarmKind::Exceedance, Some(m));
        let clear_after = self.cfg.clear_after;
        let ex = &mut self.st.exceedance[i];
        if n == 0 {
            ex.over = 0;
            ex.streak_start = None;
            if let Some(e) = open {
                ex.under += 1;
                if ex.under >= clear_after {
                    ex.under = 0;
                    let msg = format!(
                        "no valid {} reading with the fan on for a whole {} window (fan off or no data)",
                        metric_label(&m),
                        self.window_label()
                    );
                    self.clear(out, e, t, None, msg);
                }
            }
            return;
        }
        if n < self.cfg.min_samples {
            return;
        }
        let avg = sum / f64::from(n);
        if avg > limit {
            ex.over += 1;
            ex.under = 0;
            if ex.streak_start.is_none() || avg > ex.streak_peak {
                ex.streak_peak = avg;
                ex.streak_peak_ms = t;
            }
            let start = *ex.streak_start.get_or_insert(t);
            let (over, peak, peak_ms) = (ex.over, ex.streak_peak, ex.streak_peak_ms);
            match open {
                Some(e) if self.touch(e, t, Some(avg)) => {
                    let msg = self.exceedance_message(m, avg, limit, "over");
                    self.emit_update(out, e, t, msg);
                }
                None if over >= self.cfg.raise_after => {
                    let msg = self.exceedance_message(m, avg, limit, "over");
                    self.raise(
                        out,
                        AlarmKind::Exceedance,
                        Some(m),
                        start,
                        t,
                        Some(avg),
                        Some(limit),
                        msg,
                    );
                    if let Some(e) = self.st.episodes.last_mut() {
                        e.peak = Some(peak.max(avg));
                        e.peak_ms = Some(if avg >= peak { t } else { peak_ms });
                        e.last_emit_peak = e.peak;
                    }
                    if let Some(a) = out.last_mut() {
                        a.peak = Some(peak.max(avg));
                        a.peak_ms = Some(if avg >= peak { t } else { peak_ms });
                    }
                }
                _ => {}
            }
            return;
        }
        ex.over = 0;
        ex.streak_start = None;
        if avg < self.cfg.clear_fraction * limit {
            ex.under += 1;
        } else {
            ex.under = 0;
        }
        let under = ex.under;
        if let Some(e) = open {
            if under >= clear_after {
                self.st.exceedance[i].under = 0;
                let msg = self.exceedance_message(m, avg, limit, "back under");
                self.clear(out, e, t, Some(avg), msg);
            } else if self.touch(e, t, Some(avg)) {
                let msg = self.exceedance_message(m, avg, limit, "near");
                self.emit_update(out, e, t, msg);
            }
        }
    }

    /// "10-min average fume 2.84 mg/m³ over the 2.0 limit (GB 18483-2001), fan on".
    fn exceedance_message(&self, m: Metric, avg: f64, limit: f64, relation: &str) -> String {
        let mut s = format!(
            "{} average {} {avg:.2} {} {relation} the {limit:?} limit ({})",
            self.window_label(),
            metric_label(&m),
            m.unit(),
            self.cfg.standard.label()
        );
        if relation == "back under" {
            s = format!(
                "{} average {} {avg:.2} {} back under {:.0} % of the {limit:?} limit ({})",
                self.window_label(),
                metric_label(&m),
                m.unit(),
                self.cfg.clear_fraction * 100.0,
                self.cfg.standard.label()
            );
        }
        if let Some(q) = self.cfg.reference_flow_m3_h {
            s.push_str(&format!(", corrected to {q} m³/h reference flow"));
        }
        s.push_str(", fan on");
        s
    }

    /// "10-min" or "30-s".
    fn window_label(&self) -> String {
        let s = self.cfg.window_s;
        if s.is_multiple_of(60) {
            format!("{}-min", s / 60)
        } else {
            format!("{s}-s")
        }
    }
}
