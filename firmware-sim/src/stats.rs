//! Counters of what the simulator saw and did, printed as one JSON line on stderr on exit (and on
//! SIGUSR1):
//!
//! ```text
//! {"event":"stats","final":true,"transport":"rtu","port":"/dev/pts/5","bad_frames":0,"other_ids":3,
//!  "slaves":[{"id":1,"port":null,"profile":"tb-compatible","scenario":"normal","fault":"none",
//!             "requests":120,"replies":120,"faults":0,"bad_requests":0}]}
//! ```
//!
//! `requests`: well-formed frames addressed to the slave; `replies`: frames sent (including
//! corrupted ones); `faults`: requests a fault was applied to; `bad_requests`: frames with a bad
//! CRC or unparseable framing whose first byte names this slave (RTU) or malformed MBAP headers on
//! its port (TCP). Bus-wide: `bad_frames` (all bad frames), `other_ids` (well-formed frames for a
//! slave id nobody simulates; RTU consumes them silently).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

/// Counters of one simulated slave.
#[derive(Debug, Default)]
pub struct SlaveStats {
    pub requests: AtomicU64,
    pub replies: AtomicU64,
    pub faults: AtomicU64,
    pub bad_requests: AtomicU64,
}

/// Bus- or server-wide counters.
#[derive(Debug, Default)]
pub struct BusStats {
    pub bad_frames: AtomicU64,
    pub other_ids: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A slave's identity as shown in the stats line.
#[derive(Debug, Clone)]
pub struct SlaveLabel {
    pub id: u8,
    /// TCP port, for fleets.
    pub port: Option<u16>,
    pub profile: String,
    pub scenario: String,
    pub fault: String,
    pub stats: Arc<SlaveStats>,
}

/// Everything one process reports.
#[derive(Debug, Clone)]
pub struct Report {
    pub transport: &'static str,
    /// Serial device or listen address.
    pub port: String,
    pub bus: Arc<BusStats>,
    pub slaves: Vec<SlaveLabel>,
}

impl Report {
    pub fn to_json(&self, is_final: bool) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let slaves: Vec<Value> = self
            .slaves
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "port": s.port,
                    "profile": s.profile,
                    "scenario": s.scenario,
                    "fault": s.fault,
                    "requests": get(&s.stats.requests),
                    "replies": get(&s.stats.replies),
                    "faults": get(&s.stats.faults),
                    "bad_requests": get(&s.stats.bad_requests),
                })
            })
            .collect();
        json!({
            "event": "stats",
            "final": is_final,
            "transport": self.transport,
            "port": self.port,
            "bad_frames": get(&self.bus.bad_frames),
            "other_ids": get(&self.bus.other_ids),
            "slaves": slaves,
        })
    }

    /// Prints the JSON line on stderr.
    pub fn print(&self, is_final: bool) {
        eprintln!("{}", self.to_json(is_final));
    }
}
