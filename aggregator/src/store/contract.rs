//! The store contract: one suite of checks every store implementation passes, run against
//! [`super::memory`] and [`super::sqlite`] by the two tests at the end. A later implementation
//! (PostgreSQL) adds a test calling [`run_all`] with its own constructor.
//!
//! Each check takes a fresh `(writer, reader)` pair: the writer is the ingest and case side
//! ([`Writer`] + [`CaseStore`]), the reader the API side ([`Reader`]) of the same store.

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{
    Alarm, AlarmKind, AlarmPhase, Batch, Body, Item, Period, PeriodMetric,
};

use super::cases_sql::Contact;
use super::evidence::{
    self, EvidenceReader, EvidenceWriter, Outcome, PictureEvent, Refusal, SnapshotRequest, Upload,
};
use super::notify_sql::Attempt;
use super::{
    AlarmHook, AlarmQuery, AlarmState, CaseQuery, CaseStore, CaseTx, Reader, ReadingQuery,
    StoreError, Writer,
};
use crate::cases::model::{Intake, Origin};
use crate::cases::{Action, Actor, Case, Catalogue, Command, Effect, Event, apply, open};
use fumegrid_common::wire::{EVIDENCE_PART_BYTES, EvidenceMeta, Media, Trigger};

/// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
const T0: i64 = 1_762_135_200_000;

/// Runs every check, each on a store fresh from `make`.
pub(crate) fn run_all<W, R>(make: &dyn Fn() -> (W, R))
where
    W: Writer + CaseStore + EvidenceWriter,
    R: Reader + EvidenceReader,
{
    picture_parts_are_assembled_verified_and_moved(make());
    a_hash_mismatch_is_refused_and_nothing_is_kept(make());
    inconsistent_parts_and_other_gateways_do_not_join_a_picture(make());
    pictures_belong_to_cases_by_episode_request_and_upload(make());
    every_capture_of_the_same_bytes_links_its_episode(make());
    dedupe_counts_duplicates_and_stores_once(make());
    same_seq_other_content_is_a_conflict_kept_once(make());
    stream_holds_answer_a_hello(make());
    dedupe_holds_every_seq_beyond_the_conflict_window(make());
    periods_are_stored_merged_and_set_the_latest_value(make());
    rollups_take_periods_over_raw_polls_and_carry_validity_up(make());
    alarm_transitions_fold_into_one_episode_that_never_rewinds(make());
    the_alarm_hook_sees_new_transitions_inside_the_commit(make());
    a_failing_hook_rolls_the_whole_commit_back(make());
    stale_and_malformed_saves_change_nothing(make());
    open_cases_of_a_device_and_episode_links(make());
    case_numbers_count_per_prefix(make());
    contacts_are_erased_on_request_and_after_retention(make());
    notifications_queue_per_department_with_retries(make());
}

fn reading(seq: u64, v: f64) -> Item {
    Item {
        seq,
        body: Body::Reading(Reading {
            device: "rest-1".into(),
            unit: None,
            metric: Metric::FumeMgM3,
            value: Some(v),
            quality: Quality::Ok,
            ts_ms: T0 + seq as i64 * 1000,
        }),
    }
}

fn batch(stream: &str, items: Vec<Item>) -> Batch {
    Batch {
        gateway: "gw-1".into(),
        stream: stream.into(),
        sent_ms: 0,
        items,
    }
}

fn readings(range: std::ops::Range<u64>) -> Vec<Item> {
    range.map(|s| reading(s, s as f64)).collect()
}

fn alarm(device: &str, phase: AlarmPhase, started: i64, ts: i64, v: f64) -> Alarm {
    Alarm {
        id: format!("{device}:exceedance:{started}"),
        device: device.into(),
        kind: AlarmKind::Exceedance,
        metric: Some(Metric::FumeMgM3),
        phase,
        started_ms: started,
        ts_ms: ts,
        cleared_ms: (phase == AlarmPhase::Cleared).then_some(ts),
        value: Some(v),
        peak: Some(v),
        peak_ms: Some(ts),
        limit: Some(2.0),
        suppressed: false,
        message: String::new(),
    }
}

fn alarm_item(seq: u64, a: Alarm) -> Item {
    Item {
        seq,
        body: Body::Alarm(a),
    }
}

fn cat() -> Catalogue {
    Catalogue::builtin().expect("catalogue")
}

/// A case `id` filed by an operator at `t`, registered and dispatched: three events, the last
/// with a `notify` effect for its department.
fn dispatched(id: &str, origin: Origin, t: i64) -> (Case, Vec<Event>, Vec<Effect>) {
    let cat = cat();
    let op = Actor::operator("op-1");
    let intake = Intake {
        category: "exceedance".into(),
        title: "smoke".into(),
        origin,
        site: None,
        grid_cell: None,
    };
    let (c, mut ev, mut ef) = open(id, intake, &op, "", t, &cat).expect("open");
    let (c, e2, f2) = apply(&c, Command::new(Action::Register), &op, t, &cat).expect("register");
    let (c, e3, f3) = apply(
        &c,
        Command::new(Action::Dispatch { department: None }),
        &op,
        t,
        &cat,
    )
    .expect("dispatch");
    ev.extend(e2.into_iter().chain(e3));
    ef.extend(f2.into_iter().chain(f3));
    (c, ev, ef)
}

fn dedupe_counts_duplicates_and_stores_once<W: Writer + CaseStore, R: Reader>((mut w, r): (W, R)) {
    let c = w
        .commit(&[&batch("s", readings(1..6))], T0)
        .expect("commit");
    assert_eq!((c[0].new, c[0].duplicates, c[0].conflicts), (5, 0, 0));
    // A resend overlapping what is stored, in two batches of one commit.
    let c = w
        .commit(
            &[&batch("s", readings(3..9)), &batch("s", readings(8..10))],
            T0 + 1,
        )
        .expect("commit");
    assert_eq!((c[0].new, c[0].duplicates), (3, 3));
    assert_eq!(
        (c[1].new, c[1].duplicates),
        (1, 1),
        "a seq of the same commit"
    );
    assert_eq!(c[0].conflicts + c[1].conflicts, 0, "identical resends");
    let rows = r
        .readings(&ReadingQuery {
            device: "rest-1".into(),
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 100,
            ..ReadingQuery::default()
        })
        .expect("readings");
    let ts: Vec<i64> = rows.iter().map(|r| (r.ts_ms - T0) / 1000).collect();
    assert_eq!(ts, (1..10).collect::<Vec<i64>>(), "each seq stored once");
    // The same seqs on another stream are other items.
    let c = w
        .commit(&[&batch("t", readings(1..3))], T0 + 2)
        .expect("commit");
    assert_eq!(c[0].new, 2);
    let gws = r.gateways().expect("gateways");
    assert_eq!(gws.len(), 1);
    assert_eq!(gws[0].last_seen_ms, Some(T0 + 2));
}

fn same_seq_other_content_is_a_conflict_kept_once<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    w.commit(&[&batch("s", readings(1..4))], T0)
        .expect("commit");
    let other = || {
        batch(
            "s",
            vec![reading(1, 1.0), reading(2, 99.0), reading(3, 98.0)],
        )
    };
    let c = w.commit(&[&other()], T0 + 1).expect("commit");
    assert_eq!(
        (
            c[0].new,
            c[0].duplicates,
            c[0].conflicts,
            c[0].conflicts_new
        ),
        (0, 3, 2, 2)
    );
    assert_eq!(c[0].first_conflict, Some(2));
    // The same conflicting resend again: still conflicts, none new.
    let c = w.commit(&[&other()], T0 + 2).expect("commit");
    assert_eq!((c[0].conflicts, c[0].conflicts_new), (2, 0));
    // What was stored first stays.
    let rows = r
        .readings(&ReadingQuery {
            device: "rest-1".into(),
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 100,
            ..ReadingQuery::default()
        })
        .expect("readings");
    let values: Vec<Option<f64>> = rows.iter().map(|r| r.value).collect();
    assert_eq!(values, [Some(1.0), Some(2.0), Some(3.0)]);
}

fn period_metric(metric: Metric, count: u32, v: f64) -> PeriodMetric {
    let some = |x: f64| (count > 0).then_some(x);
    PeriodMetric {
        unit: metric.is_custom().then(|| "Hz".to_string()),
        metric,
        polls: 60,
        count,
        avg: some(v),
        min: some(v - 1.0),
        max: some(v + 1.0),
        last: some(v + 0.5),
        valid: count >= 45,
    }
}

fn period_item(seq: u64, device: &str, start_ms: i64, metrics: Vec<PeriodMetric>) -> Item {
    Item {
        seq,
        body: Body::Period(Period {
            device: device.into(),
            start_ms,
            period_s: 60,
            metrics,
        }),
    }
}

fn periods_are_stored_merged_and_set_the_latest_value<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    // T0 is a whole minute.
    let fan = Metric::parse("x_fan_hz").expect("valid");
    let m0 = T0;
    let m1 = T0 + 60_000;
    let items = vec![
        period_item(
            1,
            "rest-1",
            m1,
            vec![
                period_metric(Metric::FumeMgM3, 58, 2.0),
                period_metric(fan, 0, 0.0),
            ],
        ),
        period_item(
            2,
            "rest-1",
            m0,
            vec![period_metric(Metric::FumeMgM3, 60, 1.0)],
        ),
        period_item(
            3,
            "rest-2",
            m0,
            vec![period_metric(Metric::FumeMgM3, 60, 9.0)],
        ),
    ];
    let c = w.commit(&[&batch("s", items.clone())], T0).expect("commit");
    assert_eq!((c[0].new, c[0].duplicates), (3, 0));
    // A resend is a duplicate and changes nothing.
    let c = w.commit(&[&batch("s", items)], T0 + 1).expect("commit");
    assert_eq!((c[0].new, c[0].duplicates, c[0].conflicts), (0, 3, 0));
    let q = |metric: Option<&str>| ReadingQuery {
        device: "rest-1".into(),
        metric: metric.map(String::from),
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 100,
        ..ReadingQuery::default()
    };
    let rows = r.periods(&q(None)).expect("periods");
    type Got<'a> = (i64, &'a str, &'a str, u32, Option<f64>, Option<f64>, bool);
    let got: Vec<Got<'_>> = rows
        .iter()
        .map(|p| {
            (
                p.start_ms,
                p.metric.as_str(),
                p.unit.as_str(),
                p.vals.count,
                p.vals.avg,
                p.vals.last,
                p.vals.valid,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (m0, "fume_mg_m3", "mg/m³", 60, Some(1.0), Some(1.5), true),
            (m1, "fume_mg_m3", "mg/m³", 58, Some(2.0), Some(2.5), true),
            (m1, "x_fan_hz", "Hz", 0, None, None, false),
        ],
        "oldest first, then by metric; rest-2 not included"
    );
    assert!(rows.iter().all(|p| p.gateway == "gw-1" && p.period_s == 60));
    assert!(
        r.readings(&q(None)).expect("readings").is_empty(),
        "periods are not readings"
    );
    let mut one = q(Some("fume_mg_m3"));
    one.from_ms = m1;
    one.limit = 1;
    assert_eq!(r.periods(&one).expect("periods").len(), 1);
    // The latest value follows `last` at the end of the newest period; a metric with no valid
    // poll has no latest value.
    let devs = r.devices().expect("devices");
    let d1 = devs.iter().find(|d| d.device == "rest-1").expect("rest-1");
    let latest: Vec<(&str, Option<f64>, &str, i64)> = d1
        .latest
        .iter()
        .map(|l| (l.metric.as_str(), l.value, l.quality, l.ts_ms))
        .collect();
    assert_eq!(
        latest,
        [
            ("fume_mg_m3", Some(2.5), "ok", m1 + 60_000),
            ("x_fan_hz", None, "device_error", m1 + 60_000),
        ]
    );
    assert_eq!(
        w.device_last_reading_ms("gw-1", "rest-1").expect("last"),
        Some(m1 + 60_000)
    );
    // A raw reading newer than the period's end takes over the latest value; an older one not.
    let mut late = reading(1, 7.0);
    if let Body::Reading(x) = &mut late.body {
        x.ts_ms = m1 + 30_000;
    }
    w.commit(&[&batch("raw", vec![late])], T0 + 2)
        .expect("commit");
    let devs = r.devices().expect("devices");
    let l = &devs
        .iter()
        .find(|d| d.device == "rest-1")
        .expect("rest-1")
        .latest[0];
    assert_eq!((l.value, l.ts_ms), (Some(2.5), m1 + 60_000));
    // A second item for the same series and period (a gateway restarted mid-period) is merged:
    // polls and counts added, the average weighted, min/max folded, the first last kept.
    let mut rest = period_metric(Metric::FumeMgM3, 20, 4.0);
    rest.polls = 20;
    let c = w
        .commit(
            &[&batch("s2", vec![period_item(1, "rest-1", m0, vec![rest])])],
            T0 + 3,
        )
        .expect("commit");
    assert_eq!(c[0].new, 1);
    let mut first = q(Some("fume_mg_m3"));
    first.to_ms = m1;
    let rows = r.periods(&first).expect("periods");
    assert_eq!(rows.len(), 1, "merged into one row");
    let v = rows[0].vals;
    assert_eq!((v.polls, v.count, v.valid), (80, 80, true));
    assert!((v.avg.expect("avg") - (60.0 * 1.0 + 20.0 * 4.0) / 80.0).abs() < 1e-9);
    assert_eq!((v.min, v.max, v.last), (Some(0.0), Some(5.0), Some(1.5)));
}

fn rollups_take_periods_over_raw_polls_and_carry_validity_up<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    // Raw polls every second over the first two minutes (seq s at T0 + s s, value s), and a
    // 60-s period for the second minute: that minute takes the period, not its raw polls.
    let c = w
        .commit(&[&batch("s", readings(0..120))], T0)
        .expect("commit");
    assert_eq!(c[0].new, 120);
    let p = period_item(
        1,
        "rest-1",
        T0 + 60_000,
        vec![period_metric(Metric::FumeMgM3, 60, 500.0)],
    );
    w.commit(&[&batch("p", vec![p])], T0).expect("commit");
    let q = ReadingQuery {
        device: "rest-1".into(),
        from_ms: 0,
        to_ms: i64::MAX,
        limit: 100,
        ..ReadingQuery::default()
    };
    let m = r.rollups(&q, 0).expect("1m");
    let got: Vec<(i64, u64, Option<f64>, bool)> = m
        .iter()
        .map(|b| (b.start_ms - T0, b.count, b.avg, b.valid))
        .collect();
    assert_eq!(
        got,
        [(0, 60, Some(29.5), true), (60_000, 60, Some(500.0), true)]
    );
    assert_eq!(
        (m[1].min, m[1].max, m[1].last),
        (Some(499.0), Some(501.0), Some(500.5))
    );
    // Ten minutes: both minutes, 2 valid of 10 expected.
    let ten = r.rollups(&q, 1).expect("10m");
    assert_eq!(ten.len(), 1);
    let b = &ten[0];
    assert_eq!((b.count, b.polls, b.valid), (120, 120, false));
    assert_eq!(b.avg, Some((29.5 * 60.0 + 500.0 * 60.0) / 120.0));
    assert!((b.valid_share - 0.2).abs() < 1e-12);
    assert_eq!(
        (b.min, b.max, b.last),
        (Some(0.0), Some(501.0), Some(500.5))
    );
    for level in 2..4 {
        let up = r.rollups(&q, level).expect("up");
        assert_eq!(up.len(), 1);
        assert_eq!(
            (up[0].count, up[0].avg, up[0].unit.as_str()),
            (120, b.avg, "mg/m³")
        );
    }
    assert!(r.rollups(&q, 4).expect("no such level").is_empty());
}

fn stream_holds_answer_a_hello<W: Writer + CaseStore, R: Reader>((mut w, _r): (W, R)) {
    assert_eq!(w.stream_holds("gw-1", "s", 1).expect("holds"), (0, 0));
    let mut items = readings(1..6);
    items.push(reading(8, 8.0));
    w.commit(&[&batch("s", items)], T0).expect("commit");
    assert_eq!(w.stream_holds("gw-1", "s", 1).expect("holds"), (8, 6));
    assert_eq!(w.stream_holds("gw-1", "s", 3).expect("holds"), (8, 4));
    assert_eq!(w.stream_holds("gw-1", "s", 9).expect("holds"), (8, 0));
    assert_eq!(w.stream_holds("gw-1", "other", 1).expect("holds"), (0, 0));
    assert_eq!(w.stream_holds("gw-2", "s", 1).expect("holds"), (0, 0));
}

/// Issue 14 item 4: dedupe is ranges plus a window of digests (`store/dedupe.rs`): every seq
/// ever stored stays a duplicate however far below the window it is, holes (seqs a full outbox
/// dropped, or not yet arrived) stay new, the hello counts across them, and a recent seq resent
/// with other content is still a conflict.
fn dedupe_holds_every_seq_beyond_the_conflict_window<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    use crate::store::dedupe::WINDOW;
    let n = WINDOW + 1000;
    // 1..=n in order except a hole 101..=110; then n+10 ahead of n+1..n+10.
    let items: Vec<Item> = (1..=n)
        .filter(|s| !(101..=110).contains(s))
        .map(|s| reading(s, 1.0))
        .collect();
    for chunk in items.chunks(2000) {
        w.commit(&[&batch("s", chunk.to_vec())], T0)
            .expect("commit");
    }
    w.commit(&[&batch("s", vec![reading(n + 10, 1.0)])], T0)
        .expect("ahead");
    assert_eq!(
        w.stream_holds("gw-1", "s", 1).expect("holds"),
        (n + 10, n - 10 + 1)
    );
    assert_eq!(
        w.stream_holds("gw-1", "s", 105).expect("holds"),
        (n + 10, n - 110 + 1)
    );
    // Far below the window: still held (same or other content: a duplicate, acked, not stored).
    let c = w
        .commit(
            &[&batch("s", vec![reading(1, 1.0), reading(2, 5.0)])],
            T0 + 1,
        )
        .expect("old resend");
    assert_eq!((c[0].new, c[0].duplicates), (0, 2));
    // The hole and the run below n + 10 are new, once.
    let fill: Vec<Item> = (101..=110)
        .chain(n + 1..n + 10)
        .map(|s| reading(s, 1.0))
        .collect();
    let c = w
        .commit(&[&batch("s", fill.clone())], T0 + 2)
        .expect("fill");
    assert_eq!((c[0].new, c[0].duplicates), (19, 0));
    let c = w.commit(&[&batch("s", fill)], T0 + 3).expect("again");
    assert_eq!((c[0].new, c[0].duplicates), (0, 19));
    assert_eq!(
        w.stream_holds("gw-1", "s", 1).expect("holds"),
        (n + 10, n + 10)
    );
    // A recent seq with other content is a conflict.
    let c = w
        .commit(&[&batch("s", vec![reading(n - 5, 7.0)])], T0 + 4)
        .expect("conflict");
    assert_eq!(
        (c[0].duplicates, c[0].conflicts, c[0].conflicts_new),
        (1, 1, 1)
    );
    let stored = r
        .readings(&ReadingQuery {
            device: "rest-1".into(),
            from_ms: 0,
            to_ms: i64::MAX,
            limit: u32::MAX,
            ..ReadingQuery::default()
        })
        .expect("readings");
    assert_eq!(stored.len() as u64, n + 10, "each seq stored once");
}

fn alarm_transitions_fold_into_one_episode_that_never_rewinds<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    use AlarmPhase::*;
    let id = "rest-1:exceedance:1000";
    let b = |items| batch("alarms", items);
    w.commit(
        &[&b(vec![alarm_item(
            1,
            alarm("rest-1", Raised, 1000, 1000, 2.5),
        )])],
        T0,
    )
    .expect("raised");
    w.commit(
        &[&b(vec![
            alarm_item(2, alarm("rest-1", Cleared, 1000, 5000, 1.0)),
            // Late: arrives after the clear, its peak still counts.
            alarm_item(3, alarm("rest-1", Updated, 1000, 3000, 4.0)),
        ])],
        T0 + 1,
    )
    .expect("more");
    // A redelivery of seq 1 is a duplicate, not a transition.
    w.commit(
        &[&b(vec![alarm_item(
            1,
            alarm("rest-1", Raised, 1000, 1000, 2.5),
        )])],
        T0 + 2,
    )
    .expect("resend");
    let d = r.alarm("gw-1", id).expect("alarm").expect("episode");
    assert_eq!(d.alarm.phase, "cleared", "a late update never rewinds");
    assert_eq!(d.alarm.cleared_ms, Some(5000));
    assert_eq!(d.alarm.peak, Some(4.0));
    assert_eq!(d.alarm.updates, 3);
    let phases: Vec<&str> = d.transitions.iter().map(|t| t.phase.as_str()).collect();
    assert_eq!(phases, ["raised", "updated", "cleared"], "by time");
    assert_eq!(r.alarm("gw-1", "nope").expect("alarm"), None);
    let q = |state| AlarmQuery {
        state,
        ..AlarmQuery::default()
    };
    assert_eq!(r.alarms(&q(AlarmState::Open)).expect("open").len(), 0);
    assert_eq!(r.alarms(&q(AlarmState::Cleared)).expect("cleared").len(), 1);
}

fn meta(alarm: Option<&str>, request: Option<&str>) -> EvidenceMeta {
    EvidenceMeta {
        camera: "cam-1".into(),
        devices: vec!["rest-1".into()],
        captured_ms: T0,
        trigger: if request.is_some() {
            Trigger::Request
        } else {
            Trigger::AlarmRaised
        },
        alarm: alarm.map(str::to_string),
        request: request.map(str::to_string),
        media: Media::Jpeg,
        size: 0,
        width: Some(640),
        height: Some(480),
        site: "Food Street 1".into(),
        readings: vec![("rest-1".into(), Metric::FumeMgM3, 2.5)],
    }
}

/// `n` bytes that differ per `seed`.
fn picture_bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn part_items(first_seq: u64, parts: &[fumegrid_common::wire::Evidence]) -> Vec<Item> {
    parts
        .iter()
        .enumerate()
        .map(|(i, e)| Item {
            seq: first_seq + i as u64,
            body: Body::Evidence(e.clone()),
        })
        .collect()
}

/// Keeps the picture outcomes a commit reports.
#[derive(Default)]
struct Pictures(Vec<PictureEvent>);

impl AlarmHook for Pictures {
    fn on_alarm(
        &mut self,
        _: &mut dyn CaseTx,
        _: &str,
        _: &Alarm,
        _: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
    fn on_picture(&mut self, e: &PictureEvent) {
        self.0.push(e.clone());
    }
}

fn picture_parts_are_assembled_verified_and_moved<W, R>((mut w, r): (W, R))
where
    W: Writer + CaseStore + EvidenceWriter,
    R: Reader + EvidenceReader,
{
    let bytes = picture_bytes(2 * EVIDENCE_PART_BYTES + 100, 1);
    let parts = evidence::split(&bytes, meta(Some("ep-1"), None));
    assert_eq!(parts.len(), 3);
    let sha = parts[0].sha256.clone();
    let mut hook = Pictures::default();
    // Parts 0 and 2 first, with a reading between; part 0 again in the next batch (a resend).
    let mut items = part_items(1, &[parts[0].clone(), parts[2].clone()]);
    items.push(reading(3, 1.0));
    let c = w
        .commit_with(&[&batch("s", items)], T0, &mut hook)
        .expect("commit");
    assert_eq!((c[0].new, c[0].parts), (3, 2));
    let p = r.picture(&sha).expect("read").expect("arriving");
    assert_eq!(
        (p.state.as_str(), p.parts, p.parts_held),
        ("arriving", 3, 2)
    );
    assert_eq!(
        (p.source.as_str(), p.gateway.as_deref()),
        ("camera", Some("gw-1"))
    );
    assert_eq!(
        (p.size, p.media.as_str()),
        (bytes.len() as u64, "image/jpeg")
    );
    assert_eq!(
        p.readings,
        vec![("rest-1".into(), "fume_mg_m3".into(), 2.5)]
    );
    assert!(hook.0.is_empty());
    assert!(w.pictures_to_move(10).expect("to move").is_empty());
    assert_eq!(w.assembled(&sha).expect("assembled"), None);
    let c = w
        .commit_with(
            &[
                &batch("s", part_items(1, &parts[..1])),
                &batch("s", part_items(4, &parts[1..2])),
            ],
            T0 + 1,
            &mut hook,
        )
        .expect("commit");
    assert_eq!((c[0].duplicates, c[1].new, c[1].parts), (1, 1, 1));
    assert_eq!(
        hook.0,
        vec![PictureEvent {
            gateway: "gw-1".into(),
            camera: "cam-1".into(),
            sha256: sha.clone(),
            outcome: Outcome::Complete {
                size: bytes.len() as u64
            },
        }]
    );
    assert_eq!(
        r.picture(&sha).expect("read").expect("row").state,
        "complete"
    );
    assert_eq!(w.pictures_to_move(10).expect("to move"), vec![sha.clone()]);
    assert_eq!(w.assembled(&sha).expect("assembled"), Some(bytes.clone()));
    assert!(w.mark_stored(&sha, T0 + 2).expect("stored"));
    assert!(
        !w.mark_stored(&sha, T0 + 3).expect("twice"),
        "already stored"
    );
    let p = r.picture(&sha).expect("read").expect("row");
    assert_eq!(
        (p.state.as_str(), p.stored_ms, p.parts_held),
        ("stored", Some(T0 + 2), 3)
    );
    assert!(w.pictures_to_move(10).expect("to move").is_empty());
    assert_eq!(w.assembled(&sha).expect("parts freed"), None);
    // The same picture again on a second stream: stored items, nothing reassembled.
    let c = w
        .commit_with(&[&batch("s2", part_items(1, &parts))], T0 + 4, &mut hook)
        .expect("commit");
    assert_eq!((c[0].new, c[0].parts), (3, 3));
    assert_eq!(hook.0.len(), 1, "no second outcome");
    assert_eq!(r.picture(&sha).expect("read").expect("row").state, "stored");
}

fn a_hash_mismatch_is_refused_and_nothing_is_kept<W, R>((mut w, r): (W, R))
where
    W: Writer + CaseStore + EvidenceWriter,
    R: Reader + EvidenceReader,
{
    let bytes = picture_bytes(EVIDENCE_PART_BYTES + 10, 2);
    let mut parts = evidence::split(&bytes, meta(None, None));
    // One byte of the second part changed after capture: same length, other hash.
    let mut other = bytes.clone();
    other[EVIDENCE_PART_BYTES + 3] ^= 0xff;
    parts[1].data = evidence::split(&other, meta(None, None))[1].data.clone();
    let sha = parts[0].sha256.clone();
    let mut hook = Pictures::default();
    let c = w
        .commit_with(&[&batch("s", part_items(1, &parts))], T0, &mut hook)
        .expect("commit");
    assert_eq!(c[0].new, 2, "stored as items (acked)");
    assert_eq!(
        hook.0.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        [Outcome::Refused(Refusal::HashMismatch)]
    );
    assert_eq!(r.picture(&sha).expect("read"), None, "nothing kept");
    assert!(w.pictures_to_move(10).expect("to move").is_empty());
    assert_eq!(w.assembled(&sha).expect("assembled"), None);
    // The resend is a duplicate and changes nothing.
    let c = w
        .commit_with(&[&batch("s", part_items(1, &parts))], T0 + 1, &mut hook)
        .expect("commit");
    assert_eq!((c[0].duplicates, hook.0.len()), (2, 1));
}

fn inconsistent_parts_and_other_gateways_do_not_join_a_picture<W, R>((mut w, r): (W, R))
where
    W: Writer + CaseStore + EvidenceWriter,
    R: Reader + EvidenceReader,
{
    let bytes = picture_bytes(EVIDENCE_PART_BYTES + 10, 3);
    let parts = evidence::split(&bytes, meta(None, None));
    let sha = parts[0].sha256.clone();
    let mut hook = Pictures::default();
    w.commit_with(&[&batch("s", part_items(1, &parts[..1]))], T0, &mut hook)
        .expect("commit");
    // A part of the same hash claiming another size: dropped and reported.
    let mut odd = parts[1].clone();
    odd.meta.size += 1;
    w.commit_with(&[&batch("s", part_items(2, &[odd]))], T0, &mut hook)
        .expect("commit");
    assert_eq!(
        hook.0.iter().map(|e| e.outcome).collect::<Vec<_>>(),
        [Outcome::Refused(Refusal::Inconsistent)]
    );
    // Another gateway's part of the same hash does not join gw-1's picture.
    let mut b = batch("t", part_items(1, &parts[1..]));
    b.gateway = "gw-2".into();
    w.commit_with(&[&b], T0, &mut hook).expect("commit");
    let p = r.picture(&sha).expect("read").expect("row");
    assert_eq!((p.state.as_str(), p.parts_held), ("arriving", 1));
    // gw-1's own last part completes it.
    w.commit_with(&[&batch("s", part_items(3, &parts[1..]))], T0, &mut hook)
        .expect("commit");
    assert_eq!(
        r.picture(&sha).expect("read").expect("row").state,
        "complete"
    );
    assert_eq!(w.assembled(&sha).expect("assembled"), Some(bytes));
}

fn pictures_belong_to_cases_by_episode_request_and_upload<W, R>((mut w, r): (W, R))
where
    W: Writer + CaseStore + EvidenceWriter,
    R: Reader + EvidenceReader,
{
    const DAY: i64 = 86_400_000;
    let mut hook = Pictures::default();
    // An alarm picture that arrives before its case exists, and one of a request.
    let by_alarm = evidence::split(&picture_bytes(100, 4), meta(Some("ep-7"), None));
    let by_request = evidence::split(&picture_bytes(100, 5), meta(None, Some("req-1")));
    let mut forged = evidence::split(&picture_bytes(100, 6), meta(None, Some("req-1")));
    forged[0].meta.camera = "cam-9".into();
    let mut other_gw = batch("u", part_items(1, &forged));
    other_gw.gateway = "gw-2".into();
    w.commit_with(
        &[
            &batch("s", part_items(1, &by_alarm)),
            &batch("s", part_items(2, &by_request)),
            &other_gw,
        ],
        T0,
        &mut hook,
    )
    .expect("commit");
    let (a, q, f) = (
        &by_alarm[0].sha256,
        &by_request[0].sha256,
        &forged[0].sha256,
    );
    for s in [a, q, f] {
        assert!(w.mark_stored(s, T0).expect("stored"));
        assert!(r.picture_cases(s).expect("cases").is_empty());
    }
    let mut all = w.expired(T0 + 1, 10).expect("expired");
    all.sort();
    let mut want = vec![a.clone(), q.clone(), f.clone()];
    want.sort();
    assert_eq!(all, want, "unlinked pictures expire");
    assert!(w.expired(T0, 10).expect("expired").is_empty(), "not before");
    // The case of episode ep-7 is opened after its picture; request req-1 is for case C2
    // (from gw-1: gw-2's picture naming the same request does not join it).
    let origin = Origin::Alarm {
        gateway: "gw-1".into(),
        device: "rest-1".into(),
        kind: AlarmKind::Exceedance,
    };
    let (mut c1, ev, ef) = dispatched("C1", origin, T0 + DAY);
    c1.alarms.push(crate::cases::model::AlarmRef {
        gateway: "gw-1".into(),
        id: "ep-7".into(),
        phase: AlarmPhase::Raised,
        ts_ms: T0,
    });
    w.save_case(&c1, &ev, &ef, T0 + DAY).expect("case");
    w.add_request(&SnapshotRequest {
        id: "req-1".into(),
        case_id: "C2".into(),
        gateway: "gw-1".into(),
        device: Some("rest-1".into()),
        issued_ms: T0 - 5,
        expires_ms: T0 + 60_000,
        requested_by: "desk".into(),
    })
    .expect("request");
    let shas = |case: &str| -> Vec<String> {
        r.case_pictures(case)
            .expect("pictures")
            .into_iter()
            .map(|p| p.sha256)
            .collect()
    };
    assert_eq!(shas("C1"), vec![a.clone()]);
    assert_eq!(shas("C2"), vec![q.clone()]);
    assert_eq!(r.picture_cases(a).expect("cases"), ["C1"]);
    assert_eq!(r.picture_cases(f).expect("cases"), Vec::<String>::new());
    assert_eq!(r.case_requests("C2").expect("requests")[0].id, "req-1");
    // An upload of new bytes, and an upload of the request's picture to a third case.
    let up = picture_bytes(300, 7);
    let upload = |sha: &str, case: &str| Upload {
        sha256: sha.to_string(),
        case_id: case.into(),
        by: "epb-duty".into(),
        media: "image/png".into(),
        size: up.len() as u64,
        width: None,
        height: None,
    };
    let u = evidence::sha256_hex(&up);
    assert!(w.add_upload(&upload(&u, "C3"), T0 + 7).expect("upload"));
    assert!(!w.add_upload(&upload(q, "C3"), T0 + 8).expect("known bytes"));
    let p = r.picture(&u).expect("read").expect("row");
    assert_eq!(
        (
            p.source.as_str(),
            p.state.as_str(),
            p.uploaded_by.as_deref()
        ),
        ("upload", "stored", Some("epb-duty"))
    );
    let mut c3 = shas("C3");
    c3.sort();
    let mut want = vec![u.clone(), q.clone()];
    want.sort();
    assert_eq!(c3, want);
    assert_eq!(r.picture_cases(q).expect("cases"), ["C2", "C3"]);
    // Retention: only the forged one belongs to no case.
    assert_eq!(
        w.expired(T0 + 30 * DAY, 10).expect("expired"),
        vec![f.clone()]
    );
    assert!(w.delete_picture(f).expect("delete"));
    assert!(!w.delete_picture(f).expect("again"));
    assert_eq!(r.picture(f).expect("read"), None);
    assert!(w.expired(T0 + 30 * DAY, 10).expect("expired").is_empty());
    // A picture still arriving long after is abandoned, linked or not.
    let stuck = evidence::split(
        &picture_bytes(EVIDENCE_PART_BYTES + 1, 8),
        meta(Some("ep-7"), None),
    );
    w.commit_with(&[&batch("s", part_items(10, &stuck[..1]))], T0, &mut hook)
        .expect("commit");
    assert_eq!(
        w.expired(T0 + 1, 10).expect("expired"),
        [stuck[0].sha256.clone()]
    );
}

/// Two cameras on one shared stream (or a still scene, or a cached snapshot) can bring the same
/// bytes for two alarms: the picture is stored once, and belongs to the case of each episode.
/// The bench of issue 13 lost half its alarms' pictures this way (first capture's row only).
fn every_capture_of_the_same_bytes_links_its_episode<W, R>((mut w, r): (W, R))
where
    W: Writer + CaseStore + EvidenceWriter,
    R: Reader + EvidenceReader,
{
    const DAY: i64 = 86_400_000;
    let mut hook = Pictures::default();
    let bytes = picture_bytes(EVIDENCE_PART_BYTES + 50, 9);
    let capture = |camera: &str, alarm: &str, ms: i64| {
        let mut m = meta(Some(alarm), None);
        m.camera = camera.into();
        m.captured_ms = ms;
        evidence::split(&bytes, m)
    };
    let (one, two, three) = (
        capture("cam-1", "ep-1", T0),
        capture("cam-2", "ep-2", T0 + 5),
        capture("cam-3", "ep-3", T0 + 9),
    );
    let sha = one[0].sha256.clone();
    assert_eq!(two[0].sha256, sha, "the same bytes");
    // The first two arrive interleaved (both captures in flight at once), the third after the
    // picture is stored; the first one's parts again (a resend) add nothing.
    let items = part_items(
        1,
        &[
            one[0].clone(),
            two[0].clone(),
            two[1].clone(),
            one[1].clone(),
        ],
    );
    w.commit_with(&[&batch("s", items)], T0 + 10, &mut hook)
        .expect("commit");
    assert_eq!(hook.0.len(), 1, "one picture completes: {:?}", hook.0);
    assert!(w.mark_stored(&sha, T0 + 11).expect("stored"));
    w.commit_with(&[&batch("s", part_items(5, &three))], T0 + 12, &mut hook)
        .expect("commit");
    w.commit_with(&[&batch("s2", part_items(1, &one))], T0 + 13, &mut hook)
        .expect("commit");
    let p = r.picture(&sha).expect("read").expect("row");
    assert_eq!(
        (p.state.as_str(), p.camera.as_deref(), p.alarm.as_deref()),
        ("stored", Some("cam-1"), Some("ep-1")),
        "the row keeps the first capture's metadata"
    );
    // A case per episode; ep-2's case first, alone: the picture is linked, so it is kept.
    let case = |id: &str, ep: &str| {
        let origin = Origin::Alarm {
            gateway: "gw-1".into(),
            device: "rest-1".into(),
            kind: AlarmKind::Exceedance,
        };
        let (mut c, ev, ef) = dispatched(id, origin, T0 + DAY);
        c.alarms.push(crate::cases::model::AlarmRef {
            gateway: "gw-1".into(),
            id: ep.into(),
            phase: AlarmPhase::Raised,
            ts_ms: T0,
        });
        (c, ev, ef)
    };
    let (c2, ev, ef) = case("C2", "ep-2");
    w.save_case(&c2, &ev, &ef, T0 + DAY).expect("case");
    assert_eq!(r.picture_cases(&sha).expect("cases"), ["C2"]);
    assert!(
        w.expired(T0 + 30 * DAY, 10).expect("expired").is_empty(),
        "a picture linked through a later capture is not expired"
    );
    for (id, ep) in [("C1", "ep-1"), ("C3", "ep-3")] {
        let (c, ev, ef) = case(id, ep);
        w.save_case(&c, &ev, &ef, T0 + DAY).expect("case");
    }
    for id in ["C1", "C2", "C3"] {
        let got: Vec<String> = r
            .case_pictures(id)
            .expect("pictures")
            .into_iter()
            .map(|p| p.sha256)
            .collect();
        assert_eq!(got, vec![sha.clone()], "case {id}");
    }
    assert_eq!(r.picture_cases(&sha).expect("cases"), ["C1", "C2", "C3"]);
    // Deleting the picture takes its captures along.
    assert!(w.delete_picture(&sha).expect("delete"));
    assert!(r.case_pictures("C2").expect("pictures").is_empty());
    assert!(r.picture_cases(&sha).expect("cases").is_empty());
}

/// An alarm hook that files every transition as a case of its own (test double of casework's).
#[derive(Default)]
struct FileEach {
    seen: Vec<String>,
    committed: usize,
    fail_at: Option<usize>,
}

impl AlarmHook for FileEach {
    fn on_alarm(
        &mut self,
        tx: &mut dyn CaseTx,
        gateway: &str,
        a: &Alarm,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        if self.fail_at == Some(self.seen.len()) {
            return Err(StoreError::Malformed("hook refuses".into()));
        }
        self.seen.push(a.id.clone());
        let n = tx.next_case_number("A-")?;
        let origin = Origin::Alarm {
            gateway: gateway.into(),
            device: a.device.clone(),
            kind: a.kind,
        };
        let (c, ev, ef) = dispatched(&format!("A-{n}"), origin, now_ms);
        tx.save_case(&c, &ev, &ef, now_ms)
    }

    fn commit(
        &mut self,
        commit: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        commit()?;
        self.committed += 1;
        Ok(())
    }
}

fn the_alarm_hook_sees_new_transitions_inside_the_commit<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    use AlarmPhase::*;
    let mut hook = FileEach::default();
    let items = vec![
        alarm_item(1, alarm("rest-1", Raised, 1000, 1000, 2.5)),
        alarm_item(2, alarm("rest-2", Raised, 1000, 1000, 2.5)),
        reading(3, 1.0),
    ];
    w.commit_with(&[&batch("a", items.clone())], T0, &mut hook)
        .expect("commit");
    assert_eq!(hook.seen.len(), 2);
    assert_eq!(hook.committed, 1, "the commit ran through the hook");
    // The cases the hook saved in the transaction are stored, numbered in it.
    let page = r.cases(&CaseQuery::default()).expect("cases");
    let mut ids: Vec<String> = page.cases.iter().map(|c| c.id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["A-1", "A-2"]);
    // Duplicates are not passed to the hook.
    w.commit_with(&[&batch("a", items)], T0 + 1, &mut hook)
        .expect("resend");
    assert_eq!(hook.seen.len(), 2, "a resend opens nothing");
    assert_eq!(r.cases(&CaseQuery::default()).expect("cases").total, 2);
}

fn a_failing_hook_rolls_the_whole_commit_back<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    use AlarmPhase::*;
    let mut hook = FileEach {
        fail_at: Some(1),
        ..FileEach::default()
    };
    let items = vec![
        reading(1, 1.0),
        alarm_item(2, alarm("rest-1", Raised, 1000, 1000, 2.5)),
        alarm_item(3, alarm("rest-2", Raised, 1000, 1000, 2.5)),
    ];
    assert!(
        w.commit_with(&[&batch("a", items.clone())], T0, &mut hook)
            .is_err()
    );
    assert_eq!(hook.committed, 0);
    // Nothing of it stayed: no item, no episode, no case — it can be sent again and acked.
    assert_eq!(w.stream_holds("gw-1", "a", 1).expect("holds"), (0, 0));
    assert_eq!(r.alarm("gw-1", "rest-1:exceedance:1000").expect("a"), None);
    assert_eq!(r.cases(&CaseQuery::default()).expect("cases").total, 0);
    let mut hook = FileEach::default();
    let c = w
        .commit_with(&[&batch("a", items)], T0, &mut hook)
        .expect("again");
    assert_eq!(c[0].new, 3);
    assert_eq!(r.cases(&CaseQuery::default()).expect("cases").total, 2);
}

fn stale_and_malformed_saves_change_nothing<W: Writer + CaseStore, R: Reader>((mut w, r): (W, R)) {
    let (c, ev, ef) = dispatched("C1", Origin::Operator, T0);
    w.save_case(&c, &ev, &ef, T0).expect("new");
    // A second "new" save of the same id is stale.
    assert!(matches!(w.save_case(&c, &ev, &ef, T0), Err(StoreError::Stale(id)) if id == "C1"));
    let cat = cat();
    let dep = Actor::department("d", c.department.as_deref().expect("dispatched"));
    let (c2, ev2, _) = apply(&c, Command::new(Action::Accept), &dep, T0 + 1, &cat).expect("acc");
    w.save_case(&c2, &ev2, &[], T0 + 1).expect("next");
    // The same change again (another caller's copy of the case): stale, nothing appended.
    assert!(matches!(
        w.save_case(&c2, &ev2, &[], T0 + 2),
        Err(StoreError::Stale(_))
    ));
    // Events that do not end at the case's seq: malformed.
    assert!(matches!(
        w.save_case(&c2, &ev, &[], T0 + 2),
        Err(StoreError::Malformed(_))
    ));
    assert!(matches!(
        w.save_case(&c2, &[], &[], T0 + 2),
        Err(StoreError::Malformed(_))
    ));
    let d = r.case("C1").expect("case").expect("exists");
    assert_eq!(d.case, c2);
    assert_eq!(d.events.len(), 4);
    assert_eq!(
        d.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(w.load_case("C1").expect("load"), Some(c2.clone()));
    assert_eq!(w.case_event("C1", 4).expect("ev"), Some(ev2[0].clone()));
    assert_eq!(w.case_event("C1", 5).expect("ev"), None);
    // A transaction that fails after a save keeps nothing of it.
    let (c9, ev9, ef9) = dispatched("C9", Origin::Operator, T0);
    let e = w.case_tx(&mut |tx| {
        tx.save_case(&c9, &ev9, &ef9, T0)?;
        Err(StoreError::Malformed("then something failed".into()))
    });
    assert!(e.is_err());
    assert_eq!(w.load_case("C9").expect("load"), None);
}

fn open_cases_of_a_device_and_episode_links<W: Writer + CaseStore, R: Reader>((mut w, _r): (W, R)) {
    let origin = |device: &str, kind| Origin::Alarm {
        gateway: "gw-1".into(),
        device: device.into(),
        kind,
    };
    let (mut a, ev, ef) = dispatched("C1", origin("rest-1", AlarmKind::Exceedance), T0);
    a.alarms.push(crate::cases::model::AlarmRef {
        gateway: "gw-1".into(),
        id: "ep-1".into(),
        phase: AlarmPhase::Raised,
        ts_ms: T0,
    });
    w.save_case(&a, &ev, &ef, T0).expect("a");
    for (id, o, t) in [
        ("C2", origin("rest-1", AlarmKind::PurifierIdle), T0 + 1),
        ("C3", origin("rest-2", AlarmKind::Exceedance), T0 + 2),
        ("C4", Origin::Operator, T0 + 3),
    ] {
        let (c, ev, ef) = dispatched(id, o, t);
        w.save_case(&c, &ev, &ef, t).expect("save");
    }
    let ids = |v: Vec<Case>| v.into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(
        ids(w
            .open_cases_for("gw-1", "rest-1", AlarmKind::Exceedance)
            .expect("open")),
        ["C1"]
    );
    assert!(
        w.open_cases_for("gw-2", "rest-1", AlarmKind::Exceedance)
            .expect("open")
            .is_empty()
    );
    assert_eq!(ids(w.open_cases().expect("open")), ["C1", "C2", "C3", "C4"]);
    let mut linked = None;
    w.case_tx(&mut |tx| {
        linked = tx.episode_case("gw-1", "ep-1")?.map(|c| c.id);
        assert!(tx.episode_case("gw-1", "ep-2")?.is_none());
        Ok(())
    })
    .expect("tx");
    assert_eq!(linked.as_deref(), Some("C1"));
    // A closed (here: rejected) case is not open any more, but its episode stays linked.
    let cat = cat();
    let op = Actor::operator("op-1");
    let (c, ev, _) = open(
        "C5",
        Intake {
            category: "exceedance".into(),
            title: "x".into(),
            origin: origin("rest-9", AlarmKind::Exceedance),
            site: None,
            grid_cell: None,
        },
        &op,
        "",
        T0,
        &cat,
    )
    .expect("open");
    w.save_case(&c, &ev, &[], T0).expect("save");
    let (c, ev, _) = apply(&c, Command::new(Action::Reject), &op, T0 + 1, &cat).expect("reject");
    w.save_case(&c, &ev, &[], T0 + 1).expect("save");
    assert!(
        w.open_cases_for("gw-1", "rest-9", AlarmKind::Exceedance)
            .expect("open")
            .is_empty()
    );
}

fn case_numbers_count_per_prefix<W: Writer + CaseStore, R: Reader>((mut w, _r): (W, R)) {
    let next = |w: &mut W, p: &str| {
        let mut n = 0;
        w.case_tx(&mut |tx| {
            n = tx.next_case_number(p)?;
            Ok(())
        })
        .expect("next");
        n
    };
    assert_eq!(next(&mut w, "C20251103-"), 1);
    for id in ["C20251103-0009", "C20251104-0001"] {
        let (c, ev, ef) = dispatched(id, Origin::Operator, T0);
        w.save_case(&c, &ev, &ef, T0).expect("save");
    }
    assert_eq!(next(&mut w, "C20251103-"), 10);
    assert_eq!(next(&mut w, "C20251104-"), 2);
    assert_eq!(next(&mut w, "C20251105-"), 1);
    // Past 9999 the number grows a digit; a lower one saved later does not go back.
    for id in ["C20251103-10000", "C20251103-0012"] {
        let (c, ev, ef) = dispatched(id, Origin::Operator, T0);
        w.save_case(&c, &ev, &ef, T0).expect("save");
    }
    assert_eq!(next(&mut w, "C20251103-"), 10_001);
}

fn contacts_are_erased_on_request_and_after_retention<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    let cat = cat();
    let op = Actor::operator("op-1");
    let contact = Contact {
        email: Some("li@example.cn".into()),
        ..Contact::default()
    };
    let intake = || Intake {
        category: "complaint".into(),
        title: "smoke".into(),
        origin: Origin::Citizen,
        site: None,
        grid_cell: None,
    };
    for id in ["K1", "K2", "K3"] {
        let (c, ev, ef) = open(id, intake(), &op, "", T0, &cat).expect("open");
        w.case_tx(&mut |tx| {
            tx.save_case(&c, &ev, &ef, T0)?;
            tx.save_contact(&c.id, &contact, T0)
        })
        .expect("file");
    }
    assert_eq!(r.contact("K1").expect("contact"), Some(contact.clone()));
    assert_eq!(w.contact("K1").expect("contact"), Some(contact.clone()));
    assert!(w.erase_contact("K1").expect("erase"));
    assert!(!w.erase_contact("K1").expect("erase again"));
    assert_eq!(r.contact("K1").expect("contact"), None);
    // K2 is rejected (closed) at T0 + 10; K3 stays open.
    let k2 = w.load_case("K2").expect("load").expect("k2");
    let (k2, ev, _) = apply(&k2, Command::new(Action::Reject), &op, T0 + 10, &cat).expect("rej");
    w.save_case(&k2, &ev, &[], T0 + 10).expect("save");
    assert_eq!(w.erase_contacts_closed_before(T0 + 10).expect("erase"), 0);
    assert_eq!(w.erase_contacts_closed_before(T0 + 11).expect("erase"), 1);
    assert_eq!(r.contact("K2").expect("contact"), None);
    assert_eq!(r.contact("K3").expect("contact"), Some(contact));
    assert_eq!(w.erase_contacts_closed_before(i64::MAX).expect("erase"), 0);
}

fn notifications_queue_per_department_with_retries<W: Writer + CaseStore, R: Reader>(
    (mut w, r): (W, R),
) {
    let (a, ev, ef) = dispatched("N1", Origin::Operator, T0);
    let dep = a.department.clone().expect("department");
    let notes = ef
        .iter()
        .filter(|e| matches!(e, Effect::Notify { .. }))
        .count();
    assert!(notes >= 1, "a dispatch notifies: {ef:?}");
    w.save_case(&a, &ev, &ef, T0).expect("save");
    let (b, ev, ef) = dispatched("N2", Origin::Operator, T0 + 5);
    w.save_case(&b, &ev, &ef, T0 + 5).expect("save");
    // Another department's notification, queued last.
    let other = Effect::Notify {
        department: "other".into(),
        case_id: "N2".into(),
        seq: 1,
        kind: crate::cases::EventKind::Reported,
    };
    // Queued with another case's save (the effects are the caller's to choose).
    let (c, ev, _) = dispatched("N3", Origin::Operator, T0 + 6);
    w.save_case(&c, &ev, std::slice::from_ref(&other), T0 + 6)
        .expect("other");
    assert_eq!(w.due_notifications(T0 - 1, 10).expect("due"), []);
    let due = w.due_notifications(T0 + 10, 10).expect("due");
    // The oldest pending one per department, oldest first.
    let got: Vec<(&str, &str)> = due
        .iter()
        .map(|n| (n.department.as_str(), n.case_id.as_str()))
        .collect();
    assert_eq!(got, [(dep.as_str(), "N1"), ("other", "N2")]);
    assert!(due.iter().all(|n| n.state == "pending" && n.attempts == 0));
    assert_eq!(w.next_notification_ms().expect("next"), Some(T0));
    // The first department's endpoint is down: retry in 4 s; it holds up only itself.
    let first = due[0].id;
    w.record_attempt(
        first,
        &Attempt::Retry {
            status: Some(500),
            error: "HTTP 500".into(),
            next_ms: T0 + 4_000,
        },
        T0 + 10,
    )
    .expect("record");
    let ids = |v: Vec<super::notify_sql::Notification>| v.into_iter().map(|n| n.id).collect();
    let due_ids: Vec<i64> = ids(w.due_notifications(T0 + 10, 10).expect("due"));
    assert_eq!(due_ids, [due[1].id]);
    let due_ids: Vec<i64> = ids(w.due_notifications(T0 + 4_000, 10).expect("due"));
    assert_eq!(due_ids, [first, due[1].id]);
    w.record_attempt(first, &Attempt::Delivered { status: 204 }, T0 + 4_000)
        .expect("delivered");
    w.record_attempt(due[1].id, &Attempt::Unrouted, T0 + 4_000)
        .expect("unrouted");
    // Delivered: the department's next one comes up.
    let next = w.due_notifications(T0 + 4_000, 10).expect("due");
    assert!(next.iter().all(|n| n.id != first && n.department == dep));
    let (total, log) = r
        .notifications(&super::notify_sql::NotificationQuery {
            department: None,
            case_id: None,
            state: Some("delivered".into()),
            limit: 10,
            offset: 0,
        })
        .expect("log");
    assert_eq!(total, 1);
    assert_eq!(log[0].id, first);
    assert_eq!(log[0].attempts, 2);
    assert_eq!(log[0].last_status, Some(204));
    assert_eq!(log[0].delivered_ms, Some(T0 + 4_000));
    let (_, un) = r
        .notifications(&super::notify_sql::NotificationQuery {
            department: Some("other".into()),
            case_id: None,
            state: None,
            limit: 10,
            offset: 0,
        })
        .expect("log");
    assert_eq!((un[0].state.as_str(), un[0].attempts), ("unrouted", 0));
}

#[test]
fn the_memory_store_keeps_the_contract() {
    run_all(&|| {
        let s = super::memory::MemoryStore::new();
        (s.clone(), s)
    });
}

#[test]
fn the_sqlite_store_keeps_the_contract() {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!("fumegrid-contract-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    run_all(&|| {
        let p = dir.join(format!("c{}.sqlite3", N.fetch_add(1, Ordering::Relaxed)));
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", p.display()));
        }
        let w = super::sqlite::open(&p, super::Synchronous::Normal).expect("open");
        let r = super::sqlite::open_reader(&p).expect("reader");
        (w, r)
    });
}
