//! The store seam: the store stores, nothing else. Four small traits:
//!
//! - [`Writer`]: ingest. Commits a *group* of validated batches in one transaction and reports,
//!   per batch, how many items were new and how many were duplicates of items already stored
//!   (dedupe on `(gateway, stream, seq)`; a same-seq different-content resend is kept as a
//!   conflict). Only after [`Writer::commit_with`] returns may ingest ack them.
//! - [`CaseTx`]: case storage inside one transaction (open cases of a device, the case an
//!   episode is linked to, the next case number, save a case with its events and effects).
//!   Ingest's commit hands one to the [`AlarmHook`] — casework's alarm handler — for every new
//!   alarm transition, inside the transaction that stores it, so an acked alarm always has its
//!   case. The decision is casework's (`casework/alarms.rs`), not the store's.
//! - [`CaseStore`]: casework and the notifier outside ingest (transitions, timers, contact
//!   erasure, the notification queue).
//! - [`Reader`]: the API.
//!
//! Implementations: [`sqlite`], the embedded default (one file, WAL), and [`memory`], the
//! in-memory fake that unit tests of casework, notify and ingest run against. Both pass the
//! same contract suite (`store/contract.rs`: dedupe, conflicts, stream holds, episode folding,
//! stale saves, open cases, case numbers, contacts, the notification queue); a later PostgreSQL
//! store for several aggregators behind a clustered broker implements the same traits and
//! must pass the same suite (add a `#[test]` calling `contract::run_all` with its constructor).
//! Nothing above this module names SQLite except the daemon's wiring.
//!
//! Alarm transitions are stored as they come and folded into one row per episode by
//! [`episode::apply`], the same for every implementation.
//!
//! Dispatch cases ([`crate::cases`]) are stored as the pure engine returns them: a row per case
//! (its current picture) and its append-only events, written together in one transaction
//! ([`CaseTx::save_case`]), with the engine's `notify` effects queued in it.
//!
//! Camera pictures and uploads ([`evidence`]): parts stored with their items inside ingest's
//! commit, assembled and hash-checked there; the evidence side (mover, retention, uploads,
//! snapshot requests, the API's reads) has its own two traits, [`evidence::EvidenceWriter`]
//! and [`evidence::EvidenceReader`], held to the same contract suite.
//!
//! Period aggregates (issue 14) are stored one row per metric and period beside the raw
//! readings ([`PeriodRow`]); [`rollup`] says how 1-minute, 10-minute, hourly and daily buckets
//! are computed from either without counting anything twice. SQLite keeps them inside ingest's
//! commit; the memory store recomputes them on read, which is what the property test
//! (`store/rollup_proptests.rs`) holds SQLite to.
//!
//! Dedupe state ([`dedupe`]) is a set of seq ranges per stream (a watermark, plus the runs that
//! arrived out of order above it) and the content digests of a small window of recent seqs for
//! the conflict check — not a row per item forever; both stores keep it by the same rules.
//!
//! Retention ([`retention`], issue 14): each resolution is kept for its own time (`[retention]`);
//! the sweeper ([`sweep_sql`], run by `crate::sweeper`) deletes the expired rows in short
//! chunks, never inside a case's evidence window, and gives the freed pages back to the file
//! system (`auto_vacuum = INCREMENTAL`). The memory store keeps everything (no sweeper).
//!
//! Citizens' contact details are not case events: they sit in their own table, keyed by case,
//! erased on request and after a retention period ([`cases_sql::Contact`]).

pub mod cases_sql;
pub mod dedupe;
pub mod episode;
pub mod evidence;
pub mod evidence_sql;
pub mod memory;
pub mod notify_sql;
pub mod retention;
pub mod rollup;
pub mod sqlite;
pub mod sweep_sql;

#[cfg(test)]
pub(crate) mod contract;
#[cfg(test)]
mod rollup_proptests;

use fumegrid_common::reading::Quality;
use fumegrid_common::wire::{Alarm, AlarmKind, Batch, State};
use serde::Serialize;

use crate::cases::{Case, Effect, Event};

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
    /// Of `new`, the picture parts ([`evidence`]).
    pub parts: u64,
}

/// How much the store waits for the disk at each commit (`[store] synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    /// fsync the WAL at every commit: an acked item survives power loss. The default; group
    /// commit (several batches per transaction) keeps its cost small.
    #[default]
    Full,
    /// fsync only at checkpoints: an acked item survives a process crash (kill -9), but the last
    /// commits before a power loss can be lost *after* the gateway deleted them.
    Normal,
}

/// Case storage inside one transaction: what casework reads to decide a case change and how it
/// saves the outcome. Ingest's commit hands one to the [`AlarmHook`] (inside the transaction that
/// stores the alarms); [`CaseStore::case_tx`] hands one to casework.
pub trait CaseTx {
    /// The open cases opened by `kind` alarms of `device` behind `gateway` (at most one in
    /// practice), oldest reported first.
    fn open_cases_for(
        &mut self,
        gateway: &str,
        device: &str,
        kind: AlarmKind,
    ) -> Result<Vec<Case>, StoreError>;
    /// The case alarm episode `episode` from `gateway` is linked to, in any state.
    fn episode_case(&mut self, gateway: &str, episode: &str) -> Result<Option<Case>, StoreError>;
    /// The number the next case id with `prefix` gets: one more than the highest `n` of the
    /// stored ids `{prefix}{n}` (1 for none). The id format itself is the engine's
    /// ([`crate::cases::case_id`]); `prefix` ends with `-`.
    fn next_case_number(&mut self, prefix: &str) -> Result<u64, StoreError>;
    /// Writes a case, appends the events the engine returned with it and queues its `notify`
    /// effects, atomically: a new case (events from seq 1) is inserted; an existing one is
    /// updated only if its stored last seq is the one the events follow, else
    /// [`StoreError::Stale`] (events not numbered from there: [`StoreError::Malformed`]); either
    /// way nothing is written.
    fn save_case(
        &mut self,
        case: &Case,
        events: &[Event],
        effects: &[Effect],
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Stores the contact details of case `case_id` (replacing any).
    fn save_contact(
        &mut self,
        case_id: &str,
        contact: &cases_sql::Contact,
        now_ms: i64,
    ) -> Result<(), StoreError>;
}

/// What ingest's commit calls for every newly stored alarm transition, inside its transaction
/// (casework's alarm handler, `casework/alarms.rs`): so an acked alarm always has its
/// case, or none at all if the transaction rolls back.
pub trait AlarmHook: Send {
    /// One alarm transition stored now (a duplicate is never passed). An error rolls back the
    /// whole commit.
    fn on_alarm(
        &mut self,
        tx: &mut dyn CaseTx,
        gateway: &str,
        alarm: &Alarm,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Runs `commit`, the transaction's commit. A hook that keeps something in commit order
    /// (the statistics index) wraps it; the default just commits.
    fn commit(
        &mut self,
        commit: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        commit()
    }
    /// The transaction was rolled back: forget what [`AlarmHook::on_alarm`] saw in it.
    fn rolled_back(&mut self) {}
    /// A picture completed (hash verified) or was refused in this transaction
    /// ([`evidence`]); ingest counts and logs these once the commit succeeded.
    fn on_picture(&mut self, _event: &evidence::PictureEvent) {}
}

/// An [`AlarmHook`] that does nothing: alarms open no case.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCases;

impl AlarmHook for NoCases {
    fn on_alarm(
        &mut self,
        _: &mut dyn CaseTx,
        _: &str,
        _: &Alarm,
        _: i64,
    ) -> Result<(), StoreError> {
        Ok(())
    }
}

/// The ingest side.
pub trait Writer: Send {
    /// Makes configured gateways known (listed by the API before they ever connect).
    fn ensure_gateways(&mut self, ids: &[String]) -> Result<(), StoreError>;
    /// Stores every batch in one transaction (dedupe on `(gateway, stream, seq)`, a same-seq
    /// different-content resend kept as a conflict); `now_ms` is the aggregator's clock. Each
    /// new alarm transition is folded into its episode and handed to `hook` inside the same
    /// transaction; the transaction commits through [`AlarmHook::commit`].
    fn commit_with(
        &mut self,
        batches: &[&Batch],
        now_ms: i64,
        hook: &mut dyn AlarmHook,
    ) -> Result<Vec<Committed>, StoreError>;
    /// [`Writer::commit_with`] without cases.
    fn commit(&mut self, batches: &[&Batch], now_ms: i64) -> Result<Vec<Committed>, StoreError> {
        self.commit_with(batches, now_ms, &mut NoCases)
    }
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
}

/// The store as casework and the notifier share it (one caller at a time).
pub type SharedCaseStore = std::sync::Arc<std::sync::Mutex<dyn CaseStore>>;

/// The fields of a stored case event that statistics read, as [`CaseStore::scan_case_events`]
/// hands them out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EventFacts<'a> {
    pub case_id: &'a str,
    pub ts_ms: i64,
    pub kind: crate::cases::EventKind,
    pub to_state: crate::cases::State,
    pub deadline_ms: Option<i64>,
    pub rating: Option<i64>,
    pub category: Option<&'a str>,
    pub department: Option<&'a str>,
    pub site: Option<&'a str>,
    pub grid_cell: Option<&'a str>,
}

/// The case side outside ingest: what casework (API transitions, reports, timers, contact
/// erasure) and the notifier need. Always used behind a mutex by one caller at a time.
pub trait CaseStore: Send {
    /// Runs `f` in one transaction, committed when it returns `Ok`, rolled back otherwise.
    fn case_tx(
        &mut self,
        f: &mut dyn FnMut(&mut dyn CaseTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;
    /// The case as stored now.
    fn load_case(&mut self, id: &str) -> Result<Option<Case>, StoreError>;
    /// Every open case, oldest reported first.
    fn open_cases(&mut self) -> Result<Vec<Case>, StoreError>;
    /// Event `seq` of a case.
    fn case_event(&mut self, case_id: &str, seq: u64) -> Result<Option<Event>, StoreError>;
    /// Every stored case event, grouped by case, each case's in seq order (statistics load
    /// from it at start).
    fn scan_case_events(&mut self, f: &mut dyn FnMut(EventFacts<'_>)) -> Result<(), StoreError>;
    /// The contact details of case `case_id`, if any are (still) stored.
    fn contact(&mut self, case_id: &str) -> Result<Option<cases_sql::Contact>, StoreError>;
    /// Erases the contact details of case `case_id` so that they leave the files; whether there
    /// were any.
    fn erase_contact(&mut self, case_id: &str) -> Result<bool, StoreError>;
    /// Erases the contact details of the cases closed or rejected before `before_ms` (a
    /// rejected case counts from its last change); how many.
    fn erase_contacts_closed_before(&mut self, before_ms: i64) -> Result<usize, StoreError>;
    /// When the device last sent a reading of any metric (gateway clock), if ever.
    fn device_last_reading_ms(
        &mut self,
        gateway: &str,
        device: &str,
    ) -> Result<Option<i64>, StoreError>;
    /// Pending notifications due at `now_ms`, oldest first, only the oldest pending one per
    /// department (a department sees its events in order; one that is down holds up only
    /// itself).
    fn due_notifications(
        &mut self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<notify_sql::Notification>, StoreError>;
    /// The earliest retry instant of anything pending.
    fn next_notification_ms(&mut self) -> Result<Option<i64>, StoreError>;
    /// Records one delivery attempt of notification `id`.
    fn record_attempt(
        &mut self,
        id: i64,
        attempt: &notify_sql::Attempt,
        now_ms: i64,
    ) -> Result<(), StoreError>;

    /// [`CaseTx::save_case`] in a transaction of its own.
    fn save_case(
        &mut self,
        case: &Case,
        events: &[Event],
        effects: &[Effect],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.case_tx(&mut |tx| tx.save_case(case, events, effects, now_ms))
    }
    /// [`CaseTx::open_cases_for`] in a transaction of its own.
    fn open_cases_for(
        &mut self,
        gateway: &str,
        device: &str,
        kind: AlarmKind,
    ) -> Result<Vec<Case>, StoreError> {
        let mut out = Vec::new();
        self.case_tx(&mut |tx| {
            out = tx.open_cases_for(gateway, device, kind)?;
            Ok(())
        })?;
        Ok(out)
    }
}

/// The API side. Implementations are shared between request handlers.
pub trait Reader: Send + Sync {
    fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError>;
    fn devices(&self) -> Result<Vec<DeviceRow>, StoreError>;
    fn readings(&self, q: &ReadingQuery) -> Result<Vec<ReadingRow>, StoreError>;
    /// The stored period aggregates of `q.device` whose start is in `[q.from_ms, q.to_ms)`,
    /// oldest first (then by metric, then by length), at most `q.limit`.
    fn periods(&self, q: &ReadingQuery) -> Result<Vec<PeriodRow>, StoreError>;
    /// The rollup buckets of `q.device` at [`rollup::LEVELS`]`[level]` whose start is in
    /// `[q.from_ms, q.to_ms)`, oldest first (then by metric, then gateway), at most `q.limit`.
    fn rollups(&self, q: &ReadingQuery, level: usize) -> Result<Vec<RollupRow>, StoreError>;
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

/// One metric's aggregate over one period, as stored from a [`fumegrid_common::wire::Period`]
/// (two items for the same series and period merged by `merge_period`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodRow {
    pub gateway: String,
    pub metric: String,
    /// The metric's unit: canonical, or declared by the profile of an `x_` metric.
    pub unit: String,
    pub start_ms: i64,
    pub period_s: u32,
    #[serde(flatten)]
    pub vals: PeriodVals,
}

/// One rollup bucket of one series ([`rollup`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RollupRow {
    pub gateway: String,
    pub metric: String,
    /// The metric's unit: canonical, or declared by the profile of an `x_` metric.
    pub unit: String,
    pub start_ms: i64,
    /// Valid values in the bucket.
    pub count: u64,
    /// Polls taken in the bucket.
    pub polls: u64,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// The newest valid value.
    pub last: Option<f64>,
    /// At least [`rollup::VALID_SHARE`] of the bucket's sub-periods were valid.
    pub valid: bool,
    /// Valid sub-periods over the sub-periods a full bucket has, 0 … 1.
    pub valid_share: f64,
}

impl RollupRow {
    pub fn new(
        gateway: &str,
        metric: &str,
        unit: String,
        start_ms: i64,
        b: &rollup::Bucket,
    ) -> Self {
        RollupRow {
            gateway: gateway.to_string(),
            metric: metric.to_string(),
            unit,
            start_ms,
            count: b.count,
            polls: b.polls,
            avg: b.avg(),
            min: b.min,
            max: b.max,
            last: b.last.map(|l| l.1),
            valid: b.valid(),
            valid_share: b.valid_share(),
        }
    }
}

/// The aggregates of one stored period of one series.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PeriodVals {
    pub polls: u32,
    pub count: u32,
    pub avg: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub last: Option<f64>,
    pub valid: bool,
}

impl PeriodVals {
    pub fn of(m: &fumegrid_common::wire::PeriodMetric) -> PeriodVals {
        PeriodVals {
            polls: m.polls,
            count: m.count,
            avg: m.avg,
            min: m.min,
            max: m.max,
            last: m.last,
            valid: m.valid,
        }
    }

    /// What the series' latest value becomes: `(ts, value, quality code)` at the end of the
    /// period — the last valid value, or none (`device_error`) when no poll was valid; `None`
    /// when the metric was not polled at all.
    pub fn latest(&self, start_ms: i64, period_s: u32) -> Option<(i64, Option<f64>, i64)> {
        let end = start_ms + i64::from(period_s) * 1000;
        match (self.polls, self.last) {
            (0, _) => None,
            (_, Some(v)) if self.count > 0 => Some((end, Some(v), quality_code(Quality::Ok))),
            _ => Some((end, None, quality_code(Quality::DeviceError))),
        }
    }
}

/// Two items for the same series and period (a gateway restarted mid-period and reported the
/// rest of it): polls and counts added, the average weighted by count, min and max folded, the
/// last value kept from `stored` (or taken from `new` when `stored` had none), valid if either
/// was. Every implementation merges by it.
pub(crate) fn merge_period(stored: &PeriodVals, new: &PeriodVals) -> PeriodVals {
    let fold = |a: Option<f64>, b: Option<f64>, f: fn(f64, f64) -> f64| match (a, b) {
        (Some(a), Some(b)) => Some(f(a, b)),
        (a, b) => a.or(b),
    };
    let count = stored.count.saturating_add(new.count);
    let avg = match (stored.avg, new.avg) {
        (Some(a), Some(b)) if count > 0 => {
            Some((a * f64::from(stored.count) + b * f64::from(new.count)) / f64::from(count))
        }
        (a, b) => a.or(b),
    };
    PeriodVals {
        polls: stored.polls.saturating_add(new.polls),
        count,
        avg,
        min: fold(stored.min, new.min, f64::min),
        max: fold(stored.max, new.max, f64::max),
        last: stored.last.or(new.last),
        valid: stored.valid || new.valid,
    }
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

/// The body as JSON (what a conflict row keeps) and the first 8 bytes of its SHA-256 (what
/// the dedupe row keeps). The JSON is re-serialised from the parsed body, so whitespace or field
/// order on the wire do not make a resend look different. Every implementation dedupes by it.
pub(crate) fn body_digest(body: &fumegrid_common::wire::Body) -> (String, i64) {
    use sha2::Digest;
    let json = serde_json::to_string(body).unwrap_or_default();
    let hash = sha2::Sha256::digest(json.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    (json, i64::from_be_bytes(first))
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
