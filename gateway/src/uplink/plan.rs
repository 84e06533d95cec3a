//! What to publish next: a pure planner over the outbox's unacked items.
//!
//! Order of precedence, so that after an outage the centre learns what is happening *now*:
//! 1. priority items (alarms, events), whenever any is not in flight;
//! 2. live readings: appended since the current connection came up (seq ≥ `live_from`);
//! 3. evidence (picture parts), oldest first, at most `max_evidence_inflight` batches in flight;
//! 4. backlog readings: older ones, at most `backlog_items_per_s` (token bucket), so a long
//!    outage drains without starving live traffic or flooding the uplink.
//!
//! Why live readings before pictures (DESIGN §12 puts evidence "after alarms, before backlog
//! readings" and leaves live readings open): a live batch is a few hundred bytes a second,
//! so it costs a picture nothing, while a picture is up to 8 MiB (about 170 parts): put ahead
//! of live readings, it would hold the district's view of *now* back for its whole transfer
//! over a slow 4G link. Each class has its own in-flight window, so a picture still moves at
//! the link's pace while readings flow beside it.
//!
//! Every batch is bounded by `batch_max_items` and by `batch_max_bytes` (its items' JSON, plus
//! [`BATCH_OVERHEAD`] for the envelope and seal), so that one MQTT publish stays under the
//! broker's packet limit (docs/wire.md); a single item larger than that still goes alone.
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

use fumegrid_common::wire::{EVIDENCE_PART_BYTES, Item};
use tokio::time::Instant;

use crate::outbox::Class as Kind;

/// Bytes a batch's envelope adds to its items: `gateway` (≤ 64), `stream` (≤ 128), `sent_ms`,
/// the field names and the seal's 74, with room to spare.
pub const BATCH_OVERHEAD: usize = 512;

/// What the planner needs from the outbox.
pub trait Pending {
    /// Unacked items of one class with `after < seq < before`, ascending, at most `limit`.
    /// The planner bounds every read, so items it would not send are never read (or decoded).
    fn pending(&self, class: Kind, after: u64, before: u64, limit: usize) -> Vec<Item>;
    /// The seq the next appended item will get.
    fn next_seq(&self) -> u64;
}

#[derive(Debug, Clone)]
pub struct PlanConfig {
    pub batch_max_items: usize,
    /// Bound on a batch's bytes (see the module doc).
    pub batch_max_bytes: usize,
    /// Batches of live items allowed in flight at once.
    pub max_live_inflight: usize,
    /// Batches of picture parts allowed in flight at once.
    pub max_evidence_inflight: usize,
    /// Batches of backlog allowed in flight at once.
    pub max_backlog_inflight: usize,
    pub backlog_items_per_s: f64,
    pub ack_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Priority,
    Live,
    Evidence,
    Backlog,
}

/// The size of `item` in a batch: its JSON and a separating comma.
pub fn wire_len(item: &Item) -> usize {
    serde_json::to_vec(item).map_or(usize::MAX / 2, |v| v.len() + 1)
}

/// The longest prefix of `items` whose batch stays within `max_bytes` (at least one item).
fn bounded(items: Vec<Item>, max_bytes: usize) -> Vec<Item> {
    let mut total = BATCH_OVERHEAD;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let len = wire_len(&item);
        if !out.is_empty() && total.saturating_add(len) > max_bytes {
            break;
        }
        total = total.saturating_add(len);
        out.push(item);
    }
    out
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
    evidence_cursor: u64,
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
            evidence_cursor: 0,
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
        self.evidence_cursor = 0;
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
        let max_bytes = self.cfg.batch_max_bytes;
        // 1. Priority items not yet in flight.
        let items: Vec<Item> = src
            .pending(
                Kind::Priority,
                0,
                u64::MAX,
                max + self.priority_inflight.len(),
            )
            .into_iter()
            .filter(|i| !self.priority_inflight.contains(&i.seq))
            .take(max)
            .collect();
        let items = bounded(items, max_bytes);
        if !items.is_empty() {
            self.priority_inflight.extend(items.iter().map(|i| i.seq));
            return Some(self.record(Class::Priority, items, now));
        }
        // 2. Live readings.
        if self.count(Class::Live) < self.cfg.max_live_inflight {
            let after = self.live_cursor.max(self.live_from.saturating_sub(1));
            let items = bounded(
                src.pending(Kind::Reading, after, durable_upto.saturating_add(1), max),
                max_bytes,
            );
            if let Some(last) = items.last() {
                self.live_cursor = last.seq;
                return Some(self.record(Class::Live, items, now));
            }
        }
        // 3. Evidence, oldest first; durable when appended. Reads only what can fit.
        if self.count(Class::Evidence) < self.cfg.max_evidence_inflight {
            let part = EVIDENCE_PART_BYTES.div_ceil(3) * 4;
            let limit = max.min(max_bytes / part + 1);
            let items = bounded(
                src.pending(Kind::Evidence, self.evidence_cursor, u64::MAX, limit),
                max_bytes,
            );
            if let Some(last) = items.last() {
                self.evidence_cursor = last.seq;
                return Some(self.record(Class::Evidence, items, now));
            }
        }
        // 4. Backlog readings, rate-limited.
        let rate = self.cfg.backlog_items_per_s;
        self.tokens = (self.tokens + now.duration_since(self.refilled).as_secs_f64() * rate)
            .min(max as f64 * 2.0);
        self.refilled = now;
        if self.count(Class::Backlog) < self.cfg.max_backlog_inflight && self.tokens >= 1.0 {
            let limit = max.min(self.tokens as usize);
            let items = bounded(
                src.pending(
                    Kind::Reading,
                    self.backlog_cursor,
                    self.live_from.min(durable_upto.saturating_add(1)),
                    limit,
                ),
                max_bytes,
            );
            if let Some(last) = items.last() {
                self.backlog_cursor = last.seq;
                self.tokens -= items.len() as f64;
                return Some(self.record(Class::Backlog, items, now));
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
        /// One picture part of `pad` bytes of data.
        fn push_part(&mut self, pad: usize) -> u64 {
            self.next += 1;
            let body = Body::Evidence(fumegrid_common::wire::Evidence {
                sha256: "ab".repeat(32),
                part: 0,
                parts: 1,
                data: "A".repeat(pad),
                meta: fumegrid_common::wire::EvidenceMeta {
                    camera: "cam-1".into(),
                    devices: vec!["d".into()],
                    captured_ms: 0,
                    trigger: fumegrid_common::wire::Trigger::AlarmRaised,
                    alarm: None,
                    request: None,
                    media: fumegrid_common::wire::Media::Jpeg,
                    size: 1,
                    width: None,
                    height: None,
                    site: String::new(),
                    readings: vec![],
                },
            });
            self.items.insert(self.next, body);
            self.next
        }

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
        fn pending(&self, class: Kind, after: u64, before: u64, limit: usize) -> Vec<Item> {
            self.items
                .range(after + 1..before.max(after + 1))
                .filter(|(_, b)| Kind::of(b) == class)
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
            batch_max_bytes: 1 << 20,
            max_live_inflight: 2,
            max_evidence_inflight: 1,
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

    /// After an outage with a picture waiting: the alarm first, then live readings, then the
    /// picture's parts (a window of one batch), then the backlog readings; parts never ride
    /// with readings.
    #[test]
    fn alarms_then_live_readings_then_pictures_then_backlog() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        let backlog: Vec<u64> = (0..5).map(|_| m.push(false)).collect();
        let parts: Vec<u64> = (0..3).map(|_| m.push_part(100)).collect();
        let alarm = m.push(true);
        let mut p = Planner::new(cfg(), 1, t0);
        p.on_connect(m.next_seq(), t0);
        let live: Vec<u64> = (0..2).map(|_| m.push(false)).collect();
        let mut order = Vec::new();
        while let Some(b) = p.next_batch(&m, u64::MAX, t0) {
            order.push((b.0, seqs(&b)));
        }
        assert_eq!(
            order,
            vec![
                (Class::Priority, vec![alarm]),
                (Class::Live, live),
                (Class::Evidence, parts.clone()),
                (Class::Backlog, backlog),
            ]
        );
        // A part that comes later waits for the evidence window (one batch in flight).
        let more = m.push_part(100);
        assert!(p.next_batch(&m, u64::MAX, t0).is_none());
        let r = m.ack(&parts);
        p.on_ack(&r);
        let b = p.next_batch(&m, u64::MAX, t0).expect("the next part");
        assert_eq!((b.0, seqs(&b)), (Class::Evidence, vec![more]));
    }

    /// Every batch stays within `batch_max_bytes` as the sealed JSON that is published, with
    /// the longest gateway id and stream the contract allows; one item larger than the bound
    /// still goes, alone.
    #[test]
    fn batches_are_bounded_by_bytes_as_published() {
        let t0 = fumegrid_common::clock::Clock::fixed(0).tokio_instant();
        let mut m = Model::default();
        let mut c = cfg();
        c.batch_max_items = 1000;
        c.batch_max_bytes = 4096;
        c.max_live_inflight = 1000;
        c.max_evidence_inflight = 1000;
        let mut p = Planner::new(c, m.next_seq(), t0);
        for _ in 0..200 {
            m.push(false);
        }
        for _ in 0..5 {
            m.push_part(1500);
        }
        let big = m.push_part(10_000);
        let mut sent = 0;
        while let Some((class, items)) = p.next_batch(&m, u64::MAX, t0) {
            sent += items.len();
            let alone = items.len() == 1;
            let has_big = items.iter().any(|i| i.seq == big);
            let batch = fumegrid_common::wire::Batch {
                gateway: "g".repeat(64),
                stream: "s".repeat(128),
                sent_ms: i64::MAX,
                items,
            };
            let len = fumegrid_common::wire::seal(&batch, b"key").len();
            if has_big {
                assert!(alone, "an oversized item goes alone");
            } else {
                assert!(len <= 4096, "{class:?} batch of {len} bytes");
                assert!(
                    len > 2048 || class == Class::Evidence || sent == 206,
                    "{len}: badly filled"
                );
            }
        }
        assert_eq!(sent, 206, "everything went");
    }
}
