//! Ingest events. Each method is the one call for its event: it counts it in Prometheus (the
//! `metrics` facade, names in [`crate::telemetry`]), keeps the snapshot `/api/v1/stats` serves,
//! and logs it where an operator should hear of it.
//!
//! Rejects log at most once per gateway and reason per interval, from the same call that
//! counts them: [`Stats::reject`].

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use fumegrid_common::clock::Clock;
use fumegrid_common::ratelog::LogLimiter;
use fumegrid_common::wire;
use metrics::{counter, gauge};
use serde::Serialize;
use tracing::{debug, error, info};

use super::validate::{Reason, Reject};
use crate::store::Committed;
use crate::telemetry as m;

/// The ingest's event sink; cheap to call from any thread.
#[derive(Debug)]
pub struct Stats {
    counts: Mutex<StatsSnapshot>,
    /// (gateway, reason) of rejects.
    log: Mutex<LogLimiter<(String, Reason)>>,
    /// For the log's rate limit.
    clock: Clock,
}

impl Default for Stats {
    /// On the machine's clock.
    fn default() -> Stats {
        Stats::new(Clock::system())
    }
}

/// What `/api/v1/stats` shows: the totals since start, kept by the same calls that count.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub batches_accepted: u64,
    /// Items stored for the first time.
    pub items_accepted: u64,
    /// Items already stored (resends); acked again, not stored again.
    pub items_duplicate: u64,
    pub items_conflict: u64,
    /// Of `items_accepted`, picture parts; pictures whose parts were all in and verified, and
    /// pictures refused (hash mismatch, inconsistent parts).
    pub evidence_parts: u64,
    pub pictures_complete: u64,
    pub pictures_refused: u64,
    pub hellos: u64,
    pub acks_published: u64,
    pub status_messages: u64,
    /// Transactions committed (each holds one or more batches).
    pub commits: u64,
    pub store_errors: u64,
    pub mqtt_connects: u64,
    pub mqtt_connected: bool,
    pub rejects_total: u64,
    /// Every reason, zero or not, so that dashboards see the full set.
    pub rejects: BTreeMap<&'static str, u64>,
}

impl Default for StatsSnapshot {
    fn default() -> Self {
        StatsSnapshot {
            batches_accepted: 0,
            items_accepted: 0,
            items_duplicate: 0,
            items_conflict: 0,
            evidence_parts: 0,
            pictures_complete: 0,
            pictures_refused: 0,
            hellos: 0,
            acks_published: 0,
            status_messages: 0,
            commits: 0,
            store_errors: 0,
            mqtt_connects: 0,
            mqtt_connected: false,
            rejects_total: 0,
            rejects: Reason::ALL.iter().map(|r| (r.name(), 0)).collect(),
        }
    }
}

impl Stats {
    pub fn new(clock: Clock) -> Stats {
        Stats {
            counts: Mutex::default(),
            log: Mutex::new(LogLimiter::new(INTERVAL, MAX_PAIRS)),
            clock,
        }
    }

    fn update(&self, f: impl FnOnce(&mut StatsSnapshot)) {
        f(&mut self.counts.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Makes every reject reason, store error and case source show as a zero series in
    /// `/metrics` before the first event (`increase()` over a series that does not exist yet
    /// sees nothing when it appears with 1).
    pub fn register(&self) {
        for r in Reason::ALL {
            counter!(m::INGEST_REJECTS, "reason" => r.name()).absolute(0);
        }
        for op in ["commit", "status"] {
            counter!(m::STORE_ERRORS, "op" => op).absolute(0);
        }
        for source in ["alarm", "report"] {
            counter!(m::CASES_OPENED, "source" => source).absolute(0);
        }
        for r in crate::store::evidence::Refusal::ALL {
            counter!(m::EVIDENCE_REFUSED, "reason" => r.name()).absolute(0);
        }
        for name in [
            m::INGEST_MQTT_CONNECTS,
            m::INGEST_ACKS,
            m::STORE_COMMITS,
            m::EVIDENCE_COMPLETE,
        ] {
            counter!(name).absolute(0);
        }
        gauge!(m::INGEST_MQTT_CONNECTED).set(0.0);
    }

    pub fn rejects_of(&self, r: Reason) -> u64 {
        self.snapshot().rejects.get(r.name()).copied().unwrap_or(0)
    }

    /// Counts a reject and logs it at WARN the first time for its (gateway, reason), then at
    /// most once a minute per pair with the count in between. Never an error: no data of a good
    /// gateway was lost.
    pub fn reject(&self, r: &Reject) {
        counter!(m::INGEST_REJECTS, "reason" => r.reason.name()).increment(1);
        self.update(|s| {
            *s.rejects.entry(r.reason.name()).or_default() += 1;
            s.rejects_total += 1;
        });
        let now = self.clock.instant();
        let gw = r.gateway.as_deref().unwrap_or("-");
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(suppressed) = log.should_log((gw.to_string(), r.reason), now) {
            tracing::warn!(
                gateway = gw,
                reason = r.reason.name(),
                detail = %r.detail,
                suppressed,
                "message rejected"
            );
        }
    }

    /// The ingest client got a CONNACK from `broker`.
    pub fn connected(&self, broker: &str, session_present: bool, generation: u64) {
        counter!(m::INGEST_MQTT_CONNECTS).increment(1);
        gauge!(m::INGEST_MQTT_CONNECTED).set(1.0);
        self.update(|s| {
            s.mqtt_connects += 1;
            s.mqtt_connected = true;
        });
        info!(
            broker,
            session_present, generation, "ingest connected to MQTT broker"
        );
    }

    /// The connection is gone (logged by the caller, which knows whether it is a new outage).
    pub fn disconnected(&self) {
        gauge!(m::INGEST_MQTT_CONNECTED).set(0.0);
        self.update(|s| s.mqtt_connected = false);
    }

    pub fn is_connected(&self) -> bool {
        self.counts
            .lock()
            .map(|s| s.mqtt_connected)
            .unwrap_or(false)
    }

    /// A gateway's `status` document arrived.
    pub fn status(&self, gateway: &str, state: wire::State) {
        counter!(m::INGEST_STATUS, "gateway" => gateway.to_string()).increment(1);
        self.update(|s| s.status_messages += 1);
        info!(gateway, ?state, "gateway status");
    }

    /// One store transaction committed.
    pub fn committed(&self) {
        counter!(m::STORE_COMMITS).increment(1);
        self.update(|s| s.commits += 1);
    }

    /// A store write failed; `op` says which (`commit`, `status`), `what` is the operator's
    /// sentence.
    pub fn store_error(&self, op: &'static str, error: &dyn std::fmt::Display, what: &str) {
        counter!(m::STORE_ERRORS, "op" => op).increment(1);
        self.update(|s| s.store_errors += 1);
        error!(op, error = %error, "{what}");
    }

    pub fn store_errors(&self) -> u64 {
        self.counts.lock().map(|s| s.store_errors).unwrap_or(0)
    }

    /// One batch of `gateway` (authenticated, so a configured id) is in the store.
    pub fn batch(&self, gateway: &str, stream: &str, items: usize, c: Committed) {
        let gw = gateway.to_string();
        counter!(m::INGEST_BATCHES, "gateway" => gw.clone()).increment(1);
        counter!(m::INGEST_ITEMS, "gateway" => gw.clone()).increment(c.new);
        counter!(m::INGEST_DUPLICATES, "gateway" => gw.clone()).increment(c.duplicates);
        if c.parts > 0 {
            counter!(m::EVIDENCE_PARTS, "gateway" => gw).increment(c.parts);
        }
        self.update(|s| {
            s.batches_accepted += 1;
            s.items_accepted += c.new;
            s.items_duplicate += c.duplicates;
            s.items_conflict += c.conflicts_new;
            s.evidence_parts += c.parts;
        });
        if c.conflicts > 0 {
            counter!(m::INGEST_CONFLICTS, "gateway" => gateway.to_string())
                .increment(c.conflicts_new);
            error!(
                gateway,
                stream,
                conflicts = c.conflicts,
                new_conflicts = c.conflicts_new,
                first_seq = c.first_conflict,
                "items arrived under seqs already stored with other content (the gateway's \
                 outbox went back in time?): kept in the conflicts table"
            );
        }
        debug!(
            gateway,
            stream,
            items,
            new = c.new,
            duplicates = c.duplicates,
            "batch committed"
        );
    }

    /// What a commit did to a picture (only called once the commit succeeded): a complete
    /// picture is counted and logged at DEBUG; a refused one is counted by reason and logged
    /// at WARN with its gateway and camera (the gateway's data was acked and deleted: an
    /// operator should look at that camera or gateway).
    pub fn picture(&self, ev: &crate::store::evidence::PictureEvent) {
        use crate::store::evidence::Outcome;
        match ev.outcome {
            Outcome::Complete { size } => {
                counter!(m::EVIDENCE_COMPLETE).increment(1);
                self.update(|s| s.pictures_complete += 1);
                debug!(gateway = %ev.gateway, camera = %ev.camera, sha256 = %ev.sha256, size,
                    "picture complete, hash verified");
            }
            Outcome::Refused(r) => {
                counter!(m::EVIDENCE_REFUSED, "reason" => r.name()).increment(1);
                self.update(|s| s.pictures_refused += 1);
                tracing::warn!(
                    gateway = %ev.gateway,
                    camera = %fumegrid_common::text::clip(&ev.camera, 64),
                    sha256 = %ev.sha256,
                    reason = r.name(),
                    "picture refused: its parts were acked and deleted"
                );
            }
        }
    }

    /// A gateway's hello was answered: the aggregator holds `held` seqs of `stream` from
    /// `from_seq` on, the highest being `high`.
    pub fn hello(&self, gateway: &str, stream: &str, from_seq: u64, high: u64, held: u64) {
        counter!(m::INGEST_HELLOS).increment(1);
        self.update(|s| s.hellos += 1);
        info!(
            gateway,
            stream, from_seq, high, held, "gateway hello answered"
        );
    }

    /// An ack went to the MQTT client.
    pub fn ack_published(&self) {
        counter!(m::INGEST_ACKS).increment(1);
        self.update(|s| s.acks_published += 1);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.counts
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Most (gateway, reason) pairs remembered; beyond that (a flood of made-up gateway ids) only
/// counters move.
const MAX_PAIRS: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_every_reason() {
        let s = Stats::default();
        s.reject(&Reject {
            reason: Reason::BadMac,
            gateway: Some("g".into()),
            detail: "x".into(),
        });
        let snap = s.snapshot();
        assert_eq!(snap.rejects.len(), Reason::ALL.len());
        assert_eq!(snap.rejects["bad_mac"], 1);
        assert_eq!(snap.rejects_total, 1);
    }

    /// One call counts in Prometheus, in the API snapshot, and logs (the second reject of the
    /// same pair within the interval counts without a log line).
    #[test]
    fn a_reject_counts_in_both_places_and_logs_once_per_interval() {
        use fumegrid_common::telemetry::{capture, scraped};
        let s = Stats::default();
        let r = Reject {
            reason: Reason::BadMac,
            gateway: Some("gw-9".into()),
            detail: "mac does not verify".into(),
        };
        let ((), scrape, logs) = capture(|| {
            s.register();
            s.reject(&r);
            s.reject(&r);
        });
        assert_eq!(
            scraped(&scrape, "fumegrid_ingest_rejects_total{reason=\"bad_mac\"}"),
            Some(2.0),
            "{scrape}"
        );
        assert_eq!(
            scraped(&scrape, "fumegrid_ingest_rejects_total{reason=\"no_mac\"}"),
            Some(0.0),
            "every reason is a series from the start: {scrape}"
        );
        assert_eq!(s.snapshot().rejects["bad_mac"], 2);
        assert_eq!(logs.matches("message rejected").count(), 1, "{logs}");
        assert!(logs.contains("gw-9") && logs.contains("bad_mac"), "{logs}");
    }

    #[test]
    fn a_committed_batch_counts_per_gateway_in_both_places() {
        use fumegrid_common::telemetry::{capture, scraped};
        let s = Stats::default();
        let ((), scrape, _) = capture(|| {
            s.committed();
            s.batch(
                "gw-1",
                "st",
                5,
                Committed {
                    new: 4,
                    duplicates: 1,
                    ..Committed::default()
                },
            );
            s.store_error("commit", &"disk full", "commit failed");
        });
        let v = |k: &str| scraped(&scrape, k);
        assert_eq!(
            v("fumegrid_ingest_items_total{gateway=\"gw-1\"}"),
            Some(4.0)
        );
        assert_eq!(
            v("fumegrid_ingest_duplicates_total{gateway=\"gw-1\"}"),
            Some(1.0)
        );
        assert_eq!(
            v("fumegrid_ingest_batches_total{gateway=\"gw-1\"}"),
            Some(1.0)
        );
        assert_eq!(v("fumegrid_store_commits_total"), Some(1.0));
        assert_eq!(v("fumegrid_store_errors_total{op=\"commit\"}"), Some(1.0));
        let snap = s.snapshot();
        assert_eq!(
            (
                snap.items_accepted,
                snap.items_duplicate,
                snap.batches_accepted,
                snap.commits,
                snap.store_errors
            ),
            (4, 1, 1, 1, 1)
        );
    }
}
