//! What to publish next: a pure planner over the outbox's unacked items.
//!
//! Order of precedence, so that after an outage the centre learns what is happening *now*:
//! 1. priority items (alarms, events), whenever any is not in flight;
//! 2. live items: appended since the current connection came up (seq ≥ `live_from`);
//! 3. backlog: older items, at most `backlog_items_per_s` (token bucket), so a long outage drains
//!    without starving live traffic or flooding the uplink.
//!
//! Only durable items are published: priority items are flushed when appended, readings once
//! the uplink has flushed the outbox past them (`durable_upto`). So a seq the aggregator has
//! seen can never be handed out again after a crash — an unflushed reading lost in a crash was
//! seen by nobody, and its seq is free.
//!
//! A batch counts as in flight from publish until the aggregator acks its seqs. A batch not
//! acked within `ack_timeout` means the broker took it but no aggregator stored it (aggregator
//! down, session lost): everything unacked is planned again from the start; the aggregator's
//! dedupe makes repeats harmless. Reconnecting does the same: acks, not memory, decide what is
//! still owed.

use std::collections::BTreeSet;
use std::time::Duration;

use fumegrid_common::wire::Item;
use tokio::time::Instant;

/// What the planner needs from the outbox.
pub trait Pending {
    /// Unacked items with `after < seq < before`, ascending, at most `limit`. The planner bounds
    /// every read, so items it would not send are never read (or decoded).
    fn pending(&self, after: u64, before: u64, limit: usize, priority_only: bool) -> Vec<Item>;
    /// The seq the next appended item will get.
    fn next_seq(&self) -> u64;
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub batch_max_items: usize,
    /// Batches of live items allowed in flight at once.
    pub max_live_inflight: usize,
    /// Batches of backlog allowed in flight at once.
    pub max_backlog_inflight: usize,
    pub backlog_items_per_s: f64,
    pub ack_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Priority,
    Live,
    Backlog,
}

#[derive(Debug, Clone)]
struct Inflight {
    seqs: Vec<u64>,
    sent_at: Instant,
    class: Class,
}

#[derive(Debug)]
pub struct Planner {
    cfg: PlanConfig,
    live_from: u64,
    live_cursor: u64,
    backlog_cursor: u64,
    priority_inflight: BTreeSet<u64>,
    inflight: Vec<Inflight>,
    tokens: f64,
    refilled: Instant,
    /// Batches re-planned after an ack timeout, for stats.
    pub timeouts: u64,
}

impl Planner {
    pub fn new(cfg: PlanConfig, next_seq: u64, now: Instant) -> Planner {
        let tokens = cfg.batch_max_items as f64;
        Planner {
            cfg,
            live_from: next_seq,
            live_cursor: 0,
            backlog_cursor: 0,
            priority_inflight: BTreeSet::new(),
            inflight: Vec::new(),
            tokens,
            refilled: now,
            timeouts: 0,
        }
    }

    /// A (re)connection: nothing is in flight any more; what was appended before now is backlog.
    pub fn on_connect(&mut self, next_seq: u64, now: Instant) {
        self.live_from = next_seq;
        self.restart(now);
    }

    fn restart(&mut self, now: Instant) {
        self.live_cursor = 0;
        self.backlog_cursor = 0;
        self.priority_inflight.clear();
        self.inflight.clear();
        self.refilled = now;
    }

    /// The aggregator stored these seqs.
    pub fn on_ack(&mut self, ranges: &[(u64, u64)]) {
        let acked = |s: u64| ranges.iter().any(|&(a, b)| a <= s && s <= b);
        self.priority_inflight.retain(|&s| !acked(s));
        self.inflight.retain_mut(|b| {
            b.seqs.retain(|&s| !acked(s));
            !b.seqs.is_empty()
        });
    }

    pub fn inflight_batches(&self) -> usize {
        self.inflight.len()
    }

    /// The next batch to publish, if any may go now. Readings with seq > `durable_upto` wait.
    pub fn next_batch(
        &mut self,
        src: &impl Pending,
        durable_upto: u64,
        now: Instant,
    ) -> Option<(Class, Vec<Item>)> {
        if self
            .inflight
            .iter()
            .any(|b| now.duration_since(b.sent_at) >= self.cfg.ack_timeout)
        {
            self.timeouts += 1;
            self.restart(now);
        }
        let max = self.cfg.batch_max_items.max(1);
        // 1. Priority items not yet in flight.
        let items: Vec<Item> = src
            .pending(0, u64::MAX, max + self.priority_inflight.len(), true)
            .into_iter()
            .filter(|i| !self.priority_inflight.contains(&i.seq))
            .take(max)
            .collect();
        if !items.is_empty() {
            self.priority_inflight.extend(items.iter().map(|i| i.seq));
            return Some(self.record(Class::Priority, items, now));
        }
        // 2. Live.
        if self.count(Class::Live) < self.cfg.max_live_inflight {
            let after = self.live_cursor.max(self.live_from.saturating_sub(1));
            let items: Vec<Item> = src
                .pending(after, durable_upto.saturating_add(1), max, false)
                .into_iter()
                .take_while(|i| i.seq <= durable_upto)
                .collect();
            if let Some(last) = items.last() {
                self.live_cursor = last.seq;
                let items: Vec<Item> = items
                    .into_iter()
                    .filter(|i| !i.body.is_priority())
                    .collect();
                if !items.is_empty() {
                    return Some(self.record(Class::Live, items, now));
                }
            }
        }
        // 3. Backlog, rate-limited.
        let rate = self.cfg.backlog_items_per_s;
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate)
            .min(max as f64 * 2.0);
        self.refilled = now;
        if self.count(Class::Backlog) < self.cfg.max_backlog_inflight && self.tokens >= 1.0 {
            let limit = max.min(self.tokens as usize);
            let items: Vec<Item> = src
                .pending(
                    self.backlog_cursor,
                    self.live_from.min(durable_upto.saturating_add(1)),
                    limit,
                    false,
                )
                .into_iter()
                .take_while(|i| i.seq < self.live_from && i.seq <= durable_upto)
                .collect();
            if let Some(last) = items.last() {
                self.backlog_cursor = last.seq;
                let items: Vec<Item> = items
                    .into_iter()
                    .filter(|i| !i.body.is_priority())
                    .collect();
                if !items.is_empty() {
                    self.tokens -= items.len() as f64;
                    return Some(self.record(Class::Backlog, items, now));
                }
                // Only priority items in this stretch (sent separately): look further next time.
                return self.next_batch(src, durable_upto, now);
            }
        }
        None
    }

    fn count(&self, class: Class) -> usize {
        self.inflight.iter().filter(|b| b.class == class).count()
    }

    fn record(&mut self, class: Class, items: Vec<Item>, now: Instant) -> (Class, Vec<Item>) {
        self.inflight.push(Inflight {
            seqs: items.iter().map(|i| i.seq).collect(),
            sent_at: now,
            class,
        });
        (class, items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Body, Event, EventKind};
    use std::collections::BTreeMap;

    /// The outbox as far as the planner sees it.
    #[derive(Default)]
    struct Model {
        items: BTreeMap<u64, Body>,
        next: u64,
    }

    impl Model {
        fn push(&mut self, priority: bool) -> u64 {
            self.next += 1;
            let body = if priority {
                Body::Event(Event {
                    ts_ms: 0,
                    kind: EventKind::Started,
                    message: String::new(),
                    dropped: None,
                    from_ms: None,
                    to_ms: None,
                })
            } else {
                Body::Reading(Reading {
                    device: "d".into(),
                    unit: None,
                    metric: Metric::FumeMgM3,
                    value: Some(1.0),
                    quality: Quality::Ok,
                    ts_ms: 0,
                })
            };
            self.items.insert(self.next, body);
            self.next
        }
        fn ack(&mut self, seqs: &[u64]) -> Vec<(u64, u64)> {
            for s in seqs {
                self.items.remove(s);
            }
            seqs.iter().map(|&s| (s, s)).collect()
        }
    }

    impl Pending for Model {
        fn pending(&self, after: u64, before: u64, limit: usize, priority_only: bool) -> Vec<Item> {
            self.items
                .range(after + 1..before.max(after + 1))
                .filter(|(_, b)| !priority_only || b.is_priority())
                .take(limit)
                .map(|(&seq, b)| Item {
                    seq,
                    body: b.clone(),
                })
                .collect()
        }
        fn next_seq(&self) -> u64 {
            self.next + 1
        }
    }

    fn cfg() -> PlanConfig {
        PlanConfig {
            batch_max_items: 10,
            max_live_inflight: 2,
            max_backlog_inflight: 1,
            backlog_items_per_s: 20.0,
            ack_timeout: Duration::from_secs(30),
        }
    }

    fn seqs(b: &(Class, Vec<Item>)) -> Vec<u64> {
        b.1.iter().map(|i| i.seq).collect()
    }

    #[test]
    fn after_an_outage_alarms_then_live_then_rate_limited_backlog() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        for _ in 0..100 {
            m.push(false); // backlog recorded while the uplink was down
        }
        let alarm = m.push(true);
        let mut p = Planner::new(cfg(), 1, t0);
        p.on_connect(m.next_seq(), t0);
        let live: Vec<u64> = (0..3).map(|_| m.push(false)).collect();

        let b = p.next_batch(&m, u64::MAX, t0).expect("priority first");
        assert_eq!((b.0, seqs(&b)), (Class::Priority, vec![alarm]));
        let b = p.next_batch(&m, u64::MAX, t0).expect("then live");
        assert_eq!((b.0, seqs(&b)), (Class::Live, live.clone()));
        let b = p.next_batch(&m, u64::MAX, t0).expect("then backlog");
        assert_eq!(
            (b.0, seqs(&b)),
            (Class::Backlog, (1..=10).collect::<Vec<_>>())
        );
        assert!(
            p.next_batch(&m, u64::MAX, t0).is_none(),
            "one backlog batch in flight at most"
        );
        // The ack frees the backlog window, but the bucket (20/s, 10 spent of 10) must refill.
        let r = m.ack(&(1..=10).collect::<Vec<_>>());
        p.on_ack(&r);
        assert!(
            p.next_batch(&m, u64::MAX, t0).is_none(),
            "no tokens left at t0"
        );
        let b = p
            .next_batch(&m, u64::MAX, t0 + Duration::from_millis(500))
            .expect("refilled");
        assert_eq!(seqs(&b), (11..=20).collect::<Vec<_>>());
    }

    #[test]
    fn unacked_batches_are_planned_again_after_the_ack_timeout() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        let mut p = Planner::new(cfg(), m.next_seq(), t0);
        let a = m.push(false);
        let b1 = p.next_batch(&m, u64::MAX, t0).expect("live");
        assert_eq!(seqs(&b1), vec![a]);
        assert!(
            p.next_batch(&m, u64::MAX, t0 + Duration::from_secs(29))
                .is_none()
        );
        let again = p
            .next_batch(&m, u64::MAX, t0 + Duration::from_secs(30))
            .expect("resent");
        assert_eq!(seqs(&again), vec![a]);
        assert_eq!(p.timeouts, 1);
    }

    #[test]
    fn readings_wait_until_durable_alarms_do_not() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        let mut p = Planner::new(cfg(), m.next_seq(), t0);
        let r1 = m.push(false);
        let r2 = m.push(false);
        let alarm = m.push(true);
        let b = p
            .next_batch(&m, 0, t0)
            .expect("the alarm is durable when appended");
        assert_eq!(seqs(&b), vec![alarm]);
        assert!(
            p.next_batch(&m, 0, t0).is_none(),
            "readings not flushed yet"
        );
        let b = p.next_batch(&m, r1, t0).expect("flushed up to r1");
        assert_eq!(seqs(&b), vec![r1]);
        let b = p.next_batch(&m, alarm, t0).expect("flushed further");
        assert_eq!(seqs(&b), vec![r2]);
    }

    #[test]
    fn live_window_is_bounded_and_acks_open_it() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        let mut p = Planner::new(cfg(), m.next_seq(), t0);
        for _ in 0..35 {
            m.push(false);
        }
        let b1 = p.next_batch(&m, u64::MAX, t0).expect("1");
        let b2 = p.next_batch(&m, u64::MAX, t0).expect("2");
        assert!(
            p.next_batch(&m, u64::MAX, t0).is_none(),
            "two live batches in flight"
        );
        let r = m.ack(&seqs(&b1));
        p.on_ack(&r);
        let b3 = p.next_batch(&m, u64::MAX, t0).expect("3");
        assert_eq!(seqs(&b3)[0], seqs(&b2)[9] + 1);
    }

    #[test]
    fn reconnect_resends_everything_unacked_exactly_once_per_plan() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        let mut p = Planner::new(cfg(), m.next_seq(), t0);
        for _ in 0..5 {
            m.push(false);
        }
        let _ = p
            .next_batch(&m, u64::MAX, t0)
            .expect("sent, then the link dropped");
        p.on_connect(m.next_seq(), t0);
        let b = p.next_batch(&m, u64::MAX, t0).expect("backlog again");
        assert_eq!((b.0, seqs(&b)), (Class::Backlog, vec![1, 2, 3, 4, 5]));
        assert!(p.next_batch(&m, u64::MAX, t0).is_none());
    }
}
