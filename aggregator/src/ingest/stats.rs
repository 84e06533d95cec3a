//! Ingest counters (served by `/api/v1/stats`) and the rate-limited reject log.
//!
//! Every reject both counts and (at most once per gateway and reason per interval) logs, from the
//! same call: [`Stats::reject`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::validate::{Reason, Reject};

/// Shared counters. Cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    pub batches_accepted: AtomicU64,
    /// Items stored for the first time.
    pub items_accepted: AtomicU64,
    /// Items already stored (resends); acked again, not stored again.
    pub items_duplicate: AtomicU64,
    /// Duplicates whose content differs from what is stored under their seq (counted once per
    /// distinct content); kept in the conflicts table and acked.
    pub items_conflict: AtomicU64,
    /// Gateway hellos answered (see `wire::Hello`).
    pub hellos: AtomicU64,
    pub acks_published: AtomicU64,
    pub status_messages: AtomicU64,
    /// Transactions committed (each holds one or more batches).
    pub commits: AtomicU64,
    pub store_errors: AtomicU64,
    pub mqtt_connects: AtomicU64,
    pub mqtt_connected: AtomicBool,
    rejects: [AtomicU64; Reason::ALL.len()],
    log: Mutex<RejectLog>,
}

/// Serialised form of [`Stats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub batches_accepted: u64,
    pub items_accepted: u64,
    pub items_duplicate: u64,
    pub items_conflict: u64,
    pub hellos: u64,
    pub acks_published: u64,
    pub status_messages: u64,
    pub commits: u64,
    pub store_errors: u64,
    pub mqtt_connects: u64,
    pub mqtt_connected: bool,
    pub rejects_total: u64,
    /// Every reason, zero or not, so that dashboards see the full set.
    pub rejects: std::collections::BTreeMap<&'static str, u64>,
}

impl Stats {
    pub fn rejects_of(&self, r: Reason) -> u64 {
        self.rejects[r.index()].load(Relaxed)
    }

    /// Counts a reject and logs it at WARN the first time for its (gateway, reason), then at
    /// most once a minute per pair with the count in between. Never an error: no data of a good
    /// gateway was lost.
    pub fn reject(&self, r: &Reject) {
        self.rejects[r.reason.index()].fetch_add(1, Relaxed);
        let now = Instant::now();
        let gw = r.gateway.as_deref().unwrap_or("-");
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(suppressed) = log.should_log(gw, r.reason, now) {
            tracing::warn!(
                gateway = gw,
                reason = r.reason.name(),
                detail = %r.detail,
                suppressed,
                "message rejected"
            );
        }
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let rejects: std::collections::BTreeMap<&'static str, u64> = Reason::ALL
            .iter()
            .map(|r| (r.name(), self.rejects_of(*r)))
            .collect();
        StatsSnapshot {
            batches_accepted: self.batches_accepted.load(Relaxed),
            items_accepted: self.items_accepted.load(Relaxed),
            items_duplicate: self.items_duplicate.load(Relaxed),
            items_conflict: self.items_conflict.load(Relaxed),
            hellos: self.hellos.load(Relaxed),
            acks_published: self.acks_published.load(Relaxed),
            status_messages: self.status_messages.load(Relaxed),
            commits: self.commits.load(Relaxed),
            store_errors: self.store_errors.load(Relaxed),
            mqtt_connects: self.mqtt_connects.load(Relaxed),
            mqtt_connected: self.mqtt_connected.load(Relaxed),
            rejects_total: rejects.values().sum(),
            rejects,
        }
    }
}

/// Most (gateway, reason) pairs remembered; beyond that (a flood of made-up gateway ids) only
/// counters move.
const MAX_PAIRS: usize = 10_000;
const INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
struct RejectLog {
    /// (gateway, reason) → (last logged, rejects since then)
    pairs: HashMap<(String, Reason), (Instant, u64)>,
}

impl RejectLog {
    /// `Some(suppressed since last line)` when this reject should be logged.
    fn should_log(&mut self, gw: &str, reason: Reason, now: Instant) -> Option<u64> {
        if let Some((last, n)) = self.pairs.get_mut(&(gw.to_string(), reason)) {
            if now.duration_since(*last) >= INTERVAL {
                let suppressed = *n;
                *last = now;
                *n = 0;
                return Some(suppressed);
            }
            *n += 1;
            return None;
        }
        if self.pairs.len() >= MAX_PAIRS {
            return None;
        }
        self.pairs.insert((gw.to_string(), reason), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_pair_then_once_per_interval() {
        let mut log = RejectLog::default();
        let t0 = Instant::now();
        assert_eq!(log.should_log("a", Reason::BadMac, t0), Some(0));
        assert_eq!(log.should_log("a", Reason::BadMac, t0), None);
        assert_eq!(log.should_log("a", Reason::BadMac, t0), None);
        assert_eq!(log.should_log("a", Reason::NoMac, t0), Some(0));
        assert_eq!(log.should_log("b", Reason::BadMac, t0), Some(0));
        assert_eq!(log.should_log("a", Reason::BadMac, t0 + INTERVAL), Some(2));
    }

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
}
