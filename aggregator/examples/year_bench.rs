//! Data-lifecycle benchmark of the aggregator (issue 14): a time-compressed year of a district's
//! monitors through the real store commit path, its disk over time, and reading it back
//! through the HTTP API (a year's chart, a month's CSV export of a site).
//!
//! **What goes in** is what a gateway at its defaults sends: for each monitor and minute one
//! `Period` item of 60 s carrying the 10 metrics of the `generic-f32-input` profile (60 polls,
//! avg/min/max/last, valid flag; a few invalid minutes and a short outage now and then), and
//! `--episodes` exceedance episodes per monitor and month, each 30 minutes long: `raised`,
//! `updated` every 5 minutes, `cleared`, with the raw polls of the device (10 metrics at 1 Hz)
//! from 5 minutes before the raise to 5 minutes after the clear (the default raw windows), and
//! through casework's alarm hook a dispatch case for each (the built-in catalogue). Items go
//! through [`Writer::commit_with`] exactly as ingest stores them, one transaction per
//! `--group-minutes` simulated minutes of every gateway (one batch per gateway).
//!
//! **Time** is simulated: the commit's `now` is the simulated minute. With `--retention
//! default` (the default) the writer knows `[retention]` at its defaults and once a simulated
//! day a retention pass runs at that time as the daemon's sweeper does hourly (every series
//! swept, freed pages given back, WAL truncated). The store's size on disk (the database file
//! plus its WAL) is sampled every `--sample-days` simulated days.
//!
//! Two runs, because 500 monitors at full rate for a year is 2.6 G metric-minutes:
//!
//! 1. **year**: `--monitors` monitors (gateways of `--per-gateway`) at full rate for `--days`;
//! 2. **district**: `--district` monitors for `--district-days`, to show that the disk per
//!    monitor-day does not depend on the number of monitors.
//!
//! Then, on the year's store, served by the real API on a loopback socket (HTTP/1.0 requests
//! written here): a year's chart of one metric of one device (`resolution=auto`), cold (the
//! file dropped from the page cache with `dd iflag=nocache`, a new reader connection) and
//! warm, and a month's CSV export of the first site at 10 minutes and at 1 hour.
//!
//! ```text
//! cargo run --release -p fumegrid-aggregator --example year_bench -- \
//!     [--monitors 10] [--per-gateway 10] [--days 365] [--district 500] [--district-days 1] \
//!     [--start 2026-01-01] [--group-minutes 10] [--episodes 1] [--sample-days 7] \
//!     [--synchronous normal|full] [--warm 20] [--dir /tmp/fumegrid-year-bench] [--keep false] \
//!     [--throughput-minutes 0] [--retention default|none]
//! ```
//!
//! `--throughput-minutes N` only measures the commit rate over N simulated minutes of the year
//! run and stops.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use fumegrid_aggregator::api::{self, AppState, Auth};
use fumegrid_aggregator::cases::{Catalogue, SiteInfo};
use fumegrid_aggregator::casework::alarms::AlarmCases;
use fumegrid_aggregator::ingest::stats::Stats;
use fumegrid_aggregator::store::retention::Retention;
use fumegrid_aggregator::store::{Synchronous, Writer, sqlite, sweep_sql};
use fumegrid_common::clock::Clock;
use fumegrid_common::metric::Metric;
use fumegrid_common::reading::{Quality, Reading};
use fumegrid_common::wire::{
    Alarm, AlarmKind, AlarmPhase, Batch, Body, Item, Period, PeriodMetric,
};

const MIN: i64 = 60_000;
const DAY: i64 = 1440 * MIN;

/// The 10 metrics of `device-profiles/generic-f32-input.toml`.
const METRICS: [Metric; 10] = [
    Metric::FumeMgM3,
    Metric::ParticulateMgM3,
    Metric::NmhcMgM3,
    Metric::FlowM3H,
    Metric::TemperatureC,
    Metric::HumidityPct,
    Metric::FanCurrentA,
    Metric::PurifierCurrentA,
    Metric::FanOn,
    Metric::PurifierOn,
];

#[derive(Debug, Clone)]
struct Opts {
    monitors: usize,
    per_gateway: usize,
    days: i64,
    district: usize,
    /// Simulated days of the district run (fractions allowed).
    district_days: f64,
    start_ms: i64,
    group_minutes: i64,
    episodes: u32,
    sample_days: i64,
    synchronous: Synchronous,
    warm: usize,
    dir: PathBuf,
    keep: bool,
    throughput_minutes: i64,
    /// `[retention]` at its defaults (swept once a simulated day), or none.
    retention: bool,
}

fn parse_args() -> anyhow::Result<Opts> {
    let mut o = Opts {
        monitors: 10,
        per_gateway: 10,
        days: 365,
        district: 500,
        district_days: 1.0,
        start_ms: local_midnight("2026-01-01")?,
        group_minutes: 10,
        episodes: 1,
        sample_days: 7,
        synchronous: Synchronous::Normal,
        warm: 20,
        dir: std::env::temp_dir().join("fumegrid-year-bench"),
        keep: false,
        throughput_minutes: 0,
        retention: true,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--monitors" => o.monitors = v.parse()?,
            "--per-gateway" => o.per_gateway = v.parse()?,
            "--days" => o.days = v.parse()?,
            "--district" => o.district = v.parse()?,
            "--district-days" => o.district_days = v.parse()?,
            "--start" => o.start_ms = local_midnight(v)?,
            "--group-minutes" => o.group_minutes = v.parse()?,
            "--episodes" => o.episodes = v.parse()?,
            "--sample-days" => o.sample_days = v.parse()?,
            "--synchronous" => {
                o.synchronous = match v.as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    _ => bail!("--synchronous is full or normal, not {v}"),
                }
            }
            "--warm" => o.warm = v.parse()?,
            "--dir" => o.dir = PathBuf::from(v),
            "--keep" => o.keep = v.parse()?,
            "--throughput-minutes" => o.throughput_minutes = v.parse()?,
            "--retention" => {
                o.retention = match v.as_str() {
                    "default" => true,
                    "none" => false,
                    _ => bail!("--retention is default or none, not {v}"),
                }
            }
            _ => bail!("unknown option {a}"),
        }
    }
    if o.monitors == 0 || o.per_gateway == 0 || o.group_minutes <= 0 || o.sample_days <= 0 {
        bail!("--monitors, --per-gateway, --group-minutes and --sample-days must be at least 1");
    }
    Ok(o)
}

/// UTC ms of local midnight (+08:00, the built-in catalogue's calendar) of `YYYY-MM-DD`.
fn local_midnight(date: &str) -> anyhow::Result<i64> {
    let w = fumegrid_common::datetime::parse(date).map_err(|e| anyhow::anyhow!("{date}: {e}"))?;
    let cst = fumegrid_common::datetime::offset_min(480).context("offset")?;
    w.to_ms(cst).map_err(|e| anyhow::anyhow!("{date}: {e}"))
}

/// A deterministic hash of `(a, b)` in 0 … 1 (splitmix64).
fn unit(a: u64, b: u64) -> f64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_add(0x632B_E59B_D9B4_E019);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// The district: gateway ids and their monitors.
#[derive(Debug, Clone)]
struct Fleet {
    tag: &'static str,
    /// `(gateway, [device])`
    gateways: Vec<(String, Vec<String>)>,
}

impl Fleet {
    fn new(tag: &'static str, monitors: usize, per_gateway: usize) -> Fleet {
        let mut gateways = Vec::new();
        for g in 0..monitors.div_ceil(per_gateway) {
            let gw = format!("{tag}-gw-{g:03}");
            let devices = (0..per_gateway.min(monitors - g * per_gateway))
                .map(|d| format!("{tag}-{g:03}-{d:02}"))
                .collect();
            gateways.push((gw, devices));
        }
        Fleet { tag, gateways }
    }

    fn monitors(&self) -> usize {
        self.gateways.iter().map(|g| g.1.len()).sum()
    }

    fn sites(&self) -> HashMap<String, SiteInfo> {
        self.gateways
            .iter()
            .enumerate()
            .map(|(i, (gw, _))| {
                (
                    gw.clone(),
                    SiteInfo {
                        site: Some(format!("{} site {i:03}", self.tag)),
                        grid_cell: None,
                        position: None,
                        devices: Default::default(),
                    },
                )
            })
            .collect()
    }
}

/// One monitor-minute as a gateway at its defaults reports it, or `None` in an outage (each
/// monitor is silent for 20 minutes once a week).
fn period(monitor: u64, minute: i64, start_ms: i64) -> Option<Period> {
    let week_minute = minute.rem_euclid(7 * 1440);
    let outage_at = (unit(monitor, 7) * (7.0 * 1440.0 - 20.0)) as i64;
    if (outage_at..outage_at + 20).contains(&week_minute) {
        return None;
    }
    let hour = (minute.rem_euclid(1440)) as f64 / 60.0;
    // Kitchens run 10:00–14:00 and 17:00–21:00.
    let cooking = (10.0..14.0).contains(&hour) || (17.0..21.0).contains(&hour);
    let noise = unit(monitor, minute as u64);
    // One minute in 200 a sensor hiccups: half its polls invalid, the minute invalid.
    let hiccup = unit(monitor ^ 0xABCD, minute as u64) < 0.005;
    let (polls, count) = (60u32, if hiccup { 30 } else { 60 });
    let metrics = METRICS
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let base = match m {
                Metric::FumeMgM3 => {
                    if cooking {
                        0.6 + 0.8 * noise
                    } else {
                        0.05 + 0.05 * noise
                    }
                }
                Metric::ParticulateMgM3 => 0.3 + 1.2 * noise,
                Metric::NmhcMgM3 => 1.0 + 3.0 * noise,
                Metric::FlowM3H => {
                    if cooking {
                        8000.0 + 1000.0 * noise
                    } else {
                        0.0
                    }
                }
                Metric::TemperatureC => 18.0 + 10.0 * noise,
                Metric::HumidityPct => 40.0 + 30.0 * noise,
                Metric::FanCurrentA => {
                    if cooking {
                        3.2 + 0.2 * noise
                    } else {
                        0.0
                    }
                }
                Metric::PurifierCurrentA => {
                    if cooking {
                        1.5 + 0.1 * noise
                    } else {
                        0.0
                    }
                }
                _ => {
                    if cooking {
                        1.0
                    } else {
                        0.0
                    }
                }
            };
            let spread = base * 0.1 * unit(monitor, minute as u64 ^ (i as u64) << 40);
            PeriodMetric {
                metric: m,
                unit: None,
                polls,
                count,
                avg: Some(base),
                min: Some(base - spread),
                max: Some(base + spread),
                last: Some(base),
                valid: count * 4 >= polls * 3,
            }
        })
        .collect();
    Some(Period {
        device: String::new(),
        start_ms,
        period_s: 60,
        metrics,
    })
}

/// Minute of the month (from the run's start, months of 30 days) at which monitor `m`'s `k`-th
/// episode of the month raises: lunch time on a day spread over the month.
fn episode_minutes(monitor: u64, episodes: u32) -> Vec<i64> {
    (0..episodes)
        .map(|k| {
            let day = ((unit(monitor, 1000 + u64::from(k)) * 28.0) as i64).min(27);
            day * 1440 + 12 * 60 + i64::from(k) * 30
        })
        .collect()
}

/// Items of an alarm episode's minute `minute` (since its raise) for `device`: transitions,
/// and the raw polls of that minute while inside the raw window (`-5 ..= 35` minutes).
fn episode_items(device: &str, raised_ms: i64, minute: i64, out: &mut Vec<Body>) {
    let id = format!("{device}:exceedance:fume_mg_m3:{raised_ms}");
    let at = raised_ms + minute * MIN;
    let phase = match minute {
        0 => Some(AlarmPhase::Raised),
        30 => Some(AlarmPhase::Cleared),
        m if m > 0 && m < 30 && m % 5 == 0 => Some(AlarmPhase::Updated),
        _ => None,
    };
    if let Some(phase) = phase {
        out.push(Body::Alarm(Alarm {
            id,
            device: device.to_string(),
            kind: AlarmKind::Exceedance,
            metric: Some(Metric::FumeMgM3),
            phase,
            ts_ms: at,
            started_ms: raised_ms,
            cleared_ms: (phase == AlarmPhase::Cleared).then_some(at),
            value: Some(2.6),
            peak: Some(3.1),
            peak_ms: Some(raised_ms + 60_000),
            limit: Some(2.0),
            suppressed: false,
            message: "10-min average fume 2.60 mg/m³ over the 2.0 limit (GB 18483-2001), fan on"
                .into(),
        }));
    }
    if (-5..35).contains(&minute) {
        for s in 0..60 {
            for (i, &m) in METRICS.iter().enumerate() {
                out.push(Body::Reading(Reading {
                    device: device.to_string(),
                    metric: m,
                    unit: None,
                    value: Some(2.5 + 0.01 * (s as f64) + i as f64),
                    quality: Quality::Ok,
                    ts_ms: at + s * 1000 + 137,
                }));
            }
        }
    }
}

/// Bytes of the store on disk: the database file, its WAL and shared-memory index.
fn disk_bytes(path: &Path) -> (u64, u64) {
    let len = |p: String| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let db = len(path.display().to_string());
    let wal = len(format!("{}-wal", path.display())) + len(format!("{}-shm", path.display()));
    (db, wal)
}

/// Pages of the database and of its freelist.
fn pages(path: &Path) -> anyhow::Result<(i64, i64, i64)> {
    let c = rusqlite_free_pages(path)?;
    Ok(c)
}

fn rusqlite_free_pages(path: &Path) -> anyhow::Result<(i64, i64, i64)> {
    // The reader's connection is query-only; the pragmas read.
    let out = std::process::Command::new("sqlite3")
        .arg(path)
        .arg("PRAGMA page_size; PRAGMA page_count; PRAGMA freelist_count;")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v: Vec<i64> = String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            Ok((
                v.first().copied().unwrap_or(0),
                v.get(1).copied().unwrap_or(0),
                v.get(2).copied().unwrap_or(0),
            ))
        }
        _ => Ok((0, 0, 0)),
    }
}

/// Row counts of the big tables (through the sqlite3 shell, if installed).
fn table_rows(path: &Path) -> String {
    let q = "SELECT 'readings', count(*) FROM readings UNION ALL \
             SELECT 'periods', count(*) FROM periods UNION ALL \
             SELECT 'rollups_' || res_s || 's', count(*) FROM rollups GROUP BY res_s UNION ALL \
             SELECT 'cases', count(*) FROM cases;";
    match std::process::Command::new("sqlite3")
        .arg(path)
        .arg(q)
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| l.replace('|', "="))
            .collect::<Vec<_>>()
            .join(" "),
        _ => "(sqlite3 shell not installed: no row counts)".into(),
    }
}

/// Per-table bytes from SQLite's dbstat virtual table (if the shell has it).
fn table_bytes(path: &Path) -> String {
    let q = "SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC LIMIT 8;";
    match std::process::Command::new("sqlite3")
        .arg(path)
        .arg(q)
        .output()
    {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(|l| {
                let mut p = l.split('|');
                let name = p.next().unwrap_or("");
                let b: f64 = p.next().and_then(|b| b.parse().ok()).unwrap_or(0.0);
                format!("{name}={:.1}MB", b / 1e6)
            })
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// One retention pass at simulated `now_ms`, as the daemon's sweeper does it
/// (`aggregator/src/sweeper.rs`): every series swept in chunks of 5000 rows, freed pages given
/// back (incremental vacuum), the WAL checkpointed and truncated. Rows deleted.
fn sweep(sw: &mut sweep_sql::Sweeper, policy: &Retention, now_ms: i64) -> anyhow::Result<u64> {
    let cut = policy.cutoffs(now_ms);
    let mut deleted = 0;
    for ser in sw.series()? {
        deleted += sw.sweep_series(&ser, policy, &cut, 5000)?.total();
    }
    let mut left = sw.free_pages()?;
    while left > 0 {
        let now_left = sw.reclaim(1024)?;
        if now_left >= left {
            break;
        }
        left = now_left;
    }
    sw.checkpoint()?;
    Ok(deleted)
}

struct RunResult {
    monitors: usize,
    /// Simulated days driven.
    days: f64,
    items: u64,
    metric_minutes: u64,
    secs: f64,
    db: u64,
    wal: u64,
}

/// Drives `fleet` for `days` from `start_ms` into the store at `path`.
fn drive(
    o: &Opts,
    fleet: &Fleet,
    path: &Path,
    days: i64,
    stop_after_minutes: i64,
) -> anyhow::Result<RunResult> {
    let mut w = sqlite::open(path, o.synchronous)?;
    let policy = Retention::default();
    let mut sweeper = if o.retention {
        w.set_retention(policy);
        Some(sweep_sql::open(path)?)
    } else {
        None
    };
    let mut next_sweep = 1440i64;
    let mut swept = 0u64;
    let ids: Vec<String> = fleet.gateways.iter().map(|g| g.0.clone()).collect();
    w.ensure_gateways(&ids)?;
    let catalogue = Arc::new(Catalogue::builtin().context("catalogue")?);
    let mut hook = AlarmCases::new(catalogue).with_sites(fleet.sites());
    // Each monitor's episodes: (raise minute from the run's start).
    let mut episodes: Vec<Vec<i64>> = Vec::new();
    let mut m = 0u64;
    for (_, devices) in &fleet.gateways {
        for _ in devices {
            let mut at = Vec::new();
            let months = (days + 29) / 30;
            for month in 0..months {
                for e in episode_minutes(m, o.episodes) {
                    at.push(month * 30 * 1440 + e);
                }
            }
            episodes.push(at);
            m += 1;
        }
    }
    let mut seq: Vec<u64> = vec![0; fleet.gateways.len()];
    let minutes = if stop_after_minutes > 0 {
        stop_after_minutes.min(days * 1440)
    } else {
        days * 1440
    };
    let wall = Clock::system();
    let started = wall.instant();
    let mut items = 0u64;
    let mut metric_minutes = 0u64;
    let mut next_sample = o.sample_days * 1440;
    println!(
        "{}: {} monitors on {} gateways, {} simulated days from {}, {} simulated minutes per commit",
        fleet.tag,
        fleet.monitors(),
        fleet.gateways.len(),
        days,
        o.start_ms,
        o.group_minutes
    );
    let mut minute = 0i64;
    while minute < minutes {
        let upto = (minute + o.group_minutes).min(minutes);
        let mut batches: Vec<Batch> = Vec::with_capacity(fleet.gateways.len());
        let mut monitor = 0u64;
        for (g, (gw, devices)) in fleet.gateways.iter().enumerate() {
            let mut bodies: Vec<Body> = Vec::new();
            for dev in devices {
                for mm in minute..upto {
                    let start = o.start_ms + mm * MIN;
                    if let Some(mut p) = period(monitor, mm, start) {
                        p.device = dev.clone();
                        metric_minutes += p.metrics.len() as u64;
                        bodies.push(Body::Period(p));
                    }
                    for &raise in &episodes[monitor as usize] {
                        let since = mm - raise;
                        if (-5..=35).contains(&since) {
                            episode_items(dev, o.start_ms + raise * MIN, since, &mut bodies);
                        }
                    }
                }
                monitor += 1;
            }
            let items_of: Vec<Item> = bodies
                .into_iter()
                .map(|body| {
                    seq[g] += 1;
                    Item { seq: seq[g], body }
                })
                .collect();
            items += items_of.len() as u64;
            batches.push(Batch {
                gateway: gw.clone(),
                stream: format!("{gw}-outbox"),
                sent_ms: o.start_ms + upto * MIN,
                items: items_of,
            });
        }
        let refs: Vec<&Batch> = batches.iter().collect();
        let now = o.start_ms + upto * MIN + 1500;
        w.commit_with(&refs, now, &mut hook)?;
        minute = upto;
        if let Some(sw) = sweeper.as_mut()
            && minute >= next_sweep
        {
            next_sweep += 1440;
            swept += sweep(sw, &policy, now)?;
        }
        if minute >= next_sample || minute == minutes {
            next_sample += o.sample_days * 1440;
            let (db, wal) = disk_bytes(path);
            let secs = (wall.instant() - started).as_secs_f64();
            let day = minute as f64 / 1440.0;
            println!(
                "  day {day:7.2}  items {items:>11}  {:>8.0} items/s {:>9.0} metric-min/s  db {:>9.1} MB  wal {:>6.1} MB  per monitor-day {:>6.3} MB  swept {swept} rows",
                items as f64 / secs,
                metric_minutes as f64 / secs,
                db as f64 / 1e6,
                wal as f64 / 1e6,
                (db + wal) as f64 / 1e6 / fleet.monitors() as f64 / day.max(1.0 / 1440.0),
            );
        }
    }
    drop(w);
    drop(sweeper);
    let secs = (wall.instant() - started).as_secs_f64();
    let (db, wal) = disk_bytes(path);
    Ok(RunResult {
        monitors: fleet.monitors(),
        days: minutes as f64 / 1440.0,
        items,
        metric_minutes,
        secs,
        db,
        wal,
    })
}

/// One HTTP/1.0 GET (the server closes after the answer): status, body bytes and the time to
/// the last byte.
fn http_get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<(u16, Vec<u8>, Duration)> {
    let wall = Clock::system();
    let t = wall.instant();
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: bench\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let took = wall.instant() - t;
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, buf[head_end + 4..].to_vec(), took))
}

/// Drops the store's files from the page cache (GNU dd: `iflag=nocache count=0`).
fn drop_cache(path: &Path) {
    for p in [
        path.display().to_string(),
        format!("{}-wal", path.display()),
    ] {
        let _ = std::process::Command::new("dd")
            .args([&format!("if={p}"), "iflag=nocache", "count=0"])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The API served on a loopback port from its own thread; stops when dropped.
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves the API on the store at `path` (a new reader connection) on a loopback port.
fn serve(path: &Path, sites: HashMap<String, SiteInfo>) -> anyhow::Result<Server> {
    let state = AppState {
        drones: None,
        reader: Arc::new(sqlite::open_reader(path)?),
        stats: Arc::new(Stats::default()),
        catalogue: Arc::new(Catalogue::builtin().context("catalogue")?),
        auth: Arc::new(Auth {
            tokens: Default::default(),
            anonymous_viewer: true,
        }),
        casework: None,
        notify: Default::default(),
        clock: Clock::system(),
        evidence: None,
        sites: Arc::new(sites),
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let _ = axum::serve(listener, api::app(state))
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
    });
    Ok(Server {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn query_timings(o: &Opts, fleet: &Fleet, path: &Path) -> anyhow::Result<()> {
    let (gw, devices) = &fleet.gateways[0];
    let dev = &devices[0];
    let to = o.start_ms + o.days.min(365) * DAY;
    let chart = format!(
        "/api/v1/devices/{dev}/readings?gateway={gw}&metric=fume_mg_m3&from={}&to={to}&resolution=auto",
        o.start_ms
    );
    println!(
        "\nqueries on the year's store ({:.1} MB), served on a loopback socket",
        {
            let (db, wal) = disk_bytes(path);
            (db + wal) as f64 / 1e6
        }
    );
    // Cold: the file out of the page cache, a new server and reader connection.
    drop_cache(path);
    let server = serve(path, fleet.sites())?;
    let addr = server.addr;
    let (status, body, cold) = http_get(addr, &chart)?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    println!(
        "year chart (one metric of one device, resolution=auto): status {status}, resolution {}, {} points, {} bytes; cold {:.1} ms",
        v["resolution"],
        v["count"],
        body.len(),
        ms(cold)
    );
    let mut warm = Vec::new();
    for _ in 0..o.warm {
        warm.push(http_get(addr, &chart)?.2);
    }
    warm.sort();
    if !warm.is_empty() {
        println!(
            "  warm over {} requests: median {:.1} ms, max {:.1} ms",
            warm.len(),
            ms(warm[warm.len() / 2]),
            ms(warm[warm.len() - 1])
        );
    }
    drop(server);
    // A month of the first site: the second month of the run (or the first, if shorter).
    let month_from = o.start_ms + if o.days >= 61 { 31 * DAY } else { 0 };
    let month_to = (month_from + 30 * DAY).min(o.start_ms + o.days * DAY);
    let site = fleet.sites()[gw].site.clone().unwrap_or_default();
    let site_q: String = site.replace(' ', "%20");
    for res in ["10m", "1h"] {
        drop_cache(path);
        let server = serve(path, fleet.sites())?;
        let addr = server.addr;
        let url = format!(
            "/api/v1/export.csv?site={site_q}&from={month_from}&to={month_to}&resolution={res}"
        );
        let (status, body, cold) = http_get(addr, &url)?;
        let rows = body
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            .saturating_sub(1);
        let mut warm = Vec::new();
        for _ in 0..3 {
            warm.push(http_get(addr, &url)?.2);
        }
        warm.sort();
        println!(
            "month CSV export of `{site}` ({} monitors, {:.0} days) at {res}: status {status}, {rows} rows, {:.1} MB; cold {:.0} ms, warm median of 3 {:.0} ms",
            devices.len(),
            (month_to - month_from) as f64 / DAY as f64,
            body.len() as f64 / 1e6,
            ms(cold),
            ms(warm[1])
        );
        if status != 200 {
            println!("  {}", String::from_utf8_lossy(&body));
        }
        drop(server);
    }
    Ok(())
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|k| k / 1024.0)
        .unwrap_or(0.0)
}

fn report(r: &RunResult) {
    let total = (r.db + r.wal) as f64;
    println!(
        "  => {} items ({} metric-minutes) in {:.0} s: {:.0} items/s, {:.0} metric-minutes/s; disk {:.1} MB (db {:.1} + wal/shm {:.1}); {:.3} MB per monitor-day, {:.1} MB per monitor-year (× 365)",
        r.items,
        r.metric_minutes,
        r.secs,
        r.items as f64 / r.secs,
        r.metric_minutes as f64 / r.secs,
        total / 1e6,
        r.db as f64 / 1e6,
        r.wal as f64 / 1e6,
        total / 1e6 / r.monitors as f64 / r.days,
        total / 1e6 / r.monitors as f64 / r.days * 365.0,
    );
}

fn fresh(path: &Path) {
    for s in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{s}", path.display()));
    }
}

fn main() -> anyhow::Result<()> {
    let o = parse_args()?;
    std::fs::create_dir_all(&o.dir)?;
    println!(
        "year_bench: synchronous {:?}, retention {}, {} episodes per monitor-month, store under {}",
        o.synchronous,
        if o.retention {
            format!("{:?} swept every simulated day", Retention::default())
        } else {
            "none".into()
        },
        o.episodes,
        o.dir.display()
    );
    let year = Fleet::new("y", o.monitors, o.per_gateway);
    let year_path = o.dir.join("year.sqlite3");
    fresh(&year_path);
    let r = drive(&o, &year, &year_path, o.days, o.throughput_minutes)?;
    report(&r);
    let (page, count, free) = pages(&year_path)?;
    println!(
        "  pages {count} of {page} B, {free} free; rows: {}",
        table_rows(&year_path)
    );
    let tb = table_bytes(&year_path);
    if !tb.is_empty() {
        println!("  bytes by table/index: {tb}");
    }
    if o.throughput_minutes > 0 {
        println!("peak RSS {:.1} MiB", peak_rss_mib());
        return Ok(());
    }
    if o.district > 0 && o.district_days > 0.0 {
        let district = Fleet::new("d", o.district, o.per_gateway);
        let path = o.dir.join("district.sqlite3");
        fresh(&path);
        let minutes = (o.district_days * 1440.0).round() as i64;
        let r = drive(&o, &district, &path, (minutes + 1439) / 1440, minutes)?;
        report(&r);
        println!("  rows: {}", table_rows(&path));
        if !o.keep {
            fresh(&path);
        }
    }
    query_timings(&o, &year, &year_path)?;
    println!("peak RSS {:.1} MiB", peak_rss_mib());
    if !o.keep {
        fresh(&year_path);
    }
    Ok(())
}
