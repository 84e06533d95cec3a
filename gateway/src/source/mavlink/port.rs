//! The I/O shell of the drone source: one task per [`Connection`], reading bytes, handing frames
//! to the drones of their system ids, ticking their clocks, fetching photos' bytes
//! ([`super::photo`]) and appending what comes out to the outbox. Everything it cannot use is counted (docs/metrics.md) and never stops it: noise,
//! bad CRCs, messages of other dialects, payloads the dialect refuses, foreign system ids, port
//! errors (the port is reopened). Items the outbox refuses (a full disk) are counted, logged and
//! reported by a `gap` event ahead of the next append that works.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::wire::Body;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::drone::{Drone, Seen};
use super::frame::{self, Tally};
use super::photo::Fetcher;
use super::track::Fate;
use super::{Connection, DroneSpec};
use crate::outbox::Outbox;
use crate::telemetry as m;

/// How often link losses and due stretches are judged.
pub const TICK: Duration = Duration::from_millis(250);
/// Wait before reopening a port that failed (a serial device unplugged, a TCP peer gone).
const RETRY: Duration = Duration::from_secs(2);
/// Largest datagram read; a stream is read in chunks of this size.
const READ_BUF: usize = 65_536;
/// Reasons a frame or bytes were refused (the `reason` label).
pub const REASONS: [&str; 5] = [
    "bad_crc",
    "unknown_message",
    "unsupported",
    "bad_payload",
    "foreign",
];

/// Counts of one connection, for tests and the final log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PortStats {
    pub tally: Tally,
    pub bad_payload: u64,
    pub foreign: u64,
    pub io_errors: u64,
    pub items: u64,
    pub items_lost: u64,
    /// Lost items not yet reported by a gap event: (count, oldest ts, newest ts).
    unreported: Option<(u64, i64, i64)>,
}

/// The drones of one connection and what they produce (no I/O: [`run`] feeds it).
#[derive(Debug)]
pub struct Dispatch {
    label: String,
    drones: Vec<Drone>,
    by_system: HashMap<u8, usize>,
    pub stats: PortStats,
}

impl Dispatch {
    pub fn new(connection: &Connection, drones: impl IntoIterator<Item = DroneSpec>) -> Dispatch {
        let label = connection.to_string();
        let drones: Vec<Drone> = drones.into_iter().map(|s| Drone::new(s.drone)).collect();
        let by_system = drones
            .iter()
            .enumerate()
            .map(|(i, d)| (d.system_id(), i))
            .collect();
        for r in REASONS {
            metrics::counter!(m::MAVLINK_REJECTED, "connection" => label.clone(), "reason" => r)
                .absolute(0);
        }
        for d in &drones {
            metrics::gauge!(m::DRONE_LINK_UP, "drone" => d.id().to_string()).set(0.0);
        }
        Dispatch {
            label,
            drones,
            by_system,
            stats: PortStats::default(),
        }
    }

    /// Bytes received; `stream` for TCP and serial (a frame may continue in the next read).
    /// Returns how many bytes were used; items go to `out`.
    pub fn bytes(
        &mut self,
        buf: &[u8],
        stream: bool,
        now_ms: i64,
        now: std::time::Instant,
        out: &mut Vec<Body>,
    ) -> usize {
        let mut tally = Tally::default();
        let mut frames = Vec::new();
        let used = frame::split(buf, stream, &mut tally, |f| frames.push(f));
        for f in frames {
            let Some(&i) = self.by_system.get(&f.system_id) else {
                self.stats.foreign += 1;
                self.reject("foreign", 1);
                continue;
            };
            let msg = match frame::decode(&f) {
                Ok(msg) => msg,
                Err(_) => {
                    self.stats.bad_payload += 1;
                    self.reject("bad_payload", 1);
                    continue;
                }
            };
            let d = &mut self.drones[i];
            let (seen, items) = d.on_message(&msg, now_ms, now);
            let id = d.id().to_string();
            metrics::counter!(m::DRONE_MESSAGES, "drone" => id.clone(), "kind" => seen.name())
                .increment(1);
            match seen {
                Seen::Position(fate) => {
                    let fate = match fate {
                        Fate::Kept => "kept",
                        Fate::Decimated => "decimated",
                        Fate::Invalid => "invalid",
                    };
                    metrics::counter!(m::DRONE_POINTS, "drone" => id.clone(), "fate" => fate)
                        .increment(1);
                }
                Seen::Photo(new) => {
                    let fate = if new { "new" } else { "duplicate" };
                    metrics::counter!(m::DRONE_PHOTOS, "drone" => id.clone(), "fate" => fate)
                        .increment(1);
                }
                _ => {}
            }
            metrics::gauge!(m::DRONE_LINK_UP, "drone" => id).set(if d.link_up() {
                1.0
            } else {
                0.0
            });
            out.extend(items);
        }
        if tally.frames > 0 {
            metrics::counter!(m::MAVLINK_FRAMES, "connection" => self.label.clone())
                .increment(tally.frames);
        }
        if tally.garbage_bytes > 0 {
            metrics::counter!(m::MAVLINK_GARBAGE_BYTES, "connection" => self.label.clone())
                .increment(tally.garbage_bytes);
        }
        self.reject("bad_crc", tally.bad_crc);
        self.reject("unknown_message", tally.unknown);
        self.reject("unsupported", tally.unsupported);
        let t = &mut self.stats.tally;
        t.frames += tally.frames;
        t.garbage_bytes += tally.garbage_bytes;
        t.bad_crc += tally.bad_crc;
        t.unknown += tally.unknown;
        t.unsupported += tally.unsupported;
        used
    }

    /// The passing of time for every drone.
    pub fn tick(&mut self, now_ms: i64, now: std::time::Instant, out: &mut Vec<Body>) {
        for d in &mut self.drones {
            let items = d.tick(now_ms, now);
            if !items.is_empty() {
                metrics::gauge!(m::DRONE_LINK_UP, "drone" => d.id().to_string())
                    .set(if d.link_up() { 1.0 } else { 0.0 });
            }
            out.extend(items);
        }
    }

    /// At the stop: every drone's gathered points.
    pub fn stop(&mut self, out: &mut Vec<Body>) {
        for d in &mut self.drones {
            out.extend(d.stop());
        }
    }

    fn reject(&self, reason: &'static str, n: u64) {
        if n > 0 {
            metrics::counter!(m::MAVLINK_REJECTED, "connection" => self.label.clone(), "reason" => reason)
                .increment(n);
        }
    }
}

/// What a port gave.
enum Read {
    Bytes(usize),
    /// The peer went away (TCP) or the port failed: nothing this time.
    Nothing,
}

/// An open (or to-be-opened) connection.
enum Port {
    Udp(UdpSocket),
    TcpIn {
        listener: TcpListener,
        peer: Option<TcpStream>,
    },
    TcpOut {
        addr: String,
        peer: Option<TcpStream>,
    },
    Serial {
        path: std::path::PathBuf,
        baud: u32,
        port: Option<tokio_serial::SerialStream>,
    },
}

impl Port {
    async fn open(c: &Connection) -> std::io::Result<Port> {
        Ok(match c {
            Connection::UdpIn(a) => Port::Udp(UdpSocket::bind(a).await?),
            Connection::TcpIn(a) => Port::TcpIn {
                listener: TcpListener::bind(a).await?,
                peer: None,
            },
            Connection::TcpOut(a) => Port::TcpOut {
                addr: a.clone(),
                peer: None,
            },
            Connection::Serial { path, baud } => Port::Serial {
                path: path.clone(),
                baud: *baud,
                port: None,
            },
        })
    }

    fn is_stream(&self) -> bool {
        !matches!(self, Port::Udp(_))
    }

    /// Waits for bytes (accepting, connecting or opening first as needed). Cancel-safe enough:
    /// a cancelled connect or open is simply tried again.
    async fn read(&mut self, buf: &mut [u8], label: &str) -> std::io::Result<Read> {
        match self {
            Port::Udp(s) => s.recv(buf).await.map(Read::Bytes),
            Port::TcpIn { listener, peer } => {
                let got = match peer {
                    Some(p) => {
                        let ev = tokio::select! {
                            r = p.read(buf) => Ok(r),
                            a = listener.accept() => Err(a),
                        };
                        match ev {
                            Ok(r) => r,
                            Err(a) => {
                                let (s, from) = a?;
                                info!(connection = label, %from, "a new MAVLink peer replaces the previous one");
                                *peer = Some(s);
                                return Ok(Read::Nothing);
                            }
                        }
                    }
                    None => {
                        let (s, from) = listener.accept().await?;
                        info!(connection = label, %from, "MAVLink peer connected");
                        *peer = Some(s);
                        return Ok(Read::Nothing);
                    }
                };
                stream_read(got, peer)
            }
            Port::TcpOut { addr, peer } => {
                let Some(p) = peer else {
                    match TcpStream::connect(addr.as_str()).await {
                        Ok(s) => {
                            info!(connection = label, "MAVLink peer connected");
                            *peer = Some(s);
                            return Ok(Read::Nothing);
                        }
                        Err(e) => {
                            tokio::time::sleep(RETRY).await;
                            return Err(e);
                        }
                    }
                };
                let got = p.read(buf).await;
                stream_read(got, peer)
            }
            Port::Serial { path, baud, port } => {
                let Some(p) = port else {
                    let builder = tokio_serial::new(path.to_string_lossy(), *baud);
                    match tokio_serial::SerialStream::open(&builder) {
                        Ok(s) => {
                            info!(connection = label, "serial port open");
                            *port = Some(s);
                            return Ok(Read::Nothing);
                        }
                        Err(e) => {
                            tokio::time::sleep(RETRY).await;
                            return Err(std::io::Error::other(e.to_string()));
                        }
                    }
                };
                let got = p.read(buf).await;
                stream_read(got, port)
            }
        }
    }
}

/// A stream's read: 0 bytes or an error closes it (to be reopened).
fn stream_read<S>(got: std::io::Result<usize>, slot: &mut Option<S>) -> std::io::Result<Read> {
    match got {
        Ok(0) => {
            *slot = None;
            Ok(Read::Nothing)
        }
        Ok(n) => Ok(Read::Bytes(n)),
        Err(e) => {
            *slot = None;
            Err(e)
        }
    }
}

/// What the reading task hands over.
enum Chunk {
    Bytes(Vec<u8>),
    /// A stream closed or (re)opened: a partial frame from before is not continued.
    Reset,
    Error(std::io::Error),
}

/// Reads `port` until `cancel` (or until nobody listens), in its own task.
async fn read_port(
    mut port: Port,
    tx: tokio::sync::mpsc::Sender<Chunk>,
    label: String,
    cancel: CancellationToken,
) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let r = tokio::select! {
            _ = cancel.cancelled() => return,
            r = port.read(&mut buf, &label) => r,
        };
        let chunk = match r {
            Ok(Read::Bytes(n)) => Chunk::Bytes(buf[..n].to_vec()),
            Ok(Read::Nothing) => Chunk::Reset,
            Err(e) => Chunk::Error(e),
        };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Runs one connection until `cancel`; returns its counts. The outbox gets every item the
/// drones produce (the uplink is woken through `appended`); items it refuses are counted and
/// logged.
#[allow(clippy::too_many_arguments)] // the daemon's shared handles, each one its own
pub async fn run<O: Outbox>(
    connection: Connection,
    drones: Vec<DroneSpec>,
    site: String,
    outbox: Arc<Mutex<O>>,
    appended: Arc<Notify>,
    progress: Arc<AtomicU64>,
    clock: Clock,
    cancel: CancellationToken,
) -> PortStats {
    let label = connection.to_string();
    let mut fetcher = Fetcher::new(
        drones
            .iter()
            .filter_map(|d| Some((d.drone.id.clone(), d.photos.clone()?))),
        site,
        clock.clone(),
    );
    let mut dispatch = Dispatch::new(&connection, drones);
    let port = loop {
        match Port::open(&connection).await {
            Ok(p) => break p,
            Err(e) => {
                error!(connection = label, error = %e, "cannot open the MAVLink connection; trying again");
                metrics::counter!(m::MAVLINK_IO_ERRORS, "connection" => label.clone()).increment(1);
                tokio::select! {
                    _ = cancel.cancelled() => return dispatch.stats,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            }
        }
    };
    info!(
        connection = label,
        drones = dispatch.drones.len(),
        "drone source listening"
    );
    let stream = port.is_stream();
    // The port is read in a task of its own, so that the ticks below never cancel a connect, an
    // accept or an open half-way (a peer further than a tick away would never be reached).
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    let reader = tokio::spawn(read_port(port, tx, label.clone(), cancel.clone()));
    // A stream's bytes not yet used: the start of a frame whose rest is still on its way.
    let mut carry: Vec<u8> = Vec::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    let mut fetched = Vec::new();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                dispatch.tick(clock.now_ms(), clock.instant(), &mut out);
                // The source is alive while its loop runs, whether its drones fly or not: a
                // drones-only gateway whose drones are parked still feeds the watchdog.
                progress.fetch_add(1, Ordering::Relaxed);
            }
            chunk = rx.recv() => match chunk {
                Some(Chunk::Bytes(bytes)) => {
                    let (now_ms, now) = (clock.now_ms(), clock.instant());
                    if stream {
                        carry.extend_from_slice(&bytes);
                        let used = dispatch.bytes(&carry, true, now_ms, now, &mut out);
                        carry.drain(..used);
                        // A frame is at most 280 bytes: more waiting is not a frame.
                        if carry.len() > 1024 {
                            let n = carry.len() - 1;
                            carry.drain(..n);
                        }
                    } else {
                        dispatch.bytes(&bytes, false, now_ms, now, &mut out);
                    }
                }
                Some(Chunk::Reset) => carry.clear(),
                Some(Chunk::Error(e)) => {
                    carry.clear();
                    dispatch.stats.io_errors += 1;
                    metrics::counter!(m::MAVLINK_IO_ERRORS, "connection" => label.clone()).increment(1);
                    warn!(connection = label, error = %e, "MAVLink connection error");
                }
                None => break,
            },
            // A photo fetched (or not): the picture's parts and the item naming them.
            done = fetcher.next(), if fetcher.pending() > 0 => fetched = done,
        }
        // Photos of drones with `photo_url` wait for their bytes (bounded by the fetch); what a
        // fetch gave goes up as it is.
        fetcher.take(&mut out);
        out.append(&mut fetched);
        append(
            &outbox,
            &appended,
            &clock,
            &mut out,
            &mut dispatch.stats,
            &label,
        );
    }
    let _ = reader.await;
    out.extend(fetcher.abandon());
    dispatch.stop(&mut out);
    append(
        &outbox,
        &appended,
        &clock,
        &mut out,
        &mut dispatch.stats,
        &label,
    );
    let s = &dispatch.stats;
    info!(
        connection = label,
        frames = s.tally.frames,
        garbage_bytes = s.tally.garbage_bytes,
        bad_crc = s.tally.bad_crc,
        unknown = s.tally.unknown,
        foreign = s.foreign,
        items = s.items,
        "drone source stopped"
    );
    dispatch.stats
}

/// Appends `out` (emptied; nothing when empty) to the outbox, after a gap event for what it
/// refused before.
fn append<O: Outbox>(
    outbox: &Arc<Mutex<O>>,
    appended: &Notify,
    clock: &Clock,
    out: &mut Vec<Body>,
    stats: &mut PortStats,
    label: &str,
) {
    if out.is_empty() {
        return;
    }
    let mut bodies = std::mem::take(out);
    let n = bodies.len() as u64;
    let (from, to) = bodies.iter().fold((i64::MAX, i64::MIN), |(a, b), x| {
        (a.min(x.ts_ms()), b.max(x.ts_ms()))
    });
    // Items refused before are reported ahead of these (and counted again if this fails too).
    let gap = stats.unreported.map(|(dropped, from_ms, to_ms)| {
        Body::Event(fumegrid_common::wire::Event {
            ts_ms: clock.now_ms(),
            kind: fumegrid_common::wire::EventKind::Gap,
            message: format!("{dropped} drone items the outbox refused"),
            dropped: Some(dropped),
            from_ms: Some(from_ms),
            to_ms: Some(to_ms),
        })
    });
    bodies.splice(0..0, gap);
    let result = match outbox.lock() {
        Ok(mut o) => o.append(bodies, clock.now_ms()).map_err(|e| e.to_string()),
        Err(_) => Err("outbox lock poisoned".to_string()),
    };
    match result {
        Ok(_) => {
            stats.items += n;
            stats.unreported = None;
            appended.notify_one();
        }
        Err(e) => {
            stats.items_lost += n;
            let (c, f, t) = stats.unreported.unwrap_or((0, from, to));
            stats.unreported = Some((c + n, f.min(from), t.max(to)));
            metrics::counter!(m::OUTBOX_REFUSED).increment(n);
            error!(connection = label, items = n, error = %e, "the outbox refused drone items: lost");
        }
    }
}

#[cfg(test)]
mod tests;
