//! The store seam: what ingest writes and what the API reads, as two small traits.
//!
//! [`sqlite`] is the embedded default (one file, WAL). A PostgreSQL implementation for
//! several aggregators behind a clustered broker implements the same traits; nothing above
//! this module names SQLite.
//!
//! The write side commits a *group* of validated batches in one transaction and reports, per
//! batch, how many items were new and how many were duplicates of items already stored (dedupe
//! on `(gateway, stream, seq)`). Only after [`Writer::commit`] returns may ingest ack them.
//!
//! Alarm transitions are stored as they come and folded into one row per episode by
//! [`episode::apply`], the same for every implementation.
//!
//! Dispatch cases ([`crate::cases`]) are stored as the pure engine returns them: a row per case
//! (its current picture) and its append-only events, written together in one transaction
//! ([`Writer::save_case`]). New alarm transitions are fed to the engine inside the ingest
//! transaction that stores them, so an acked alarm always has its case (or is counted in
//! `fumegrid_cases_alarm_without_case_total` with the reason it has none).
//!
//! Citizens' contact details are not case events: they sit in their own table, keyed by case,
//! erased on request and after a retention period ([`cases_sql::Contact`]).

pub mod cases_sql;
pub mod episode;
pub mod notify_sql;
pub mod sqlite;
pub mod stats_index;

use fumegrid_common::reading::Quality;
use fumegrid_common::wire::{AlarmKind, Batch, State};
use serde::Serialize;

use crate::cases::{Case, Event};

/// Store failures. Messages name the file and say what the operator can do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "store {path} is not a fumegrid aggregator database or is corrupt ({detail}); \
         move it aside or restore a backup — it is never overwritten"
    )]
    Corrupt { path: String, detail: String },
    #[error(
        "store {path} has schema version {found}, newer than this aggregator knows ({known}); \
         run the newer aggregator (schemas are upgraded forward only)"
    )]
    TooNew {
        path: String,
        found: i64,
        known: i64,
    },
    #[error("schema upgrade to version {version} failed: {source}")]
    Migrate {
        version: i64,
        source: rusqlite::Error,
    },
    #[error("case {0} was changed meanwhile; reload it and retry")]
    Stale(String),
    #[error("cannot save case: {0}")]
    Malformed(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
}

impl From<cases_sql::SaveConflict> for StoreError {
    fn from(c: cases_sql::SaveConflict) -> StoreError {
        match c {
            cases_sql::SaveConflict::Stale { id } => StoreError::Stale(id),
            cases_sql::SaveConflict::Malformed(m) => StoreError::Malformed(m),
        }
    }
}

/// Per-batch result of a commit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Committed {
    /// Items stored now.
    pub new: u64,
    /// Items that were already stored (a resend); acked all the same.
    pub duplicates: u64,
    /// Of `duplicates`, those whose content differs from what is stored under their seq: kept
    /// in the conflicts table (see the 0007 migration), counted and logged, then acked.
    pub conflicts: u64,
    /// Of `conflicts`, those not seen before (a resend of a conflict is counted once).
    pub conflicts_new: u64,
    /// The lowest seq of this batch that conflicted, for the log.
    pub first_conflict: Option<u64>,
}

/// The ingest side.
pub trait Writer: Send {
    /// Makes configured gateways known (listed by the API before they ever connect).
    fn ensure_gateways(&mut self, ids: &[String]) -> Result<(), StoreError>;
    /// Stores every batch in one transaction; `now_ms` is the aggregator's clock.
    fn commit(&mut self, batches: &[&Batch], now_ms: i64) -> Result<Vec<Committed>, StoreError>;
    /// What is held of `(gateway, stream)`: the highest seq (0: none) and how many seqs in
    /// `from_seq..=high` — the answer to a gateway's hello.
    fn stream_holds(
        &mut self,
        gateway: &str,
        stream: &str,
        from_seq: u64,
    ) -> Result<(u64, u64), StoreError>;
    /// Records a gateway's `status` document.
    fn set_status(
        &mut self,
        gateway: &str,
        state: State,
        ts_ms: Option<i64>,
        version: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Writes a case and appends the events the engine returned with it, atomically: a new case
    /// (events from seq 1) is inserted; an existing one is updated only if its stored last seq
    /// is the one the events follow, else [`StoreError::Stale`].
    fn save_case(&mut self, case: &Case, events: &[Event], now_ms: i64) -> Result<(), StoreError>;
    /// The open cases opened by `kind` alarms of `device` behind `gateway` (at most one in
    /// practice).
    fn open_cases_for(
        &mut self,
        gateway: &str,
        device: &str,
        kind: AlarmKind,
    ) -> Result<Vec<Case>, StoreError>;
}

/// The API side. Implementations are shared between request handlers.
pub trait Reader: Send + Sync {
    fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError>;
    fn devices(&self) -> Result<Vec<DeviceRow>, StoreError>;
    fn readings(&self, q: &ReadingQuery) -> Result<Vec<ReadingRow>, StoreError>;
    /// Alarm episodes matching `q`, newest `started_ms` first.
    fn alarms(&self, q: &AlarmQuery) -> Result<Vec<AlarmRow>, StoreError>;
    /// One episode with every transition stored for it; `None` when there is no such episode.
    fn alarm(&self, gateway: &str, id: &str) -> Result<Option<AlarmDetail>, StoreError>;
    /// One case with its whole timeline (oldest event first).
    fn case(&self, id: &str) -> Result<Option<CaseDetail>, StoreError>;
    /// The contact details of a citizen request (private: operators and its reporter only).
    fn contact(&self, case_id: &str) -> Result<Option<cases_sql::Contact>, StoreError>;
    /// Cases matching `q`, newest reported first, one page of them and the total count.
    fn cases(&self, q: &CaseQuery) -> Result<CasePage, StoreError>;
    /// Every case event with `ts_ms < to_ms`: what the statistics of any period ending at
    /// `to_ms` are computed from ([`crate::cases::stats::compute`]).
    fn case_events_until(&self, to_ms: i64) -> Result<Vec<Event>, StoreError>;
    /// Case statistics of `period`; by default computed from [`Reader::case_events_until`].
    fn case_stats(
        &self,
        period: crate::cases::stats::Period,
    ) -> Result<crate::cases::stats::Stats, StoreError> {
        let events = self.case_events_until(period.to_ms)?;
        Ok(crate::cases::stats::compute(&events, period))
    }
    /// The notification delivery log, newest first, with the total before paging.
    fn notifications(
        &self,
        q: &notify_sql::NotificationQuery,
    ) -> Result<(u64, Vec<notify_sql::Notification>), StoreError>;
}

/// A case list query. Filters are exact; `from_ms`/`to_ms` bound `reported_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaseQuery {
    /// A [`crate::cases::State`] name.
    pub state: Option<String>,
    pub category: Option<String>,
    pub department: Option<String>,
    pub device: Option<String>,
    /// How the case came in: `alarm`, `citizen` or `operator`.
    pub origin: Option<String>,
    /// Open (not rejected, not closed) or not.
    pub open: Option<bool>,
    /// Inclusive, ms.
    pub from_ms: i64,
    /// Exclusive, ms.
    pub to_ms: i64,
    pub limit: u32,
    pub offset: u32,
}

impl Default for CaseQuery {
    fn default() -> Self {
        CaseQuery {
            state: None,
            category: None,
            department: None,
            device: None,
            origin: None,
            open: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 100,
            offset: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CasePage {
    /// Matching cases before paging.
    pub total: u64,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseDetail {
    pub case: Case,
    /// Oldest first.
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GatewayRow {
    pub id: String,
    pub online: bool,
    /// Aggregator clock, ms since the epoch, of the last accepted batch or status.
    pub last_seen_ms: Option<i64>,
    pub status_ts_ms: Option<i64>,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latest {
    pub metric: String,
    /// The metric's unit: canonical, or declared by the profile of an `x_` metric.
    pub unit: String,
    pub value: Option<f64>,
    pub quality: &'static str,
    pub ts_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceRow {
    pub gateway: String,
    pub device: String,
    pub latest: Vec<Latest>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadingQuery {
    pub device: String,
    pub gateway: Option<String>,
    pub metric: Option<String>,
    /// Inclusive, ms.
    pub from_ms: i64,
    /// Exclusive, ms.
    pub to_ms: i64,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReadingRow {
    pub gateway: String,
    pub metric: String,
    /// The metric's unit: canonical, or declared by the profile of an `x_` metric.
    pub unit: String,
    pub ts_ms: i64,
    pub value: Option<f64>,
    pub quality: &'static str,
}

/// Which episodes an alarm query selects by phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlarmState {
    /// Latest phase `raised` or `updated`.
    #[default]
    Open,
    /// Latest phase `cleared`.
    Cleared,
    All,
}

impl AlarmState {
    pub const ALL: [AlarmState; 3] = [AlarmState::Open, AlarmState::Cleared, AlarmState::All];

    pub fn name(self) -> &'static str {
        match self {
            AlarmState::Open => "open",
            AlarmState::Cleared => "cleared",
            AlarmState::All => "all",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmQuery {
    pub state: AlarmState,
    pub gateway: Option<String>,
    pub device: Option<String>,
    /// An [`fumegrid_common::wire::AlarmKind`] name.
    pub kind: Option<String>,
    pub suppressed: Option<bool>,
    /// Episodes active at some time in `[from_ms, to_ms)`: started before `to_ms`, and not
    /// cleared before `from_ms`.
    pub from_ms: i64,
    pub to_ms: i64,
    pub limit: u32,
}

impl Default for AlarmQuery {
    fn default() -> Self {
        AlarmQuery {
            state: AlarmState::Open,
            gateway: None,
            device: None,
            kind: None,
            suppressed: None,
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: 1000,
        }
    }
}

/// One alarm episode as stored: the winning transition's picture plus what is folded over all
/// of them (see [`episode`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmRow {
    pub gateway: String,
    pub id: String,
    pub device: String,
    pub kind: String,
    pub metric: Option<String>,
    pub phase: String,
    pub suppressed: bool,
    pub started_ms: i64,
    pub cleared_ms: Option<i64>,
    pub last_ts_ms: i64,
    pub value: Option<f64>,
    pub peak: Option<f64>,
    pub peak_ms: Option<i64>,
    pub limit: Option<f64>,
    pub message: String,
    /// Aggregator clock: first and last transition stored.
    pub first_seen_ms: i64,
    pub last_received_ms: i64,
    /// Transitions stored for this episode (redeliveries of the same item not counted).
    pub updates: i64,
}

/// One transition as received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmTransitionRow {
    pub phase: String,
    pub ts_ms: i64,
    pub started_ms: i64,
    pub cleared_ms: Option<i64>,
    pub value: Option<f64>,
    pub peak: Option<f64>,
    pub peak_ms: Option<i64>,
    pub limit: Option<f64>,
    pub suppressed: bool,
    pub message: String,
    /// Where it came from: the gateway's outbox stream and the item's seq.
    pub stream: String,
    pub seq: u64,
    /// Aggregator clock.
    pub received_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlarmDetail {
    pub alarm: AlarmRow,
    /// Oldest first (by `ts_ms`, then phase, then arrival).
    pub transitions: Vec<AlarmTransitionRow>,
}

pub(crate) fn quality_code(q: Quality) -> i64 {
    match q {
        Quality::Ok => 0,
        Quality::OutOfRange => 1,
        Quality::Stale => 2,
        Quality::DeviceError => 3,
    }
}

pub(crate) fn quality_name(code: i64) -> &'static str {
    match code {
        0 => "ok",
        1 => "out_of_range",
        2 => "stale",
        3 => "device_error",
        _ => "unknown",
    }
}
