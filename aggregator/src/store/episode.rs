//! The fold of alarm transitions into one episode. Pure, so every store implementation (and a
//! rebuild from the stored transitions) gets the same answer whatever the delivery order.
//!
//! Rules:
//!
//! - The episode shows the transition that ranks highest by `(phase, ts_ms)`, phases ranked
//!   `raised < updated < cleared`: phase, `ts_ms` (as `last_ts_ms`), `cleared_ms`, value, limit,
//!   suppressed and message all come from it. So a `cleared` wins over any `raised`/`updated`
//!   whenever it arrives, and a late or repeated transition never rewinds the episode. On an
//!   exact tie the transition stored first stays.
//! - `peak` is the largest peak of any transition, `peak_ms` that transition's (the earliest on a
//!   tie); `started_ms` is the earliest.
//! - device, kind and metric come from the first transition stored (they are part of the id; a
//!   transition that disagrees is reported as [`Applied::identity_mismatch`] and folded anyway).
//! - `updates` counts transitions applied; `first_seen_ms`/`last_received_ms` are the
//!   aggregator's clock.

use fumegrid_common::wire::{Alarm, AlarmPhase};

/// What the store keeps per episode (besides its key `(gateway, id)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    pub device: String,
    pub kind: String,
    pub metric: Option<String>,
    pub phase: AlarmPhase,
    pub suppressed: bool,
    pub started_ms: i64,
    pub cleared_ms: Option<i64>,
    pub last_ts_ms: i64,
    pub value: Option<f64>,
    pub peak: Option<f64>,
    pub peak_ms: Option<i64>,
    pub limit: Option<f64>,
    pub message: String,
    pub first_seen_ms: i64,
    pub last_received_ms: i64,
    pub updates: i64,
}

/// The result of applying one transition.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    pub episode: Episode,
    /// The transition became the episode's picture (false: it arrived late and only its peak
    /// and count were folded in).
    pub advanced: bool,
    /// The transition names another device, kind or metric than the episode.
    pub identity_mismatch: bool,
}

pub fn phase_rank(p: AlarmPhase) -> u8 {
    match p {
        AlarmPhase::Raised => 0,
        AlarmPhase::Updated => 1,
        AlarmPhase::Cleared => 2,
    }
}

pub fn phase_name(p: AlarmPhase) -> &'static str {
    match p {
        AlarmPhase::Raised => "raised",
        AlarmPhase::Updated => "updated",
        AlarmPhase::Cleared => "cleared",
    }
}

pub fn phase_from_name(s: &str) -> Option<AlarmPhase> {
    match s {
        "raised" => Some(AlarmPhase::Raised),
        "updated" => Some(AlarmPhase::Updated),
        "cleared" => Some(AlarmPhase::Cleared),
        _ => None,
    }
}

fn min_some(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Folds transition `a`, received at `now_ms`, into `prev` (none for the first one).
pub fn apply(prev: Option<Episode>, a: &Alarm, now_ms: i64) -> Applied {
    let metric = a.metric.map(|m| m.name().to_string());
    let Some(mut e) = prev else {
        return Applied {
            episode: Episode {
                device: a.device.clone(),
                kind: a.kind.name().to_string(),
                metric,
                phase: a.phase,
                suppressed: a.suppressed,
                started_ms: a.started_ms,
                cleared_ms: a.cleared_ms,
                last_ts_ms: a.ts_ms,
                value: a.value,
                peak: a.peak,
                peak_ms: a.peak.and(a.peak_ms),
                limit: a.limit,
                message: a.message.clone(),
                first_seen_ms: now_ms,
                last_received_ms: now_ms,
                updates: 1,
            },
            advanced: true,
            identity_mismatch: false,
        };
    };
    let identity_mismatch = e.device != a.device || e.kind != a.kind.name() || e.metric != metric;
    let advanced = (phase_rank(a.phase), a.ts_ms) > (phase_rank(e.phase), e.last_ts_ms);
    if advanced {
        e.phase = a.phase;
        e.last_ts_ms = a.ts_ms;
        e.cleared_ms = a.cleared_ms;
        e.value = a.value;
        e.limit = a.limit;
        e.suppressed = a.suppressed;
        e.message.clone_from(&a.message);
    }
    e.started_ms = e.started_ms.min(a.started_ms);
    if let Some(p) = a.peak {
        match e.peak {
            Some(old) if old > p => {}
            Some(old) if old == p => e.peak_ms = min_some(e.peak_ms, a.peak_ms),
            _ => {
                e.peak = Some(p);
                e.peak_ms = a.peak_ms;
            }
        }
    }
    e.updates += 1;
    e.last_received_ms = e.last_received_ms.max(now_ms);
    Applied {
        episode: e,
        advanced,
        identity_mismatch,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use fumegrid_common::metric::Metric;
    use fumegrid_common::wire::AlarmKind;

    /// An exceedance transition of episode `ep-1` with value = peak = `v` at `ts`.
    pub(crate) fn alarm(phase: AlarmPhase, ts: i64, v: f64) -> Alarm {
        Alarm {
            id: "rest-1:exceedance:fume_mg_m3:1000".into(),
            device: "rest-1".into(),
            kind: AlarmKind::Exceedance,
            metric: Some(Metric::FumeMgM3),
            phase,
            started_ms: 1000,
            ts_ms: ts,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts),
            value: Some(v),
            peak: Some(v),
            peak_ms: Some(ts),
            limit: Some(2.0),
            suppressed: false,
            message: format!("{} at {ts}", phase_name(phase)),
        }
    }

    fn fold(ts: &[Alarm]) -> Episode {
        let mut e = None;
        for (i, a) in ts.iter().enumerate() {
            e = Some(apply(e, a, 10 + i as i64).episode);
        }
        e.expect("at least one")
    }

    fn permutations<T: Clone>(v: &[T]) -> Vec<Vec<T>> {
        if v.len() <= 1 {
            return vec![v.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..v.len() {
            let mut rest = v.to_vec();
            let x = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, x.clone());
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn every_delivery_order_gives_the_same_episode() {
        let ts = [
            alarm(AlarmPhase::Raised, 2000, 2.5),
            alarm(AlarmPhase::Updated, 3000, 3.1),
            alarm(AlarmPhase::Updated, 4000, 2.7),
            alarm(AlarmPhase::Cleared, 5000, 1.2),
        ];
        let mut want = None;
        for p in permutations(&ts) {
            let mut e = fold(&p);
            // Only the aggregator clock differs between orders.
            e.first_seen_ms = 0;
            e.last_received_ms = 0;
            match &want {
                None => want = Some(e),
                Some(w) => assert_eq!(
                    &e,
                    w,
                    "order {:?}",
                    p.iter().map(|a| a.ts_ms).collect::<Vec<_>>()
                ),
            }
        }
        let e = want.expect("some");
        assert_eq!(e.phase, AlarmPhase::Cleared);
        assert_eq!((e.last_ts_ms, e.cleared_ms), (5000, Some(5000)));
        assert_eq!(
            e.value,
            Some(1.2),
            "value of the winning (cleared) transition"
        );
        assert_eq!((e.peak, e.peak_ms), (Some(3.1), Some(3000)));
        assert_eq!(e.message, "cleared at 5000");
        assert_eq!(e.updates, 4);
    }

    #[test]
    fn cleared_wins_over_a_later_update() {
        // An `updated` judged after the `cleared` (a clock step, or a replay): still cleared.
        let e = fold(&[
            alarm(AlarmPhase::Raised, 2000, 2.5),
            alarm(AlarmPhase::Cleared, 5000, 1.0),
        ]);
        let a = apply(Some(e), &alarm(AlarmPhase::Updated, 9000, 4.0), 99);
        assert!(!a.advanced);
        assert_eq!(a.episode.phase, AlarmPhase::Cleared);
        assert_eq!(a.episode.cleared_ms, Some(5000));
        assert_eq!(a.episode.value, Some(1.0));
        assert_eq!(a.episode.peak, Some(4.0), "its peak still counts");
        assert_eq!(a.episode.last_received_ms, 99);
        assert_eq!(a.episode.first_seen_ms, 10);
    }

    #[test]
    fn identity_is_kept_and_mismatch_reported() {
        let e = fold(&[alarm(AlarmPhase::Raised, 2000, 2.5)]);
        let mut other = alarm(AlarmPhase::Updated, 3000, 2.6);
        other.device = "rest-2".into();
        other.started_ms = 500;
        other.peak = None;
        let a = apply(Some(e), &other, 11);
        assert!(a.identity_mismatch && a.advanced);
        assert_eq!(a.episode.device, "rest-1");
        assert_eq!(a.episode.started_ms, 500);
        assert_eq!((a.episode.peak, a.episode.peak_ms), (Some(2.5), Some(2000)));
    }

    #[test]
    fn equal_peaks_keep_the_earliest_time() {
        let mut late = alarm(AlarmPhase::Updated, 4000, 3.0);
        late.peak_ms = Some(4000);
        let mut early = alarm(AlarmPhase::Raised, 2000, 3.0);
        early.peak_ms = Some(2000);
        for order in [[&late, &early], [&early, &late]] {
            let e = fold(&[order[0].clone(), order[1].clone()]);
            assert_eq!((e.peak, e.peak_ms), (Some(3.0), Some(2000)));
        }
    }
}
