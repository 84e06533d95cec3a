//! Dispatch-case benchmark (issue 6): how many alarms per second become cases, and how long the
//! statistics of a period take over 1 M cases.
//!
//! 1. **Case throughput**: `--alarms` `raised` alarm transitions (exceedance and purifier_idle,
//!    one device each, so each opens a case) go through the real SQLite store with the built-in
//!    catalogue, exactly as ingest stores them: [`Writer::commit_with`] casework's alarm hook
//!    ([`AlarmCases`]) of batches of `--batch` `Body::Alarm` items, one transaction each,
//!    `synchronous` as configured. The case engine runs inside that transaction (`reported` →
//!    `registered` → `dispatched`). Then `--repeats`
//!    `updated` transitions of those open episodes, which link to the existing cases. The same
//!    alarms through a store without a catalogue are the reference (the cost of storing the
//!    alarm alone).
//! 2. **Statistics over `--cases` cases**: the pure engine ([`open`]/[`on_alarm`], [`apply`],
//!    [`timers::run_due`]) writes a year (2025, the built-in calendar's) of case lives:
//!    register → dispatch → accept → handle → verify → close for most, with returns, transfers,
//!    extensions, reworks, rejections, late sign-for and handling (timers fire at their
//!    deadlines), escalations and ratings, deterministic from a xorshift seed. Timed:
//!    [`stats::compute`] over the events of the whole year and of June (the events a request for
//!    that period sees: `ts < to`), and with `--store true` the API's path: the cases saved in
//!    SQLite ([`cases_sql::save_case`] in big transactions), then
//!    [`Reader::case_events_until`] (load) and `compute`, each timed on its own (once: the old
//!    API path), then what the aggregator does now: the statistics index loaded from the store
//!    (its start-up cost and memory) and [`Reader::case_stats`] answered from it; last,
//!    `--late-alarms` new alarms through the ingest path into that store (a year of cases in
//!    it).
//!
//! ```text
//! cargo run --release -p fumegrid-aggregator --example case_stats_bench -- \
//!     [--alarms 20000] [--repeats 20000] [--batch 100] [--synchronous full|normal] \
//!     [--cases 1000000] [--store true|false] [--store-tx 10000] [--runs 3] [--seed 1] \
//!     [--late-alarms 500] [--keep false]
//! ```
//!
//! The stores live in a temp directory that is removed at the end (`--keep true` keeps it, to
//! look at the files). Peak RSS is the process's
//! VmHWM from `/proc/self/status`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use fumegrid_aggregator::cases::alarm::{AlarmSource, Decision, on_alarm};
use fumegrid_aggregator::cases::calendar::Date;
use fumegrid_aggregator::cases::model::{Intake, Origin, ReworkTo};
use fumegrid_aggregator::cases::stats::{self, Period, Stats};
use fumegrid_aggregator::cases::{
    Action, Actor, Case, CaseError, Catalogue, Command, Event, EventKind, Role, State, WorkAmount,
    apply, open, timers,
};
use fumegrid_aggregator::casework::alarms::AlarmCases;
use fumegrid_aggregator::casework::stats_index::StatsIndex;
use fumegrid_aggregator::store::{
    AlarmHook, CaseQuery, NoCases, Reader, Synchronous, Writer, cases_sql, sqlite,
};
use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase, Batch, Body, Item};

const MIN: i64 = 60_000;
const H: i64 = 60 * MIN;
const DAY: i64 = 24 * H;

#[derive(Debug, Clone)]
struct Opts {
    alarms: usize,
    repeats: usize,
    batch: usize,
    synchronous: Synchronous,
    cases: usize,
    store: bool,
    store_tx: usize,
    runs: usize,
    seed: u64,
    keep: bool,
    late_alarms: usize,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        alarms: 20_000,
        repeats: 20_000,
        batch: 100,
        synchronous: Synchronous::Full,
        cases: 1_000_000,
        store: true,
        store_tx: 10_000,
        runs: 3,
        seed: 1,
        keep: false,
        late_alarms: 500,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--alarms" => o.alarms = v.parse()?,
            "--repeats" => o.repeats = v.parse()?,
            "--batch" => o.batch = v.parse()?,
            "--synchronous" => {
                o.synchronous = match v.as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    _ => bail!("--synchronous is full or normal, not {v}"),
                }
            }
            "--cases" => o.cases = v.parse()?,
            "--store" => o.store = v.parse()?,
            "--store-tx" => o.store_tx = v.parse()?,
            "--runs" => o.runs = v.parse()?,
            "--seed" => o.seed = v.parse()?,
            "--keep" => o.keep = v.parse()?,
            "--late-alarms" => o.late_alarms = v.parse()?,
            _ => bail!("unknown option {a}"),
        }
    }
    if o.batch == 0 || o.store_tx == 0 || o.runs == 0 {
        bail!("--batch, --store-tx and --runs must be at least 1");
    }
    o.repeats = o.repeats.min(o.alarms);
    Ok(o)
}

/// xorshift64: deterministic and good enough to spread cases over dimensions and delays.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `pm`/1000.
    fn pm(&mut self, pm: u64) -> bool {
        self.below(1000) < pm
    }
    /// Uniform in `[lo, hi)` ms.
    fn between(&mut self, lo: i64, hi: i64) -> i64 {
        lo + self.below((hi - lo).max(1) as u64) as i64
    }
}

/// Peak and current resident set (MiB) from `/proc/self/status`.
fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
        .unwrap_or(0)
}

fn memory() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or_else(|| "?".to_string(), |kb| format!("{:.0}", kb / 1024.0))
    };
    format!(
        "RSS {} MiB, peak RSS (VmHWM) {} MiB",
        field("VmRSS:"),
        field("VmHWM:")
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn file_mib(path: &Path) -> f64 {
    ["", "-wal"]
        .iter()
        .map(|s| {
            std::fs::metadata(format!("{}{s}", path.display()))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum::<u64>() as f64
        / f64::from(1 << 20)
}

// ---------------------------------------------------------------------------------------------
// 1. Alarms → cases through the store.

const GATEWAYS: usize = 10;

fn alarm(device: &str, kind: AlarmKind, phase: AlarmPhase, started: i64, ts: i64) -> Alarm {
    let metric = (kind == AlarmKind::Exceedance).then_some(Metric::FumeMgM3);
    Alarm {
        id: format!("{device}:{}:{started}", kind.name()),
        device: device.into(),
        kind,
        metric,
        phase,
        started_ms: started,
        ts_ms: ts,
        cleared_ms: None,
        value: metric.map(|_| 2.8),
        peak: metric.map(|_| 3.1),
        peak_ms: metric.map(|_| ts),
        limit: metric.map(|_| 2.0),
        suppressed: false,
        message: String::new(),
    }
}

/// The commits of one phase: (now_ms, batch) with `--batch` items each, one gateway per batch.
/// Device `i` always sits behind the same gateway, so a repeat finds its case.
fn alarm_batches(
    o: &Opts,
    n: usize,
    phase: AlarmPhase,
    t0: i64,
    seqs: &mut [u64; GATEWAYS],
) -> Vec<(i64, Batch)> {
    (0..n)
        .step_by(o.batch)
        .enumerate()
        .map(|(k, first)| {
            let now = t0 + k as i64 * 1000;
            let gw = k % GATEWAYS;
            let items = (first..(first + o.batch).min(n))
                .map(|i| {
                    let kind = if i % 2 == 0 {
                        AlarmKind::Exceedance
                    } else {
                        AlarmKind::PurifierIdle
                    };
                    // Every episode started at the bench's t0; raised then, updated later.
                    let started = T_ALARMS;
                    let ts = if phase == AlarmPhase::Raised {
                        started
                    } else {
                        now - 500
                    };
                    seqs[gw] += 1;
                    Item {
                        seq: seqs[gw],
                        body: Body::Alarm(alarm(&format!("rest-{i:06}"), kind, phase, started, ts)),
                    }
                })
                .collect();
            (
                now,
                Batch {
                    gateway: format!("gw-{gw:02}"),
                    stream: "alarms".into(),
                    sent_ms: now,
                    items,
                },
            )
        })
        .collect()
}

/// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
const T_ALARMS: i64 = 1_762_135_200_000;

/// Commits the batches one transaction each; returns (items, time) per tenth of them.
fn commit_all(
    w: &mut sqlite::SqliteWriter,
    hook: &mut dyn AlarmHook,
    batches: &[(i64, Batch)],
) -> anyhow::Result<Vec<(usize, Duration)>> {
    let tenth = batches.len().div_ceil(10).max(1);
    let mut out = Vec::new();
    for part in batches.chunks(tenth) {
        let t = now();
        let mut items = 0;
        for (now, b) in part {
            let c = w.commit_with(&[b], *now, hook)?;
            if c[0].new != b.items.len() as u64 {
                bail!("{} of {} items stored", c[0].new, b.items.len());
            }
            items += b.items.len();
        }
        out.push((
            items,
            (fumegrid_common::clock::Clock::system().instant() - t),
        ));
    }
    Ok(out)
}

fn total(parts: &[(usize, Duration)]) -> Duration {
    parts.iter().map(|p| p.1).sum()
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn throughput(o: &Opts, dir: &Path, catalogue: &Arc<Catalogue>) -> anyhow::Result<()> {
    if o.alarms == 0 {
        return Ok(());
    }
    let sync = format!("{:?}", o.synchronous).to_lowercase();
    for with_cases in [false, true] {
        let path = dir.join(if with_cases {
            "cases.sqlite3"
        } else {
            "alarms.sqlite3"
        });
        let mut w = sqlite::open(&path, o.synchronous)?;
        let mut hook: Box<dyn AlarmHook> = if with_cases {
            Box::new(AlarmCases::new(catalogue.clone()))
        } else {
            Box::new(NoCases)
        };
        let r = sqlite::open_reader(&path)?;
        let mut seqs = [0; GATEWAYS];
        let raised = alarm_batches(o, o.alarms, AlarmPhase::Raised, T_ALARMS, &mut seqs);
        let t_rep = T_ALARMS + raised.len() as i64 * 1000 + 60_000;
        let repeats = alarm_batches(o, o.repeats, AlarmPhase::Updated, t_rep, &mut seqs);

        let parts = commit_all(&mut w, hook.as_mut(), &raised)?;
        let took = total(&parts);
        let label = if with_cases {
            "alarms → cases"
        } else {
            "alarms only (no catalogue)"
        };
        let opened = r.cases(&CaseQuery {
            limit: 1,
            ..CaseQuery::default()
        })?;
        let tenth = |p: Option<&(usize, Duration)>| p.map_or(0.0, |&(n, d)| rate(n, d));
        if with_cases {
            if opened.total != o.alarms as u64 {
                bail!("{} cases opened for {} alarms", opened.total, o.alarms);
            }
            println!(
                "{label}: {} raised alarms → {} cases in {:.2} s = {:.0} cases/s \
                 (first tenth {:.0}/s, last tenth {:.0}/s; {} items per commit, synchronous={sync})",
                o.alarms,
                opened.total,
                took.as_secs_f64(),
                rate(o.alarms, took),
                tenth(parts.first()),
                tenth(parts.last()),
                o.batch,
            );
        } else {
            println!(
                "{label}: {} raised alarm transitions stored in {:.2} s = {:.0} alarms/s \
                 ({} items per commit, synchronous={sync})",
                o.alarms,
                took.as_secs_f64(),
                rate(o.alarms, took),
                o.batch,
            );
        }
        if o.repeats > 0 {
            let took = total(&commit_all(&mut w, hook.as_mut(), &repeats)?);
            if with_cases {
                let events = r.case_events_until(i64::MAX)?;
                let linked = events
                    .iter()
                    .filter(|e| e.kind == EventKind::AlarmLinked)
                    .count();
                let total = r.cases(&CaseQuery {
                    limit: 1,
                    ..CaseQuery::default()
                })?;
                if linked != o.repeats || total.total != o.alarms as u64 {
                    bail!(
                        "{linked} alarm_linked events for {} repeats, {} cases",
                        o.repeats,
                        total.total
                    );
                }
                println!(
                    "{label}, repeats: {} updated transitions of open episodes → {linked} linked \
                     to their cases in {:.2} s = {:.0} links/s (no new case; {} case events in all)",
                    o.repeats,
                    took.as_secs_f64(),
                    rate(o.repeats, took),
                    events.len(),
                );
            } else {
                println!(
                    "{label}, repeats: {} updated transitions stored in {:.2} s = {:.0} alarms/s",
                    o.repeats,
                    took.as_secs_f64(),
                    rate(o.repeats, took),
                );
            }
        }
        println!("  store {:.1} MiB", file_mib(&path));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 2. A year of case lives from the pure engine.

const SITES: usize = 100;
const DEVICES_PER_SITE: usize = 8;
const SITES_PER_CELL: usize = 4;

/// Leaf categories of the built-in catalogue with their share of cases (‰) and alarm kind
/// (none: citizen complaint).
const MIX: [(&str, Option<AlarmKind>, u64); 6] = [
    ("exceedance", Some(AlarmKind::Exceedance), 350),
    ("purifier_idle", Some(AlarmKind::PurifierIdle), 200),
    ("purifier_dirty", Some(AlarmKind::PurifierDirty), 100),
    ("device_offline", Some(AlarmKind::DeviceOffline), 120),
    ("sensor_fault", Some(AlarmKind::SensorFault), 50),
    ("complaint", None, 180),
];

/// Why a case's life ended early.
enum Stop {
    /// The next step would fall after the end of the year: the case stays as it is.
    YearEnded,
    Engine(CaseError),
}

impl From<CaseError> for Stop {
    fn from(e: CaseError) -> Stop {
        Stop::Engine(e)
    }
}

struct Life<'a> {
    cat: &'a Catalogue,
    end: i64,
    case: Case,
    t: i64,
    events: &'a mut Vec<Event>,
}

impl Life<'_> {
    /// Fires the timers due up to `t` at their own deadlines, as the minutely timer loop would.
    fn timers_until(&mut self, t: i64) -> Result<(), Stop> {
        while let Some(at) = timers::next_due_ms(&self.case).filter(|&at| at <= t) {
            let (c, ev, _) = timers::run_due(&self.case, at, self.cat)?;
            if ev.is_empty() {
                break;
            }
            self.case = c;
            self.events.extend(ev);
        }
        Ok(())
    }

    /// `action` by `actor`, `after` ms after the previous step.
    fn step(&mut self, after: i64, action: Action, actor: &Actor) -> Result<(), Stop> {
        let t = self.t + after;
        if t >= self.end {
            self.timers_until(self.end - 1)?;
            return Err(Stop::YearEnded);
        }
        self.timers_until(t)?;
        let (c, ev, _) = apply(&self.case, Command::new(action), actor, t, self.cat)?;
        self.case = c;
        self.events.extend(ev);
        self.t = t;
        Ok(())
    }

    fn department(&self) -> Actor {
        Actor::department(
            "dept-user",
            self.case.department.as_deref().unwrap_or("epb"),
        )
    }

    fn other_department(&self, rng: &mut Rng) -> String {
        let deps = &self.cat.departments;
        let mine = self.case.department.as_deref();
        let start = rng.below(deps.len() as u64) as usize;
        (0..deps.len())
            .map(|k| deps[(start + k) % deps.len()].id.as_str())
            .find(|d| Some(*d) != mine)
            .unwrap_or("street")
            .to_string()
    }
}

/// One case from its report to wherever it is at the end of the year.
fn life(l: &mut Life<'_>, rng: &mut Rng, reporter: Option<&Actor>) -> Result<(), Stop> {
    let op = Actor::operator("op-1");
    if reporter.is_some() {
        // Citizen reports: the operator looks at them first; a few are not cases.
        if rng.pm(20) {
            return l.step(rng.between(15 * MIN, 2 * H), Action::Reject, &op);
        }
        l.step(rng.between(5 * MIN, 2 * H), Action::Register, &op)?;
        l.step(
            rng.between(5 * MIN, H),
            Action::Dispatch { department: None },
            &op,
        )?;
    }
    if rng.pm(30) {
        let d = l.department();
        l.step(rng.between(30 * MIN, 4 * H), Action::Return, &d)?;
        let other = l.other_department(rng);
        l.step(
            rng.between(15 * MIN, 2 * H),
            Action::Dispatch {
                department: Some(other),
            },
            &op,
        )?;
    }
    if rng.pm(50) {
        let other = l.other_department(rng);
        l.step(
            rng.between(30 * MIN, 6 * H),
            Action::Transfer { department: other },
            &op,
        )?;
    }
    // Signing for: mostly within the 2 working hours, 8 % late.
    let sign_for = if rng.pm(80) {
        rng.between(3 * H, 40 * H)
    } else {
        rng.between(5 * MIN, 2 * H)
    };
    let d = l.department();
    l.step(sign_for, Action::Accept, &d)?;
    if rng.pm(20) {
        l.step(rng.between(10 * MIN, 4 * H), Action::Comment, &d)?;
    }
    if rng.pm(30) {
        let by = WorkAmount::Days(1 + rng.below(2) as u32);
        l.step(rng.between(H, 8 * H), Action::Extend { by }, &op)?;
    }
    // Handling: mostly within two days, 10 % take 2–9 days (late, and escalated).
    let handle = |rng: &mut Rng| {
        if rng.pm(100) {
            rng.between(2 * DAY, 9 * DAY)
        } else {
            rng.between(2 * H, 2 * DAY)
        }
    };
    l.step(handle(rng), Action::Handle, &d)?;
    let verifier = if reporter.is_some() {
        op.clone()
    } else {
        // Alarm categories: verified by 24 h of normal readings.
        Actor::system()
    };
    if rng.pm(50) {
        let back_to = if rng.below(2) == 0 {
            ReworkTo::Accepted
        } else {
            ReworkTo::Dispatched
        };
        l.step(
            rng.between(2 * H, DAY),
            Action::FailVerification { back_to },
            &verifier,
        )?;
        if back_to == ReworkTo::Dispatched {
            l.step(rng.between(15 * MIN, 3 * H), Action::Accept, &d)?;
        }
        l.step(rng.between(2 * H, 2 * DAY), Action::Handle, &d)?;
    }
    let verify = if reporter.is_some() {
        rng.between(2 * H, DAY)
    } else {
        rng.between(DAY, 2 * DAY)
    };
    l.step(verify, Action::verify(), &verifier)?;
    l.step(rng.between(H, DAY), Action::Close, &op)?;
    let (rates, rater) = match reporter {
        Some(r) => (rng.pm(600), r),
        None => (rng.pm(100), &op),
    };
    if rates {
        let satisfaction = [1, 2, 3, 4, 4, 5, 5, 5][rng.below(8) as usize];
        l.step(
            rng.between(H, 3 * DAY),
            Action::Rate { satisfaction },
            rater,
        )?;
    }
    Ok(())
}

struct Year {
    cases: Vec<Case>,
    events: Vec<Event>,
    /// Case `i`'s events are `events[offsets[i]..offsets[i + 1]]`.
    offsets: Vec<usize>,
}

fn generate(n: usize, seed: u64, cat: &Catalogue, from: i64, to: i64) -> anyhow::Result<Year> {
    let mut rng = Rng::new(seed);
    let mut y = Year {
        cases: Vec::with_capacity(n),
        events: Vec::with_capacity(n * 8),
        offsets: Vec::with_capacity(n + 1),
    };
    y.offsets.push(0);
    let span = to - from;
    let mut day = (Date::new(1970, 1, 1).context("date")?, 0u32);
    for i in 0..n {
        // Reports spread evenly over the year, in order, so ids count per local day.
        let t = from
            + (i as i128 * span as i128 / n as i128) as i64
            + rng.below(span as u64 / n as u64) as i64;
        let date = cat.calendar.local_date(t);
        if date != day.0 {
            day = (date, 0);
        }
        day.1 += 1;
        let id = format!(
            "C{:04}{:02}{:02}-{:04}",
            date.year(),
            date.month(),
            date.day(),
            day.1
        );
        let site_n = rng.below(SITES as u64) as usize;
        let site = format!("gw-{site_n:03}");
        let cell = format!("cell-{:02}", site_n / SITES_PER_CELL);
        let device = format!("rest-{site_n:03}-{}", rng.below(DEVICES_PER_SITE as u64));
        let mut pick = rng.below(1000);
        let &(category, kind, _) = MIX
            .iter()
            .find(|m| {
                let hit = pick < m.2;
                pick = pick.saturating_sub(m.2);
                hit
            })
            .unwrap_or(&MIX[0]);
        let reporter = kind.is_none().then(|| Actor {
            id: format!("citizen-{}", rng.below(20_000)),
            role: Role::Reporter,
        });
        let first = y.events.len();
        let (case, events) = match kind {
            Some(kind) => {
                let a = alarm(&device, kind, AlarmPhase::Raised, t - 10 * MIN, t);
                let src = AlarmSource {
                    gateway: &site,
                    site: Some(&site),
                    grid_cell: Some(&cell),
                };
                match on_alarm(&[], &a, &src, &id, t, cat)? {
                    Decision::Opened { case, events, .. } => (case, events),
                    d => bail!("{category} alarm opened no case: {d:?}"),
                }
            }
            None => {
                // One complaint in ten names no place.
                let placed = !rng.pm(100);
                let intake = Intake {
                    category: category.into(),
                    title: format!("fume nuisance near {device}"),
                    origin: Origin::Citizen,
                    site: placed.then(|| site.clone()),
                    grid_cell: placed.then(|| cell.clone()),
                };
                let (case, events, _) = open(
                    &id,
                    intake,
                    reporter.as_ref().context("reporter")?,
                    "",
                    t,
                    cat,
                )?;
                (case, events)
            }
        };
        y.events.extend(events);
        let mut l = Life {
            cat,
            end: to,
            case,
            t,
            events: &mut y.events,
        };
        match life(&mut l, &mut rng, reporter.as_ref()) {
            Ok(()) | Err(Stop::YearEnded) => {}
            Err(Stop::Engine(e)) => bail!("case {id}: the engine refused a step: {e}"),
        }
        let case = l.case;
        if case.seq as usize != y.events.len() - first {
            bail!(
                "case {id}: seq {} but {} events",
                case.seq,
                y.events.len() - first
            );
        }
        y.cases.push(case);
        y.offsets.push(y.events.len());
    }
    Ok(y)
}

// ---------------------------------------------------------------------------------------------
// 2b. Statistics: pure, and through the store.

/// Runs `compute` `runs` times; returns the result and every run's wall time.
fn time_compute(events: &[Event], p: Period, runs: usize) -> (Stats, Vec<Duration>) {
    let mut took = Vec::new();
    let mut out = None;
    for _ in 0..runs {
        let t = now();
        let s = stats::compute(events, p);
        took.push(fumegrid_common::clock::Clock::system().instant() - t);
        out = Some(s);
    }
    (out.unwrap_or_else(|| stats::compute(&[], p)), took)
}

fn runs_ms(took: &[Duration]) -> String {
    let best = took.iter().min().copied().unwrap_or_default();
    let all: Vec<String> = took.iter().map(|d| format!("{:.0}", ms(*d))).collect();
    format!(
        "{:.0} ms (best of {}: {} ms)",
        ms(best),
        took.len(),
        all.join(", ")
    )
}

fn save_year(y: &Year, path: &Path, o: &Opts) -> anyhow::Result<()> {
    // The writer creates and upgrades the schema; the cases go in with the writer's own SQL.
    drop(sqlite::open(path, o.synchronous)?);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(
        None,
        "synchronous",
        match o.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    let t = now();
    let ids: Vec<usize> = (0..y.cases.len()).collect();
    for chunk in ids.chunks(o.store_tx) {
        let tx = conn.transaction()?;
        for &i in chunk {
            let evs = &y.events[y.offsets[i]..y.offsets[i + 1]];
            let now = evs.last().map_or(0, |e| e.ts_ms);
            cases_sql::save_case(&tx, &y.cases[i], evs, now)?
                .map_err(|c| anyhow::anyhow!("case {}: {c:?}", y.cases[i].id))?;
        }
        tx.commit()?;
    }
    let took = fumegrid_common::clock::Clock::system().instant() - t;
    println!(
        "store: {} cases + {} events saved in {:.1} s = {:.0} cases/s ({} cases per transaction); store {:.0} MiB",
        y.cases.len(),
        y.events.len(),
        took.as_secs_f64(),
        rate(y.cases.len(), took),
        o.store_tx,
        file_mib(path)
    );
    Ok(())
}

fn headline(label: &str, s: &Stats) {
    let t = &s.total;
    let pct = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{:.1} %", r * 100.0));
    println!(
        "  {label}: received {}, closed {}, due {}, overdue {}, closure {}, on time {}, \
         transfers {}, reworks {}, escalations {}, rated {}; groups: {} categories, {} departments, \
         {} sites, {} grid cells",
        t.received,
        t.closed,
        t.due,
        t.overdue,
        pct(t.closure_rate),
        pct(t.on_time_closure_rate),
        t.transfers,
        t.reworks,
        t.escalations,
        t.rated,
        s.by_category.len(),
        s.by_department.len(),
        s.by_site.len(),
        s.by_grid_cell.len()
    );
}

fn statistics(o: &Opts, dir: &Path, catalogue: &Arc<Catalogue>) -> anyhow::Result<()> {
    let cat: &Catalogue = catalogue;
    let local = |y, m| -> anyhow::Result<i64> {
        Ok(cat
            .calendar
            .local_midnight(Date::new(y, m, 1).context("date")?))
    };
    let year = Period {
        from_ms: local(2025, 1)?,
        to_ms: local(2026, 1)?,
    };
    let june = Period {
        from_ms: local(2025, 6)?,
        to_ms: local(2025, 7)?,
    };
    let t = now();
    let y = generate(o.cases, o.seed, cat, year.from_ms, year.to_ms)?;
    let took = fumegrid_common::clock::Clock::system().instant() - t;
    let mut states = std::collections::BTreeMap::<State, usize>::new();
    for c in &y.cases {
        *states.entry(c.state).or_default() += 1;
    }
    let states: Vec<String> = states.iter().map(|(s, n)| format!("{s} {n}")).collect();
    println!(
        "generated {} cases, {} events ({:.2} per case, {} bytes each + strings) over 2025 in \
         {:.1} s with the pure engine; at the end of the year: {}; {}",
        y.cases.len(),
        y.events.len(),
        y.events.len() as f64 / y.cases.len().max(1) as f64,
        std::mem::size_of::<Event>(),
        took.as_secs_f64(),
        states.join(", "),
        memory()
    );

    let path = dir.join("stats.sqlite3");
    if o.store {
        save_year(&y, &path, o)?;
    }
    let Year { mut events, .. } = y;
    // Time order, as the store's `ts` index returns them; a request for a period ending at `to`
    // gets the events before `to`, here a prefix.
    let t = now();
    events.sort_unstable_by_key(|e| e.ts_ms);
    println!(
        "events sorted by time in {:.0} ms",
        ms(fumegrid_common::clock::Clock::system().instant() - t)
    );
    let until = |to: i64| events.partition_point(|e| e.ts_ms < to);

    let mut pure = Vec::new();
    for (label, p) in [("year 2025", year), ("June 2025", june)] {
        let evs = &events[..until(p.to_ms)];
        let (s, took) = time_compute(evs, p, o.runs);
        println!(
            "stats::compute, {label}, in memory: {} events of {} cases → {}",
            evs.len(),
            o.cases,
            runs_ms(&took)
        );
        headline(label, &s);
        pure.push((label, p, s));
    }
    println!("after in-memory statistics: {}", memory());
    drop(events);

    if o.store {
        let r = sqlite::open_reader(&path)?;
        for (label, p, want) in &pure {
            let mut load = Vec::new();
            let mut comp = Vec::new();
            let mut n = 0;
            // Once: it takes tens of seconds (the "before" of BENCHMARKS.md).
            for _ in 0..1 {
                let t = now();
                let evs = r.case_events_until(p.to_ms)?;
                load.push(fumegrid_common::clock::Clock::system().instant() - t);
                n = evs.len();
                let (s, took) = time_compute(&evs, *p, 1);
                comp.extend(took);
                if &s != want {
                    bail!("{label}: statistics from the store differ from the in-memory ones");
                }
            }
            let both: Vec<Duration> = load.iter().zip(&comp).map(|(a, b)| *a + *b).collect();
            println!(
                "API path, {label}: case_events_until ({n} events from SQLite) {}; compute {}; \
                 together {} (same figures as in memory)",
                runs_ms(&load),
                runs_ms(&comp),
                runs_ms(&both)
            );
        }
        println!("after the store path: {}", memory());
        drop(r);

        // What the aggregator does now: the index is loaded from the store at start (casework
        // then appends what it and ingest's alarm hook commit) and the API's
        // `Reader::case_stats` answers from it.
        let mut w = sqlite::open(&path, o.synchronous)?;
        let before = rss_kib();
        let t = now();
        let index = Arc::new(StatsIndex::load(&mut w)?);
        let load = fumegrid_common::clock::Clock::system().instant() - t;
        let size = index.size();
        println!(
            "stats index loaded from the store (aggregator start): {} cases, {} events in {:.1} s; \
             {:.0} MiB by count ({:.0} bytes per case), RSS grew {:.0} MiB; {}",
            size.cases,
            size.events,
            load.as_secs_f64(),
            size.bytes as f64 / 1048576.0,
            size.bytes as f64 / size.cases.max(1) as f64,
            (rss_kib() - before) as f64 / 1024.0,
            memory()
        );
        let r = StatsIndex::reader(Arc::new(sqlite::open_reader(&path)?), index);
        for (label, p, want) in &pure {
            let mut took = Vec::new();
            for _ in 0..o.runs {
                let t = now();
                let s = r.case_stats(*p)?;
                took.push(fumegrid_common::clock::Clock::system().instant() - t);
                if &s != want {
                    bail!("{label}: statistics from the index differ from compute's");
                }
            }
            println!(
                "API path now, {label}: Reader::case_stats from the index {} (same figures as \
                 compute)",
                runs_ms(&took)
            );
        }
        drop(w);
        if o.late_alarms > 0 {
            // New alarms once the year is in the store: what ingest meets after a year.
            let mut w = sqlite::open(&path, o.synchronous)?;
            let mut hook = AlarmCases::new(catalogue.clone());
            let mut seqs = [0; GATEWAYS];
            let batches = alarm_batches(
                o,
                o.late_alarms,
                AlarmPhase::Raised,
                year.to_ms + 10 * H,
                &mut seqs,
            );
            let took = total(&commit_all(&mut w, &mut hook, &batches)?);
            println!(
                "alarms → cases with the {} cases in the store: {} raised alarms → cases in {:.2} s \
                 = {:.1} cases/s ({} items per commit)",
                o.cases,
                o.late_alarms,
                took.as_secs_f64(),
                rate(o.late_alarms, took),
                o.batch
            );
        }
    } else {
        println!("API path (SQLite load + compute): not run (--store false)");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    let dir = std::env::temp_dir().join(format!("fumegrid-case-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let catalogue = Arc::new(Catalogue::builtin().map_err(|d| anyhow::anyhow!("{d}"))?);
    println!(
        "case_stats_bench: alarms {}, repeats {}, batch {}, synchronous={}; cases {}, store {}, \
         {} runs, seed {}; {} CPUs",
        o.alarms,
        o.repeats,
        o.batch,
        format!("{:?}", o.synchronous).to_lowercase(),
        o.cases,
        o.store,
        o.runs,
        o.seed,
        std::thread::available_parallelism().map_or(0, usize::from)
    );
    let result = throughput(&o, &dir, &catalogue).and_then(|()| {
        if o.cases == 0 {
            return Ok(());
        }
        statistics(&o, &dir, &catalogue)
    });
    println!("end: {}", memory());
    if o.keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

/// Monotonic time from the one clock (fumegrid_common::clock).
fn now() -> Instant {
    fumegrid_common::clock::Clock::system().instant()
}
