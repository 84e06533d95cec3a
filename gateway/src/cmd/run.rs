use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use fumegrid_common::reading::Reading;
use fumegrid_common::runtime;
use fumegrid_common::wire::{Body, Event, EventKind};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{LogFormat, init_logging, now_ms};
use crate::config::{GatewayConfig, Transport};
use crate::decode::DeviceDecoder;
use crate::outbox::{Outbox, OutboxConfig, SledOutbox};
use crate::rules::DeviceRules;
use crate::source::modbus::breaker::Breaker;
use crate::source::modbus::link::{RtuLink, TcpLink};
use crate::source::modbus::{SlaveStats, Slot, run_channel};
use crate::uplink::{self, SeqCheck, UplinkConfig, plan::PlanConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Gateway config file (see `print-default-config`).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Stop by itself after this many seconds (tests, benchmarks). Default: run until SIGTERM.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Log per-slave counters this often.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub stats_interval: u64,
    /// Write the final per-slave counters as JSON to this file on exit.
    #[arg(long, value_name = "FILE")]
    pub stats_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter: a level, or `target=level` pairs. Readings are logged at INFO under the
    /// target `reading` (`--log info,reading=off` hides them); `poll=debug` adds one line per
    /// poll with all its values, for people watching.
    #[arg(long, value_name = "FILTER", default_value = "info")]
    pub log: String,
}

pub fn run(args: Args) -> ExitCode {
    if let Err(e) = init_logging(args.log_format, &args.log) {
        eprintln!("{e}");
        return ExitCode::from(2);
    }
    let cfg = match GatewayConfig::load(&args.config) {
        Ok(c) => c,
        Err(d) => {
            eprintln!("{d}");
            eprintln!("{} problem(s) found; not starting", d.len());
            return ExitCode::from(2);
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let outbox_cfg = OutboxConfig {
        max_bytes: cfg.outbox.max_bytes,
        flush_interval_ms: cfg.outbox.flush_interval_ms,
    };
    let (outbox, check) = match SledOutbox::open(&cfg.outbox.path, outbox_cfg) {
        Ok((outbox, report)) => {
            if let Some(moved) = &report.moved_aside {
                error!(path = %cfg.outbox.path.display(), moved_to = %moved.display(), reason = report.reason.as_deref().unwrap_or(""), "outbox store was corrupt: moved aside, started a new one");
            }
            let check = SeqCheck {
                recovered_next_seq: report.recovered_next_seq,
                start_next_seq: report.start_next_seq,
            };
            (outbox, check)
        }
        Err(e) => {
            error!(path = %cfg.outbox.path.display(), error = %e, "cannot open the outbox");
            return ExitCode::FAILURE;
        }
    };
    let stats = rt.block_on(serve(cfg, outbox, check, &args));
    if let Some(path) = &args.stats_file {
        let json = serde_json::to_string_pretty(&stats).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            error!(file = %path.display(), error = %e, "cannot write stats file");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

async fn serve<O: Outbox + Send + 'static>(
    cfg: GatewayConfig,
    outbox: O,
    check: SeqCheck,
    args: &Args,
) -> Vec<SlaveStats> {
    // Shutdown in order: sources stop, the sink (rules) drains what they sent and flushes the
    // outbox, then the uplink publishes what is left and waits briefly for its acks.
    // Registered once, at the start, so that no signal falls between the first and the second
    // wait (a signal with a handler installed and nobody listening would be lost).
    let mut signals = runtime::Signals::new();
    let cancel = CancellationToken::new();
    // First, so that the outbox's first append already shows in the depth gauges. A listener
    // that cannot bind does not stop acquisition: it is logged, and the gateway runs unobserved.
    if let Some(listen) = cfg.metrics.listen {
        match crate::telemetry::serve(listen, &cfg.gateway.id) {
            Ok(()) => info!(%listen, "metrics listening"),
            Err(e) => error!(%listen, error = %e, "metrics endpoint not available"),
        }
    }
    let uplink_cancel = CancellationToken::new();
    let health = Arc::new(uplink::Health::default());
    let outbox = Arc::new(Mutex::new(outbox));
    let appended = Arc::new(Notify::new());
    // Bumped by every poll that read something and every ack: what the watchdog checks.
    let progress = Arc::new(AtomicU64::new(0));
    let started = Event {
        ts_ms: now_ms(),
        kind: EventKind::Started,
        message: format!("fumegrid-gateway {} started", env!("CARGO_PKG_VERSION")),
        dropped: None,
        from_ms: None,
        to_ms: None,
    };
    if let Ok(mut o) = outbox.lock() {
        let mut first = vec![Body::Event(started)];
        let previous = previous_unstored(&cfg.outbox.path, now_ms());
        first.extend(previous.clone());
        match o.append(first, now_ms()) {
            Ok(_) if previous.is_some() => {
                let _ = std::fs::remove_file(cfg.outbox.path.join(UNSTORED_FILE));
                error!(
                    "the previous run stopped with items the outbox refused: reported in a gap event"
                );
            }
            Ok(_) => {}
            Err(e) => error!(error = %e, "cannot write to the outbox"),
        }
        let st = o.stats();
        info!(
            stream = o.stream(),
            items = st.items,
            bytes = st.bytes,
            "outbox open"
        );
    }
    let (tx, mut rx) = mpsc::channel::<Vec<Reading>>(256);
    let start = Instant::now();
    let stats_every = Duration::from_secs(args.stats_interval.max(1));
    let g = &cfg.gateway;
    info!(
        gateway = g.id,
        site = g.site,
        devices = cfg.devices.len(),
        "starting"
    );

    let mut by_channel: BTreeMap<Transport, Vec<Slot>> = BTreeMap::new();
    for d in &cfg.devices {
        // A value of a device that stopped answering stays usable (as `stale`) for 3 intervals.
        let stale_after = 3 * d.poll_interval_ms as i64;
        let decoder = DeviceDecoder::new(d.id.clone(), d.profile.clone(), stale_after);
        let breaker = Breaker::new(
            g.breaker_failures,
            Duration::from_millis(g.probe_interval_ms),
        );
        let slot = Slot::new(
            &d.id,
            d.slave,
            decoder,
            breaker,
            Duration::from_millis(d.poll_interval_ms),
            start,
        );
        by_channel
            .entry(d.transport.clone())
            .or_default()
            .push(slot);
    }
    let mut tasks = Vec::new();
    for (transport, slots) in by_channel {
        let (tx, cancel) = (tx.clone(), cancel.clone());
        match transport {
            Transport::Rtu(b) => {
                let bus = &cfg.buses[b];
                let guard = bus.guard_ms.map(Duration::from_millis);
                let link = RtuLink::new(bus.path.clone(), bus.line, guard);
                tasks.push(tokio::spawn(run_channel(
                    link,
                    slots,
                    tx,
                    cancel,
                    stats_every,
                    now_ms,
                )));
            }
            Transport::Tcp(addr) => {
                let link = TcpLink::new(addr);
                tasks.push(tokio::spawn(run_channel(
                    link,
                    slots,
                    tx,
                    cancel,
                    stats_every,
                    now_ms,
                )));
            }
        }
    }
    drop(tx);

    let uplink_task = cfg.uplink.as_ref().map(|u| {
        let s = &u.section;
        let ucfg = UplinkConfig {
            gateway: g.id.clone(),
            host: s.host.clone(),
            port: s.port,
            client_id: s.client_id.clone().unwrap_or_else(|| g.id.clone()),
            username: s.username.clone(),
            password: u.password.clone(),
            tls_ca: s.tls_ca_file.clone(),
            keep_alive: Duration::from_secs(s.keep_alive_s),
            key: u.key.clone(),
            plan: PlanConfig {
                batch_max_items: s.batch_max_items,
                max_live_inflight: 4,
                max_backlog_inflight: 4,
                backlog_items_per_s: s.backlog_items_per_s,
                ack_timeout: Duration::from_secs(s.ack_timeout_s),
            },
            max_packet_bytes: 4 << 20,
            flush_interval: Duration::from_millis(cfg.outbox.flush_interval_ms),
            check,
            drain: Duration::from_secs(2),
        };
        tokio::spawn(uplink::run(
            ucfg,
            outbox.clone(),
            appended.clone(),
            uplink_cancel.clone(),
            progress.clone(),
            health.clone(),
        ))
    });
    if uplink_task.is_none() {
        tracing::warn!("no [uplink] in the config: readings are kept in the outbox only");
    }

    let sink_outbox = outbox.clone();
    let sink_progress = progress.clone();
    let sink_appended = appended.clone();
    let mut rules = load_rules(&cfg, &outbox);
    let outbox_path = cfg.outbox.path.clone();
    let sink = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_save = tokio::time::Instant::now();
        let mut unstored = Unstored::default();
        loop {
            // Everything that is waiting goes into one append: under a burst (many devices
            // judged in the same second) one flush covers all their alarms instead of one each.
            let mut polls: Vec<Vec<Reading>> = Vec::new();
            let mut ticked = false;
            tokio::select! {
                polled = rx.recv() => match polled {
                    Some(p) => polls.push(p),
                    None => break,
                },
                _ = tick.tick() => ticked = true,
            }
            while polls.len() < 256 {
                match rx.try_recv() {
                    Ok(p) => polls.push(p),
                    Err(_) => break,
                }
            }
            let now = now_ms();
            let mut alarms = Vec::new();
            let mut readings_out = Vec::new();
            let mut changed: Vec<String> = Vec::new();
            for readings in polls {
                if readings
                    .iter()
                    .any(|r| r.quality == fumegrid_common::reading::Quality::Ok)
                {
                    sink_progress.fetch_add(1, Ordering::Relaxed);
                }
                log_poll(&readings);
                if let Some(dr) = readings.first().and_then(|r| rules.get_mut(&r.device)) {
                    let a = dr.on_poll(&readings, now);
                    if !a.is_empty() {
                        changed.push(dr.device().to_string());
                    }
                    alarms.extend(a);
                }
                readings_out.extend(readings.into_iter().map(Body::Reading));
            }
            if ticked {
                for dr in rules.values_mut() {
                    let a = dr.on_tick(now);
                    if !a.is_empty() {
                        changed.push(dr.device().to_string());
                    }
                    alarms.extend(a);
                }
            }
            for a in &alarms {
                log_alarm(a);
            }
            let periodic = last_save.elapsed() >= Duration::from_secs(30);
            let Ok(mut o) = sink_outbox.lock() else {
                error!("outbox lock poisoned: items lost");
                continue;
            };
            // Saved before the alarms themselves, and made durable by the same flush: after a
            // crash the state knows the episode (no second raise) and the alarm item is there.
            let to_save: Vec<&String> = if periodic {
                rules.keys().collect()
            } else {
                changed.iter().collect()
            };
            for device in to_save {
                if let Some(dr) = rules.get(device)
                    && let Err(e) = o.put_state(&format!("rules/{device}"), &dr.save())
                {
                    error!(device, error = %e, "cannot save alarm-rule state");
                }
            }
            if periodic {
                last_save = tokio::time::Instant::now();
            }
            let mut bodies: Vec<Body> = alarms.into_iter().map(Body::Alarm).collect();
            bodies.extend(readings_out);
            let gap = unstored.gap_event(now);
            if bodies.is_empty() && gap.is_none() {
                if periodic {
                    let _ = o.flush();
                }
                continue;
            }
            let taken = bodies.clone();
            bodies.splice(0..0, gap);
            match o.append(bodies, now_ms()) {
                Ok(_) => {
                    unstored.recorded();
                    sink_appended.notify_one();
                }
                Err(e) => unstored.lost(&taken, &e),
            }
        }
        // Rule state as of the stop, so a restart continues every episode. Items appended but
        // never flushed die with the process when that flush fails too: counted.
        if let Ok(mut o) = sink_outbox.lock() {
            for (device, dr) in &rules {
                let _ = o.put_state(&format!("rules/{device}"), &dr.save());
            }
            if o.flush().is_err() {
                unstored.unflushed(o.undurable());
            }
        }
        // Stopping on a full disk: the gap event must not die with the process. The outbox's
        // reserve is given up for it if need be (an extra gap event after a failed flush
        // over-reports, never hides).
        if let Some(gap) = unstored.gap_event(now_ms())
            && let Ok(mut o) = sink_outbox.lock()
        {
            let mut stored = o.append(vec![gap.clone()], now_ms()).is_ok();
            if !stored && crate::outbox::release_reserve(&outbox_path) {
                stored = o.append(vec![gap], now_ms()).is_ok();
            }
            if stored {
                unstored.recorded();
            } else {
                // sled stays failed after ENOSPC within a process: leave the count in a small
                // file for the next start, which turns it into the gap event.
                let line = unstored.to_line();
                match std::fs::write(outbox_path.join(UNSTORED_FILE), &line) {
                    Ok(()) => error!(
                        items = unstored.count(),
                        "stopping with items the outbox refused: counted in {UNSTORED_FILE} for a gap event at the next start"
                    ),
                    Err(e) => error!(
                        items = unstored.count(),
                        error = %e,
                        "stopping with items the outbox refused and no way to record their gap event"
                    ),
                }
            }
        }
    });
    runtime::notify_ready();
    // Fed only while something progresses (a poll read something, an ack arrived) and the
    // outbox does not fail the uplink.
    let watchdog = tokio::spawn(runtime::watchdog(
        crate::uplink::watchdog_check(progress.clone(), health.clone()),
        cancel.clone(),
    ));

    let stop = cancel.clone();
    let duration = args.duration;
    let last_words = outbox.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = runtime::deadline(duration) => info!("duration reached"),
            s = signals.recv() => info!(signal = s, "stopping: draining sources, rules, outbox, uplink"),
        }
        runtime::notify_stopping();
        stop.cancel();
        // A second signal ends the process at once; the outbox keeps what it has flushed
        // (readings of the last flush interval may be lost, as with kill -9).
        let s = signals.recv().await;
        error!(signal = s, "second signal: exiting now without draining");
        if let Ok(mut o) = last_words.try_lock() {
            let _ = o.flush();
        }
        std::process::exit(1);
    });

    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(stats) => all.extend(stats),
            Err(e) => error!(error = %e, "a polling task failed"),
        }
    }
    let _ = sink.await;
    if let Ok(mut o) = outbox.lock()
        && let Err(e) = o.flush()
    {
        error!(error = %e, "outbox flush at shutdown failed");
    }
    uplink_cancel.cancel();
    if let Some(t) = uplink_task {
        match t.await {
            Ok(u) => info!(
                batches_sent = u.batches_sent,
                items_sent = u.items_sent,
                items_acked = u.items_acked,
                acks_refused = u.acks_refused,
                ack_timeouts = u.ack_timeouts,
                outbox_errors = u.outbox_errors,
                "uplink stopped"
            ),
            Err(e) => error!(error = %e, "uplink task failed"),
        }
    }
    watchdog.abort();
    if let Ok(mut o) = outbox.lock() {
        if let Err(e) = o.flush() {
            error!(error = %e, "outbox flush at shutdown failed");
        }
        let st = o.stats();
        info!(items = st.items, bytes = st.bytes, "outbox flushed");
    }
    for s in &all {
        info!(
            slave = s.slave,
            device = s.device,
            polls = s.polls,
            polls_ok = s.polls_ok,
            no_reply = s.no_reply,
            garbled = s.garbled,
            exceptions = s.exceptions,
            io_errors = s.io_errors,
            breaker_trips = s.breaker_trips,
            requests = s.requests,
            overruns = s.overruns,
            "final slave stats"
        );
    }
    all
}

/// Beside the outbox's files: what a run that stopped on a full disk could not store (see
/// [`Unstored::to_line`]); the next start turns it into a gap event.
const UNSTORED_FILE: &str = "unstored";

/// A gap event for what the previous run could not store, from [`UNSTORED_FILE`].
fn previous_unstored(dir: &std::path::Path, now: i64) -> Option<Body> {
    let text = std::fs::read_to_string(dir.join(UNSTORED_FILE)).ok()?;
    let n: Vec<i64> = text
        .split_ascii_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect();
    let (readings, priority) = (*n.first()? as u64, *n.get(1)? as u64);
    let u = Unstored {
        readings,
        priority,
        from_ms: n.get(2).copied(),
        to_ms: n.get(3).copied(),
        error: Some("the previous run stopped on a full disk".into()),
    };
    u.gap_event(now)
}

/// Items the outbox refused (a full disk, a failing store): counted, logged once per streak,
/// and reported with one `gap` event ahead of the next append that works.
#[derive(Debug, Default)]
struct Unstored {
    readings: u64,
    priority: u64,
    from_ms: Option<i64>,
    to_ms: Option<i64>,
    error: Option<String>,
}

impl Unstored {
    fn count(&self) -> u64 {
        self.readings + self.priority
    }

    fn lost(&mut self, bodies: &[Body], e: &crate::outbox::OutboxError) {
        if self.error.is_none() {
            error!(error = %e, "items lost: cannot append to the outbox; counting them for a gap event (logged once per streak)");
            self.error = Some(e.to_string());
        }
        metrics::counter!(crate::telemetry::OUTBOX_REFUSED).increment(bodies.len() as u64);
        for b in bodies {
            let ts = match b {
                Body::Reading(r) => r.ts_ms,
                Body::Alarm(a) => a.ts_ms,
                Body::Event(ev) => ev.ts_ms,
            };
            if b.is_priority() {
                self.priority += 1;
            } else {
                self.readings += 1;
            }
            self.from_ms = Some(self.from_ms.map_or(ts, |f| f.min(ts)));
            self.to_ms = Some(self.to_ms.map_or(ts, |t| t.max(ts)));
        }
    }

    /// The gap event for what is counted so far, if anything.
    fn gap_event(&self, now: i64) -> Option<Body> {
        (self.count() > 0).then(|| {
            Body::Event(Event {
                ts_ms: now,
                kind: EventKind::Gap,
                message: format!(
                    "outbox refused {} readings and {} priority items ({})",
                    self.readings,
                    self.priority,
                    self.error.as_deref().unwrap_or("")
                ),
                dropped: Some(self.count()),
                from_ms: self.from_ms,
                to_ms: self.to_ms,
            })
        })
    }

    /// `n` items the outbox took but could not make durable (their class is not known: counted
    /// with the readings, which they almost always are).
    fn unflushed(&mut self, n: u64) {
        if n > 0 {
            error!(
                items = n,
                "items appended but never flushed are lost with this stop; counting them for the gap event"
            );
            self.readings += n;
            self.error.get_or_insert_with(|| "flush failed".into());
        }
    }

    /// `readings priority from_ms to_ms` as text, for [`UNSTORED_FILE`].
    fn to_line(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.readings,
            self.priority,
            self.from_ms.unwrap_or(0),
            self.to_ms.unwrap_or(0)
        )
    }

    /// The last append (with the gap event) worked.
    fn recorded(&mut self) {
        if self.count() > 0 {
            info!(
                readings = self.readings,
                priority = self.priority,
                "outbox takes items again; the loss is reported in a gap event"
            );
        }
        *self = Unstored::default();
    }
}

/// One rule engine per device, continuing from the state saved in the outbox.
fn load_rules<O: Outbox>(
    cfg: &GatewayConfig,
    outbox: &Arc<Mutex<O>>,
) -> std::collections::HashMap<String, DeviceRules> {
    let Ok(o) = outbox.lock() else {
        return Default::default();
    };
    cfg.devices
        .iter()
        .map(|d| {
            let saved = o.get_state(&format!("rules/{}", d.id)).ok().flatten();
            let (rules, err) = DeviceRules::restore_or_new(&d.id, d.rules.clone(), saved.as_deref());
            if let Some(e) = err {
                tracing::warn!(device = d.id, error = %e, "alarm-rule state not usable; starting fresh");
            }
            let open = rules.open_episodes().len();
            if open > 0 {
                info!(device = d.id, open, "continuing open alarm episodes");
            }
            (d.id.clone(), rules)
        })
        .collect()
}

fn log_poll(readings: &[Reading]) {
    if tracing::enabled!(target: "poll", tracing::Level::DEBUG)
        && let Some(first) = readings.first()
    {
        // One line per poll for people watching (the demo): `fume_mg_m3=0.52 fan_on=1 ...`.
        let values: Vec<String> = readings
            .iter()
            .map(|r| match (r.value, r.quality) {
                (Some(v), fumegrid_common::reading::Quality::Ok) => {
                    format!("{}={v}", r.metric.name())
                }
                (Some(v), q) => format!("{}={v}({q})", r.metric.name()),
                (None, q) => format!("{}=({q})", r.metric.name()),
            })
            .collect();
        tracing::debug!(target: "poll", device = first.device, "{}", values.join(" "));
    }
    for r in readings {
        let unit = r.unit.as_deref().unwrap_or(r.metric.unit());
        info!(target: "reading", device = r.device, metric = r.metric.name(), value = r.value, unit, quality = r.quality.name(), ts_ms = r.ts_ms);
    }
}

/// Counts and logs one alarm transition.
fn log_alarm(a: &fumegrid_common::wire::Alarm) {
    use fumegrid_common::wire::AlarmPhase;
    let phase = match a.phase {
        AlarmPhase::Raised => "raised",
        AlarmPhase::Updated => "updated",
        AlarmPhase::Cleared => "cleared",
    };
    metrics::counter!(crate::telemetry::RULES_ALARMS, "device" => a.device.clone(), "kind" => a.kind.name(), "phase" => phase)
        .increment(1);
    let metric = a.metric.as_ref().map_or("", |m| m.name());
    match a.phase {
        AlarmPhase::Raised => {
            tracing::warn!(target: "alarm", id = a.id, device = a.device, kind = a.kind.name(), metric, value = a.value, limit = a.limit, suppressed = a.suppressed, "alarm raised: {}", a.message)
        }
        AlarmPhase::Updated => {
            info!(target: "alarm", id = a.id, device = a.device, kind = a.kind.name(), metric, value = a.value, peak = a.peak, "alarm updated")
        }
        AlarmPhase::Cleared => {
            info!(target: "alarm", id = a.id, device = a.device, kind = a.kind.name(), metric, peak = a.peak, started_ms = a.started_ms, cleared_ms = a.cleared_ms, "alarm cleared")
        }
    }
}
