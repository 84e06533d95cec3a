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
use crate::uplink::{self, UplinkConfig, plan::PlanConfig};

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
    let outbox = match SledOutbox::open(&cfg.outbox.path, outbox_cfg) {
        Ok((outbox, report)) => {
            if let Some(moved) = &report.moved_aside {
                error!(path = %cfg.outbox.path.display(), moved_to = %moved.display(), reason = report.reason.as_deref().unwrap_or(""), "outbox store was corrupt: moved aside, started a new one");
            }
            outbox
        }
        Err(e) => {
            error!(path = %cfg.outbox.path.display(), error = %e, "cannot open the outbox");
            return ExitCode::FAILURE;
        }
    };
    let stats = rt.block_on(serve(cfg, outbox, &args));
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
    args: &Args,
) -> Vec<SlaveStats> {
    let cancel = CancellationToken::new();
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
        if let Err(e) = o.append(vec![Body::Event(started)], now_ms()) {
            error!(error = %e, "cannot write to the outbox");
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
        };
        tokio::spawn(uplink::run(
            ucfg,
            outbox.clone(),
            appended.clone(),
            cancel.clone(),
            progress.clone(),
        ))
    });
    if uplink_task.is_none() {
        tracing::warn!("no [uplink] in the config: readings are kept in the outbox only");
    }

    let sink_outbox = outbox.clone();
    let sink_progress = progress.clone();
    let sink_appended = appended.clone();
    let mut rules = load_rules(&cfg, &outbox);
    let sink = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_save = tokio::time::Instant::now();
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
            if bodies.is_empty() {
                if periodic {
                    let _ = o.flush();
                }
                continue;
            }
            match o.append(bodies, now_ms()) {
                Ok(_) => sink_appended.notify_one(),
                Err(e) => error!(error = %e, "items lost: cannot append to the outbox"),
            }
        }
        // Rule state as of the stop, so a restart continues every episode.
        if let Ok(mut o) = sink_outbox.lock() {
            for (device, dr) in &rules {
                let _ = o.put_state(&format!("rules/{device}"), &dr.save());
            }
            let _ = o.flush();
        }
    });
    runtime::notify_ready();
    let watchdog = tokio::spawn(runtime::watchdog(
        runtime::progressed(progress.clone()),
        cancel.clone(),
    ));

    let stop = cancel.clone();
    let duration = args.duration;
    tokio::spawn(async move {
        tokio::select! {
            _ = runtime::deadline(duration) => info!("duration reached"),
            s = runtime::shutdown_signal() => info!(signal = s, "stopping"),
        }
        runtime::notify_stopping();
        stop.cancel();
    });

    let mut all = Vec::new();
    for t in tasks {
        match t.await {
            Ok(stats) => all.extend(stats),
            Err(e) => error!(error = %e, "a polling task failed"),
        }
    }
    let _ = sink.await;
    if let Some(t) = uplink_task {
        match t.await {
            Ok(u) => info!(
                batches_sent = u.batches_sent,
                items_sent = u.items_sent,
                items_acked = u.items_acked,
                acks_refused = u.acks_refused,
                ack_timeouts = u.ack_timeouts,
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

fn log_alarm(a: &fumegrid_common::wire::Alarm) {
    use fumegrid_common::wire::AlarmPhase;
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
