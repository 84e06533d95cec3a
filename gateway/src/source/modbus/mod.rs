//! Modbus acquisition: one task per channel (an RS-485 bus, or a Modbus TCP address) polls every
//! slave on it.
//!
//! - [`plan`] turns a profile into read requests (pure).
//! - [`breaker`] keeps a dead slave from stalling its bus (pure).
//! - [`link`] is the I/O seam (the [`link::Link`] trait): a timeout on every request, recovery
//!   after one. Tests drive the scheduler through a fake link (`fake`, answers per slave) in
//!   paused time (`channel_tests`).
//! - [`run_channel`] is the scheduler: earliest-deadline-first over the channel's slaves, so a
//!   saturated bus serves them round-robin and an idle one keeps each on its own interval.

pub mod breaker;
#[cfg(test)]
mod channel_tests;
#[cfg(test)]
pub(crate) mod fake;
pub mod link;
pub mod plan;

use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::reading::Reading;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::decode::{Block, BlockData, DeviceDecoder};
use crate::telemetry as m;
use breaker::Breaker;
use link::{Link, ReadError, Transport};

/// Counters of one slave, reported in the periodic and final `slave stats` logs and in
/// `run --stats-file`. Its methods are the one place each poll event is counted: in these
/// fields and in Prometheus (names in [`crate::telemetry`]), with the label `device`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SlaveStats {
    pub device: String,
    pub slave: u8,
    /// Polls started (a poll reads every block of the profile).
    pub polls: u64,
    /// Polls where every block was read.
    pub polls_ok: u64,
    pub requests: u64,
    pub no_reply: u64,
    /// CRC errors, noise, replies that do not match the request.
    pub garbled: u64,
    pub exceptions: u64,
    pub io_errors: u64,
    pub breaker_trips: u64,
    /// Polls that started more than one interval late because the channel was saturated.
    pub overruns: u64,
    pub breaker_open: bool,
}

impl SlaveStats {
    fn device(&self) -> String {
        self.device.clone()
    }

    fn request(&mut self) {
        self.requests += 1;
        metrics::counter!(m::MODBUS_REQUESTS, "device" => self.device()).increment(1);
    }

    /// A request failed (counted and logged by [`report`]).
    fn failed(&mut self, e: &ReadError) {
        match e {
            ReadError::NoReply(_) => self.no_reply += 1,
            ReadError::Garbled(_) => self.garbled += 1,
            ReadError::Exception { .. } => self.exceptions += 1,
            ReadError::Io(_) => self.io_errors += 1,
        }
        metrics::counter!(m::MODBUS_FAILURES, "device" => self.device(), "kind" => e.kind())
            .increment(1);
    }

    fn poll_started(&mut self, overrun: bool) {
        self.polls += 1;
        metrics::counter!(m::MODBUS_POLLS, "device" => self.device()).increment(1);
        if overrun {
            self.overruns += 1;
            metrics::counter!(m::MODBUS_OVERRUNS, "device" => self.device()).increment(1);
        }
    }

    fn poll_ok(&mut self) {
        self.polls_ok += 1;
        metrics::counter!(m::MODBUS_POLLS_OK, "device" => self.device()).increment(1);
    }

    /// The breaker's state after a poll; `tripped` when this poll opened it.
    fn breaker(&mut self, open: bool, tripped: bool) {
        if tripped {
            self.breaker_trips += 1;
            metrics::counter!(m::MODBUS_BREAKER_TRIPS, "device" => self.device()).increment(1);
        }
        self.breaker_open = open;
        metrics::gauge!(m::MODBUS_BREAKER_OPEN, "device" => self.device()).set(if open {
            1.0
        } else {
            0.0
        });
    }
}

/// One slave on a channel, with everything needed to poll it.
#[derive(Debug)]
pub struct Slot {
    pub slave: u8,
    pub blocks: Vec<Block>,
    pub decoder: DeviceDecoder,
    pub breaker: Breaker,
    pub interval: Duration,
    pub timeout: Duration,
    /// Quiet time some firmwares need after answering before the next frame on the line.
    pub inter_request_delay: Duration,
    pub due: Instant,
    pub stats: SlaveStats,
    /// Kind of the error streak in progress, to log a streak once rather than every poll.
    failing: Option<&'static str>,
}

impl Slot {
    pub fn new(
        device: &str,
        slave: u8,
        decoder: DeviceDecoder,
        breaker: Breaker,
        interval: Duration,
        start: Instant,
    ) -> Slot {
        let profile = decoder.profile();
        let blocks = plan::plan(profile);
        let timeout = Duration::from_millis(profile.modbus.response_timeout_ms);
        let inter_request_delay = Duration::from_millis(profile.modbus.inter_request_delay_ms);
        Slot {
            slave,
            blocks,
            decoder,
            breaker,
            interval,
            timeout,
            inter_request_delay,
            due: start,
            stats: SlaveStats {
                device: device.to_string(),
                slave,
                ..SlaveStats::default()
            },
            failing: None,
        }
    }
}

/// Reads every block of `slot` once. Stops at the first block that got no valid answer (a
/// silent slave would only cost more timeouts, and a late reply must not meet a new request to
/// the same slave). Returns the per-block data and the errors.
pub async fn poll_once<L: Link>(
    link: &mut L,
    slot: &mut Slot,
    clock: &Clock,
) -> (Vec<Option<BlockData>>, Vec<(usize, ReadError)>) {
    let mut results = Vec::with_capacity(slot.blocks.len());
    let mut errors = Vec::new();
    let mut silent = false;
    for (i, b) in slot.blocks.iter().enumerate() {
        if silent {
            results.push(None);
            continue;
        }
        slot.stats.request();
        let result = link
            .read(slot.slave, b.table, b.start, b.count, slot.timeout)
            .await;
        if !slot.inter_request_delay.is_zero() {
            // Some firmwares need a pause after answering before the next frame on the line.
            link.hold_until(clock.tokio_instant() + slot.inter_request_delay);
        }
        match result {
            Ok(d) => results.push(Some(d)),
            Err(e) => {
                // After a timeout or a corrupt reply the line was reset; a reply to this
                // request may still be on its way, so this slave gets no further request
                // until its next poll.
                silent = !e.slave_answered();
                errors.push((i, e));
                results.push(None);
            }
        }
    }
    (results, errors)
}

/// What a channel task hands downstream after each poll.
pub type ReadingsTx = mpsc::Sender<Vec<Reading>>;

/// Polls every slot of one channel until `cancel`; returns the final counters.
pub async fn run_channel<L: Link>(
    mut link: L,
    mut slots: Vec<Slot>,
    out: ReadingsTx,
    cancel: CancellationToken,
    stats_every: Duration,
    clock: Clock,
) -> Vec<SlaveStats> {
    let channel = link.name().to_string();
    let mut next_stats = clock.tokio_instant() + stats_every;
    info!(channel, slaves = slots.len(), "polling");
    while !slots.is_empty() {
        // Earliest deadline first; ties go to the lowest index, which the due times rotate.
        let (idx, at) = slots
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.breaker.next_attempt(s.due)))
            .min_by_key(|&(i, t)| (t, i))
            .unwrap_or((0, clock.tokio_instant()));
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(at) => {}
        }
        let started = clock.tokio_instant();
        let slot = &mut slots[idx];
        let overrun = started.duration_since(slot.due) > slot.interval && !slot.breaker.is_open();
        slot.stats.poll_started(overrun);
        let (results, errors) = poll_once(&mut link, slot, &clock).await;
        let answered =
            results.iter().any(Option::is_some) || errors.iter().any(|(_, e)| e.slave_answered());
        if errors.is_empty() {
            slot.stats.poll_ok();
        }
        report(&channel, link.transport(), slot, &errors);
        let finished = clock.tokio_instant();
        let tripped = slot.breaker.record(answered, finished);
        report_breaker(&channel, slot, tripped, finished);
        let readings = slot.decoder.decode(&slot.blocks, &results, clock.now_ms());
        // Next poll one interval after the previous due time keeps the rate exact; a slot that
        // fell more than an interval behind (saturated bus) restarts from now instead of
        // bursting to catch up.
        slot.due += slot.interval;
        if slot.due + slot.interval < finished {
            slot.due = finished;
        }
        if out.send(readings).await.is_err() {
            break;
        }
        if finished >= next_stats {
            next_stats = finished + stats_every;
            for s in &slots {
                info!(
                    channel,
                    slave = s.slave,
                    device = s.stats.device,
                    polls = s.stats.polls,
                    polls_ok = s.stats.polls_ok,
                    no_reply = s.stats.no_reply,
                    garbled = s.stats.garbled,
                    exceptions = s.stats.exceptions,
                    io_errors = s.stats.io_errors,
                    breaker_trips = s.stats.breaker_trips,
                    breaker_open = s.stats.breaker_open,
                    overruns = s.stats.overruns,
                    "slave stats"
                );
            }
        }
    }
    info!(channel, "stopped polling");
    slots.into_iter().map(|s| s.stats).collect()
}

/// Counts the breaker's state after a poll and logs when this poll opened it.
fn report_breaker(channel: &str, slot: &mut Slot, tripped: bool, finished: Instant) {
    slot.stats.breaker(slot.breaker.is_open(), tripped);
    if tripped {
        warn!(
            channel,
            slave = slot.slave,
            device = slot.stats.device,
            probe_every_ms = slot
                .breaker
                .next_attempt(finished)
                .duration_since(finished)
                .as_millis() as u64,
            "no usable answer from slave: circuit breaker open, probing only"
        );
    }
}

/// Counts a poll's failed requests and logs them: each at DEBUG, a streak of one kind once at
/// WARN, and its end at INFO.
fn report(channel: &str, transport: Transport, slot: &mut Slot, errors: &[(usize, ReadError)]) {
    let Some((i, first)) = errors.first() else {
        if let Some(kind) = slot.failing.take() {
            info!(
                channel,
                slave = slot.slave,
                device = slot.stats.device,
                after = kind,
                "slave answering again"
            );
        }
        return;
    };
    for (i, e) in errors {
        slot.stats.failed(e);
        let b = &slot.blocks[*i];
        debug!(channel, slave = slot.slave, table = b.table.name(), start = b.start, count = b.count, kind = e.kind(), error = %e, "read failed");
    }
    if slot.failing != Some(first.kind()) {
        let b = &slot.blocks[*i];
        warn!(channel, slave = slot.slave, device = slot.stats.device, table = b.table.name(), start = b.start, count = b.count, kind = first.kind(), error = %first, hint = first.hint(transport), no_reply = slot.stats.no_reply, garbled = slot.stats.garbled, exceptions = slot.stats.exceptions, "read failed");
        slot.failing = Some(first.kind());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fumegrid_common::diag::Source;
    use fumegrid_common::profile::Profile;
    use fumegrid_common::telemetry::{capture, scraped};

    use super::*;

    fn slot() -> Slot {
        let t = "[profile]\nid = \"t\"\n\
                 [[points]]\nmetric = \"fume_mg_m3\"\ntable = \"holding\"\naddress = 0\ntype = \"f32\"\n";
        let p = Arc::new(Profile::from_source(&Source::new("t.toml", t)).expect("valid"));
        Slot::new(
            "rest-7",
            7,
            DeviceDecoder::new("rest-7", p, 0),
            Breaker::new(2, Duration::from_secs(10)),
            Duration::from_secs(1),
            Clock::fixed(0).tokio_instant(),
        )
    }

    /// One call per poll outcome counts the failure kind in the slave's counters and in
    /// Prometheus, and logs a streak of one kind once; the breaker opening counts and logs too.
    #[test]
    fn failures_and_breaker_trips_count_in_both_places_and_log() {
        let mut s = slot();
        let now = Clock::fixed(0).tokio_instant();
        let ((), scrape, logs) = capture(|| {
            for _ in 0..3 {
                s.stats.poll_started(false);
                report(
                    "ch",
                    Transport::Rtu,
                    &mut s,
                    &[(0, ReadError::NoReply(300))],
                );
                let tripped = s.breaker.record(false, now);
                report_breaker("ch", &mut s, tripped, now);
            }
            s.stats.poll_started(false);
            report(
                "ch",
                Transport::Rtu,
                &mut s,
                &[(0, ReadError::Io("connection refused".into()))],
            );
        });
        let v = |k: &str| scraped(&scrape, k);
        assert_eq!(
            v("fumegrid_modbus_failures_total{device=\"rest-7\",kind=\"no_reply\"}"),
            Some(3.0),
            "{scrape}"
        );
        assert_eq!(
            v("fumegrid_modbus_failures_total{device=\"rest-7\",kind=\"io\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("fumegrid_modbus_polls_total{device=\"rest-7\"}"),
            Some(4.0)
        );
        assert_eq!(
            v("fumegrid_modbus_breaker_trips_total{device=\"rest-7\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("fumegrid_modbus_breaker_open{device=\"rest-7\"}"),
            Some(1.0)
        );
        assert_eq!(
            (
                s.stats.no_reply,
                s.stats.io_errors,
                s.stats.polls,
                s.stats.breaker_trips
            ),
            (3, 1, 4, 1)
        );
        // One WARN per streak (no_reply, then io), one for the breaker.
        let warns = |what: &str| {
            logs.lines()
                .filter(|l| l.contains(" WARN ") && l.contains(what))
                .count()
        };
        assert_eq!(warns("read failed"), 2, "{logs}");
        assert_eq!(warns("circuit breaker open"), 1, "{logs}");
    }
}
