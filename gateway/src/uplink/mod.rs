//! The MQTT uplink: publishes outbox batches to `fumegrid/v1/{gateway}/up` (QoS 1, sealed with
//! the gateway's key) and deletes items from the outbox only when the aggregator's sealed `ack`
//! says they are stored. `status` is retained and sealed with the same key: `online` (with the
//! time) on every connect, `offline` on a clean stop, and `offline` without a time as the Last
//! Will (sealed once, when the connection options are made).
//!
//! Commands on `fumegrid/v1/{gateway}/cmd` (sealed like acks) are opened here and judged by
//! [`command::judge`] (pure): a snapshot that passes goes to the evidence pipeline, a refusal
//! becomes a `command_refused` event (at most [`REFUSAL_EVENTS_PER_MIN`] a minute; the rest
//! counted and the next event says how many), a bad seal is counted and logged like a bad ack.
//!
//! Two tasks: one drives rumqttc's event loop and forwards what matters (it is never cancelled
//! mid-poll), the other decides what to send ([`plan::Planner`]) and talks to the outbox.
//! Publishing uses `try_publish` with a request channel larger than the in-flight window, so the
//! planner can never block the loop that drains that channel (a known rumqttc deadlock).

pub mod command;
#[cfg(test)]
mod loop_tests;
pub mod plan;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::{
    self, Ack, Batch, Body, Channel, Command, EventKind, Hello, State, Status,
};
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::outbox::Outbox;
use crate::telemetry as m;
use plan::{PlanConfig, Planner};

/// Everything the uplink needs, resolved from the config.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    pub gateway: String,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// CA certificate (PEM) to verify the broker with; TLS is used when set.
    pub tls_ca: Option<PathBuf>,
    pub keep_alive: Duration,
    /// HMAC key shared with the aggregator.
    pub key: Vec<u8>,
    pub plan: PlanConfig,
    pub max_packet_bytes: usize,
    /// How often readings are flushed to disk, and so may be published (see [`plan`]).
    pub flush_interval: Duration,
    /// What the outbox said at open, for the hello (see [`judge`]).
    pub check: SeqCheck,
    /// How long a stop waits for acks of what is in flight (and for the last flush's items).
    pub drain: Duration,
    /// Where accepted snapshot commands go; none: the gateway has no cameras.
    pub evidence: Option<crate::evidence::Handle>,
    /// Batches go gzip-compressed (sealed first; [`wire::compress`]); hellos and statuses
    /// stay plain.
    pub compress: bool,
}

/// `command_refused` events appended per minute at most.
pub const REFUSAL_EVENTS_PER_MIN: u32 = 10;

/// The outbox's numbering as it opened: see [`crate::outbox::OpenReport`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqCheck {
    pub recovered_next_seq: u64,
    pub start_next_seq: u64,
}

/// What the aggregator's answer to the hello means for this run. Pure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The aggregator holds seqs this run would reuse: renumber this run's items (those at
    /// or above `start_next_seq`) to start here.
    pub renumber_to: Option<u64>,
    /// Seqs handed out by an earlier run that neither the outbox nor the aggregator holds
    /// (items lost with the newer outbox, or dropped before and reported by a gap event then).
    pub lost: u64,
    /// The outbox found at open that it had handed out more than it recovered.
    pub torn: bool,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.renumber_to.is_none() && self.lost == 0 && !self.torn
    }
}

/// Judges the hello answer: `high` is the highest seq the aggregator holds of this stream,
/// `held` how many of `recovered_next_seq..=high` it holds.
pub fn judge(check: SeqCheck, high: u64, held: u64) -> Verdict {
    let renumber_to = (high >= check.start_next_seq).then(|| high + 1);
    // Every seq below `handed_out` was handed out by some run; the outbox holds none at or
    // above `recovered_next_seq` from an earlier run.
    let handed_out = check.start_next_seq.max(high.saturating_add(1));
    let span = handed_out.saturating_sub(check.recovered_next_seq);
    Verdict {
        renumber_to,
        lost: span.saturating_sub(held),
        torn: check.start_next_seq > check.recovered_next_seq,
    }
}

/// Counters of the uplink, for the final log line. Its methods are the one place each uplink
/// event is counted, here and in Prometheus (names in [`crate::telemetry`]), and logged.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct UplinkStats {
    pub connects: u64,
    pub batches_sent: u64,
    pub items_sent: u64,
    /// Bytes of the batch payloads published, as on the wire.
    pub payload_bytes: u64,
    pub items_acked: u64,
    pub acks_refused: u64,
    pub ack_timeouts: u64,
    /// Outbox reads, acks, flushes or appends that failed (see [`Health`]).
    pub outbox_errors: u64,
    /// The hello's verdict, once answered.
    #[serde(skip)]
    pub verdict: Option<Verdict>,
    #[serde(skip)]
    refused_log: RefusedLog,
}

/// Shared with the watchdog: set while the outbox fails the uplink, so that a gateway that can
/// neither read nor delete what it must send stops feeding systemd's watchdog.
#[derive(Debug, Default)]
pub struct Health {
    pub outbox_failing: std::sync::atomic::AtomicBool,
}

/// The check the gateway feeds systemd's watchdog by: something progressed since the last call
/// (`progress` moved: a poll came, a drone connection's loop turned, an ack arrived) and the
/// outbox does not fail the uplink. The progress mark moves on every call, so a streak's end
/// needs new progress.
pub fn watchdog_check(
    progress: Arc<std::sync::atomic::AtomicU64>,
    health: Arc<Health>,
) -> impl FnMut() -> bool {
    let mut progressed = fumegrid_common::runtime::progressed(progress);
    move || {
        progressed()
            && !health
                .outbox_failing
                .load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Counts outbox errors, logs the first of a streak at ERROR and its end at INFO, and sets
/// [`Health::outbox_failing`] meanwhile.
#[derive(Debug)]
struct Streak {
    health: Arc<Health>,
    clock: Clock,
    failing_since: Option<(Instant, u64)>,
}

impl Streak {
    fn record<T>(
        &mut self,
        stats: &mut UplinkStats,
        op: &'static str,
        r: Result<T, crate::outbox::OutboxError>,
    ) -> Option<T> {
        match r {
            Ok(v) => {
                if let Some((since, n)) = self.failing_since.take() {
                    info!(
                        errors = n,
                        seconds = self.clock.tokio_instant().duration_since(since).as_secs(),
                        "outbox works again for the uplink"
                    );
                    self.health
                        .outbox_failing
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
                Some(v)
            }
            Err(e) => {
                stats.outbox_errors += 1;
                metrics::counter!(m::UPLINK_OUTBOX_ERRORS, "op" => op).increment(1);
                match &mut self.failing_since {
                    Some((_, n)) => *n += 1,
                    None => {
                        error!(op, error = %e, "outbox fails the uplink: nothing is sent or deleted until it works again (logged once per streak)");
                        self.failing_since = Some((self.clock.tokio_instant(), 1));
                        self.health
                            .outbox_failing
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                None
            }
        }
    }
}

/// At most one WARN per minute for refused acks, with the count in between: a flood of junk
/// on the ack topic must not cost a core in logging.
#[derive(Debug, Default, Clone)]
struct RefusedLog {
    last: Option<Instant>,
    suppressed: u64,
}

impl RefusedLog {
    /// `now` is a parameter so that a test can step over the minute.
    fn refused(&mut self, why: &str, now: Instant) {
        self.refused_what("ack refused", why, now);
    }

    fn refused_what(&mut self, what: &str, why: &str, now: Instant) {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(60))
        {
            self.suppressed += 1;
            return;
        }
        warn!(error = why, suppressed = self.suppressed, "{what}");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

impl UplinkStats {
    fn connected(&mut self, broker: &str) {
        self.connects += 1;
        metrics::counter!(m::UPLINK_CONNECTS).increment(1);
        metrics::gauge!(m::UPLINK_CONNECTED).set(1.0);
        info!(broker, "uplink connected");
    }

    /// The connection is gone; logged once per outage (`was_connected`).
    fn disconnected(&mut self, was_connected: bool, error: &str) {
        metrics::gauge!(m::UPLINK_CONNECTED).set(0.0);
        if was_connected {
            warn!(error, "uplink lost; items stay in the outbox");
        }
    }

    fn sent(&mut self, items: u64, bytes: u64) {
        self.batches_sent += 1;
        self.items_sent += items;
        self.payload_bytes += bytes;
        metrics::counter!(m::UPLINK_BATCHES_SENT).increment(1);
        metrics::counter!(m::UPLINK_ITEMS_SENT).increment(items);
        metrics::counter!(m::UPLINK_PAYLOAD_BYTES).increment(bytes);
    }

    fn acked(&mut self, removed: u64) {
        self.items_acked += removed;
        metrics::counter!(m::UPLINK_ITEMS_ACKED).increment(removed);
    }

    /// An ack not applied: `other_stream` (an older stream's, DEBUG: expected after a reset)
    /// or `bad_seal` (WARN).
    fn ack_refused(&mut self, reason: &'static str, detail: &dyn std::fmt::Display, now: Instant) {
        self.acks_refused += 1;
        metrics::counter!(m::UPLINK_ACKS_REFUSED, "reason" => reason).increment(1);
        if reason == "other_stream" {
            debug!(stream = %detail, "ack for another stream ignored");
        } else {
            self.refused_log.refused(&detail.to_string(), now);
        }
    }

    /// The planner's timeout total (it is pure and only counts): what is new is counted and
    /// logged here.
    fn ack_timeouts(&mut self, total: u64, ack_timeout: Duration) {
        if total > self.ack_timeouts {
            let new = total - self.ack_timeouts;
            self.ack_timeouts = total;
            metrics::counter!(m::UPLINK_ACK_TIMEOUTS).increment(new);
            warn!(
                ack_timeout_s = ack_timeout.as_secs(),
                "batches not acked in time; sending what was in flight again"
            );
        }
    }
}

enum Incoming {
    Connected,
    Disconnected(String),
    Ack(Vec<u8>),
    Cmd(Vec<u8>),
}

/// Commands: executed ids (durable), and the rate limit of refusal events.
#[derive(Debug)]
struct Commands {
    executed: command::Executed,
    refused_log: RefusedLog,
    window: Option<Instant>,
    in_window: u32,
    unreported: u64,
}

impl Commands {
    fn load<O: Outbox>(outbox: &Arc<Mutex<O>>) -> Commands {
        let saved = outbox
            .lock()
            .ok()
            .and_then(|o| o.get_state(command::STATE_KEY).ok().flatten());
        let (executed, err) = command::Executed::load(saved.as_deref());
        if let Some(e) = err {
            warn!(error = %e, "executed-command memory unreadable; starting empty");
        }
        Commands {
            executed,
            refused_log: RefusedLog::default(),
            window: None,
            in_window: 0,
            unreported: 0,
        }
    }

    /// Whether a refusal may become an event now (counted when not).
    fn may_report(&mut self, now: Instant) -> bool {
        if self
            .window
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
        {
            self.window = Some(now);
            self.in_window = 0;
        }
        self.in_window += 1;
        if self.in_window > REFUSAL_EVENTS_PER_MIN {
            self.unreported += 1;
            return false;
        }
        true
    }
}

/// Runs the uplink until `cancel`, then drains: flushes, publishes what is durable and waits up
/// to `drain` for the acks of what is in flight. `appended` is notified whenever the outbox got
/// new items.
///
/// Nothing is published before the aggregator has answered this run's [`Hello`]: until then the
/// gateway cannot know whether its outbox came back older than what it had delivered.
pub async fn run<O: Outbox + Send + 'static>(
    cfg: UplinkConfig,
    clock: Clock,
    outbox: Arc<Mutex<O>>,
    appended: Arc<Notify>,
    cancel: CancellationToken,
    progress: Arc<std::sync::atomic::AtomicU64>,
    health: Arc<Health>,
) -> UplinkStats {
    let status_topic = wire::topic(&cfg.gateway, Channel::Status);
    let ack_topic = wire::topic(&cfg.gateway, Channel::Ack);
    let cmd_topic = wire::topic(&cfg.gateway, Channel::Cmd);
    let (client, eventloop) = match connect_options(&cfg, &status_topic) {
        Ok(opts) => AsyncClient::new(opts, 64),
        Err(e) => {
            warn!(error = %e, "uplink disabled: cannot set up the MQTT connection");
            cancel.cancelled().await;
            return UplinkStats::default();
        }
    };
    let (tx, rx) = mpsc::channel(256);
    let stop_poller = CancellationToken::new();
    let poller = tokio::spawn(drive(
        eventloop,
        tx,
        ack_topic,
        cmd_topic,
        stop_poller.clone(),
    ));
    let stats = serve(
        cfg, clock, &client, rx, outbox, appended, cancel, progress, health,
    )
    .await;
    stop_poller.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), poller).await;
    stats
}

/// What the uplink needs of an MQTT client (QoS 1 throughout): the seam between the uplink's
/// loop and rumqttc, so that tests can drive the loop in paused time with a fake client. None
/// of these may block: rumqttc's `try_*` only queue the request for the event loop.
pub trait Mqtt {
    fn subscribe(&self, topic: &str);
    /// Queues a publish; an error means the request queue is full.
    fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> Result<(), String>;
    fn disconnect(&self);
}

impl Mqtt for AsyncClient {
    fn subscribe(&self, topic: &str) {
        let _ = self.try_subscribe(topic, QoS::AtLeastOnce);
    }
    fn publish(&self, topic: &str, retain: bool, payload: Vec<u8>) -> Result<(), String> {
        self.try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| e.to_string())
    }
    fn disconnect(&self) {
        let _ = self.try_disconnect();
    }
}

/// The uplink's loop over what the connection reports (`incoming`), publishing through
/// `client`; see [`run`].
#[allow(clippy::too_many_arguments)] // run's arguments plus the two ends of the MQTT seam
async fn serve<O: Outbox + Send + 'static>(
    cfg: UplinkConfig,
    clock: Clock,
    client: &impl Mqtt,
    mut rx: mpsc::Receiver<Incoming>,
    outbox: Arc<Mutex<O>>,
    appended: Arc<Notify>,
    cancel: CancellationToken,
    progress: Arc<std::sync::atomic::AtomicU64>,
    health: Arc<Health>,
) -> UplinkStats {
    let status_topic = wire::topic(&cfg.gateway, Channel::Status);
    let up_topic = wire::topic(&cfg.gateway, Channel::Up);
    let ack_topic = wire::topic(&cfg.gateway, Channel::Ack);
    let cmd_topic = wire::topic(&cfg.gateway, Channel::Cmd);
    let mut stats = UplinkStats::default();
    let mut commands = Commands::load(&outbox);
    metrics::gauge!(m::UPLINK_CONNECTED).set(0.0);
    let mut streak = Streak {
        health,
        clock: clock.clone(),
        failing_since: None,
    };
    let next_seq = |o: &Arc<Mutex<O>>| o.lock().map(|o| o.stats().next_seq).unwrap_or(0);
    let mut planner = Planner::new(cfg.plan.clone(), next_seq(&outbox), clock.tokio_instant());
    let mut connected = false;
    let mut checked = false;
    let mut hello_sent: Option<Instant> = None;
    // Everything already in the outbox when we start was read from disk.
    // With a flush interval of 0 the outbox flushes every append: everything is durable.
    let flushing = !cfg.flush_interval.is_zero();
    let mut durable_upto = if flushing {
        next_seq(&outbox).saturating_sub(1)
    } else {
        u64::MAX
    };
    let mut flush = tokio::time::interval(cfg.flush_interval.max(Duration::from_millis(1)));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining: Option<Instant> = None;
    loop {
        let drain_until = draining.unwrap_or_else(|| clock.tokio_instant());
        tokio::select! {
            _ = cancel.cancelled(), if draining.is_none() => {
                draining = Some(clock.tokio_instant() + cfg.drain);
                // The sink has stopped: whatever it appended last becomes durable and may go.
                if let Ok(mut o) = outbox.lock() {
                    let last = o.stats().next_seq.saturating_sub(1);
                    if streak.record(&mut stats, "flush", o.flush()).is_some() {
                        durable_upto = durable_upto.max(last);
                    }
                }
            }
            _ = tokio::time::sleep_until(drain_until), if draining.is_some() => break,
            ev = rx.recv() => match ev {
                None => break,
                Some(Incoming::Connected) => {
                    connected = true;
                    planner.on_connect(next_seq(&outbox), clock.tokio_instant());
                    let online = Status { state: State::Online, ts_ms: Some(clock.now_ms()), version: Some(env!("CARGO_PKG_VERSION").into()) };
                    client.subscribe(&ack_topic);
                    client.subscribe(&cmd_topic);
                    let _ = client.publish(&status_topic, true, wire::seal(&online, &cfg.key));
                    hello_sent = None;
                    stats.connected(&format!("{}:{}", cfg.host, cfg.port));
                }
                Some(Incoming::Disconnected(e)) => {
                    stats.disconnected(connected, &e);
                    connected = false;
                }
                Some(Incoming::Ack(payload)) => {
                    match wire::open::<Ack>(&payload, &cfg.key) {
                        Ok(ack) => {
                            let stream_ok = outbox.lock().map(|o| o.stream() == ack.stream).unwrap_or(false);
                            if !stream_ok {
                                stats.ack_refused("other_stream", &ack.stream, clock.tokio_instant());
                            } else if let Some(high) = ack.high {
                                if !checked {
                                    let v = judge(cfg.check, high, ack.held.unwrap_or(0));
                                    if let Some(last) = apply_verdict(&cfg, &clock, &outbox, v, high, &mut streak, &mut stats) {
                                        checked = true;
                                        stats.verdict = Some(v);
                                        if flushing {
                                            durable_upto = last;
                                        }
                                        planner.on_connect(last.saturating_add(1), clock.tokio_instant());
                                        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                    }
                                }
                            } else {
                                planner.on_ack(&ack.ranges);
                                apply_ack(&outbox, &ack.ranges, &mut streak, &mut stats, &progress);
                            }
                        }
                        Err(e) => stats.ack_refused("bad_seal", &e, clock.tokio_instant()),
                    }
                }
                Some(Incoming::Cmd(payload)) => {
                    on_command(&cfg, &clock, &outbox, &appended, &mut commands, &payload);
                }
            },
            _ = appended.notified(), if connected => {}
            _ = tick.tick(), if connected => {}
            _ = flush.tick(), if flushing => {
                if let Ok(mut o) = outbox.lock() {
                    let last = o.stats().next_seq.saturating_sub(1);
                    if last > durable_upto && streak.record(&mut stats, "flush", o.flush()).is_some() {
                        durable_upto = last;
                    }
                }
            }
        }
        if connected && !checked {
            let due = hello_sent
                .is_none_or(|t| clock.tokio_instant().duration_since(t) >= cfg.plan.ack_timeout);
            if due {
                let hello = Hello {
                    gateway: cfg.gateway.clone(),
                    stream: outbox
                        .lock()
                        .map(|o| o.stream().to_string())
                        .unwrap_or_default(),
                    sent_ms: clock.now_ms(),
                    from_seq: cfg.check.recovered_next_seq,
                };
                let _ = client.publish(&up_topic, false, wire::seal(&hello, &cfg.key));
                hello_sent = Some(clock.tokio_instant());
            }
        }
        if connected && checked {
            pump(
                &cfg,
                &clock,
                client,
                &up_topic,
                &outbox,
                &mut planner,
                durable_upto,
                &mut stats,
                &mut streak,
            );
        }
        stats.ack_timeouts(planner.timeouts, cfg.plan.ack_timeout);
        if draining.is_some() && (!connected || !checked || planner.inflight_batches() == 0) {
            break;
        }
    }
    // A clean stop says so, instead of leaving it to the Last Will after the keep-alive.
    let offline = Status {
        state: State::Offline,
        ts_ms: Some(clock.now_ms()),
        version: None,
    };
    let _ = client.publish(&status_topic, true, wire::seal(&offline, &cfg.key));
    client.disconnect();
    stats
}

/// Carries out the hello's verdict on the outbox: renumbers this run's items past what the
/// aggregator holds and appends a `store_reset` event saying what happened. Returns the last
/// seq handed out (everything up to it is durable now), or `None` if the outbox failed (the
/// hello is asked again).
fn apply_verdict<O: Outbox>(
    cfg: &UplinkConfig,
    clock: &Clock,
    outbox: &Arc<Mutex<O>>,
    v: Verdict,
    high: u64,
    streak: &mut Streak,
    stats: &mut UplinkStats,
) -> Option<u64> {
    let mut o = outbox.lock().ok()?;
    if v.is_clean() {
        info!(high, "aggregator holds nothing this outbox lacks: sending");
        let last = o.stats().next_seq.saturating_sub(1);
        streak.record(stats, "flush", o.flush())?;
        return Some(last);
    }
    let start = cfg.check.start_next_seq;
    let mut moved = 0;
    if let Some(to) = v.renumber_to {
        moved = streak.record(stats, "renumber", o.renumber(start, to))?;
    }
    let message = match v.renumber_to {
        Some(to) => format!(
            "outbox came back older than what it had delivered (a restored copy or a torn \
             file): the aggregator holds seqs up to {high}, this run would have reused {start}..={high}; \
             {moved} new items renumbered from {to}; {} seqs handed out before are held neither \
             by the outbox nor by the aggregator",
            v.lost
        ),
        None => format!(
            "outbox came back with less than it had flushed (torn or truncated): seqs {}..{start} \
             were handed out before; {} of them are held neither by the outbox nor by the aggregator",
            cfg.check.recovered_next_seq, v.lost
        ),
    };
    error!(
        high,
        start,
        moved,
        lost = v.lost,
        renumbered_to = v.renumber_to,
        "{message}"
    );
    let now = clock.now_ms();
    let ev = Body::Event(fumegrid_common::wire::Event {
        ts_ms: now,
        kind: EventKind::StoreReset,
        message,
        dropped: Some(v.lost),
        from_ms: None,
        to_ms: None,
    });
    streak.record(stats, "append", o.append(vec![ev], now))?;
    let last = o.stats().next_seq.saturating_sub(1);
    streak.record(stats, "flush", o.flush())?;
    Some(last)
}

/// Opens, judges and carries out (or refuses) one command from `cmd`.
fn on_command<O: Outbox>(
    cfg: &UplinkConfig,
    clock: &Clock,
    outbox: &Arc<Mutex<O>>,
    appended: &Notify,
    commands: &mut Commands,
    payload: &[u8],
) {
    let count = |outcome: &'static str| {
        metrics::counter!(m::UPLINK_COMMANDS, "outcome" => outcome).increment(1);
    };
    let cmd = match wire::open::<Command>(payload, &cfg.key) {
        Ok(c) => c,
        Err(e) => {
            count("bad_seal");
            commands.refused_log.refused_what(
                "command refused",
                &e.to_string(),
                clock.tokio_instant(),
            );
            return;
        }
    };
    let now = clock.now_ms();
    let verdict = command::judge(&cfg.gateway, &mut commands.executed, cmd, now);
    let refusal = match verdict {
        command::Verdict::Refuse { outcome, message } => Some((outcome, message)),
        command::Verdict::Execute(cmd) => {
            // Remembered durably before it is carried out: a crash cannot open a replay.
            let stored = outbox.lock().map_err(|_| ()).and_then(|mut o| {
                o.put_state(command::STATE_KEY, &commands.executed.to_bytes())
                    .and_then(|()| o.flush())
                    .map_err(|e| error!(error = %e, "cannot store the executed-command memory"))
            });
            let id = fumegrid_common::text::clip(&cmd.id, 64).to_string();
            let full_id = cmd.id.clone();
            let r = match (&cfg.evidence, stored) {
                (_, Err(())) => Some((
                    "busy",
                    format!("command {id:?} refused: the gateway cannot store that it ran it"),
                )),
                (None, Ok(())) => Some((
                    "unsupported",
                    format!("command {id:?} refused: this gateway has no cameras"),
                )),
                (Some(h), Ok(())) => match h.request(cmd) {
                    true => {
                        count("accepted");
                        info!(command = id, "snapshot command accepted");
                        None
                    }
                    false => Some((
                        "busy",
                        format!("command {id:?} refused: the evidence pipeline is busy"),
                    )),
                },
            };
            if r.is_some() {
                // Not carried out: the aggregator may send it again.
                commands.executed.forget(&full_id);
                if let Ok(mut o) = outbox.lock() {
                    let _ = o.put_state(command::STATE_KEY, &commands.executed.to_bytes());
                }
            }
            r
        }
    };
    let Some((outcome, mut message)) = refusal else {
        return;
    };
    count(outcome);
    warn!(outcome, %message, "command refused");
    if !commands.may_report(clock.tokio_instant()) {
        return;
    }
    if commands.unreported > 0 {
        message += &format!(
            "; {} more refusals not reported by an event of their own",
            commands.unreported
        );
        commands.unreported = 0;
    }
    let ev = Body::Event(fumegrid_common::wire::Event {
        ts_ms: now,
        kind: EventKind::CommandRefused,
        message,
        dropped: None,
        from_ms: None,
        to_ms: None,
    });
    match outbox.lock().map(|mut o| o.append(vec![ev], now)) {
        Ok(Ok(_)) => appended.notify_one(),
        Ok(Err(e)) => {
            metrics::counter!(m::OUTBOX_REFUSED).increment(1);
            error!(error = %e, "cannot append a command_refused event");
        }
        Err(_) => error!("outbox lock poisoned"),
    }
}

/// Deletes what an ack of this stream covers; the uplink progresses (for the watchdog) only when
/// the outbox took it.
fn apply_ack<O: Outbox>(
    outbox: &Arc<Mutex<O>>,
    ranges: &[(u64, u64)],
    streak: &mut Streak,
    stats: &mut UplinkStats,
    progress: &std::sync::atomic::AtomicU64,
) {
    let r = outbox.lock().map_err(|_| ()).map(|mut o| o.ack(ranges));
    if let Ok(r) = r
        && let Some(removed) = streak.record(stats, "ack", r)
    {
        stats.acked(removed);
        progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Publishes every batch the planner allows now.
#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the locals
fn pump<O: Outbox>(
    cfg: &UplinkConfig,
    clock: &Clock,
    client: &impl Mqtt,
    topic: &str,
    outbox: &Arc<Mutex<O>>,
    planner: &mut Planner,
    durable_upto: u64,
    stats: &mut UplinkStats,
    streak: &mut Streak,
) {
    let Ok(ob) = outbox.lock() else { return };
    let source = Source {
        outbox: &*ob,
        error: std::cell::RefCell::new(None),
    };
    let stream = ob.stream().to_string();
    while let Some((_class, items)) =
        planner.next_batch(&source, durable_upto, clock.tokio_instant())
    {
        let n = items.len() as u64;
        let batch = Batch {
            gateway: cfg.gateway.clone(),
            stream: stream.clone(),
            sent_ms: clock.now_ms(),
            items,
        };
        let sealed = wire::seal(&batch, &cfg.key);
        let payload = if cfg.compress {
            wire::compress(&sealed)
        } else {
            sealed
        };
        let bytes = payload.len() as u64;
        if let Err(e) = client.publish(topic, false, payload) {
            // Cannot happen while the channel is larger than the window; if it does, the
            // batch is planned again after the ack timeout.
            warn!(error = %e, "publish queue full");
            break;
        }
        stats.sent(n, bytes);
    }
    let failed = source.error.into_inner();
    streak.record(stats, "read", failed.map_or(Ok(()), Err));
}

struct Source<'a, O: Outbox> {
    outbox: &'a O,
    /// The first read error of this pump: the planner sees "nothing" and [`Streak`] sees this.
    error: std::cell::RefCell<Option<crate::outbox::OutboxError>>,
}

impl<O: Outbox> plan::Pending for Source<'_, O> {
    fn pending(
        &self,
        class: crate::outbox::Class,
        after: u64,
        before: u64,
        limit: usize,
    ) -> Vec<fumegrid_common::wire::Item> {
        match self.outbox.pending_class(class, after, before, limit) {
            Ok(items) => items,
            Err(e) => {
                self.error.borrow_mut().get_or_insert(e);
                Vec::new()
            }
        }
    }
    fn next_seq(&self) -> u64 {
        self.outbox.stats().next_seq
    }
}

/// Drives rumqttc's event loop (which also reconnects) and forwards what the uplink needs.
async fn drive(
    mut eventloop: EventLoop,
    tx: mpsc::Sender<Incoming>,
    ack_topic: String,
    cmd_topic: String,
    cancel: CancellationToken,
) {
    // Short and capped: a cellular link that comes back should be used within seconds, and one
    // MQTT connection attempt every few seconds costs nothing.
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = Duration::from_millis(250);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => {
                // Let the offline status and disconnect go out.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(ev) = eventloop.poll().await {
                        if let Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                            break;
                        }
                    }
                })
                .await;
                return;
            }
            ev = eventloop.poll() => ev,
        };
        let msg = match ev {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                backoff = Duration::from_millis(250);
                Some(Incoming::Connected)
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == ack_topic => {
                Some(Incoming::Ack(p.payload.to_vec()))
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == cmd_topic => {
                Some(Incoming::Cmd(p.payload.to_vec()))
            }
            Ok(_) => None,
            Err(e) => {
                let _ = tx.send(Incoming::Disconnected(e.to_string())).await;
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                None
            }
        };
        if let Some(m) = msg
            && tx.send(m).await.is_err()
        {
            return;
        }
    }
}

fn connect_options(cfg: &UplinkConfig, status_topic: &str) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(&cfg.client_id, &cfg.host, cfg.port);
    o.set_keep_alive(cfg.keep_alive);
    // The outbox, not the MQTT session, owns delivery: a clean session loses nothing.
    o.set_clean_session(true);
    o.set_max_packet_size(cfg.max_packet_bytes, cfg.max_packet_bytes);
    o.set_request_channel_capacity(64);
    let offline = Status {
        state: State::Offline,
        ts_ms: None,
        version: None,
    };
    // No time: the broker may publish it long after it was made, and a status without a time
    // always replaces the stored one (the next `online` carries a time again).
    o.set_last_will(LastWill::new(
        status_topic,
        wire::seal(&offline, &cfg.key),
        QoS::AtLeastOnce,
        true,
    ));
    if let (Some(u), Some(p)) = (&cfg.username, &cfg.password) {
        o.set_credentials(u, p);
    }
    if let Some(ca) = &cfg.tls_ca {
        let ca =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        o.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth: None,
        }));
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use fumegrid_common::telemetry::{capture, scraped};

    use super::*;

    /// Each uplink event counts in the final-log counters and in Prometheus from one call, and
    /// a refused ack or a timeout is logged by that call.
    #[test]
    fn uplink_events_count_in_both_places_and_log() {
        let mut s = UplinkStats::default();
        let ((), scrape, logs) = capture(|| {
            s.connected("broker:1883");
            s.sent(5, 100);
            s.acked(5);
            s.ack_refused(
                "bad_seal",
                &"mac does not verify",
                Clock::fixed(0).tokio_instant(),
            );
            s.ack_timeouts(2, Duration::from_secs(30));
            s.ack_timeouts(2, Duration::from_secs(30));
        });
        let v = |k: &str| scraped(&scrape, k);
        assert_eq!(v("fumegrid_uplink_items_sent_total"), Some(5.0), "{scrape}");
        assert_eq!(v("fumegrid_uplink_items_acked_total"), Some(5.0));
        assert_eq!(
            v("fumegrid_uplink_acks_refused_total{reason=\"bad_seal\"}"),
            Some(1.0)
        );
        assert_eq!(v("fumegrid_uplink_ack_timeouts_total"), Some(2.0));
        assert_eq!(v("fumegrid_uplink_connected"), Some(1.0));
        assert_eq!(
            (s.items_sent, s.items_acked, s.acks_refused, s.ack_timeouts),
            (5, 5, 1, 2)
        );
        assert!(logs.contains("ack refused"), "{logs}");
        assert_eq!(logs.matches("not acked in time").count(), 1, "{logs}");
    }

    /// An outbox whose reads, acks and flushes fail while `fail` is set: the in-memory outbox
    /// behind an injected error switch.
    #[derive(Debug)]
    struct Flaky {
        inner: crate::outbox::MemOutbox,
        fail: bool,
    }

    impl Flaky {
        fn check(&self, op: &'static str) -> Result<(), crate::outbox::OutboxError> {
            if self.fail {
                return Err(crate::outbox::OutboxError::Store {
                    path: "/test/outbox".into(),
                    op,
                    source: sled::Error::Unsupported("injected failure".into()),
                });
            }
            Ok(())
        }
    }

    impl Outbox for Flaky {
        fn stream(&self) -> &str {
            self.inner.stream()
        }
        fn append(
            &mut self,
            bodies: Vec<Body>,
            now_ms: i64,
        ) -> Result<Vec<u64>, crate::outbox::OutboxError> {
            self.check("append")?;
            self.inner.append(bodies, now_ms)
        }
        fn pending_range(
            &self,
            after: u64,
            before: u64,
            limit: usize,
            priority_only: bool,
        ) -> Result<Vec<wire::Item>, crate::outbox::OutboxError> {
            self.check("read")?;
            self.inner
                .pending_range(after, before, limit, priority_only)
        }
        fn newest(
            &self,
            limit: usize,
            priority_only: bool,
        ) -> Result<Vec<wire::Item>, crate::outbox::OutboxError> {
            self.check("read")?;
            self.inner.newest(limit, priority_only)
        }
        fn pending_class(
            &self,
            class: crate::outbox::Class,
            after: u64,
            before: u64,
            limit: usize,
        ) -> Result<Vec<wire::Item>, crate::outbox::OutboxError> {
            self.check("read")?;
            self.inner.pending_class(class, after, before, limit)
        }
        fn set_open_alarms(&mut self, ids: std::collections::BTreeSet<String>) {
            self.inner.set_open_alarms(ids);
        }
        fn ack(&mut self, ranges: &[(u64, u64)]) -> Result<u64, crate::outbox::OutboxError> {
            self.check("ack")?;
            self.inner.ack(ranges)
        }
        fn renumber(&mut self, from: u64, to: u64) -> Result<u64, crate::outbox::OutboxError> {
            self.check("renumber")?;
            self.inner.renumber(from, to)
        }
        fn stats(&self) -> crate::outbox::OutboxStats {
            self.inner.stats()
        }
        fn flush(&mut self) -> Result<(), crate::outbox::OutboxError> {
            self.check("flush")?;
            self.inner.flush()
        }
        fn put_state(&mut self, key: &str, value: &[u8]) -> Result<(), crate::outbox::OutboxError> {
            self.inner.put_state(key, value)
        }
        fn get_state(&self, key: &str) -> Result<Option<Vec<u8>>, crate::outbox::OutboxError> {
            self.inner.get_state(key)
        }
        fn remove_state(&mut self, key: &str) -> Result<(), crate::outbox::OutboxError> {
            self.inner.remove_state(key)
        }
    }

    fn uplink_config() -> UplinkConfig {
        UplinkConfig {
            gateway: "gw-test".into(),
            host: "127.0.0.1".into(),
            port: 1,
            client_id: "gw-test".into(),
            username: None,
            password: None,
            tls_ca: None,
            keep_alive: Duration::from_secs(30),
            key: b"test key".to_vec(),
            plan: PlanConfig {
                batch_max_items: 100,
                batch_max_bytes: 256 * 1024,
                max_live_inflight: 4,
                max_evidence_inflight: 2,
                max_backlog_inflight: 1,
                backlog_items_per_s: 100.0,
                ack_timeout: Duration::from_secs(30),
            },
            max_packet_bytes: 1 << 20,
            flush_interval: Duration::ZERO,
            check: check(1, 1),
            drain: Duration::from_secs(1),
            evidence: None,
            compress: false,
        }
    }

    fn started(i: i64) -> Body {
        Body::Event(wire::Event {
            ts_ms: 1_700_000_000_000 + i,
            kind: EventKind::Started,
            message: format!("started {i}"),
            dropped: None,
            from_ms: None,
            to_ms: None,
        })
    }

    /// The log line holding `text`, which must be there exactly once.
    fn only_line<'a>(logs: &'a str, text: &str) -> &'a str {
        let lines: Vec<&str> = logs.lines().filter(|l| l.contains(text)).collect();
        assert_eq!(lines.len(), 1, "{text:?} once in:\n{logs}");
        lines[0]
    }

    /// Reads (the real `pump`) and acks (the real `apply_ack`) of a failing outbox: every error
    /// counted in the stats and per op in Prometheus, one ERROR line for the whole streak,
    /// `outbox_failing` set meanwhile and no progress; the first success clears it with one
    /// INFO line, and the next streak is logged again.
    #[test]
    fn an_outbox_error_streak_counts_all_logs_once_and_fails_health_until_it_ends() {
        let cfg = uplink_config();
        let mut inner =
            crate::outbox::MemOutbox::new("stream-a", crate::outbox::OutboxConfig::default())
                .expect("mem outbox");
        // The planner starts before the items, so they are live and read at once.
        let clock = Clock::fixed(1_700_000_000_000);
        let mut planner = Planner::new(
            cfg.plan.clone(),
            inner.stats().next_seq,
            clock.tokio_instant(),
        );
        inner
            .append((0..3).map(started).collect(), 1_700_000_000_000)
            .expect("append");
        let outbox = Arc::new(Mutex::new(Flaky { inner, fail: true }));
        let (client, _eventloop) =
            AsyncClient::new(MqttOptions::new("gw-test", "127.0.0.1", 1), 64);
        let topic = wire::topic(&cfg.gateway, Channel::Up);
        let health = Arc::new(Health::default());
        let progress = std::sync::atomic::AtomicU64::new(0);
        let failing = || {
            health
                .outbox_failing
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let mut streak = Streak {
            health: health.clone(),
            clock: Clock::fixed(0),
            failing_since: None,
        };
        let mut stats = UplinkStats::default();
        const ROUNDS: u64 = 200;
        let set_fail = |on: bool| outbox.lock().expect("lock").fail = on;

        let (during, scrape, logs) = capture(|| {
            let mut during = Vec::new();
            for _ in 0..ROUNDS {
                let mut pump_now = |stats: &mut UplinkStats, streak: &mut Streak| {
                    pump(
                        &cfg,
                        &clock,
                        &client,
                        &topic,
                        &outbox,
                        &mut planner,
                        u64::MAX,
                        stats,
                        streak,
                    )
                };
                pump_now(&mut stats, &mut streak);
                apply_ack(&outbox, &[(1, 3)], &mut streak, &mut stats, &progress);
                during.push(failing());
            }
            let progress_during = progress.load(std::sync::atomic::Ordering::Relaxed);
            // The outbox works again: the next read ends the streak, the ack deletes.
            set_fail(false);
            pump(
                &cfg,
                &clock,
                &client,
                &topic,
                &outbox,
                &mut planner,
                u64::MAX,
                &mut stats,
                &mut streak,
            );
            let after_read = failing();
            apply_ack(&outbox, &[(1, 3)], &mut streak, &mut stats, &progress);
            // A second streak is a new one: logged again.
            set_fail(true);
            apply_ack(&outbox, &[(4, 4)], &mut streak, &mut stats, &progress);
            let second = failing();
            (during, progress_during, after_read, second)
        });
        let (during, progress_during, after_read, second) = during;

        assert!(
            during.iter().all(|f| *f),
            "outbox_failing during the streak"
        );
        assert_eq!(progress_during, 0, "no progress while acks fail");
        assert!(!after_read, "outbox_failing cleared once the outbox works");
        assert!(second, "set again by the next streak");
        assert_eq!(stats.outbox_errors, 2 * ROUNDS + 1);
        assert_eq!((stats.batches_sent, stats.items_sent), (1, 3));
        assert_eq!(stats.items_acked, 3);
        assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), 1);
        let v = |k: &str| scraped(&scrape, k);
        assert_eq!(
            v("fumegrid_uplink_outbox_errors_total{op=\"read\"}"),
            Some(ROUNDS as f64),
            "{scrape}"
        );
        assert_eq!(
            v("fumegrid_uplink_outbox_errors_total{op=\"ack\"}"),
            Some((ROUNDS + 1) as f64),
            "{scrape}"
        );
        let fails: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains("outbox fails the uplink"))
            .collect();
        assert_eq!(fails.len(), 2, "one per streak:\n{logs}");
        assert!(fails.iter().all(|l| l.contains(" ERROR ")), "{logs}");
        assert!(fails[0].contains("op=\"read\""), "{logs}");
        assert!(fails[1].contains("op=\"ack\""), "{logs}");
        let end = only_line(&logs, "outbox works again");
        assert!(end.contains(" INFO "), "{end}");
        assert!(end.contains(&format!("errors={}", 2 * ROUNDS)), "{end}");
    }

    /// The watchdog is fed only when something progressed and the outbox does not fail the
    /// uplink: polls that go on while a streak lasts do not feed it.
    #[test]
    fn the_watchdog_starves_while_the_outbox_fails_though_polls_progress() {
        let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let health = Arc::new(Health::default());
        let mut fed = watchdog_check(progress.clone(), health.clone());
        let poll = || progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut streak = Streak {
            health: health.clone(),
            clock: Clock::fixed(0),
            failing_since: None,
        };
        let mut stats = UplinkStats::default();
        let broken = || {
            Err::<(), _>(crate::outbox::OutboxError::Store {
                path: "/test/outbox".into(),
                op: "read",
                source: sled::Error::Unsupported("injected failure".into()),
            })
        };

        assert!(!fed(), "nothing progressed yet");
        poll();
        assert!(fed(), "progress, healthy outbox");
        assert!(!fed(), "no progress since the last check");
        streak.record(&mut stats, "read", broken());
        for _ in 0..5 {
            poll();
            assert!(!fed(), "polls progress but the outbox fails");
        }
        streak.record(&mut stats, "read", Ok(()));
        assert!(
            !fed(),
            "the streak ended but nothing progressed since the last check"
        );
        poll();
        assert!(fed(), "progress after the streak ended");
    }

    /// A flood of junk on the ack topic: every refused ack counted, at most a WARN or two.
    #[test]
    fn a_flood_of_refused_acks_is_counted_in_full_and_logged_at_most_twice() {
        let mut s = UplinkStats::default();
        const N: u64 = 10_000;
        let clock = Clock::fixed(0);
        let ((), scrape, logs) = capture(|| {
            for i in 0..N {
                s.ack_refused(
                    "bad_seal",
                    &format_args!("mac does not verify ({i})"),
                    clock.tokio_instant(),
                );
            }
        });
        assert_eq!(s.acks_refused, N);
        assert_eq!(
            scraped(
                &scrape,
                "fumegrid_uplink_acks_refused_total{reason=\"bad_seal\"}"
            ),
            Some(N as f64),
            "{scrape}"
        );
        let warns = logs.lines().filter(|l| l.contains("ack refused")).count();
        assert!((1..=2).contains(&warns), "{warns} WARN lines:\n{logs}");
        assert!(
            logs.lines()
                .all(|l| !l.contains("ack refused") || l.contains(" WARN "))
        );
    }

    /// Refused acks within a minute of the last WARN are only counted; the next WARN after the
    /// minute carries how many were left out.
    #[test]
    fn refused_acks_are_logged_once_a_minute_with_the_count_in_between() {
        let mut r = RefusedLog::default();
        let t0 = Clock::fixed(0).tokio_instant();
        let ((), _, logs) = capture(|| {
            r.refused("first", t0);
            for i in 1..=500u64 {
                r.refused("junk", t0 + Duration::from_millis(i * 100));
            }
            r.refused("after a minute", t0 + Duration::from_secs(61));
        });
        let warns: Vec<&str> = logs.lines().filter(|l| l.contains("ack refused")).collect();
        assert_eq!(warns.len(), 2, "{logs}");
        assert!(warns[0].contains("suppressed=0"), "{logs}");
        assert!(warns[1].contains("suppressed=500"), "{logs}");
        assert!(warns[1].contains("after a minute"), "{logs}");
    }

    fn check(recovered: u64, start: u64) -> SeqCheck {
        SeqCheck {
            recovered_next_seq: recovered,
            start_next_seq: start,
        }
    }

    #[test]
    fn an_outbox_ahead_of_the_aggregator_is_clean() {
        // Normal restart: the aggregator holds up to 99, the outbox goes on at 120.
        assert!(judge(check(120, 120), 99, 0).is_clean());
        assert!(judge(check(1, 1), 0, 0).is_clean(), "a new stream");
    }

    #[test]
    fn a_rolled_back_outbox_renumbers_past_what_the_aggregator_holds() {
        // The copy had handed out up to 99; the aggregator holds 100..=250 as well, all of it.
        let v = judge(check(100, 100), 250, 151);
        assert_eq!((v.renumber_to, v.lost, v.torn), (Some(251), 0, false));
        // Twenty of them never reached it: lost with the newer outbox, and said so.
        let v = judge(check(100, 100), 250, 131);
        assert_eq!((v.renumber_to, v.lost), (Some(251), 20));
    }

    #[test]
    fn a_torn_outbox_reports_what_nobody_holds() {
        // Recovered up to 50, had flushed up to 80; the aggregator holds 50..=60.
        let v = judge(check(51, 81), 60, 10);
        assert_eq!((v.renumber_to, v.lost, v.torn), (None, 20, true));
        assert!(!v.is_clean());
        // Torn and rolled back: the aggregator holds beyond the checkpoint.
        let v = judge(check(51, 81), 90, 35);
        assert_eq!((v.renumber_to, v.lost), (Some(91), 5));
    }
}
