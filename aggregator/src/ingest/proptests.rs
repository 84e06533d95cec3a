//! Property test of ingest over random deliveries (issue 12 item 5): one gateway's two outbox
//! streams of mixed items (readings, events, alarm episodes raised → updated* → cleared, some
//! suppressed) with seqs `1..=N` each, delivered as the network and a gateway's retries do —
//! random batching, parts of batches, items out of order, whole or partial resends, several
//! batches per commit (the store stage's groups, duplicates within one commit included),
//! hellos, an occasional same-seq-different-content item (an outbox that went back in time)
//! and an occasional transaction that fails at the disk (at its commit, or in the middle,
//! after casework saved a case change in it). Each message is sealed with the gateway's
//! key and goes the production path: [`super::classify`] (topic dispatch and [`validate`]),
//! then [`StoreStage::group`] (commit with casework's alarm hook, then the sealed acks).
//!
//! After every group, against a model that only knows what was delivered and in which order:
//!
//! - every item of a committed group is stored exactly once, with the content first committed
//!   under its seq (readings by value and time; alarm transitions by `(stream, seq)`; the
//!   store's `stream_holds` by count and highest seq); a failed group stores nothing;
//! - one episode row per episode, showing its latest transition (phase, time, clear time) and
//!   counting each stored transition once;
//! - duplicates are counted, conflicts counted once per distinct conflicting content;
//! - each committed batch is acked with exactly its seqs (all stored), a failed group acks
//!   nothing, a hello is answered with what is held after the group's commit;
//! - cases: casework's real [`AlarmCases`] hook with the statistics index, as `daemon.rs` wires
//!   it. Nothing closes a case here, so each `(device, kind)` has at most one case, ever; an
//!   episode joins it when a non-suppressed transition of it is stored while the case exists,
//!   or opens it with a non-suppressed `raised`/`updated` (a `cleared` alone opens none). Each
//!   such episode is in exactly one case, every other episode in none; the statistics index
//!   equals a count over the stored case events (it only appends what committed).
//!
//! The same generic property runs against the in-memory store and SQLite (a temp file), and the
//! SQLite test also checks that both hold the same readings, episodes, cases and counts.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU32, Ordering};

use fumegrid_common::clock::Clock;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{
    self, Alarm, AlarmKind, AlarmPhase, Batch, Body, Channel, Event, EventKind, Hello, Item,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rumqttc::{Publish, QoS};

use super::stats::StatsSnapshot;
use super::tests::{KEY, T0, acks, incoming, stage};
use super::validate::{self, Keys, Limits};
use super::{IngestSettings, MqttTarget, Msg, StoreStage, classify};
use crate::cases::Catalogue;
use crate::cases::model::Origin;
use crate::cases::stats::{Period, compute};
use crate::casework::alarms::AlarmCases;
use crate::casework::stats_index::StatsIndex;
use crate::store::episode::phase_name;
use crate::store::memory::MemoryStore;
use crate::store::{
    AlarmDetail, AlarmHook, AlarmQuery, AlarmState, CaseDetail, CaseQuery, CaseStore, CaseTx,
    Reader, ReadingQuery, ReadingRow, StoreError, Synchronous, Writer, sqlite,
};

const GW: &str = "gw-1";
const STREAMS: [&str; 2] = ["s-a", "s-b"];
const DEVICES: [&str; 2] = ["rest-1", "rest-2"];
const KINDS: [AlarmKind; 2] = [AlarmKind::Exceedance, AlarmKind::PurifierIdle];
/// The aggregator's clock advances this much per group.
const GROUP_MS: i64 = 60_000;

/// One item the gateway makes, as raw choices (interpreted in stream order).
#[derive(Debug, Clone)]
enum Op {
    Reading {
        dev: u8,
        value: u8,
    },
    Event,
    /// A transition of the episode in `slot` (a device and kind): raised if none is open, else
    /// cleared (`clear`) or updated. `suppress` is the new episode's flag.
    Alarm {
        slot: u8,
        clear: bool,
        suppress: bool,
    },
}

/// One message to the aggregator, as raw choices (interpreted against what was sent before).
#[derive(Debug, Clone)]
enum Delivery {
    /// Up to `len` consecutive items of `stream` from `start` (wrapped into `1..=N`), minus
    /// those whose bit is set in `skip`, in an order picked by `shuffle` (0: ascending); item
    /// `conflict.0` replaced by content variant `conflict.1` (a rolled-back outbox).
    Batch {
        stream: u8,
        start: u8,
        len: u8,
        skip: u8,
        shuffle: u8,
        conflict: Option<(u8, u8)>,
    },
    /// The `back`-th last batch sent again (its ack was lost), minus the items in `skip`.
    Resend {
        back: u8,
        skip: u8,
    },
    Hello {
        stream: u8,
        from_seq: u8,
    },
}

#[derive(Debug, Clone)]
struct Group {
    deliveries: Vec<Delivery>,
    fail: Option<Fail>,
}

/// Where a group's transaction fails (a full disk), if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fail {
    /// At the commit itself (if the group has a batch).
    AtCommit,
    /// Inside the transaction, right after casework saved what the first new alarm transition
    /// did to the cases (if the group stores one).
    AtAlarm,
}

#[derive(Debug, Clone)]
struct Plan {
    ops: [Vec<Op>; 2],
    groups: Vec<Group>,
    /// The stores' dedupe conflict window (`store/dedupe.rs`): mostly a few seqs, so that
    /// digests leave it while resends still come; sometimes the production size.
    window: u64,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..2u8, any::<u8>()).prop_map(|(dev, value)| Op::Reading { dev, value }),
        1 => Just(Op::Event),
        3 => (0..4u8, prop::bool::weighted(0.3), prop::bool::weighted(0.15))
            .prop_map(|(slot, clear, suppress)| Op::Alarm { slot, clear, suppress }),
    ]
}

fn mostly_zero() -> impl Strategy<Value = u8> {
    prop_oneof![3 => Just(0u8), 1 => any::<u8>()]
}

fn delivery() -> impl Strategy<Value = Delivery> {
    prop_oneof![
        6 => (
            0..2u8,
            any::<u8>(),
            1..=8u8,
            mostly_zero(),
            mostly_zero(),
            prop::option::weighted(0.15, (any::<u8>(), 1..=2u8)),
        )
            .prop_map(|(stream, start, len, skip, shuffle, conflict)| Delivery::Batch {
                stream,
                start,
                len,
                skip,
                shuffle,
                conflict,
            }),
        2 => (0..8u8, mostly_zero()).prop_map(|(back, skip)| Delivery::Resend { back, skip }),
        1 => (0..2u8, 0..30u8).prop_map(|(stream, from_seq)| Delivery::Hello { stream, from_seq }),
    ]
}

fn plan() -> impl Strategy<Value = Plan> {
    let group = (
        prop::collection::vec(delivery(), 1..=4),
        prop::option::weighted(0.12, prop_oneof![Just(Fail::AtCommit), Just(Fail::AtAlarm)]),
    )
        .prop_map(|(deliveries, fail)| Group { deliveries, fail });
    (
        prop::collection::vec(op(), 1..=24),
        prop::collection::vec(op(), 1..=24),
        prop::collection::vec(group, 1..=12),
        prop_oneof![3 => 1..8u64, 1 => Just(crate::store::dedupe::WINDOW)],
    )
        .prop_map(|(a, b, groups, window)| Plan {
            ops: [a, b],
            groups,
            window,
        })
}

/// The gateway's time of item `seq` of stream `s` (unique per item, so episode ids are too).
fn item_ts(s: usize, seq: u64) -> i64 {
    T0 + seq as i64 * 1000 + s as i64 * 10
}

/// The items of each stream (index `seq - 1`), made from the ops as a gateway would.
fn items_of(plan: &Plan) -> [Vec<Body>; 2] {
    let mut out: [Vec<Body>; 2] = [Vec::new(), Vec::new()];
    for (s, ops) in plan.ops.iter().enumerate() {
        // Per slot: the open episode's id, start and suppression.
        let mut open: [Option<(String, i64, bool)>; 4] = Default::default();
        for (i, op) in ops.iter().enumerate() {
            let ts = item_ts(s, i as u64 + 1);
            let body = match *op {
                Op::Reading { dev, value } => Body::Reading(Reading {
                    device: DEVICES[usize::from(dev) % 2].into(),
                    unit: None,
                    metric: Metric::FumeMgM3,
                    value: Some(f64::from(value) / 10.0),
                    quality: Quality::Ok,
                    ts_ms: ts,
                }),
                Op::Event => Body::Event(Event {
                    ts_ms: ts,
                    kind: EventKind::Started,
                    message: String::new(),
                    dropped: None,
                    from_ms: None,
                    to_ms: None,
                }),
                Op::Alarm {
                    slot,
                    clear,
                    suppress,
                } => {
                    let slot = usize::from(slot) % 4;
                    let (device, kind) = (DEVICES[slot / 2], KINDS[slot % 2]);
                    let (id, started, suppressed, phase) = match open[slot].take() {
                        None => {
                            let id = format!("{device}:{}:{ts}", kind.name());
                            (id, ts, suppress, AlarmPhase::Raised)
                        }
                        Some((id, started, sup)) if clear => {
                            (id, started, sup, AlarmPhase::Cleared)
                        }
                        Some((id, started, sup)) => (id, started, sup, AlarmPhase::Updated),
                    };
                    if phase != AlarmPhase::Cleared {
                        open[slot] = Some((id.clone(), started, suppressed));
                    }
                    let metric = (kind == AlarmKind::Exceedance).then_some(Metric::FumeMgM3);
                    let value = metric.map(|_| 2.0 + (ts % 7) as f64 / 10.0);
                    Body::Alarm(Alarm {
                        id,
                        device: device.into(),
                        kind,
                        metric,
                        phase,
                        started_ms: started,
                        ts_ms: ts,
                        cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts),
                        value,
                        peak: value,
                        peak_ms: metric.map(|_| ts),
                        limit: metric.map(|_| 2.0),
                        suppressed,
                        message: String::new(),
                    })
                }
            };
            out[s].push(body);
        }
    }
    out
}

/// Content variant `v` of item `seq` (0: the item itself): what an outbox that went back in
/// time hands out again under that seq.
fn content(items: &[Vec<Body>; 2], s: usize, seq: u64, v: u8) -> Body {
    if v == 0 {
        return items[s][seq as usize - 1].clone();
    }
    Body::Reading(Reading {
        device: DEVICES[0].into(),
        unit: None,
        metric: Metric::FumeMgM3,
        value: Some(100.0 + f64::from(v)),
        quality: Quality::Ok,
        ts_ms: item_ts(s, seq) + i64::from(v),
    })
}

/// A batch as sent: its stream and `(seq, content variant)` in wire order.
#[derive(Debug, Clone)]
struct Sent {
    stream: usize,
    items: Vec<(u64, u8)>,
}

/// What one delivery became.
#[derive(Debug, Clone)]
enum Sending {
    Batch(Sent),
    Hello { stream: usize, from_seq: u64 },
}

/// Drops the items whose bit (index mod 8) is set in `skip`, keeping at least one.
fn without(items: &mut Vec<(u64, u8)>, skip: u8) {
    let first = items[0];
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        skip & (1 << ((i - 1) % 8)) == 0
    });
    if items.is_empty() {
        items.push(first);
    }
}

/// A Fisher-Yates shuffle driven by a small xorshift seeded with `seed` (0: unchanged).
fn shuffled(items: &mut [(u64, u8)], seed: u8) {
    if seed == 0 {
        return;
    }
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761) | 1;
    for i in (1..items.len()).rev() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        items.swap(i, x as usize % (i + 1));
    }
}

/// Turns the raw deliveries of every group into concrete sendings, then adds a last group
/// that delivers every item of both streams in order (the gateway catching up).
fn schedule(plan: &Plan, lens: [usize; 2]) -> Vec<(Vec<Sending>, Option<Fail>)> {
    let mut sent: Vec<Sent> = Vec::new();
    let mut out = Vec::new();
    for g in &plan.groups {
        let mut group = Vec::new();
        for d in &g.deliveries {
            match *d {
                Delivery::Batch {
                    stream,
                    start,
                    len,
                    skip,
                    shuffle,
                    conflict,
                } => {
                    let s = usize::from(stream) % 2;
                    let n = lens[s] as u64;
                    let from = 1 + u64::from(start) % n;
                    let to = (from + u64::from(len) - 1).min(n);
                    let mut items: Vec<(u64, u8)> = (from..=to).map(|q| (q, 0)).collect();
                    without(&mut items, skip);
                    shuffled(&mut items, shuffle);
                    if let Some((i, v)) = conflict {
                        let k = usize::from(i) % items.len();
                        items[k].1 = v;
                    }
                    let b = Sent { stream: s, items };
                    sent.push(b.clone());
                    group.push(Sending::Batch(b));
                }
                Delivery::Resend { back, skip } => {
                    let Some(k) = sent
                        .len()
                        .checked_sub(1 + usize::from(back) % sent.len().max(1))
                    else {
                        continue;
                    };
                    let mut b = sent[k].clone();
                    without(&mut b.items, skip);
                    sent.push(b.clone());
                    group.push(Sending::Batch(b));
                }
                Delivery::Hello { stream, from_seq } => group.push(Sending::Hello {
                    stream: usize::from(stream) % 2,
                    from_seq: u64::from(from_seq),
                }),
            }
        }
        if !group.is_empty() {
            out.push((group, g.fail));
        }
    }
    let mut last = Vec::new();
    for (s, &n) in lens.iter().enumerate() {
        let all: Vec<u64> = (1..=n as u64).collect();
        for chunk in all.chunks(8) {
            last.push(Sending::Batch(Sent {
                stream: s,
                items: chunk.iter().map(|&q| (q, 0)).collect(),
            }));
        }
    }
    out.push((last, None));
    out
}

/// What ingest is told to expect of the store: the model.
#[derive(Debug, Default, Clone)]
struct Model {
    /// `(stream, seq)` → the content variant stored.
    stored: BTreeMap<(usize, u64), u8>,
    /// `(stream, seq, variant)` of every conflicting content seen.
    conflicts: BTreeSet<(usize, u64, u8)>,
    /// The dedupe conflict window, and per stream the highest seq whose digest left it (after
    /// a batch, every seq ≤ highest held − window): a resend of such a seq is a duplicate whose
    /// content can no longer be compared.
    window: u64,
    digest_gone: [Option<u64>; 2],
    new: u64,
    duplicates: u64,
    /// `(device, kind)` → the episodes of its case (the case exists iff the key does).
    cases: BTreeMap<(String, AlarmKind), BTreeSet<String>>,
    /// Episodes linked to a case.
    linked: BTreeSet<String>,
}

impl Model {
    /// A group committed: its batches in order, each one's items in wire order. Returns how
    /// many alarm transitions it stored.
    fn commit(&mut self, items: &[Vec<Body>; 2], batches: &[&Sent]) -> usize {
        let mut alarms = 0;
        for b in batches {
            let mut this_batch = BTreeSet::new();
            for &(seq, v) in &b.items {
                let s = b.stream;
                if let Some(&have) = self.stored.get(&(s, seq)) {
                    self.duplicates += 1;
                    let comparable =
                        this_batch.contains(&seq) || self.digest_gone[s].is_none_or(|g| seq > g);
                    if have != v && comparable {
                        self.conflicts.insert((s, seq, v));
                    }
                    continue;
                }
                this_batch.insert(seq);
                self.stored.insert((s, seq), v);
                self.new += 1;
                if let Body::Alarm(a) = content(items, s, seq, v) {
                    self.alarm(&a);
                    alarms += 1;
                }
            }
            let high = self.holds(b.stream, 0).0;
            if let Some(f) = high.checked_sub(self.window) {
                let g = &mut self.digest_gone[b.stream];
                *g = Some(g.map_or(f, |g| g.max(f)));
            }
        }
        alarms
    }

    /// The case rule when nothing closes a case (see the module doc).
    fn alarm(&mut self, a: &Alarm) {
        if a.suppressed || self.linked.contains(&a.id) {
            return;
        }
        let key = (a.device.clone(), a.kind);
        match self.cases.get_mut(&key) {
            Some(episodes) => {
                episodes.insert(a.id.clone());
            }
            None if a.phase == AlarmPhase::Cleared => return,
            None => {
                self.cases.insert(key, BTreeSet::from([a.id.clone()]));
            }
        }
        self.linked.insert(a.id.clone());
    }

    /// `(highest seq, how many from from_seq)` held of stream `s`.
    fn holds(&self, s: usize, from_seq: u64) -> (u64, u64) {
        let seqs = self.stored.keys().filter(|(x, _)| *x == s).map(|&(_, q)| q);
        let high = seqs.clone().max().unwrap_or(0);
        (high, seqs.filter(|&q| q >= from_seq).count() as u64)
    }
}

/// Casework's hook, with the transaction failing where `fail` says (a full disk): 0 nowhere,
/// 1 [`Fail::AtCommit`], 2 [`Fail::AtAlarm`].
struct FailingDisk {
    inner: AlarmCases,
    fail: Arc<AtomicU8>,
}

impl AlarmHook for FailingDisk {
    fn on_alarm(
        &mut self,
        tx: &mut dyn CaseTx,
        gateway: &str,
        alarm: &Alarm,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.inner.on_alarm(tx, gateway, alarm, now_ms)?;
        if self.fail.load(Ordering::Relaxed) == 2 {
            return Err(StoreError::Malformed("disk full (injected)".into()));
        }
        Ok(())
    }
    fn commit(
        &mut self,
        commit: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let fail = self.fail.load(Ordering::Relaxed) == 1;
        self.inner.commit(&mut || {
            if fail {
                Err(StoreError::Malformed("disk full (injected)".into()))
            } else {
                commit()
            }
        })
    }
    fn rolled_back(&mut self) {
        self.inner.rolled_back();
    }
}

/// What a store holds at the end, for comparing two implementations.
#[derive(Debug, PartialEq)]
struct Holdings {
    readings: Vec<ReadingRow>,
    alarms: Vec<AlarmDetail>,
    cases: Vec<CaseDetail>,
    holds: Vec<(u64, u64)>,
    stats: StatsSnapshot,
}

fn all_readings(r: &dyn Reader) -> Result<Vec<ReadingRow>, StoreError> {
    let mut out = Vec::new();
    for d in DEVICES {
        out.extend(r.readings(&ReadingQuery {
            device: d.into(),
            gateway: None,
            metric: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 10_000,
        })?);
    }
    out.sort_by(|a, b| {
        (a.ts_ms, &a.metric, a.value.map(f64::to_bits)).cmp(&(
            b.ts_ms,
            &b.metric,
            b.value.map(f64::to_bits),
        ))
    });
    Ok(out)
}

fn store_err(e: StoreError) -> TestCaseError {
    TestCaseError::fail(format!("store: {e}"))
}

/// The property: `plan` through classify + the store stage into `writer`, read back through
/// `reader` (the same store), checked against the model after every group.
fn run<W>(plan: &Plan, mut writer: W, reader: &dyn Reader) -> Result<Holdings, TestCaseError>
where
    W: Writer + CaseStore + 'static,
{
    let items = items_of(plan);
    let lens = [items[0].len(), items[1].len()];
    let keys = Arc::new(Keys::new([(GW.to_string(), KEY.to_vec())]));
    let settings = IngestSettings {
        mqtt: MqttTarget {
            host: "localhost".into(),
            port: 1883,
            client_id: "prop".into(),
            username: "prop".into(),
            password: String::new(),
            clean_session: true,
            max_packet_bytes: 1 << 20,
        },
        keys: keys.clone(),
        limits: Limits {
            max_payload_bytes: 1 << 20,
            max_items: 1000,
        },
        group_max_items: 1000,
        pictures_complete: None,
    };
    // Casework's alarm hook with the statistics index, as daemon.rs builds it (no sites).
    let index = Arc::new(StatsIndex::load(&mut writer).map_err(store_err)?);
    let fail = Arc::new(AtomicU8::new(0));
    let hook = FailingDisk {
        inner: AlarmCases::new(Arc::new(Catalogue::builtin().expect("catalogue")))
            .with_stats_index(index.clone()),
        fail: fail.clone(),
    };
    let mut st: StoreStage = stage(Box::new(writer), Box::new(hook));
    let mut model = Model {
        window: plan.window,
        ..Model::default()
    };
    for (g, (sendings, fails)) in schedule(plan, lens).into_iter().enumerate() {
        let now = T0 + (g as i64 + 1) * GROUP_MS;
        st.clock = Clock::fixed(now);
        let mut pending = Vec::new();
        for sending in &sendings {
            let payload = match sending {
                Sending::Batch(b) => wire::seal(
                    &Batch {
                        gateway: GW.into(),
                        stream: STREAMS[b.stream].into(),
                        sent_ms: now,
                        items: b
                            .items
                            .iter()
                            .map(|&(seq, v)| Item {
                                seq,
                                body: content(&items, b.stream, seq, v),
                            })
                            .collect(),
                    },
                    KEY,
                ),
                Sending::Hello { stream, from_seq } => wire::seal(
                    &Hello {
                        gateway: GW.into(),
                        stream: STREAMS[*stream].into(),
                        sent_ms: now,
                        from_seq: *from_seq,
                    },
                    KEY,
                ),
            };
            let publish = Publish::new(wire::topic(GW, Channel::Up), QoS::AtLeastOnce, payload);
            let msg = classify(&publish, &settings, now);
            match (&msg, sending) {
                (Msg::Batch(_), Sending::Batch(_)) | (Msg::Hello(_), Sending::Hello { .. }) => {}
                _ => return Err(TestCaseError::fail(format!("validate: {msg:?}"))),
            }
            pending.push(incoming(msg));
        }
        let batches: Vec<&Sent> = sendings
            .iter()
            .filter_map(|s| match s {
                Sending::Batch(b) => Some(b),
                Sending::Hello { .. } => None,
            })
            .collect();
        let mut next = model.clone();
        let new_alarms = next.commit(&items, &batches);
        let should_fail = match fails {
            None => false,
            Some(Fail::AtCommit) => !batches.is_empty(),
            Some(Fail::AtAlarm) => new_alarms > 0,
        };
        fail.store(
            match fails {
                None => 0,
                Some(Fail::AtCommit) => 1,
                Some(Fail::AtAlarm) => 2,
            },
            Ordering::Relaxed,
        );
        let (out, failed) = st.group(&mut pending);
        prop_assert_eq!(failed, should_fail, "group {} failed", g);
        if !failed {
            model = next;
        }

        // Acks: exactly the seqs of each committed batch, all stored; none after a failure.
        let answers = acks(out);
        prop_assert_eq!(answers.len(), sendings.len());
        for (sending, ack) in sendings.iter().zip(&answers) {
            match (sending, ack) {
                (_, None) if failed => {}
                (_, Some(a)) if failed => {
                    return Err(TestCaseError::fail(format!(
                        "group {g}: acked {a:?} after a failed commit"
                    )));
                }
                (Sending::Batch(b), Some(a)) => {
                    prop_assert_eq!(&a.stream, STREAMS[b.stream]);
                    let want = validate::ranges(b.items.iter().map(|i| i.0));
                    prop_assert_eq!(&a.ranges, &want, "group {}: ack of {:?}", g, b);
                    for &(from, to) in &a.ranges {
                        for seq in from..=to {
                            prop_assert!(
                                model.stored.contains_key(&(b.stream, seq)),
                                "group {}: acked seq {} of {} is not stored",
                                g,
                                seq,
                                STREAMS[b.stream]
                            );
                        }
                    }
                    prop_assert!(a.high.is_none() && a.held.is_none());
                }
                (Sending::Hello { stream, from_seq }, Some(a)) => {
                    let (high, held) = model.holds(*stream, *from_seq);
                    prop_assert!(a.ranges.is_empty());
                    prop_assert_eq!((a.high, a.held), (Some(high), Some(held)), "hello");
                }
                (s, None) => {
                    return Err(TestCaseError::fail(format!(
                        "group {g}: {s:?} not answered"
                    )));
                }
            }
        }
        check(&model, &items, &mut st, reader, &index)
            .map_err(|e| TestCaseError::fail(format!("after group {g} (failed: {failed}): {e}")))?;
    }
    let mut holds = Vec::new();
    for s in STREAMS {
        holds.push(st.writer.stream_holds(GW, s, 1).map_err(store_err)?);
    }
    Ok(Holdings {
        readings: all_readings(reader).map_err(store_err)?,
        alarms: reader
            .alarms(&AlarmQuery {
                state: AlarmState::All,
                ..AlarmQuery::default()
            })
            .map_err(store_err)?
            .into_iter()
            .map(|row| reader.alarm(GW, &row.id).ok().flatten())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| TestCaseError::fail("an episode listed has no detail"))?,
        cases: reader
            .cases(&CaseQuery {
                limit: 1000,
                ..CaseQuery::default()
            })
            .map_err(store_err)?
            .cases
            .iter()
            .map(|c| reader.case(&c.id).ok().flatten())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| TestCaseError::fail("a case listed has no detail"))?,
        holds,
        stats: st.stats.snapshot(),
    })
}

/// The store (read back through `reader` and the stage's writer) and the stage's counters
/// against the model.
fn check(
    model: &Model,
    items: &[Vec<Body>; 2],
    st: &mut StoreStage,
    reader: &dyn Reader,
    index: &StatsIndex,
) -> Result<(), String> {
    let e = |e: StoreError| e.to_string();
    // Seqs held, per stream.
    for (s, name) in STREAMS.iter().enumerate() {
        let got = st.writer.stream_holds(GW, name, 1).map_err(e)?;
        if got != model.holds(s, 1) {
            return Err(format!(
                "{name} holds {got:?}, the model {:?}",
                model.holds(s, 1)
            ));
        }
    }
    // Readings: each stored once, with the content first committed under its seq.
    let mut want: Vec<(i64, u64)> = Vec::new();
    let mut episodes: BTreeMap<String, Vec<(usize, u64, Alarm)>> = BTreeMap::new();
    for (&(s, seq), &v) in &model.stored {
        match content(items, s, seq, v) {
            Body::Reading(r) => want.push((r.ts_ms, r.value.map_or(0, f64::to_bits))),
            Body::Alarm(a) => episodes.entry(a.id.clone()).or_default().push((s, seq, a)),
            Body::Event(_)
            | Body::Evidence(_)
            | Body::Period(_)
            | Body::Track(_)
            | Body::DronePhoto(_) => {}
        }
    }
    want.sort_unstable();
    let mut got: Vec<(i64, u64)> = all_readings(reader)
        .map_err(e)?
        .iter()
        .map(|r| (r.ts_ms, r.value.map_or(0, f64::to_bits)))
        .collect();
    got.sort_unstable();
    if got != want {
        return Err(format!("readings (ts, value bits) {got:?}, want {want:?}"));
    }
    // Episodes: one row each, its latest transition (the gateway's order is seq order within
    // the stream), each stored transition counted once.
    let rows = reader
        .alarms(&AlarmQuery {
            state: AlarmState::All,
            ..AlarmQuery::default()
        })
        .map_err(e)?;
    let ids: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let want_ids: BTreeSet<&str> = episodes.keys().map(String::as_str).collect();
    if ids.len() != want_ids.len() || ids.iter().any(|i| !want_ids.contains(i)) {
        return Err(format!("episodes {ids:?}, want {want_ids:?}"));
    }
    for row in &rows {
        let transitions = &episodes[&row.id];
        let (_, _, latest) = transitions
            .iter()
            .max_by_key(|(_, seq, _)| *seq)
            .ok_or("no transition")?;
        let got = (
            row.phase.as_str(),
            row.last_ts_ms,
            row.cleared_ms,
            row.updates,
        );
        let want = (
            phase_name(latest.phase),
            latest.ts_ms,
            latest.cleared_ms,
            transitions.len() as i64,
        );
        if got != want {
            return Err(format!(
                "episode {}: (phase, last_ts, cleared, updates) {got:?}, want {want:?}",
                row.id
            ));
        }
        let detail = reader.alarm(GW, &row.id).map_err(e)?.ok_or("no detail")?;
        let mut got: Vec<(String, u64)> = detail
            .transitions
            .iter()
            .map(|t| (t.stream.clone(), t.seq))
            .collect();
        got.sort();
        let mut want: Vec<(String, u64)> = transitions
            .iter()
            .map(|(s, seq, _)| (STREAMS[*s].to_string(), *seq))
            .collect();
        want.sort();
        if got != want {
            return Err(format!(
                "episode {}: transitions {got:?}, want {want:?}",
                row.id
            ));
        }
    }
    // Cases: one per (device, kind) that should have one, holding exactly its episodes.
    let page = reader
        .cases(&CaseQuery {
            limit: 1000,
            ..CaseQuery::default()
        })
        .map_err(e)?;
    let mut got: BTreeMap<(String, AlarmKind), BTreeSet<String>> = BTreeMap::new();
    for c in &page.cases {
        let Origin::Alarm {
            gateway,
            device,
            kind,
        } = &c.origin
        else {
            return Err(format!("case {} not from an alarm", c.id));
        };
        let episodes: BTreeSet<String> = c.alarms.iter().map(|a| a.id.clone()).collect();
        if gateway != GW || episodes.len() != c.alarms.len() {
            return Err(format!("case {}: {:?} {:?}", c.id, c.origin, c.alarms));
        }
        if got.insert((device.clone(), *kind), episodes).is_some() {
            return Err(format!("a second case for {device} {kind:?}: {}", c.id));
        }
    }
    if page.total as usize != page.cases.len() || got != model.cases {
        return Err(format!(
            "cases (device, kind) → episodes {got:?}, want {:?}",
            model.cases
        ));
    }
    // The statistics index holds exactly the committed case events.
    let period = Period {
        from_ms: T0 - 86_400_000,
        to_ms: T0 + 86_400_000,
    };
    let events = reader.case_events_until(i64::MAX).map_err(e)?;
    if index.stats(period) != Some(compute(&events, period)) {
        return Err("the statistics index differs from the stored case events".into());
    }
    // Counters.
    let snap = st.stats.snapshot();
    let got = (
        snap.items_accepted,
        snap.items_duplicate,
        snap.items_conflict,
    );
    let want = (model.new, model.duplicates, model.conflicts.len() as u64);
    if got != want {
        return Err(format!(
            "(new, duplicates, conflicts) counted {got:?}, want {want:?}"
        ));
    }
    Ok(())
}

fn run_memory(plan: &Plan) -> Result<Holdings, TestCaseError> {
    let store = MemoryStore::with_dedupe_window(plan.window);
    run(plan, store.clone(), &store)
}

/// A fresh SQLite file, removed with its WAL when dropped.
struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new() -> TempDb {
        static N: AtomicU32 = AtomicU32::new(0);
        // In memory (tmpfs) where there is one: the property is about what is stored, not
        // durability, and on a shared disk the fsyncs of 64 fresh databases tripled the time.
        let shm = std::path::Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let db = TempDb(base.join(format!(
            "fumegrid-ingest-prop-{}-{}.sqlite3",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )));
        db.remove();
        db
    }
    fn remove(&self) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.0.display()));
        }
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        self.remove();
    }
}

fn run_sqlite(plan: &Plan) -> Result<Holdings, TestCaseError> {
    let db = TempDb::new();
    let mut writer = sqlite::open(&db.0, Synchronous::Normal).map_err(store_err)?;
    writer.set_dedupe_window(plan.window);
    let reader = sqlite::open_reader(&db.0).map_err(store_err)?;
    run(plan, writer, &reader)
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// Bounded: about 1 s (memory) and 2 s (SQLite, which opens a file and runs its migrations per
// case, and runs the memory store too) of a debug build on a busy 2-core machine.
proptest! {
    #![proptest_config(config(128))]
    #[test]
    fn ingest_stores_each_item_once_and_acks_what_it_stored_in_memory(plan in plan()) {
        run_memory(&plan)?;
    }
}

proptest! {
    #![proptest_config(config(64))]
    #[test]
    fn ingest_stores_each_item_once_and_acks_what_it_stored_in_sqlite(plan in plan()) {
        let in_sqlite = run_sqlite(&plan)?;
        let in_memory = run_memory(&plan)?;
        prop_assert_eq!(in_sqlite, in_memory, "SQLite and memory hold different things");
    }
}
