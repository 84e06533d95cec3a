//! The model check (sled against [`MemOutbox`] under random operations) and unit tests for what a
//! model cannot show: durability across a crash, corruption, format refusal.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Body, Event, EventKind, Evidence, EvidenceMeta, Item, Media, Trigger};
use proptest::prelude::*;

use super::*;

/// A directory under the system temp dir, removed on drop (with any `.corrupt-*` sibling made
/// inside it: the store lives at `<tmp>/outbox`).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "fumegrid-outbox-{tag}-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            unix_ms_now()
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    fn store(&self) -> PathBuf {
        self.0.join("outbox")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn cfg(max_bytes: u64) -> OutboxConfig {
    cfg2(max_bytes, 64 << 20)
}

fn cfg2(max_bytes: u64, evidence_max_bytes: u64) -> OutboxConfig {
    OutboxConfig {
        max_bytes,
        flush_interval_ms: 500,
        evidence_max_bytes,
    }
}

/// The parts of picture `id` (its sha256 is `id` in 64 hex digits), each with `pad` bytes of
/// data, of alarm episode `alarm`.
fn picture(id: u64, parts: u32, pad: usize, alarm: Option<&str>, ts_ms: i64) -> Vec<Body> {
    (0..parts)
        .map(|part| {
            Body::Evidence(Evidence {
                sha256: format!("{id:064x}"),
                part,
                parts,
                data: "QUJD".repeat(pad / 4 + 1),
                meta: EvidenceMeta {
                    camera: "cam-1".into(),
                    devices: vec!["dev-a".into()],
                    captured_ms: ts_ms,
                    trigger: if alarm.is_some() {
                        Trigger::AlarmRaised
                    } else {
                        Trigger::Schedule
                    },
                    alarm: alarm.map(str::to_string),
                    request: None,
                    media: Media::Jpeg,
                    size: 3 * u64::from(parts),
                    width: None,
                    height: None,
                    site: String::new(),
                    readings: vec![],
                },
            })
        })
        .collect()
}

fn sha_of(item: &Item) -> Option<&str> {
    match &item.body {
        Body::Evidence(e) => Some(e.sha256.as_str()),
        _ => None,
    }
}

fn open(dir: &Path, max_bytes: u64) -> (SledOutbox, OpenReport) {
    SledOutbox::open(dir, cfg(max_bytes)).expect("open outbox")
}

fn reading(device: &str, ts_ms: i64, value: f64) -> Body {
    Body::Reading(Reading {
        device: device.into(),
        unit: None,
        metric: Metric::FumeMgM3,
        value: Some(value),
        quality: Quality::Ok,
        ts_ms,
    })
}

fn started(message: &str, ts_ms: i64) -> Body {
    Body::Event(Event {
        ts_ms,
        kind: EventKind::Started,
        message: message.into(),
        dropped: None,
        from_ms: None,
        to_ms: None,
    })
}

fn all(o: &dyn Outbox) -> Vec<Item> {
    o.pending(0, usize::MAX, false).expect("pending")
}

fn seqs(items: &[Item]) -> Vec<u64> {
    items.iter().map(|i| i.seq).collect()
}

fn event_of(item: &Item) -> &Event {
    match &item.body {
        Body::Event(e) => e,
        other => panic!("seq {} is not an event: {other:?}", item.seq),
    }
}

// ---------------------------------------------------------------------------------------------
// Model check

#[derive(Debug, Clone)]
enum Spec {
    Reading(usize),
    Priority(usize),
    /// Parts, padding per part, alarm episode (0..3, of which some are open), and whether it
    /// repeats the previous picture's sha256 (the same bytes taken twice).
    Picture(u32, usize, Option<u8>, bool),
}

#[derive(Debug, Clone)]
enum Op {
    /// Bodies of one append.
    Append(Vec<Spec>),
    /// The open alarm episodes now (a subset of a0..a2).
    OpenAlarms(Vec<u8>),
    /// Inclusive ranges, some reversed or far beyond anything stored.
    Ack(Vec<(u64, u64)>),
    /// Ack the first `k` pending items one by one (so acks hit often).
    AckFirst(usize),
    Reopen,
    Flush,
    PutState(u8, Vec<u8>),
    /// Renumber from `next_seq - back` (at least 1) to `jump` seqs further.
    Renumber(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    let seq = prop_oneof![8 => 0u64..120, 1 => Just(u64::MAX)];
    prop_oneof![
        6 => prop::collection::vec(spec(), 1..8).prop_map(Op::Append),
        1 => prop::collection::vec(0u8..3, 0..3).prop_map(Op::OpenAlarms),
        2 => prop::collection::vec((seq.clone(), seq), 0..4).prop_map(Op::Ack),
        2 => (0usize..6).prop_map(Op::AckFirst),
        1 => Just(Op::Reopen),
        1 => Just(Op::Flush),
        1 => (0u8..3, prop::collection::vec(any::<u8>(), 0..16)).prop_map(|(k, v)| Op::PutState(k, v)),
        1 => (0u64..12, 0u64..30).prop_map(|(back, jump)| Op::Renumber(back, jump)),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    prop_oneof![
        6 => (0usize..120).prop_map(Spec::Reading),
        2 => (0usize..120).prop_map(Spec::Priority),
        2 => (1u32..4, 0usize..400, prop::option::of(0u8..3), prop::bool::weighted(0.1))
            .prop_map(|(n, pad, alarm, again)| Spec::Picture(n, pad, alarm, again)),
    ]
}

/// Everything a user of the trait can see.
#[derive(Debug, PartialEq)]
struct Observed {
    all: Vec<Item>,
    classes: Vec<Vec<Item>>,
    priority: Vec<Item>,
    stats: OutboxStats,
    newest: Vec<Item>,
    newest_priority: Vec<Item>,
    window: Vec<Item>,
}

fn observe(o: &dyn Outbox) -> Observed {
    let all = all(o);
    let mid = all.get(all.len() / 2).map_or(0, |i| i.seq);
    Observed {
        classes: Class::ALL
            .into_iter()
            .map(|c| {
                o.pending_class(c, mid / 2, u64::MAX, 5)
                    .expect("pending_class")
            })
            .collect(),
        priority: o.pending(0, usize::MAX, true).expect("pending priority"),
        stats: o.stats(),
        newest: o.newest(3, false).expect("newest"),
        newest_priority: o.newest(2, true).expect("newest priority"),
        window: o
            .pending_range(mid, mid + 4, 2, false)
            .expect("pending_range"),
        all,
    }
}

fn run_model(max_bytes: u64, evidence_max: u64, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let tmp = TempDir::new("model");
    let config = cfg2(max_bytes, evidence_max);
    let (sled, report) = SledOutbox::open(&tmp.store(), config).expect("open outbox");
    prop_assert!(report.created);
    let stream = sled.stream().to_owned();
    let mut sled = Some(sled);
    let mut mem = MemOutbox::new("model", config).expect("mem outbox");
    let mut now = 1_000i64;
    let mut picture_id = 0u64;
    // The open episodes survive a reopen only because the pipeline sets them again.
    let mut open_alarms = std::collections::BTreeSet::new();
    for op in ops {
        let s = sled.as_mut().expect("sled outbox present");
        match &op {
            Op::Append(specs) => {
                let bodies: Vec<Body> = specs
                    .iter()
                    .flat_map(|spec| {
                        now += 7;
                        match *spec {
                            Spec::Priority(pad) => vec![started(&"x".repeat(pad), now)],
                            Spec::Reading(pad) => {
                                vec![reading(
                                    &format!("d{}", "x".repeat(pad)),
                                    now,
                                    pad as f64 / 4.0,
                                )]
                            }
                            Spec::Picture(n, pad, alarm, again) => {
                                if !again {
                                    picture_id += 1;
                                }
                                let alarm = alarm.map(|a| format!("a{a}"));
                                picture(picture_id, n, pad, alarm.as_deref(), now)
                            }
                        }
                    })
                    .collect();
                now += 1;
                let a = s.append(bodies.clone(), now).expect("sled append");
                let b = mem.append(bodies, now).expect("mem append");
                prop_assert_eq!(a, b);
            }
            Op::OpenAlarms(ids) => {
                open_alarms = ids.iter().map(|a| format!("a{a}")).collect();
                s.set_open_alarms(open_alarms.clone());
                mem.set_open_alarms(open_alarms.clone());
            }
            Op::Ack(ranges) => {
                prop_assert_eq!(
                    s.ack(ranges).expect("sled ack"),
                    mem.ack(ranges).expect("mem ack")
                );
            }
            Op::AckFirst(k) => {
                let first = seqs(&all(&mem));
                for seq in first.into_iter().take(*k) {
                    prop_assert_eq!(
                        s.ack(&[(seq, seq), (seq, seq)]).expect("sled ack"),
                        mem.ack(&[(seq, seq)]).expect("mem ack")
                    );
                }
            }
            Op::Reopen => {
                drop(sled.take());
                let (mut s, report) = SledOutbox::open(&tmp.store(), config).expect("reopen");
                s.set_open_alarms(open_alarms.clone());
                prop_assert!(!report.created);
                prop_assert_eq!(report.undecodable, 0);
                prop_assert_eq!(s.stream(), stream.as_str());
                sled = Some(s);
            }
            Op::Flush => {
                s.flush().expect("sled flush");
                mem.flush().expect("mem flush");
            }
            Op::PutState(k, v) => {
                let key = format!("rule/{k}");
                s.put_state(&key, v).expect("sled put_state");
                mem.put_state(&key, v).expect("mem put_state");
            }
            Op::Renumber(back, jump) => {
                let from = mem.stats().next_seq.saturating_sub(*back).max(1);
                prop_assert_eq!(
                    s.renumber(from, from + jump).expect("sled renumber"),
                    mem.renumber(from, from + jump).expect("mem renumber")
                );
            }
        }
        let s = sled.as_ref().expect("sled outbox present");
        let (got, want) = (observe(s), observe(&mem));
        prop_assert_eq!(&got, &want, "after {:?}", op);
        prop_assert!(
            got.stats.bytes <= max_bytes,
            "over the bound after {:?}",
            op
        );
        prop_assert!(
            got.stats.evidence_bytes <= evidence_max,
            "over the evidence bound after {:?}",
            op
        );
        for k in 0u8..3 {
            let key = format!("rule/{k}");
            prop_assert_eq!(
                s.get_state(&key).expect("get"),
                mem.get_state(&key).expect("get")
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sled_outbox_matches_the_model(
        max_bytes in 1024u64..3000,
        evidence_max in 1024u64..4000,
        ops in prop::collection::vec(op(), 1..40),
    ) {
        run_model(max_bytes, evidence_max, ops)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The full policy, on both implementations

fn full_policy(o: &mut dyn Outbox) {
    // ~100 bytes per reading; 1024 bytes hold about 7 of them next to the gap reserve.
    let r: Vec<Body> = (0..6).map(|i| reading("dev-a", 100 + i, 1.0)).collect();
    assert_eq!(o.append(r, 1).expect("append"), vec![1, 2, 3, 4, 5, 6]);
    let prio = o
        .append(vec![started("alarm-ish", 200)], 2)
        .expect("append priority");
    assert_eq!(prio, vec![7]);
    // Push more readings in: the oldest readings go, the event stays.
    let r: Vec<Body> = (0..6).map(|i| reading("dev-a", 300 + i, 2.0)).collect();
    o.append(r, 3).expect("append");
    let items = all(o);
    let st = o.stats();
    assert!(st.bytes <= st.max_bytes, "{st:?}");
    assert!(
        st.dropped_readings > 0 && st.dropped_priority == 0,
        "{st:?}"
    );
    let gap = items.last().expect("gap event");
    let ev = event_of(gap);
    assert_eq!(ev.kind, EventKind::Gap);
    assert_eq!(gap.seq, 14, "after the six bodies of the call");
    assert_eq!(ev.dropped, Some(st.dropped_readings));
    // Readings by seq had ts 100..=105 then 300..=305; the oldest went first.
    let reading_ts: Vec<i64> = (100..106).chain(300..306).collect();
    let n = st.dropped_readings as usize;
    assert!(n > 0 && n < reading_ts.len());
    assert_eq!(ev.from_ms, Some(100), "the oldest reading went first");
    assert_eq!(ev.to_ms, Some(reading_ts[n - 1]));
    assert!(
        items.iter().any(|i| i.seq == 7),
        "the priority item survives while readings remain"
    );

    // Only priority items left: the oldest of them go.
    let acked: Vec<(u64, u64)> = items
        .iter()
        .filter(|i| !i.body.is_priority())
        .map(|i| (i.seq, i.seq))
        .collect();
    o.ack(&acked).expect("ack readings");
    assert_eq!(o.stats().items, o.stats().priority_items);
    let big: Vec<Body> = (0..8).map(|i| started(&"e".repeat(60), 400 + i)).collect();
    o.append(big, 4).expect("append events");
    let st = o.stats();
    assert!(st.dropped_priority > 0, "{st:?}");
    assert!(st.bytes <= st.max_bytes);
    assert!(!seqs(&all(o)).contains(&7), "oldest priority item dropped");
    let last = all(o);
    let ev = event_of(last.last().expect("gap"));
    assert_eq!(ev.kind, EventKind::Gap);
    assert!(ev.message.contains("priority items"), "{}", ev.message);

    // A single body larger than the bound is dropped by its own call, and reported.
    let before = o.stats();
    let seq = o
        .append(vec![reading(&"z".repeat(2000), 500, 0.0)], 5)
        .expect("append");
    assert_eq!(seq, vec![before.next_seq]);
    let after = o.stats();
    assert_eq!(after.dropped_readings, before.dropped_readings + 1);
    assert!(!seqs(&all(o)).contains(&seq[0]));
    assert_eq!(
        after.next_seq,
        before.next_seq + 2,
        "the body's seq and the gap's"
    );
}

#[test]
fn full_policy_drops_oldest_readings_then_oldest_priority_items() {
    let mut mem = MemOutbox::new("m", cfg(1024)).expect("mem");
    full_policy(&mut mem);
    let tmp = TempDir::new("policy");
    let (mut s, _) = open(&tmp.store(), 1024);
    full_policy(&mut s);
    assert_eq!(all(&s), all(&mem));
    assert_eq!(s.stats(), mem.stats());
    // The drop totals are persisted.
    let want = s.stats();
    drop(s);
    let (s, _) = open(&tmp.store(), 1024);
    assert_eq!(s.stats(), want);
}

#[test]
fn config_below_the_minimum_is_refused() {
    let err = MemOutbox::new("m", cfg(100)).expect_err("too small");
    assert!(err.to_string().contains("max_bytes = 100"), "{err}");
    let err = MemOutbox::new("m", cfg2(1 << 20, 10)).expect_err("too small");
    assert!(err.to_string().contains("evidence_max_bytes = 10"), "{err}");
    let reserve = gap_reserve();
    assert!((250..400).contains(&reserve), "{reserve}");
    assert!(reserve * 2 < MIN_MAX_BYTES);
}

// ---------------------------------------------------------------------------------------------
// Reading back: ranges, newest, priority first

#[test]
fn pending_range_and_newest_serve_both_uplink_cursors() {
    let tmp = TempDir::new("cursors");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    let mut bodies: Vec<Body> = (0..10).map(|i| reading("d", i, 0.0)).collect();
    bodies[4] = started("alarm", 4);
    s.append(bodies, 10).expect("append");
    // Live first: the newest items, ascending.
    let live = s.newest(3, false).expect("newest");
    assert_eq!(seqs(&live), vec![8, 9, 10]);
    let split = live[0].seq;
    // Backlog below the split, priority first.
    assert_eq!(
        seqs(&s.pending_range(0, split, 10, true).expect("prio")),
        vec![5]
    );
    assert_eq!(
        seqs(&s.pending_range(0, split, 3, false).expect("backlog")),
        vec![1, 2, 3]
    );
    assert_eq!(
        seqs(&s.pending_range(3, split, 10, false).expect("backlog")),
        vec![4, 5, 6, 7]
    );
    assert_eq!(seqs(&s.pending(9, 10, false).expect("live")), vec![10]);
    assert!(s.pending(u64::MAX, 10, false).expect("end").is_empty());
    assert_eq!(seqs(&s.newest(5, true).expect("newest prio")), vec![5]);
    // Acks: bogus, reversed, overlapping, duplicate.
    assert_eq!(
        s.ack(&[(9, 7), (100, 200), (2, 3), (3, 4), (3, 3)])
            .expect("ack"),
        3
    );
    assert_eq!(seqs(&all(&s)), vec![1, 5, 6, 7, 8, 9, 10]);
    assert_eq!(s.stats().oldest_ts_ms, Some(0));
    assert_eq!(s.ack(&[(0, u64::MAX)]).expect("ack all"), 7);
    assert_eq!(s.stats().items, 0);
    assert_eq!(s.stats().bytes, 0);
    assert_eq!(s.stats().oldest_ts_ms, None);
}

// ---------------------------------------------------------------------------------------------
// Persistence

#[test]
fn seqs_are_never_reused_after_ack_and_reopen() {
    let tmp = TempDir::new("seq");
    let (mut s, report) = open(&tmp.store(), 1 << 20);
    assert!(report.created);
    assert_eq!(report.next_seq, 1);
    let stream = s.stream().to_owned();
    assert_eq!(stream.len(), 16);
    assert!(stream.bytes().all(|b| b.is_ascii_hexdigit()));
    let first = s
        .append((0..5).map(|i| reading("d", i, 0.0)).collect(), 1)
        .expect("append");
    assert_eq!(first, vec![1, 2, 3, 4, 5]);
    assert_eq!(s.ack(&[(1, 5)]).expect("ack"), 5);
    drop(s);
    let (mut s, report) = open(&tmp.store(), 1 << 20);
    assert!(!report.created);
    assert_eq!(report.items, 0);
    assert_eq!(s.stream(), stream);
    assert_eq!(
        s.append(vec![reading("d", 9, 0.0)], 2).expect("append"),
        vec![6]
    );
    // A new store gets a new stream.
    let other = TempDir::new("seq2");
    let (o, _) = open(&other.store(), 1 << 20);
    assert_ne!(o.stream(), stream);
}

#[test]
fn state_survives_reopen() {
    let tmp = TempDir::new("state");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.put_state("rules/exceedance/dev-a", b"raised:17")
        .expect("put");
    s.put_state("gone", b"x").expect("put");
    s.remove_state("gone").expect("remove");
    s.flush().expect("flush");
    drop(s);
    let (s, _) = open(&tmp.store(), 1 << 20);
    assert_eq!(
        s.get_state("rules/exceedance/dev-a")
            .expect("get")
            .as_deref(),
        Some(&b"raised:17"[..])
    );
    assert_eq!(s.get_state("gone").expect("get"), None);
    assert_eq!(s.stats().bytes, 0, "state is not counted against the bound");
}

const CRASH_CHILD: &str = "FUMEGRID_OUTBOX_CRASH_CHILD";

/// Not a test on its own: the body of the crash tests, run in a child process that aborts (no
/// destructor, no flush) right after appending.
#[test]
fn crash_child() {
    let Ok(spec) = std::env::var(CRASH_CHILD) else {
        return;
    };
    let Some((mode, dir)) = spec.split_once(':') else {
        return;
    };
    let (mut s, _) = open(Path::new(dir), 1 << 24);
    for batch in 0..10 {
        let bodies = (0..100)
            .map(|i| reading("d", batch * 100 + i, 0.0))
            .collect();
        s.append(bodies, 1).expect("append");
        if mode == "flushed" && batch == 4 {
            // The first 500 are made durable; the other 500 may be lost, never the 500.
            s.flush().expect("flush");
        }
    }
    if mode == "priority" {
        s.append(vec![started("alarm", 2000)], 2)
            .expect("append priority");
    }
    if mode == "evidence" {
        s.append(picture(7, 3, 1000, Some("a1"), 2000), 2)
            .expect("append picture");
    }
    println!("appended");
    std::process::abort();
}

fn crash(mode: &str, dir: &Path) {
    let exe = std::env::current_exe().expect("test binary");
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "outbox::tests::crash_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, format!("{mode}:{}", dir.display()))
        .output()
        .expect("spawn child");
    assert!(!out.status.success(), "the child must abort");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("appended"),
        "child did not get to append: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The store came back as it was: not judged corrupt, nothing moved aside to a
/// `outbox.corrupt-*` sibling, no fresh stream.
fn assert_not_moved_aside(tmp: &TempDir, report: &OpenReport) {
    assert_eq!(
        (report.moved_aside.as_ref(), report.reason.as_deref()),
        (None, None),
        "the store was judged corrupt"
    );
    let siblings: Vec<String> = std::fs::read_dir(&tmp.0)
        .expect("read temp dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "outbox")
        .collect();
    assert_eq!(siblings, Vec::<String>::new(), "moved aside");
    assert!(!report.created, "a fresh store was created");
}

#[test]
fn a_priority_append_is_durable_when_it_returns() {
    let tmp = TempDir::new("crash");
    crash("priority", &tmp.store());
    let (s, report) = open(&tmp.store(), 1 << 24);
    assert_not_moved_aside(&tmp, &report);
    // The priority append flushed everything before it too.
    assert_eq!(report.items, 1001);
    assert_eq!(s.stats().priority_items, 1);
    assert_eq!(s.stats().next_seq, 1002);
}

/// Reopens the store a crashed child left: it is the same store (not moved aside), and what
/// survived is a prefix of the readings appended, each intact, with seqs continuing after it.
fn reopen_after_crash(tmp: &TempDir) -> Vec<Item> {
    let (s, report) = open(&tmp.store(), 1 << 24);
    assert_not_moved_aside(tmp, &report);
    let items = all(&s);
    assert_eq!(seqs(&items), (1..=items.len() as u64).collect::<Vec<_>>());
    for it in &items {
        match &it.body {
            Body::Reading(r) => assert_eq!(r.ts_ms, it.seq as i64 - 1, "item {}", it.seq),
            other => panic!("item {} is not a reading appended: {other:?}", it.seq),
        }
    }
    assert_eq!(report.items, items.len() as u64);
    assert!(report.next_seq > items.len() as u64);
    items
}

#[test]
fn readings_not_yet_flushed_can_be_lost_in_a_crash_but_never_corrupt_the_store() {
    let tmp = TempDir::new("crash-r");
    crash("readings", &tmp.store());
    let items = reopen_after_crash(&tmp);
    eprintln!(
        "readings surviving an abort without flush: {} of 1000",
        items.len()
    );
}

#[test]
fn flushed_readings_survive_a_crash() {
    let tmp = TempDir::new("crash-f");
    crash("flushed", &tmp.store());
    let items = reopen_after_crash(&tmp);
    assert!(items.len() >= 500, "flushed readings lost: {}", items.len());
}

// ---------------------------------------------------------------------------------------------
// Corruption and format

/// Opens the store's directory with plain sled, waiting for the lock like `SledOutbox::open`.
fn raw_open(dir: &Path) -> sled::Db {
    let start = fumegrid_common::clock::Clock::system().instant();
    loop {
        match sled::open(dir) {
            Err(e)
                if sled_store::is_lock_held(&e)
                    && (fumegrid_common::clock::Clock::system().instant() - start).as_secs()
                        < 2 =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            r => return r.expect("raw open"),
        }
    }
}

fn garble_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read store dir") {
        let p = entry.expect("entry").path();
        if p.is_file() {
            let len = std::fs::metadata(&p).map_or(0, |m| m.len()).max(64);
            let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
            std::fs::write(&p, garbage).expect("garble");
        }
    }
}

fn assert_reset(tmp: &TempDir, s: &SledOutbox, report: &OpenReport, reason_has: &str) {
    let moved = report.moved_aside.as_ref().expect("moved aside");
    assert!(moved.exists(), "{} exists", moved.display());
    assert!(
        moved
            .file_name()
            .expect("name")
            .to_string_lossy()
            .starts_with("outbox.corrupt-")
    );
    assert_eq!(moved.parent(), Some(tmp.0.as_path()));
    let reason = report.reason.as_deref().expect("reason");
    assert!(reason.contains(reason_has), "{reason}");
    let items = all(s);
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].seq, 1);
    let ev = event_of(&items[0]);
    assert_eq!(ev.kind, EventKind::StoreReset);
    assert!(
        ev.message.contains(&moved.display().to_string()),
        "{}",
        ev.message
    );
}

#[test]
fn a_corrupt_store_is_moved_aside_and_reported() {
    let tmp = TempDir::new("corrupt");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append(vec![reading("d", 1, 0.0)], 1).expect("append");
    let old_stream = s.stream().to_owned();
    drop(s);
    garble_files(&tmp.store());
    let (s, report) = open(&tmp.store(), 1 << 20);
    assert_reset(&tmp, &s, &report, "open sled database");
    assert_ne!(s.stream(), old_stream);
    assert!(report.created);
}

#[test]
fn a_garbled_log_is_moved_aside_and_reported() {
    // `conf` intact, the log (`db`) overwritten: sled gets past its config and reads garbage.
    let tmp = TempDir::new("corrupt-db");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append(vec![reading("d", 1, 0.0)], 1).expect("append");
    drop(s);
    let db = tmp.store().join("db");
    let len = std::fs::metadata(&db).map_or(0, |m| m.len()).max(4096);
    let garbage: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
    std::fs::write(&db, garbage).expect("garble db");
    let (s, report) = open(&tmp.store(), 1 << 20);
    assert_reset(&tmp, &s, &report, "recovered nothing");
}

#[test]
fn undecodable_meta_is_corruption() {
    let tmp = TempDir::new("meta");
    drop(open(&tmp.store(), 1 << 20));
    {
        let db = raw_open(&tmp.store());
        db.open_tree("meta")
            .expect("meta")
            .insert("next_seq", &b"xx"[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let (s, report) = open(&tmp.store(), 1 << 20);
    assert_reset(&tmp, &s, &report, "meta/next_seq");
}

#[test]
fn a_newer_format_is_refused_untouched() {
    let tmp = TempDir::new("format");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append(vec![reading("d", 1, 0.0)], 1).expect("append");
    drop(s);
    {
        let db = raw_open(&tmp.store());
        db.open_tree("meta")
            .expect("meta")
            .insert("format", &3u32.to_be_bytes()[..])
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = SledOutbox::open(&tmp.store(), cfg(1 << 20)).expect_err("newer format");
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            OutboxError::NewerFormat {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&tmp.store().display().to_string()) && msg.contains("format 3"),
        "{msg}"
    );
    // Untouched: not moved, the item still there.
    let entries = std::fs::read_dir(&tmp.0).expect("read").count();
    assert_eq!(entries, 1, "nothing moved aside");
    let db = raw_open(&tmp.store());
    assert_eq!(db.open_tree("readings").expect("tree").iter().count(), 1);
}

#[test]
fn an_undecodable_item_is_removed_and_reported() {
    let tmp = TempDir::new("item");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append(vec![reading("d", 1, 0.0), reading("d", 2, 0.0)], 1)
        .expect("append");
    drop(s);
    {
        let db = raw_open(&tmp.store());
        let t = db.open_tree("readings").expect("tree");
        t.insert(2u64.to_be_bytes(), &b"\x01\0\0\0\0\0\0\0\x02{not json"[..])
            .expect("insert");
        t.insert(b"short", &b"x"[..]).expect("insert");
        db.flush().expect("flush");
    }
    let (s, report) = open(&tmp.store(), 1 << 20);
    assert_eq!(report.undecodable, 2);
    assert!(report.moved_aside.is_none());
    let items = all(&s);
    assert_eq!(seqs(&items), vec![1, 3]);
    let ev = event_of(&items[1]);
    assert_eq!((ev.kind, ev.dropped), (EventKind::Gap, Some(2)));
    assert_eq!(s.stats().items, 2);
}

// ---------------------------------------------------------------------------------------------
// Going back in time: renumbering and the checkpoint

#[test]
fn renumber_moves_this_runs_items_past_the_given_seq_and_never_reuses_any() {
    let tmp = TempDir::new("renumber");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    let first = s
        .append((0..5).map(|i| reading("d", i, 0.5)).collect(), 10)
        .expect("append");
    assert_eq!(first, vec![1, 2, 3, 4, 5]);
    s.append(vec![started("p", 11)], 11).expect("append");
    // The aggregator holds up to 40: items 4.. move to 41..
    assert_eq!(s.renumber(4, 41).expect("renumber"), 3);
    assert_eq!(seqs(&all(&s)), vec![1, 2, 3, 41, 42, 43]);
    assert_eq!(s.stats().next_seq, 44);
    assert_eq!(
        s.pending(0, 10, true).expect("pending")[0].seq,
        43,
        "class kept"
    );
    drop(s);
    let (mut s, report) = open(&tmp.store(), 1 << 20);
    assert_eq!((report.next_seq, report.torn), (44, None));
    assert_eq!(seqs(&all(&s)), vec![1, 2, 3, 41, 42, 43]);
    assert_eq!(
        s.append(vec![reading("d", 12, 0.1)], 12).expect("append"),
        vec![44]
    );
}

#[test]
fn a_store_that_recovers_less_than_it_had_flushed_skips_the_lost_seqs_and_says_so() {
    let tmp = TempDir::new("renumber");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append((0..50).map(|i| reading("d", i, 0.5)).collect(), 10)
        .expect("append");
    s.flush().expect("flush");
    drop(s);
    // An older copy of the store (what a torn log recovers to) ...
    let older = tmp.0.join("older");
    copy_dir(&tmp.store(), &older);
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append((0..30).map(|i| reading("d", i, 0.5)).collect(), 10)
        .expect("append");
    s.flush().expect("flush");
    drop(s);
    // ... next to the checkpoint of the newer state (sled never touches that file).
    std::fs::copy(tmp.store().join("handed-out"), older.join("handed-out")).expect("copy");
    let (mut s, report) = open(&older, 1 << 20);
    assert_eq!(report.recovered_next_seq, 51);
    assert_eq!(report.start_next_seq, 81);
    assert_eq!(report.torn.map(|c| (c.next_seq, c.items)), Some((81, 80)));
    assert_eq!(s.stats().items, 50, "what was recovered stays");
    assert_eq!(
        s.append(vec![reading("d", 1, 0.1)], 1).expect("append"),
        vec![81]
    );
    drop(s);
    let (_, report) = open(&older, 1 << 20);
    assert_eq!(
        (report.recovered_next_seq, report.torn),
        (82, None),
        "said once"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

#[test]
fn a_store_that_makes_sled_panic_at_open_is_moved_aside_not_crash_looped_on() {
    let tmp = TempDir::new("panic");
    let (mut s, _) = open(&tmp.store(), 1 << 30);
    for i in 0..30 {
        s.append(
            (0..100).map(|j| reading("d", i * 100 + j, 0.5)).collect(),
            10,
        )
        .expect("append");
        s.flush().expect("flush");
    }
    drop(s);
    // Measured: 4 KiB of 0x5a in the middle of this log makes sled 0.34 panic while it
    // recovers its snapshot ("tried to serialize Uninitialized").
    let file = tmp.store().join("db");
    let len = std::fs::metadata(&file).expect("db").len();
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open db");
        f.seek(SeekFrom::Start(len / 2)).expect("seek");
        f.write_all(&[0x5a; 4096]).expect("scribble");
    }
    let (s, report) = SledOutbox::open(&tmp.store(), cfg(1 << 30)).expect("opens");
    assert!(report.moved_aside.is_some(), "{report:?}");
    let all = all(&s);
    let ev = event_of(&all[0]);
    assert_eq!(ev.kind, EventKind::StoreReset);
    assert_eq!(ev.dropped, Some(3000), "{}", ev.message);
}

// ---------------------------------------------------------------------------------------------
// Evidence: its own budget, whole pictures, open alarms last, durability, the upgrade

fn evidence_policy(o: &mut dyn Outbox) {
    // Pictures of 3 parts of ~1.1 KiB each: the 8 KiB budget holds two of them.
    o.set_open_alarms(["a-open".to_string()].into());
    o.append(picture(1, 3, 800, Some("a-open"), 100), 1)
        .expect("append picture 1");
    o.append(picture(2, 3, 800, None, 200), 2)
        .expect("append picture 2");
    o.append(vec![started("an alarm", 250)], 2)
        .expect("append priority");
    let before = o.stats();
    assert_eq!(before.evidence_items, 6, "{before:?}");
    assert_eq!(before.dropped_pictures, 0);
    // A third picture: the oldest picture of no open alarm (2) goes, whole; 1 stays though
    // older, because its alarm is open.
    o.append(picture(3, 3, 800, Some("a-closed"), 300), 3)
        .expect("append picture 3");
    let st = o.stats();
    assert!(st.evidence_bytes <= st.evidence_max_bytes, "{st:?}");
    assert_eq!((st.dropped_pictures, st.dropped_evidence), (1, 3), "{st:?}");
    assert_eq!(
        (st.dropped_readings, st.dropped_priority),
        (0, 0),
        "pictures never evict anything else"
    );
    let items = all(o);
    let shas: Vec<&str> = items.iter().filter_map(sha_of).collect();
    assert_eq!(
        shas,
        [1u64, 1, 1, 3, 3, 3]
            .iter()
            .map(|id| format!("{id:064x}"))
            .collect::<Vec<_>>()
    );
    let gap = event_of(items.last().expect("gap event"));
    assert_eq!(gap.kind, EventKind::Gap);
    assert!(
        gap.message.contains("1 pictures (3 parts)"),
        "{}",
        gap.message
    );
    assert_eq!(
        (gap.dropped, gap.from_ms, gap.to_ms),
        (Some(3), Some(200), Some(200))
    );
    assert!(
        items
            .iter()
            .any(|i| matches!(&i.body, Body::Event(e) if e.message == "an alarm")),
        "the alarm stays"
    );

    // Readings flood the main budget: they go, pictures stay.
    for round in 0..20 {
        let r = (0..10).map(|i| reading("dev-a", 400 + round * 10 + i, 1.0));
        o.append(r.collect(), 4).expect("append readings");
    }
    let st = o.stats();
    assert!(st.dropped_readings > 0, "{st:?}");
    assert_eq!(st.evidence_items, 6, "readings never evict pictures");
    assert_eq!(st.dropped_pictures, 1);

    // The alarm closes: its picture is now the oldest of no open alarm and goes first.
    o.set_open_alarms(Default::default());
    o.append(picture(4, 3, 800, None, 500), 5)
        .expect("append picture 4");
    let shas: Vec<String> = all(o)
        .iter()
        .filter_map(sha_of)
        .map(str::to_string)
        .collect();
    assert_eq!(shas.len(), 6);
    assert!(!shas.contains(&format!("{:064x}", 1)), "{shas:?}");

    // A picture larger than the whole budget is dropped by its own call, and reported.
    let before = o.stats();
    let seqs = o
        .append(picture(5, 12, 800, Some("a-big"), 600), 6)
        .expect("append big");
    assert_eq!(seqs.len(), 12);
    let st = o.stats();
    assert_eq!(st.dropped_pictures, before.dropped_pictures + 1);
    assert_eq!(st.dropped_evidence, before.dropped_evidence + 12);
    assert_eq!(st.evidence_items, before.evidence_items, "the others stay");
}

#[test]
fn evidence_has_its_own_budget_and_drops_whole_pictures_of_closed_alarms_first() {
    let mut mem = MemOutbox::new("m", cfg2(2048, 8192)).expect("mem");
    evidence_policy(&mut mem);
    let tmp = TempDir::new("evidence");
    let (mut s, _) = SledOutbox::open(&tmp.store(), cfg2(2048, 8192)).expect("open");
    evidence_policy(&mut s);
    assert_eq!(all(&s), all(&mem));
    assert_eq!(s.stats(), mem.stats());
    // The totals are persisted.
    let want = s.stats();
    drop(s);
    let (s, _) = SledOutbox::open(&tmp.store(), cfg2(2048, 8192)).expect("reopen");
    assert_eq!(s.stats(), want);
    for c in Class::ALL {
        let got = s.pending_class(c, 0, u64::MAX, 100).expect("class");
        assert!(got.iter().all(|i| Class::of(&i.body) == c), "{c:?}");
    }
}

#[test]
fn a_picture_is_durable_when_its_append_returns() {
    let tmp = TempDir::new("crash-e");
    crash("evidence", &tmp.store());
    let (s, report) = open(&tmp.store(), 1 << 24);
    assert_not_moved_aside(&tmp, &report);
    // The picture's append flushed it and everything before it.
    assert_eq!(report.items, 1003);
    let st = s.stats();
    assert_eq!(st.evidence_items, 3);
    let parts = s
        .pending_class(Class::Evidence, 0, u64::MAX, 10)
        .expect("parts");
    assert_eq!(seqs(&parts), vec![1001, 1002, 1003]);
    assert!(
        parts
            .iter()
            .all(|i| sha_of(i) == Some(format!("{:064x}", 7).as_str()))
    );
}

#[test]
fn a_format_1_store_is_upgraded_and_its_picture_parts_move_to_the_evidence_class() {
    let tmp = TempDir::new("upgrade");
    let (mut s, _) = open(&tmp.store(), 1 << 20);
    s.append(vec![reading("d", 1, 0.0), started("x", 2)], 1)
        .expect("append");
    let stream = s.stream().to_string();
    drop(s);
    // What a format-1 store looks like: no evidence tree, no evidence totals, and a picture
    // part (which format 1 took for a reading) among the readings.
    {
        let db = raw_open(&tmp.store());
        let rec = encode_record(&picture(9, 1, 10, None, 3)[0]).expect("record");
        db.open_tree("readings")
            .expect("tree")
            .insert(3u64.to_be_bytes(), rec)
            .expect("insert");
        db.drop_tree("evidence").expect("drop tree");
        let meta = db.open_tree("meta").expect("meta");
        meta.insert("format", &1u32.to_be_bytes()[..])
            .expect("format");
        meta.remove("dropped_evidence").expect("remove");
        meta.remove("dropped_pictures").expect("remove");
        meta.insert("next_seq", &4u64.to_be_bytes()[..])
            .expect("next_seq");
        db.flush().expect("flush");
    }
    let (s, report) = open(&tmp.store(), 1 << 20);
    assert_not_moved_aside(&tmp, &report);
    assert_eq!(s.stream(), stream);
    assert_eq!(seqs(&all(&s)), vec![1, 2, 3]);
    let st = s.stats();
    assert_eq!((st.evidence_items, st.dropped_pictures), (1, 0), "{st:?}");
    assert_eq!(
        seqs(
            &s.pending_class(Class::Reading, 0, u64::MAX, 10)
                .expect("readings")
        ),
        vec![1]
    );
    drop(s);
    let db = raw_open(&tmp.store());
    let meta = db.open_tree("meta").expect("meta");
    assert_eq!(
        meta.get("format").expect("get").as_deref(),
        Some(&2u32.to_be_bytes()[..])
    );
    assert_eq!(db.open_tree("evidence").expect("tree").len(), 1);
}
