//! `run`: config → parts (outbox, sources, rules sink, uplink, telemetry) → start, and the
//! ordered stop. Wiring only: every stage lives in its own module.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::reading::Reading;
use fumegrid_common::runtime;
use fumegrid_common::wire::{Body, Event, EventKind};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::LogFormat;
use crate::config::{GatewayConfig, Transport};
use crate::decode::DeviceDecoder;
use crate::outbox::{Outbox, OutboxConfig, SledOutbox};
use crate::rules::sink::{self, Sink};
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
    let cfg = match runtime::logging_then_config(args.log_format, &args.log, || {
        GatewayConfig::load(&args.config)
    }) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let outbox_cfg = OutboxConfig {
        max_bytes: cfg.outbox.max_bytes,
        flush_interval_ms: cfg.outbox.flush_interval_ms,
        evidence_max_bytes: cfg.outbox.evidence_max_bytes,
    };
    // The one clock of this process: every part reads time through it.
    let clock = Clock::system();
    let (outbox, check) = match SledOutbox::open_with_clock(&cfg.outbox.path, outbox_cfg, &clock) {
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
    let stats = rt.block_on(serve(cfg, outbox, check, &args, clock));
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
    clock: Clock,
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
    // Bumped by every poll (answered or not), every turn of a drone connection's loop (4 a
    // second, drones flying or not) and every ack: what the watchdog checks. Every source
    // counts as alive while its loop runs, not only while data arrives.
    let progress = Arc::new(AtomicU64::new(0));
    let started = Event {
        ts_ms: clock.now_ms(),
        kind: EventKind::Started,
        message: format!("fumegrid-gateway {} started", env!("CARGO_PKG_VERSION")),
        dropped: None,
        from_ms: None,
        to_ms: None,
    };
    if let Ok(mut o) = outbox.lock() {
        let mut first = vec![Body::Event(started)];
        let previous = sink::previous_unstored(&cfg.outbox.path, clock.now_ms());
        first.extend(previous.clone());
        match o.append(first, clock.now_ms()) {
            Ok(_) if previous.is_some() => {
                let _ = std::fs::remove_file(cfg.outbox.path.join(sink::UNSTORED_FILE));
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
    let (tx, rx) = mpsc::channel::<Vec<Reading>>(256);
    let start = clock.tokio_instant();
    let stats_every = Duration::from_secs(args.stats_interval.max(1));
    let g = &cfg.gateway;
    info!(
        gateway = g.id,
        site = g.site,
        devices = cfg.devices.len(),
        drones = cfg.drones.len(),
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
                let link = RtuLink::new(bus.path.clone(), bus.line, guard, clock.clone());
                tasks.push(tokio::spawn(run_channel(
                    link,
                    slots,
                    tx,
                    cancel,
                    stats_every,
                    clock.clone(),
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
                    clock.clone(),
                )));
            }
        }
    }
    drop(tx);

    // Drones: one task per MAVLink connection, its drones told apart by system id. They append
    // to the outbox themselves (tracks, photos, link events) and stop with the other sources.
    let mut by_connection: BTreeMap<_, Vec<_>> = BTreeMap::new();
    for d in &cfg.drones {
        by_connection
            .entry(d.connection.clone())
            .or_default()
            .push(d.clone());
    }
    let drone_tasks: Vec<_> = by_connection
        .into_iter()
        .map(|(connection, drones)| {
            tokio::spawn(crate::source::mavlink::port::run(
                connection,
                drones,
                g.site.clone(),
                outbox.clone(),
                appended.clone(),
                progress.clone(),
                clock.clone(),
                cancel.clone(),
            ))
        })
        .collect();

    // The evidence pipeline, when cameras are configured; the sink and the uplink feed it.
    let evidence = if cfg.cameras.is_empty() {
        None
    } else {
        let (handle, rx, latest) = crate::evidence::channel();
        let cams = cfg
            .cameras
            .iter()
            .map(|spec| crate::evidence::Cam {
                rules: camera_rules(spec, &cfg.devices),
                max_bytes: spec.max_bytes,
                timeout: Duration::from_millis(spec.timeout_ms),
                camera: crate::source::camera::open(spec, clock.clone()),
            })
            .collect();
        let pipeline = crate::evidence::Pipeline::new(
            outbox.clone(),
            appended.clone(),
            clock.clone(),
            g.site.clone(),
            cams,
            latest,
        );
        info!(cameras = cfg.cameras.len(), "evidence pipeline starting");
        Some((handle, (pipeline, rx)))
    };
    let evidence_cancel = CancellationToken::new();
    let (evidence, evidence_task) = match evidence {
        Some((handle, (pipeline, rx))) => (
            Some(handle),
            Some(tokio::spawn(pipeline.run(rx, evidence_cancel.clone()))),
        ),
        None => (None, None),
    };

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
                batch_max_bytes: s.batch_max_bytes,
                max_live_inflight: 4,
                // Two picture batches (up to 2 × 256 KiB) unacked at a time: a slow 4G link
                // carries them at its own pace while readings flow beside them.
                max_evidence_inflight: 2,
                max_backlog_inflight: 4,
                backlog_items_per_s: s.backlog_items_per_s,
                ack_timeout: Duration::from_secs(s.ack_timeout_s),
            },
            // rumqttc's default is 10 KiB each way; a batch may be `batch_max_bytes` plus the
            // PUBLISH header and topic (docs/wire.md).
            max_packet_bytes: (s.batch_max_bytes + 64 * 1024).max(1 << 20),
            flush_interval: Duration::from_millis(cfg.outbox.flush_interval_ms),
            check,
            drain: Duration::from_secs(2),
            evidence: evidence.clone(),
            compress: s.compress,
        };
        tokio::spawn(uplink::run(
            ucfg,
            clock.clone(),
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

    let devices = cfg.devices.iter().map(|d| (d.id.clone(), d.rules.clone()));
    let mut sink = Sink::new(
        outbox.clone(),
        cfg.outbox.path.clone(),
        devices,
        appended.clone(),
        progress.clone(),
        clock.clone(),
    );
    sink = sink.with_report(
        cfg.devices
            .iter()
            .map(|d| (d.id.clone(), d.report.clone(), d.poll_interval_ms)),
    );
    if let Some(handle) = evidence {
        sink = sink.with_evidence(handle);
    }
    let sink = tokio::spawn(sink.run(rx));
    runtime::notify_ready();
    // Fed only while something progresses (a poll came, a drone connection's loop turned, an
    // ack arrived) and the outbox does not fail the uplink.
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
    for t in drone_tasks {
        if let Err(e) = t.await {
            error!(error = %e, "a drone task failed");
        }
    }
    let _ = sink.await;
    // Captures still running are abandoned (logged); what they would add comes after the
    // alarms, which are all in the outbox now.
    evidence_cancel.cancel();
    if let Some(t) = evidence_task {
        let _ = t.await;
    }
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
                payload_bytes = u.payload_bytes,
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

/// The plan's view of the cameras of a config: rules from the spec and the bound devices'
/// opening hours.
fn camera_rules(
    spec: &crate::source::camera::CameraSpec,
    devices: &[crate::config::Device],
) -> crate::evidence::plan::CameraRules {
    let hours = spec
        .devices
        .iter()
        .filter_map(|id| devices.iter().find(|d| &d.id == id))
        .map(|d| (d.rules.opening_hours.clone(), d.rules.utc_offset_minutes))
        .collect();
    crate::evidence::plan::CameraRules {
        id: spec.id.clone(),
        devices: spec.devices.clone(),
        update_every: std::time::Duration::from_secs(spec.update_every_s),
        schedule_every: spec.schedule_every_s.map(std::time::Duration::from_secs),
        hours,
    }
}
