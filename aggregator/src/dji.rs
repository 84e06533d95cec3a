//! DJI Cloud API: the positions DJI Docks and DJI Pilot 2 publish, kept as drone tracks
//! (issue 15; docs/drones.md, "DJI Cloud API", says which fields are read and where their
//! shape comes from).
//!
//! - [`parse`]: the pure decision on one message (`thing/product/{sn}/osd`,
//!   `sys/product/{sn}/status`) against the [`Registry`] of docks and aircraft: a track point,
//!   a dock's own report, a topology, or one [`Ignored`] reason. Fuzzed.
//! - [`Tracker`]: pure; the points received, per aircraft, in time order, until the next flush
//!   cuts them into [`Track`]s of at most [`TRACK_MAX_POINTS`] points. Bounded.
//! - [`Docks`]: each registered dock's last message and last reported position (in memory:
//!   a restart forgets them until the dock's next osd, seconds later), for the map.
//! - [`run`]: one MQTT client (rumqttc) per source — the embedded broker's internal listener
//!   (docks log in at the gate with their own accounts; [`crate::broker::acl::Scope::Dji`]
//!   keeps each to its own serial numbers) and/or the customer's broker (`[dji.external]`) —
//!   subscribed to [`parse::SUBSCRIPTIONS`], answering what the devices expect an answer to
//!   (`status_reply`, `events_reply`) through the same client, and a flush every
//!   `[dji] flush_interval_s` that hands the tracks to the store.
//!
//! Stored through the store's drone API ([`store_sink`], `DroneWriter::store_track`, source
//! `dji`, no gateway) on its own store connection, so the map, the track API and the
//! aerial-pass judgment see DJI aircraft like MAVLink drones.
//!
//! Trust: DJI's messages carry no signature. On the embedded broker the gate has checked the
//! dock's login and that the topic's serial number is its own; on an external broker its own
//! ACLs do that, and we accept only registered serial numbers.

pub mod parse;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::ratelog::LogLimiter;
use fumegrid_common::wire::{TRACK_MAX_POINTS, Track, TrackPoint};
use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeFilter};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use parse::{Dock, DockPosition, Ignored, Message, Registry, valid_sn};

use crate::store::drone::{DroneSource, DroneWriter, TrackStored};
use crate::telemetry::{
    DJI_CONNECTED, DJI_CONNECTION_ERRORS, DJI_MESSAGES, DJI_POINTS, DJI_REPLIES, DJI_UNKNOWN_FIELDS,
};

/// Most points held per aircraft between two flushes (more are dropped, counted `overflow`):
/// ten flushes' worth at DJI's fastest osd rate.
pub const MAX_BUFFERED_POINTS: usize = 6 * TRACK_MAX_POINTS;

/// Why a point was not kept. `name` is the `outcome` label of `fumegrid_dji_points_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Not after the aircraft's last point (the same message through two brokers, or a
    /// repeat).
    NotNewer,
    /// [`MAX_BUFFERED_POINTS`] already waiting (the store has been failing).
    Overflow,
}

impl Dropped {
    pub fn name(self) -> &'static str {
        match self {
            Dropped::NotNewer => "not_newer",
            Dropped::Overflow => "overflow",
        }
    }
}

/// Points per aircraft waiting for the next flush.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: BTreeMap<String, Vec<TrackPoint>>,
    /// Time of each aircraft's newest point accepted.
    last: BTreeMap<String, i64>,
}

impl Tracker {
    /// Keeps `point` for `drone` if it is newer than the last one and there is room.
    pub fn push(&mut self, drone: &str, point: TrackPoint) -> Result<(), Dropped> {
        if self.last.get(drone).is_some_and(|t| point.ts_ms <= *t) {
            return Err(Dropped::NotNewer);
        }
        let pending = self.pending.entry(drone.to_string()).or_default();
        if pending.len() >= MAX_BUFFERED_POINTS {
            return Err(Dropped::Overflow);
        }
        self.last.insert(drone.to_string(), point.ts_ms);
        pending.push(point);
        Ok(())
    }

    /// Everything pending, as tracks of at most [`TRACK_MAX_POINTS`] points.
    pub fn drain(&mut self) -> Vec<Track> {
        let mut out = Vec::new();
        for (drone, points) in std::mem::take(&mut self.pending) {
            for chunk in points.chunks(TRACK_MAX_POINTS) {
                out.push(Track {
                    drone: drone.clone(),
                    points: chunk.to_vec(),
                });
            }
        }
        out
    }

    /// Puts back tracks the store did not take (they go out with the next flush), within the
    /// same bound; returns the number of points dropped for lack of room.
    pub fn restore(&mut self, tracks: Vec<Track>) -> usize {
        // A drone's tracks come in time order; gather them before putting them in front.
        let mut back: BTreeMap<String, Vec<TrackPoint>> = BTreeMap::new();
        for t in tracks {
            back.entry(t.drone).or_default().extend(t.points);
        }
        let mut dropped = 0;
        for (drone, mut older) in back {
            let pending = self.pending.entry(drone).or_default();
            older.append(pending);
            if older.len() > MAX_BUFFERED_POINTS {
                let cut = older.len() - MAX_BUFFERED_POINTS;
                dropped += cut;
                older.drain(..cut);
            }
            *pending = older;
        }
        dropped
    }

    pub fn pending_points(&self) -> usize {
        self.pending.values().map(Vec::len).sum()
    }
}

/// A dock is online while its last message (its own or its aircraft's; docks send osd every
/// few seconds) is at most this old.
pub const DOCK_ONLINE_MS: i64 = 120_000;

/// A registered dock as the map shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DockView {
    pub sn: String,
    /// Its last reported position (WGS 84; `height_m` above the ellipsoid as DJI says it).
    pub lat: Option<f64>,
    pub lon: Option<f64>,
    pub height_m: Option<f64>,
    /// When that position was reported (the message's time).
    pub position_ms: Option<i64>,
    pub online: bool,
    /// Its last message of any kind (receive time); none since the aggregator started.
    pub last_seen_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Seen {
    last_ms: Option<i64>,
    position: Option<DockPosition>,
}

/// What the readers last heard of each registered dock, shared with the API (the map). In
/// memory only: after a restart a dock is unplaced until its next osd with a position.
#[derive(Debug, Default)]
pub struct Docks {
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl Docks {
    /// One entry per registered dock, none heard yet.
    pub fn new(registry: &Registry) -> Docks {
        Docks {
            seen: Mutex::new(
                registry
                    .dock_sns()
                    .map(|sn| (sn.to_string(), Seen::default()))
                    .collect(),
            ),
        }
    }

    /// Dock `sn` (registered) was heard from at `now_ms`; `position` when the message had one.
    /// An older position (from the other broker, or out of order) does not replace a newer.
    pub fn heard(&self, sn: &str, position: Option<DockPosition>, now_ms: i64) {
        let mut seen = lock(&self.seen);
        let Some(s) = seen.get_mut(sn) else { return };
        s.last_ms = Some(s.last_ms.map_or(now_ms, |t| t.max(now_ms)));
        if let Some(p) = position
            && s.position.is_none_or(|old| old.ts_ms <= p.ts_ms)
        {
            s.position = Some(p);
        }
    }

    /// Every registered dock, by serial number.
    pub fn view(&self, now_ms: i64) -> Vec<DockView> {
        lock(&self.seen)
            .iter()
            .map(|(sn, s)| DockView {
                sn: sn.clone(),
                lat: s.position.map(|p| p.lat),
                lon: s.position.map(|p| p.lon),
                height_m: s.position.and_then(|p| p.height_m),
                position_ms: s.position.map(|p| p.ts_ms),
                online: s.last_ms.is_some_and(|t| now_ms - t <= DOCK_ONLINE_MS),
                last_seen_ms: s.last_ms,
            })
            .collect()
    }
}

/// One broker the DJI messages are read from.
#[derive(Clone)]
pub struct Source {
    /// `embedded` or `external`: the `source` label of the metrics.
    pub name: &'static str,
    pub host: String,
    pub port: u16,
    pub client_id: String,
    pub credentials: Option<(String, String)>,
    pub tls_ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// Where tracks go: the store (blocking; called on a blocking thread). `Err` keeps the tracks
/// for the next flush.
pub type Sink = Box<dyn FnMut(&[Track]) -> Result<TrackStored, String> + Send>;

/// The store as a [`Sink`]: each track checked like a gateway's
/// ([`crate::ingest::validate::check_track`]; one that fails is counted `invalid` and
/// dropped, which the parser's ranges should make impossible) and stored with source `dji` in
/// one transaction per track; points already held count as `duplicate`.
pub fn store_sink(mut writer: Box<dyn DroneWriter>, clock: Clock) -> Sink {
    Box::new(move |tracks: &[Track]| {
        let mut total = TrackStored::default();
        for t in tracks {
            if let Err(e) = crate::ingest::validate::check_track(t) {
                warn!(error = %e, "DJI track refused by the track check; dropped");
                metrics::counter!(DJI_POINTS, "outcome" => "invalid")
                    .increment(t.points.len() as u64);
                continue;
            }
            let s = writer
                .store_track(DroneSource::Dji, None, t, clock.now_ms())
                .map_err(|e| e.to_string())?;
            total.new += s.new;
            total.duplicates += s.duplicates;
        }
        Ok(total)
    })
}

/// What [`run`] needs.
#[derive(Debug)]
pub struct Settings {
    pub registry: Arc<Registry>,
    /// Where the docks' last messages and positions are kept (the map reads them).
    pub docks: Arc<Docks>,
    pub sources: Vec<Source>,
    pub flush_interval: Duration,
}

/// Reads every source and flushes tracks into `sink` until `cancel`, then flushes once more.
pub async fn run(settings: Settings, sink: Sink, clock: Clock, cancel: CancellationToken) {
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let mut readers = Vec::new();
    for source in settings.sources {
        info!(source = source.name, broker = %format!("{}:{}", source.host, source.port), docks = settings.registry.docks(), "DJI Cloud API: reading docks' messages");
        readers.push(tokio::spawn(read(
            source,
            settings.registry.clone(),
            settings.docks.clone(),
            tracker.clone(),
            clock.clone(),
            cancel.clone(),
        )));
    }
    let sink = Arc::new(Mutex::new(sink));
    let mut tick = tokio::time::interval(settings.flush_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stop = tokio::select! {
            _ = cancel.cancelled() => true,
            _ = tick.tick() => false,
        };
        flush(&tracker, &sink).await;
        if stop {
            break;
        }
    }
    for r in readers {
        let _ = r.await;
    }
}

async fn flush(tracker: &Arc<Mutex<Tracker>>, sink: &Arc<Mutex<Sink>>) {
    let tracks = lock(tracker).drain();
    if tracks.is_empty() {
        return;
    }
    let points: usize = tracks.iter().map(|t| t.points.len()).sum();
    let (sink, tracker) = (sink.clone(), tracker.clone());
    let _ = tokio::task::spawn_blocking(move || {
        let result = (lock(&sink))(&tracks);
        match result {
            Ok(stored) => {
                metrics::counter!(DJI_POINTS, "outcome" => "stored").increment(stored.new);
                metrics::counter!(DJI_POINTS, "outcome" => "duplicate")
                    .increment(stored.duplicates);
            }
            Err(e) => {
                warn!(error = %e, points, "DJI tracks not stored; retrying at the next flush");
                let dropped = lock(&tracker).restore(tracks);
                metrics::counter!(DJI_POINTS, "outcome" => Dropped::Overflow.name())
                    .increment(dropped as u64);
            }
        }
    })
    .await;
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The MQTT options of one source.
fn options(source: &Source) -> Result<MqttOptions, String> {
    let mut o = MqttOptions::new(source.client_id.clone(), source.host.clone(), source.port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true)
        .set_max_packet_size(
            parse::MAX_PAYLOAD_BYTES + 4096,
            parse::MAX_PAYLOAD_BYTES + 4096,
        );
    if let Some((u, p)) = &source.credentials {
        o.set_credentials(u, p);
    }
    if let Some(ca) = &source.tls_ca_file {
        let ca =
            std::fs::read(ca).map_err(|e| format!("cannot read CA file {}: {e}", ca.display()))?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Simple {
                ca,
                alpn: None,
                client_auth: None,
            },
        ));
    }
    Ok(o)
}

/// Longest piece of a topic quoted in a log line.
const LOG_CHARS: usize = 96;

/// One source's client: subscribes after every CONNACK, parses and counts every message.
async fn read(
    source: Source,
    registry: Arc<Registry>,
    docks: Arc<Docks>,
    tracker: Arc<Mutex<Tracker>>,
    clock: Clock,
    cancel: CancellationToken,
) {
    let opts = match options(&source) {
        Ok(o) => o,
        Err(e) => {
            warn!(source = source.name, error = %e, "DJI Cloud API source not started");
            return;
        }
    };
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    let connected = metrics::gauge!(DJI_CONNECTED, "source" => source.name);
    let mut log = LogLimiter::new(Duration::from_secs(60), 64);
    let mut backoff = Duration::from_millis(100);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => break,
            ev = eventloop.poll() => ev,
        };
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                connected.set(1.0);
                backoff = Duration::from_millis(100);
                let c = client.clone();
                tokio::spawn(async move {
                    let filters = parse::SUBSCRIPTIONS
                        .map(|t| SubscribeFilter::new(t.to_string(), QoS::AtMostOnce));
                    if let Err(e) = c.subscribe_many(filters).await {
                        warn!(error = %e, "DJI Cloud API: cannot subscribe");
                    }
                });
            }
            Ok(Event::Incoming(Incoming::SubAck(_))) => {
                debug!(source = source.name, "DJI Cloud API: subscribed");
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => {
                let topic = p.topic.as_str();
                let now = clock.now_ms();
                let outcome = match parse::parse(topic, &p.payload, &registry, now) {
                    Ok(parsed) => {
                        if parsed.unknown_fields > 0 {
                            metrics::counter!(DJI_UNKNOWN_FIELDS, "source" => source.name)
                                .increment(parsed.unknown_fields as u64);
                        }
                        if let Some(reply) = parsed.reply {
                            // Never awaited here: this task polls the event loop that drains
                            // the client's queue (a full queue would deadlock an await).
                            let outcome = match client.try_publish(
                                reply.topic,
                                QoS::AtLeastOnce,
                                false,
                                reply.payload,
                            ) {
                                Ok(()) => "sent",
                                Err(e) => {
                                    if let Some(suppressed) =
                                        log.should_log("reply".to_string(), clock.instant())
                                    {
                                        warn!(source = source.name, error = %e, suppressed, "DJI Cloud API reply dropped; the device will repeat its message");
                                    }
                                    "dropped"
                                }
                            };
                            metrics::counter!(DJI_REPLIES, "source" => source.name, "outcome" => outcome)
                                .increment(1);
                        }
                        match parsed.message {
                            Message::Aircraft { drone, point } => {
                                if let Some(dock) = registry.dock_of(&drone) {
                                    docks.heard(dock, None, now);
                                }
                                if let Err(d) = lock(&tracker).push(&drone, point) {
                                    metrics::counter!(DJI_POINTS, "outcome" => d.name())
                                        .increment(1);
                                }
                                "aircraft"
                            }
                            Message::Dock { sn, position } => {
                                docks.heard(&sn, position, now);
                                "dock"
                            }
                            Message::Event { gateway, .. } => {
                                docks.heard(&gateway, None, now);
                                "event"
                            }
                            Message::Topology {
                                gateway,
                                sub_devices,
                            } => {
                                docks.heard(&gateway, None, now);
                                let known = registry.aircraft_of(&gateway);
                                for s in sub_devices.iter().filter(|s| !known.contains(s)) {
                                    if let Some(suppressed) =
                                        log.should_log(format!("topo {gateway}"), clock.instant())
                                    {
                                        warn!(dock = %gateway, aircraft = %s, suppressed, "DJI dock reports an aircraft not registered under it; its positions are ignored");
                                    }
                                }
                                "topology"
                            }
                        }
                    }
                    Err(why) => {
                        if let Some(suppressed) =
                            log.should_log(why.name().to_string(), clock.instant())
                        {
                            warn!(source = source.name, reason = why.name(), topic = %crate::broker::acl::bounded(topic, LOG_CHARS), suppressed, "DJI Cloud API message ignored");
                        }
                        why.name()
                    }
                };
                metrics::counter!(DJI_MESSAGES, "source" => source.name, "outcome" => outcome)
                    .increment(1);
            }
            Ok(_) => {}
            Err(e) => {
                connected.set(0.0);
                metrics::counter!(DJI_CONNECTION_ERRORS, "source" => source.name).increment(1);
                if let Some(suppressed) = log.should_log("connection".to_string(), clock.instant())
                {
                    warn!(source = source.name, error = %e, suppressed, "DJI Cloud API broker connection failed; retrying");
                }
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    connected.set(0.0);
    let _ = client.disconnect().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(ts_ms: i64) -> TrackPoint {
        TrackPoint {
            ts_ms,
            lat: 22.9,
            lon: 113.7,
            alt_m: 50.0,
            rel_alt_m: None,
            heading_deg: None,
            speed_m_s: None,
            battery_pct: None,
        }
    }

    #[test]
    fn the_tracker_keeps_newer_points_in_bounded_tracks() {
        let mut t = Tracker::default();
        assert_eq!(t.push("A", pt(10)), Ok(()));
        assert_eq!(t.push("A", pt(10)), Err(Dropped::NotNewer));
        assert_eq!(t.push("A", pt(5)), Err(Dropped::NotNewer));
        for i in 0..TRACK_MAX_POINTS as i64 {
            t.push("B", pt(100 + i)).expect("newer");
        }
        t.push("B", pt(10_000)).expect("newer");
        let tracks = t.drain();
        assert_eq!(
            tracks
                .iter()
                .map(|t| (t.drone.as_str(), t.points.len()))
                .collect::<Vec<_>>(),
            [("A", 1), ("B", TRACK_MAX_POINTS), ("B", 1)]
        );
        assert_eq!(t.pending_points(), 0);
        // Still ordered after a drain: an old point stays refused.
        assert_eq!(t.push("B", pt(200)), Err(Dropped::NotNewer));
    }

    #[test]
    fn docks_keep_their_newest_position_and_go_offline_when_silent() {
        let reg = Registry::new([
            Dock {
                sn: "DOCK1".into(),
                aircraft: vec!["AC1".into()],
            },
            Dock {
                sn: "DOCK2".into(),
                aircraft: vec![],
            },
        ]);
        let docks = Docks::new(&reg);
        let at = |lat: f64, ts_ms: i64| DockPosition {
            lat,
            lon: 113.7,
            height_m: Some(34.0),
            ts_ms,
        };
        docks.heard("DOCK1", Some(at(22.9, 1_000)), 1_000);
        // An older position (the other broker, late) does not replace it; a message without
        // one keeps it; an unregistered dock is not added.
        docks.heard("DOCK1", Some(at(22.8, 500)), 2_000);
        docks.heard("DOCK1", None, 3_000);
        docks.heard("NOPE", Some(at(1.0, 1)), 3_000);
        let v = docks.view(3_000 + DOCK_ONLINE_MS);
        assert_eq!(
            v,
            vec![
                DockView {
                    sn: "DOCK1".into(),
                    lat: Some(22.9),
                    lon: Some(113.7),
                    height_m: Some(34.0),
                    position_ms: Some(1_000),
                    online: true,
                    last_seen_ms: Some(3_000),
                },
                DockView {
                    sn: "DOCK2".into(),
                    lat: None,
                    lon: None,
                    height_m: None,
                    position_ms: None,
                    online: false,
                    last_seen_ms: None,
                },
            ]
        );
        assert!(!docks.view(3_001 + DOCK_ONLINE_MS)[0].online);
    }

    #[test]
    fn the_tracker_is_bounded_and_restores_unstored_tracks_first() {
        let mut t = Tracker::default();
        for i in 0..MAX_BUFFERED_POINTS as i64 {
            t.push("A", pt(i)).expect("room");
        }
        assert_eq!(
            t.push("A", pt(MAX_BUFFERED_POINTS as i64)),
            Err(Dropped::Overflow)
        );
        let tracks = t.drain();
        t.push("A", pt(1_000_000)).expect("room after a drain");
        // The store failed: the old points come back before the new one, the oldest beyond the
        // bound dropped.
        assert_eq!(t.restore(tracks), 1);
        let again = t.drain();
        let all: Vec<i64> = again
            .iter()
            .flat_map(|t| t.points.iter().map(|p| p.ts_ms))
            .collect();
        assert_eq!(all.len(), MAX_BUFFERED_POINTS);
        assert_eq!(all[0], 1);
        assert_eq!(*all.last().expect("points"), 1_000_000);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
    }
}
