//! Ingest: the MQTT client that turns gateway messages into committed rows and sealed acks.
//!
//! Three stages, so that nothing waits on something that waits on it (rumqttc deadlocks when the
//! task that polls the event loop blocks on its own request channel):
//!
//! 1. **poll task** (async): polls the rumqttc event loop, re-subscribes after every CONNACK,
//!    runs the pure [`validate`] step on each PUBLISH and hands the result to the store thread
//!    over an unbounded channel (bounded in practice by the broker's inflight window: PUBACKs
//!    are manual and only sent after stage 2).
//! 2. **store thread** (blocking): takes everything queued (up to `group_max_items` items),
//!    records rejects, commits the good batches in one transaction (dedupe on
//!    `(gateway, stream, seq)`; new alarm transitions go to casework's alarm hook inside it, so
//!    an acked alarm always has its case), and only then emits the sealed acks.
//! 3. **ack task** (async): publishes each `Ack` on `fumegrid/v1/{gateway}/ack` (QoS 1, sealed
//!    with that gateway's key), then PUBACKs the original messages in arrival order (rumqttd
//!    refuses out-of-order acks).
//!
//! The same client publishes the aggregator's sealed commands on `fumegrid/v1/{gateway}/cmd`
//! ([`Commands`]: a snapshot asked for a case), through the broker's in-process link like the
//! acks. Each commit's picture outcomes ([`crate::store::evidence::PictureEvent`]) are counted
//! and logged once it succeeded, and a completed picture wakes the evidence mover.
//!
//! Session: `clean_session = true` with any broker. The gateways' end-to-end acks, not the
//! broker, guarantee delivery (a batch that is never acked is published again), so a persistent
//! session buys nothing — and it would be a trap: a message too big for this client kills the
//! connection before it can be acked, and a persistent session would redeliver it forever.

#[cfg(test)]
mod proptests;
pub mod stats;
pub mod validate;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::{self, Ack, Batch, Channel, Hello};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, Publish, QoS, SubscribeFilter};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::store::{AlarmHook, Writer};
use stats::Stats;
use validate::Keys;
use validate::{Limits, Reject};

/// How to reach the broker.
#[derive(Clone)]
pub struct MqttTarget {
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub username: String,
    pub password: String,
    pub clean_session: bool,
    pub max_packet_bytes: usize,
}

impl std::fmt::Debug for MqttTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("clean_session", &self.clean_session)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
pub struct IngestSettings {
    pub mqtt: MqttTarget,
    pub keys: Arc<Keys>,
    pub limits: Limits,
    pub group_max_items: usize,
    /// Woken after a commit in which a picture became complete (the evidence mover).
    pub pictures_complete: Option<Arc<tokio::sync::Notify>>,
}

/// Commands queued for publishing at most; more are refused ([`CommandError::Busy`]).
const COMMAND_QUEUE: usize = 256;

/// Sends sealed commands to gateways on `.../cmd` through the ingest's MQTT client. Cheap to
/// clone; usable before the ingest has started (commands wait in a bounded queue).
#[derive(Clone)]
pub struct Commands {
    tx: mpsc::Sender<(String, Vec<u8>)>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for Commands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Commands").finish_non_exhaustive()
    }
}

/// The receiving end of [`Commands`], handed to [`start`].
#[derive(Debug)]
pub struct CommandQueue(mpsc::Receiver<(String, Vec<u8>)>);

/// Why a command was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no key is configured for gateway `{0}`")]
    UnknownGateway(String),
    #[error("the command queue is full; try again")]
    Busy,
    #[error("ingest is not running")]
    Stopped,
}

impl Commands {
    /// A sender and the queue [`start`] publishes from, sealing with `keys`.
    pub fn channel(keys: Arc<Keys>) -> (Commands, CommandQueue) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (Commands { tx, keys }, CommandQueue(rx))
    }

    /// Seals `cmd` with its gateway's key and queues it for `fumegrid/v1/{gateway}/cmd`.
    pub fn send(&self, cmd: &wire::Command) -> Result<(), CommandError> {
        let key = self
            .keys
            .get(&cmd.gateway)
            .ok_or_else(|| CommandError::UnknownGateway(cmd.gateway.clone()))?;
        let topic = wire::topic(&cmd.gateway, Channel::Cmd);
        self.tx
            .try_send((topic, wire::seal(cmd, key)))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => CommandError::Busy,
                mpsc::error::TrySendError::Closed(_) => CommandError::Stopped,
            })
    }
}

/// Runs the inner hook and keeps the picture outcomes of the transaction, forgotten on
/// rollback: only a committed picture is counted.
struct Recording<'a> {
    inner: &'a mut dyn AlarmHook,
    pictures: Vec<crate::store::evidence::PictureEvent>,
}

impl AlarmHook for Recording<'_> {
    fn on_alarm(
        &mut self,
        tx: &mut dyn crate::store::CaseTx,
        gateway: &str,
        alarm: &wire::Alarm,
        now_ms: i64,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.on_alarm(tx, gateway, alarm, now_ms)
    }
    fn commit(
        &mut self,
        commit: &mut dyn FnMut() -> Result<(), crate::store::StoreError>,
    ) -> Result<(), crate::store::StoreError> {
        self.inner.commit(commit)
    }
    fn rolled_back(&mut self) {
        self.pictures.clear();
        self.inner.rolled_back();
    }
    fn on_picture(&mut self, event: &crate::store::evidence::PictureEvent) {
        self.pictures.push(event.clone());
    }
}

/// What the poll task hands to the store thread. `generation` names the MQTT connection the
/// message came on: a PUBACK for an older connection is not sent (its packet id means nothing
/// on the new one, and the broker redelivers anyway).
#[derive(Debug)]
enum Msg {
    Batch(Batch),
    Hello(Hello),
    Status {
        gateway: String,
        status: wire::Status,
    },
    Reject(Reject),
}

#[derive(Debug)]
struct Incoming1 {
    msg: Msg,
    publish: Publish,
    generation: u64,
}

/// What the store thread hands to the ack task, in arrival order.
#[derive(Debug)]
struct Outgoing1 {
    /// `(topic, sealed payload)` of the gateway ack, if the batch was committed.
    ack: Option<(String, Vec<u8>)>,
    publish: Publish,
    generation: u64,
}

/// A running ingest: wait for `ready`, cancel the token, then `join`.
#[derive(Debug)]
pub struct Ingest {
    /// Becomes true after the first CONNACK + SUBACK.
    pub ready: watch::Receiver<bool>,
    pub poll: tokio::task::JoinHandle<()>,
}

/// Starts the three stages. The store thread owns `writer` and `alarms` (casework's handler of
/// new alarm transitions, called inside each commit); `commands` are published as they come.
pub fn start(
    settings: IngestSettings,
    writer: Box<dyn Writer>,
    alarms: Box<dyn AlarmHook>,
    commands: Option<CommandQueue>,
    stats: Arc<Stats>,
    clock: Clock,
    cancel: CancellationToken,
) -> std::io::Result<Ingest> {
    let t = &settings.mqtt;
    let mut opts = MqttOptions::new(t.client_id.clone(), t.host.clone(), t.port);
    opts.set_credentials(t.username.clone(), t.password.clone())
        .set_clean_session(t.clean_session)
        .set_keep_alive(Duration::from_secs(30))
        .set_manual_acks(true)
        .set_max_packet_size(t.max_packet_bytes + 1024, t.max_packet_bytes + 1024)
        .set_inflight(200)
        .set_request_channel_capacity(1024);
    let (client, eventloop) = AsyncClient::new(opts, 1024);

    let (to_store, from_poll) = std::sync::mpsc::channel::<Incoming1>();
    let (to_acker, from_store) = mpsc::unbounded_channel::<Outgoing1>();
    let (ready_tx, ready) = watch::channel(false);
    let generation = Arc::new(AtomicU64::new(0));

    if let Some(CommandQueue(mut rx)) = commands {
        let c = client.clone();
        tokio::spawn(async move {
            while let Some((topic, payload)) = rx.recv().await {
                if let Err(e) = c.publish(topic, QoS::AtLeastOnce, false, payload).await {
                    warn!(error = %e, "cannot queue a command; dropped");
                    return;
                }
            }
        });
    }
    let st = stats.clone();
    let group = settings.group_max_items;
    let wake = settings.pictures_complete.clone();
    std::thread::Builder::new()
        .name("ingest-store".into())
        .spawn({
            let keys = settings.keys.clone();
            let clock = clock.clone();
            move || {
                let mut store = StoreStage {
                    writer,
                    alarms,
                    keys,
                    stats: st,
                    group_max_items: group,
                    clock,
                    wake,
                };
                store.run(from_poll, to_acker)
            }
        })?;

    let acker = tokio::spawn(ack_loop(
        client.clone(),
        from_store,
        generation.clone(),
        stats.clone(),
    ));
    let poll = tokio::spawn(poll_loop(
        eventloop, client, settings, to_store, stats, generation, ready_tx, acker, clock, cancel,
    ));
    Ok(Ingest { ready, poll })
}

#[allow(clippy::too_many_arguments)]
async fn poll_loop(
    mut eventloop: rumqttc::EventLoop,
    client: AsyncClient,
    settings: IngestSettings,
    to_store: std::sync::mpsc::Sender<Incoming1>,
    stats: Arc<Stats>,
    generation: Arc<AtomicU64>,
    ready_tx: watch::Sender<bool>,
    mut acker: tokio::task::JoinHandle<()>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let mut to_store = Some(to_store);
    let mut backoff = Duration::from_millis(100);
    let mut failing = false;
    let broker = format!("{}:{}", settings.mqtt.host, settings.mqtt.port);
    loop {
        tokio::select! {
            _ = cancel.cancelled(), if to_store.is_some() => {
                // Stop taking new messages; the store thread drains what it has, the ack task
                // publishes the acks, and we keep polling so that they reach the broker.
                info!("ingest stopping: committing and acking what is queued");
                to_store = None;
            }
            _ = &mut acker, if to_store.is_none() => break,
            ev = eventloop.poll() => match ev {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                    let g = generation.fetch_add(1, Relaxed) + 1;
                    stats.connected(&broker, ack.session_present, g);
                    backoff = Duration::from_millis(100);
                    failing = false;
                    let c = client.clone();
                    tokio::spawn(async move {
                        let filters = [Channel::Up, Channel::Status].map(|ch| SubscribeFilter::new(
                            format!("{}/+/{}", wire::TOPIC_ROOT, ch.name()),
                            QoS::AtLeastOnce,
                        ));
                        if let Err(e) = c.subscribe_many(filters).await {
                            warn!(error = %e, "cannot subscribe");
                        }
                    });
                }
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    ready_tx.send_replace(true);
                    debug!("subscribed");
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let Some(tx) = &to_store else { continue };
                    let msg = classify(&p, &settings, clock.now_ms());
                    let g = generation.load(Relaxed);
                    if tx.send(Incoming1 { msg, publish: p, generation: g }).is_err() {
                        error!("ingest store thread is gone; stopping ingest");
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    stats.disconnected();
                    // A message bigger than we accept kills the connection inside rumqttc, before
                    // we see its topic; with a clean session the broker does not redeliver it,
                    // so it costs one reconnect. Count it like any other oversized message.
                    if let rumqttc::ConnectionError::MqttState(rumqttc::StateError::Deserialization(
                        rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(n),
                    )) = &e
                    {
                        stats.reject(&validate::Reject {
                            reason: validate::Reason::Oversized,
                            gateway: None,
                            detail: format!("a {n}-byte MQTT packet exceeds the limit; dropped by the connection"),
                        });
                    }
                    if !failing {
                        warn!(broker, error = %e, "MQTT connection lost; reconnecting with backoff");
                        failing = true;
                    } else {
                        debug!(broker, error = %e, "MQTT reconnect failed");
                    }
                    if to_store.is_none() {
                        // Shutting down without a broker: nothing more can be acked.
                        break;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = cancel.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    // Flush the acks queued in the request channel, then say goodbye.
    let _ = client.try_disconnect();
    let flush = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
    stats.disconnected();
    info!("ingest stopped");
}

/// Topic dispatch plus the pure validation.
fn classify(p: &Publish, s: &IngestSettings, now_ms: i64) -> Msg {
    match wire::parse_topic(&p.topic) {
        Some((_, Channel::Status)) => {
            match validate::validate_status(&p.topic, &p.payload, &s.keys, now_ms) {
                Ok((gw, status)) => Msg::Status {
                    gateway: gw.to_string(),
                    status,
                },
                Err(r) => Msg::Reject(r),
            }
        }
        _ => {
            let payload = match inflate_up(p, s) {
                Ok(payload) => payload,
                Err(r) => return Msg::Reject(r),
            };
            match validate::validate_up_or_hello(&p.topic, &payload, &s.keys, s.limits) {
                Ok(validate::Up::Batch(b)) => Msg::Batch(b),
                Ok(validate::Up::Hello(h)) => Msg::Hello(h),
                Err(r) => Msg::Reject(r),
            }
        }
    }
}

/// An `up` payload as sealed JSON: a plain one as it came (the v1 wire, byte for byte), a
/// gzip one (issue 14, docs/wire.md) inflated to at most `max_payload_bytes`, the bound a
/// plain payload has. Inflated only for a known gateway's `up` topic and a payload under the
/// bound; anything else goes to validation as it came, which refuses it for the usual reason.
/// A zip bomb stops at the bound and is refused as `oversized`, a broken one as `malformed`.
fn inflate_up<'a>(
    p: &'a Publish,
    s: &IngestSettings,
) -> Result<std::borrow::Cow<'a, [u8]>, validate::Reject> {
    let max = s.limits.max_payload_bytes;
    let gateway = match wire::parse_topic(&p.topic) {
        Some((gw, Channel::Up)) if s.keys.get(gw).is_some() => gw,
        _ => return Ok(std::borrow::Cow::Borrowed(&p.payload[..])),
    };
    if !wire::is_compressed(&p.payload) || p.payload.len() > max {
        return Ok(std::borrow::Cow::Borrowed(&p.payload[..]));
    }
    wire::decode_up(&p.payload, max).map_err(|e| validate::Reject {
        reason: match e {
            wire::InflateError::TooLarge { .. } => validate::Reason::Oversized,
            wire::InflateError::Corrupt(_) => validate::Reason::Malformed,
        },
        gateway: Some(gateway.to_string()),
        detail: format!("compressed {} bytes: {e}", p.payload.len()),
    })
}

/// The store thread: what it owns.
struct StoreStage {
    writer: Box<dyn Writer>,
    alarms: Box<dyn AlarmHook>,
    keys: Arc<Keys>,
    stats: Arc<Stats>,
    group_max_items: usize,
    clock: Clock,
    /// The evidence mover, woken when a picture became complete.
    wake: Option<Arc<tokio::sync::Notify>>,
}

impl StoreStage {
    /// Takes what is queued, commits it, hands the acks on, until the poll task hangs up.
    fn run(
        &mut self,
        rx: std::sync::mpsc::Receiver<Incoming1>,
        tx: mpsc::UnboundedSender<Outgoing1>,
    ) {
        let mut pending: Vec<Incoming1> = Vec::new();
        while let Ok(first) = rx.recv() {
            pending.push(first);
            let mut items = 0usize;
            while items < self.group_max_items {
                match rx.try_recv() {
                    Ok(m) => {
                        if let Msg::Batch(b) = &m.msg {
                            items += b.items.len();
                        }
                        pending.push(m);
                    }
                    Err(_) => break,
                }
            }
            let (out, failed) = self.group(&mut pending);
            for o in out {
                if tx.send(o).is_err() {
                    return;
                }
            }
            if failed {
                // A full or broken disk must not spin a core; gateways keep their data meanwhile.
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    /// Stores one group (statuses, then every batch in one commit with the alarm hook) and
    /// answers it: what to ack, in arrival order, and whether the commit failed.
    fn group(&mut self, pending: &mut Vec<Incoming1>) -> (Vec<Outgoing1>, bool) {
        let StoreStage {
            writer,
            alarms,
            keys,
            stats,
            clock,
            wake,
            ..
        } = self;
        let now = clock.now_ms();
        for m in pending.iter() {
            match &m.msg {
                Msg::Reject(r) => stats.reject(r),
                Msg::Status { gateway, status } => {
                    if let Err(e) = writer.set_status(
                        gateway,
                        status.state,
                        status.ts_ms,
                        status.version.as_deref(),
                        now,
                    ) {
                        let what = format!("cannot store the status of gateway {gateway}");
                        stats.store_error("status", &e, &what);
                    }
                    // Counted once written, so whoever sees the count sees the stored flag.
                    stats.status(gateway, status.state);
                }
                Msg::Batch(_) | Msg::Hello(_) => {}
            }
        }
        let batches: Vec<&Batch> = pending
            .iter()
            .filter_map(|m| match &m.msg {
                Msg::Batch(b) => Some(b),
                _ => None,
            })
            .collect();
        let mut failed = false;
        let committed = if batches.is_empty() {
            Vec::new()
        } else {
            let mut hook = Recording {
                inner: alarms.as_mut(),
                pictures: Vec::new(),
            };
            match writer.commit_with(&batches, now, &mut hook) {
                Ok(c) => {
                    stats.committed();
                    let mut complete = false;
                    for p in &hook.pictures {
                        stats.picture(p);
                        complete |=
                            matches!(p.outcome, crate::store::evidence::Outcome::Complete { .. });
                    }
                    if complete && let Some(w) = wake {
                        w.notify_one();
                    }
                    c
                }
                Err(e) => {
                    failed = true;
                    let what = format!(
                        "commit of {} batches failed; not acking (gateways will resend)",
                        batches.len()
                    );
                    stats.store_error("commit", &e, &what);
                    Vec::new()
                }
            }
        };
        let mut results = committed.into_iter();
        let mut out = Vec::with_capacity(pending.len());
        for m in pending.drain(..) {
            let ack = match &m.msg {
                Msg::Batch(b) => results.next().and_then(|c| {
                    stats.batch(&b.gateway, &b.stream, b.items.len(), c);
                    seal_ack(b, keys)
                }),
                // Answered after the commit above, so it counts what this group stored too.
                Msg::Hello(h) if !failed => {
                    match writer.stream_holds(&h.gateway, &h.stream, h.from_seq) {
                        Ok((high, held)) => {
                            stats.hello(&h.gateway, &h.stream, h.from_seq, high, held);
                            seal_hello_answer(h, high, held, keys)
                        }
                        Err(e) => {
                            let what = format!(
                                "cannot answer a hello of gateway {} (it asks again)",
                                h.gateway
                            );
                            stats.store_error("hello", &e, &what);
                            None
                        }
                    }
                }
                _ => None,
            };
            out.push(Outgoing1 {
                ack,
                publish: m.publish,
                generation: m.generation,
            });
        }
        (out, failed)
    }
}

/// The sealed ack of a committed batch: every seq it carried, duplicates included.
fn seal_ack(b: &Batch, keys: &Keys) -> Option<(String, Vec<u8>)> {
    let key = keys.get(&b.gateway)?;
    let ack = Ack::of(
        b.stream.clone(),
        validate::ranges(b.items.iter().map(|i| i.seq)),
    );
    Some((wire::topic(&b.gateway, Channel::Ack), wire::seal(&ack, key)))
}

/// The sealed answer to a hello: no ranges, what is held of the stream.
fn seal_hello_answer(h: &Hello, high: u64, held: u64, keys: &Keys) -> Option<(String, Vec<u8>)> {
    let key = keys.get(&h.gateway)?;
    let ack = Ack {
        stream: h.stream.clone(),
        ranges: Vec::new(),
        high: Some(high),
        held: Some(held),
    };
    Some((wire::topic(&h.gateway, Channel::Ack), wire::seal(&ack, key)))
}

async fn ack_loop(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<Outgoing1>,
    generation: Arc<AtomicU64>,
    stats: Arc<Stats>,
) {
    while let Some(o) = rx.recv().await {
        if let Some((topic, payload)) = o.ack {
            match client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
            {
                Ok(()) => stats.ack_published(),
                Err(e) => {
                    warn!(error = %e, "cannot queue ack; the gateway will resend");
                    return;
                }
            }
        }
        if o.generation == generation.load(Relaxed) {
            if let Err(e) = client.ack(&o.publish).await {
                warn!(error = %e, "cannot queue PUBACK");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Alarm, AlarmKind, AlarmPhase, Body, Item};

    use super::*;
    use crate::cases::Catalogue;
    use crate::casework::alarms::AlarmCases;
    use crate::store::memory::MemoryStore;
    use crate::store::{CaseQuery, CaseStore, CaseTx, Reader, StoreError};

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    pub(super) const T0: i64 = 1_762_135_200_000;
    pub(super) const KEY: &[u8] = b"gw-1 key";

    /// The store stage of gateway `gw-1` (key [`KEY`]) at [`T0`].
    pub(super) fn stage(writer: Box<dyn Writer>, alarms: Box<dyn AlarmHook>) -> StoreStage {
        StoreStage {
            writer,
            alarms,
            keys: Arc::new(Keys::new([("gw-1".to_string(), KEY.to_vec())])),
            stats: Arc::new(Stats::default()),
            group_max_items: 1000,
            clock: Clock::fixed(T0),
            wake: None,
        }
    }

    fn cases() -> Box<dyn AlarmHook> {
        Box::new(AlarmCases::new(Arc::new(
            Catalogue::builtin().expect("catalogue"),
        )))
    }

    pub(super) fn incoming(msg: Msg) -> Incoming1 {
        Incoming1 {
            msg,
            publish: Publish::new("fumegrid/v1/gw-1/up", QoS::AtLeastOnce, Vec::new()),
            generation: 1,
        }
    }

    fn alarm_batch(seq: u64) -> Msg {
        Msg::Batch(Batch {
            gateway: "gw-1".into(),
            stream: "alarms".into(),
            sent_ms: T0,
            items: vec![Item {
                seq,
                body: Body::Alarm(Alarm {
                    id: format!("rest-1:exceedance:{T0}"),
                    device: "rest-1".into(),
                    kind: AlarmKind::Exceedance,
                    metric: Some(Metric::FumeMgM3),
                    phase: AlarmPhase::Raised,
                    started_ms: T0,
                    ts_ms: T0,
                    cleared_ms: None,
                    value: Some(2.8),
                    peak: Some(2.8),
                    peak_ms: Some(T0),
                    limit: Some(2.0),
                    suppressed: false,
                    message: String::new(),
                }),
            }],
        })
    }

    fn reading_batch(seqs: std::ops::Range<u64>) -> Msg {
        Msg::Batch(Batch {
            gateway: "gw-1".into(),
            stream: "readings".into(),
            sent_ms: T0,
            items: seqs
                .map(|seq| Item {
                    seq,
                    body: Body::Reading(Reading {
                        device: "rest-1".into(),
                        unit: None,
                        metric: Metric::FumeMgM3,
                        value: Some(0.5),
                        quality: Quality::Ok,
                        ts_ms: T0 + seq as i64,
                    }),
                })
                .collect(),
        })
    }

    fn hello(stream: &str) -> Msg {
        Msg::Hello(Hello {
            gateway: "gw-1".into(),
            stream: stream.into(),
            sent_ms: T0,
            from_seq: 1,
        })
    }

    /// The acks of a group, opened with the gateway's key (`None`: not acked).
    pub(super) fn acks(out: Vec<Outgoing1>) -> Vec<Option<Ack>> {
        out.into_iter()
            .map(|o| {
                o.ack.map(|(topic, payload)| {
                    assert_eq!(topic, "fumegrid/v1/gw-1/ack");
                    wire::open::<Ack>(&payload, KEY).expect("sealed with the gateway's key")
                })
            })
            .collect()
    }

    #[test]
    fn an_alarm_opens_its_case_in_the_commit_that_acks_it_and_a_resend_opens_none() {
        let store = MemoryStore::new();
        let mut st = stage(Box::new(store.clone()), cases());
        let mut group = vec![
            incoming(alarm_batch(1)),
            incoming(reading_batch(1..4)),
            incoming(hello("readings")),
        ];
        let (out, failed) = st.group(&mut group);
        assert!(!failed && group.is_empty());
        let a = acks(out);
        assert_eq!(a[0].as_ref().map(|a| a.ranges.clone()), Some(vec![(1, 1)]));
        assert_eq!(a[1].as_ref().map(|a| a.ranges.clone()), Some(vec![(1, 3)]));
        let h = a[2].as_ref().expect("hello answered");
        assert_eq!((h.high, h.held), (Some(3), Some(3)), "counts this group");
        // The acked alarm has its case.
        let page = store.cases(&CaseQuery::default()).expect("cases");
        assert_eq!(page.total, 1);
        let case = &page.cases[0];
        assert_eq!(case.alarms.len(), 1);
        let events = store.case(&case.id).expect("case").expect("case").events;
        // A resend of the same batch (its ack was lost): acked again, no second case, no event.
        let (out, failed) = st.group(&mut vec![incoming(alarm_batch(1))]);
        assert!(!failed);
        assert_eq!(
            acks(out)[0].as_ref().map(|a| a.ranges.clone()),
            Some(vec![(1, 1)])
        );
        assert_eq!(store.cases(&CaseQuery::default()).expect("cases").total, 1);
        let again = store.case(&case.id).expect("case").expect("case").events;
        assert_eq!(again.len(), events.len());
    }

    fn picture_batch(seq: u64, parts: &[wire::Evidence]) -> Msg {
        Msg::Batch(Batch {
            gateway: "gw-1".into(),
            stream: "pictures".into(),
            sent_ms: T0,
            items: parts
                .iter()
                .enumerate()
                .map(|(i, e)| Item {
                    seq: seq + i as u64,
                    body: Body::Evidence(e.clone()),
                })
                .collect(),
        })
    }

    fn picture_meta() -> wire::EvidenceMeta {
        wire::EvidenceMeta {
            camera: "cam-1".into(),
            devices: vec!["rest-1".into()],
            captured_ms: T0,
            trigger: wire::Trigger::Schedule,
            alarm: None,
            request: None,
            media: wire::Media::Jpeg,
            size: 0,
            width: None,
            height: None,
            site: String::new(),
            readings: Vec::new(),
        }
    }

    /// A complete picture wakes the mover; a picture whose bytes do not hash to its SHA-256
    /// is refused, counted by reason and logged with gateway and camera, and its parts are
    /// acked all the same (a resend would carry the same bytes).
    #[test]
    fn pictures_are_verified_in_the_commit_that_acks_their_parts() {
        use crate::store::evidence::{EvidenceReader, split};
        use fumegrid_common::telemetry::{capture, scraped};
        let store = MemoryStore::new();
        let mut st = stage(Box::new(store.clone()), cases());
        let wake = Arc::new(tokio::sync::Notify::new());
        st.wake = Some(wake.clone());
        let good: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let good = split(&good, picture_meta());
        let mut bad = split(&[9u8; 70_000], picture_meta());
        bad[1].data = split(&[8u8; 70_000], picture_meta())[1].data.clone();
        let ((out, failed), scrape, logs) = capture(|| {
            st.stats.register();
            st.group(&mut vec![
                incoming(picture_batch(1, &good)),
                incoming(picture_batch(3, &bad)),
            ])
        });
        assert!(!failed);
        let a = acks(out);
        assert_eq!(a[0].as_ref().map(|a| a.ranges.clone()), Some(vec![(1, 2)]));
        assert_eq!(
            a[1].as_ref().map(|a| a.ranges.clone()),
            Some(vec![(3, 4)]),
            "the refused picture's parts are acked"
        );
        let row = store.picture(&good[0].sha256).expect("read").expect("kept");
        assert_eq!(row.state, "complete");
        assert_eq!(store.picture(&bad[0].sha256).expect("read"), None);
        assert_eq!(
            scraped(
                &scrape,
                "fumegrid_evidence_refused_total{reason=\"hash_mismatch\"}"
            ),
            Some(1.0),
            "{scrape}"
        );
        assert_eq!(
            scraped(
                &scrape,
                "fumegrid_evidence_refused_total{reason=\"inconsistent\"}"
            ),
            Some(0.0)
        );
        assert_eq!(
            scraped(&scrape, "fumegrid_evidence_pictures_complete_total"),
            Some(1.0)
        );
        assert_eq!(
            scraped(&scrape, "fumegrid_evidence_parts_total{gateway=\"gw-1\"}"),
            Some(4.0)
        );
        assert!(
            logs.contains("picture refused") && logs.contains("cam-1") && logs.contains("gw-1"),
            "{logs}"
        );
        let snap = st.stats.snapshot();
        assert_eq!(
            (
                snap.evidence_parts,
                snap.pictures_complete,
                snap.pictures_refused
            ),
            (4, 1, 1)
        );
        // The mover was woken: a permit is stored.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), wake.notified())
                .await
                .expect("woken");
        });
    }

    /// A hook whose store work fails: the whole commit rolls back.
    struct Broken;

    impl AlarmHook for Broken {
        fn on_alarm(
            &mut self,
            _: &mut dyn CaseTx,
            _: &str,
            _: &wire::Alarm,
            _: i64,
        ) -> Result<(), StoreError> {
            Err(StoreError::Malformed("disk full".into()))
        }
    }

    #[test]
    fn a_failed_commit_acks_nothing_and_keeps_nothing_until_the_resend() {
        let mut store = MemoryStore::new();
        let mut st = stage(Box::new(store.clone()), Box::new(Broken));
        let (out, failed) = st.group(&mut vec![
            incoming(reading_batch(1..3)),
            incoming(alarm_batch(1)),
            incoming(hello("readings")),
        ]);
        assert!(failed);
        assert!(acks(out).iter().all(Option::is_none), "nothing acked");
        assert_eq!(
            store.stream_holds("gw-1", "readings", 1).expect("holds"),
            (0, 0)
        );
        assert!(store.open_cases().expect("open").is_empty());
        // The gateway resends; with the hook working, all is stored and acked.
        st.alarms = cases();
        let (out, failed) = st.group(&mut vec![
            incoming(reading_batch(1..3)),
            incoming(alarm_batch(1)),
        ]);
        assert!(!failed);
        assert!(acks(out).iter().all(Option::is_some));
        assert_eq!(store.open_cases().expect("open").len(), 1);
    }

    /// The `up` entry point takes plain JSON (the v1 wire) and gzip alike, inflating the latter
    /// with the plain payload's bound: a zip bomb is refused as `oversized` after that many
    /// bytes, broken gzip as `malformed`, and a compressed payload with a bad seal as `bad_mac`.
    #[test]
    fn up_payloads_plain_or_compressed_bombs_refused() {
        let settings = IngestSettings {
            mqtt: MqttTarget {
                host: "localhost".into(),
                port: 1883,
                client_id: "t".into(),
                username: "t".into(),
                password: String::new(),
                clean_session: true,
                max_packet_bytes: 1 << 20,
            },
            keys: Arc::new(Keys::new([("gw-1".to_string(), KEY.to_vec())])),
            limits: Limits {
                max_payload_bytes: 1 << 20,
                max_items: 1000,
            },
            group_max_items: 1000,
            pictures_complete: None,
        };
        let batch = Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: T0,
            items: vec![Item {
                seq: 1,
                body: Body::Reading(Reading {
                    device: "d".into(),
                    unit: None,
                    metric: Metric::FumeMgM3,
                    value: Some(0.5),
                    quality: Quality::Ok,
                    ts_ms: T0,
                }),
            }],
        };
        let up = |payload: Vec<u8>| {
            let p = Publish::new("fumegrid/v1/gw-1/up", QoS::AtLeastOnce, payload);
            classify(&p, &settings, T0)
        };
        let sealed = wire::seal(&batch, KEY);
        assert!(matches!(up(sealed.clone()), Msg::Batch(b) if b == batch));
        assert!(matches!(up(wire::compress(&sealed)), Msg::Batch(b) if b == batch));
        let reason = |m: Msg| match m {
            Msg::Reject(r) => Some(r.reason),
            _ => None,
        };
        // 1 GiB of zeros in about 1 MiB... kept small here: 16 MiB of zeros in ~16 KiB.
        let bomb = wire::compress(&vec![b' '; 16 << 20]);
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(reason(up(bomb)), Some(validate::Reason::Oversized));
        let mut broken = wire::compress(&sealed);
        broken.truncate(broken.len() - 4);
        assert_eq!(reason(up(broken)), Some(validate::Reason::Malformed));
        let forged = wire::compress(&wire::seal(&batch, b"another key"));
        assert_eq!(reason(up(forged)), Some(validate::Reason::BadMac));
    }
}
