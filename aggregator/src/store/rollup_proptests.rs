//! Property test of the rollups SQLite keeps inside ingest's commit (issue 14): one device's
//! raw readings (some invalid) and period aggregates of 10, 60, 300 and 3600 s over about three
//! hours of two metrics, delivered in any order, in batches of any size, several batches per
//! commit, with whole and partial resends. After the last commit, every rollup bucket of every
//! level SQLite holds equals [`rollup::recompute`] over the readings and periods it stored —
//! what the memory store answers with — and no bucket is missing or left over. Averages are
//! compared to 1e-9 (their sums are added in another order); everything else exactly.
//!
//! Two items for the same series and period (merged, [`super::merge_period`], keeping the first
//! `last`) would depend on arrival order by design, so each generated period is unique.

use std::collections::BTreeSet;

use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{Batch, Body, Item, Period, PeriodMetric};
use proptest::prelude::*;

use super::memory::MemoryStore;
use super::rollup::{self, LEVELS};
use super::{Reader, ReadingQuery, RollupRow, Synchronous, Writer, sqlite};

/// A whole day (UTC), so hours and the day line up with the generated range.
const T: i64 = 1_764_979_200_000;
const SPAN_S: i64 = 3 * 3600;
const METRICS: [Metric; 2] = [Metric::FumeMgM3, Metric::FanCurrentA];

fn reading() -> impl Strategy<Value = Body> {
    (0..2usize, 0..SPAN_S * 10, -5.0f64..50.0, 0..6u8).prop_map(|(m, t, v, q)| {
        let quality = match q {
            0 => Quality::DeviceError,
            1 => Quality::OutOfRange,
            _ => Quality::Ok,
        };
        Body::Reading(Reading {
            device: "rest-1".into(),
            unit: None,
            metric: METRICS[m],
            value: (quality != Quality::DeviceError).then_some(v),
            quality,
            ts_ms: T + t * 100,
        })
    })
}

fn period_metric() -> impl Strategy<Value = (u32, u32, f64, f64, f64, f64)> {
    (
        1..70u32,
        0..70u32,
        -5.0f64..50.0,
        0.0f64..5.0,
        0.0f64..5.0,
        0.0f64..1.0,
    )
}

/// Periods of one length at distinct aligned starts, each with one or both metrics.
fn periods(period_s: u32, most: usize) -> impl Strategy<Value = Vec<Body>> {
    let slots = (SPAN_S / i64::from(period_s)) as usize;
    let one = (
        any::<bool>(),
        any::<bool>(),
        period_metric(),
        period_metric(),
        any::<bool>(),
    );
    (
        proptest::sample::subsequence((0..slots).collect::<Vec<_>>(), 0..=most.min(slots)),
        proptest::collection::vec(one, most),
    )
        .prop_map(move |(starts, metas)| {
            starts
                .into_iter()
                .zip(metas)
                .map(|(slot, (a, b, ma, mb, valid))| {
                    let mut metrics = Vec::new();
                    for (on, m, (polls, count, avg, below, above, at)) in
                        [(a || !b, METRICS[0], ma), (b, METRICS[1], mb)]
                    {
                        if !on {
                            continue;
                        }
                        let count = count.min(polls);
                        let (min, max) = (avg - below, avg + above);
                        let some = |x: f64| (count > 0).then_some(x);
                        metrics.push(PeriodMetric {
                            metric: m,
                            unit: None,
                            polls,
                            count,
                            avg: some(avg),
                            min: some(min),
                            max: some(max),
                            last: some(min + (max - min) * at),
                            valid,
                        });
                    }
                    Body::Period(Period {
                        device: "rest-1".into(),
                        start_ms: T + slot as i64 * i64::from(period_s) * 1000,
                        period_s,
                        metrics,
                    })
                })
                .collect()
        })
}

#[derive(Debug, Clone)]
struct Plan {
    /// Items with seqs 1..=n, in the order they are first sent.
    items: Vec<Item>,
    /// Batch sizes, in order, over `items` followed by the resends.
    cuts: Vec<usize>,
    /// Indices into `items` resent after the first delivery.
    resends: Vec<usize>,
    /// Batches per commit.
    group: usize,
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        proptest::collection::vec(reading(), 0..300),
        periods(10, 40),
        periods(60, 60),
        periods(300, 12),
        periods(3600, 2),
    )
        .prop_flat_map(|(r, p10, p60, p300, p3600)| {
            let bodies: Vec<Body> = r
                .into_iter()
                .chain(p10)
                .chain(p60)
                .chain(p300)
                .chain(p3600)
                .collect();
            let n = bodies.len();
            (
                Just(bodies).prop_shuffle(),
                proptest::collection::vec(1..40usize, 1..60),
                proptest::collection::vec(0..n.max(1), 0..n / 3 + 1),
                1..4usize,
            )
        })
        .prop_map(|(bodies, cuts, resends, group)| Plan {
            resends: resends.into_iter().filter(|&i| i < bodies.len()).collect(),
            items: bodies
                .into_iter()
                .enumerate()
                .map(|(i, body)| Item {
                    seq: i as u64 + 1,
                    body,
                })
                .collect(),
            cuts,
            group,
        })
}

fn batches(plan: &Plan) -> Vec<Batch> {
    let all: Vec<Item> = plan
        .items
        .iter()
        .cloned()
        .chain(plan.resends.iter().map(|&i| plan.items[i].clone()))
        .collect();
    let mut out = Vec::new();
    let mut at = 0;
    let mut k = 0;
    while at < all.len() {
        let n = plan.cuts[k % plan.cuts.len()].min(all.len() - at);
        out.push(Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items: all[at..at + n].to_vec(),
        });
        at += n;
        k += 1;
    }
    out
}

fn all_rollups(r: &dyn Reader) -> Vec<Vec<RollupRow>> {
    let q = ReadingQuery {
        device: "rest-1".into(),
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        limit: u32::MAX,
        ..ReadingQuery::default()
    };
    (0..LEVELS.len())
        .map(|l| r.rollups(&q, l).expect("rollups"))
        .collect()
}

fn same(a: &RollupRow, b: &RollupRow) -> bool {
    let close = match (a.avg, b.avg) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * (1.0 + x.abs().max(y.abs())),
        (x, y) => x == y,
    };
    close
        && RollupRow {
            avg: None,
            ..a.clone()
        } == RollupRow {
            avg: None,
            ..b.clone()
        }
}

struct TempDb(std::path::PathBuf);

impl TempDb {
    fn new() -> TempDb {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!("fumegrid-rollups-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        TempDb(dir.join(format!("r{}.sqlite3", N.fetch_add(1, Ordering::Relaxed))))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for s in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{s}", self.0.display()));
        }
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 48,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]
    #[test]
    fn sqlite_rollups_equal_a_recomputation_under_any_arrival_order(plan in plan()) {
        let db = TempDb::new();
        let mut w = sqlite::open(&db.0, Synchronous::Normal).expect("open");
        let r = sqlite::open_reader(&db.0).expect("reader");
        let mut m = MemoryStore::new();
        let bs = batches(&plan);
        for group in bs.chunks(plan.group) {
            let refs: Vec<&Batch> = group.iter().collect();
            w.commit(&refs, 1).expect("commit");
        }
        // The reference: every item once, in seq order, recomputed on read.
        let once = Batch { gateway: "gw-1".into(), stream: "s".into(), sent_ms: 0, items: plan.items.clone() };
        m.commit(&[&once], 1).expect("memory");
        let (got, want) = (all_rollups(&r), all_rollups(&m));
        for l in 0..LEVELS.len() {
            let starts = |v: &[RollupRow]| v.iter().map(|x| (x.start_ms, x.metric.clone())).collect::<BTreeSet<_>>();
            prop_assert_eq!(starts(&got[l]), starts(&want[l]), "level {} buckets", rollup::LEVEL_NAMES[l]);
            for (g, x) in got[l].iter().zip(&want[l]) {
                prop_assert!(same(g, x), "level {}: kept {:?}, recomputed {:?}", rollup::LEVEL_NAMES[l], g, x);
            }
        }
    }
}
