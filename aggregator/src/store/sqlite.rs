//! SQLite implementation of the store: one file in WAL mode, one writer connection (owned by
//! the ingest thread) and one reader connection for the API.
//!
//! Schema upgrades are numbered SQL files under `migrations/`, applied forward only inside a
//! transaction each; `PRAGMA user_version` holds the number of the last one applied and
//! `PRAGMA application_id` marks the file as ours. A file that is not ours, is corrupt, or has a
//! newer version than this binary knows is refused with a message, never rewritten.
//!
//! Durability: `journal_mode=WAL` with `synchronous=FULL` (default) fsyncs the WAL at every
//! commit, so an acked item survives power loss; `NORMAL` survives a process crash only.
//! Ingest groups several batches per transaction to keep the fsync count low.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{Alarm, AlarmKind, Batch, Body, EventKind, State};
use rusqlite::{Connection, OptionalExtension, Row, Transaction, params};

use super::cases_sql;
use super::drone::{
    ArrivedPoint, DroneReader, DroneRow, DroneSource, DroneWriter, PassRecord, PhotoRow,
    TrackStored,
};
use super::drone_sql;
use super::episode::{self, Episode, phase_from_name, phase_name};
use super::evidence::{EvidenceReader, EvidenceWriter, PictureRow, SnapshotRequest, Upload};
use super::evidence_sql;
use super::notify_sql::{self, Attempt, Notification, NotificationQuery};
use super::{
    AlarmDetail, AlarmHook, AlarmQuery, AlarmRow, AlarmState, AlarmTransitionRow, CaseDetail,
    CasePage, CaseQuery, CaseStore, CaseTx, Committed, DeviceRow, EventFacts, GatewayRow, Latest,
    PeriodRow, PeriodVals, Reader, ReadingQuery, ReadingRow, RollupRow, StoreError, Synchronous,
    Writer, body_digest, dedupe, merge_period, quality_code, quality_name, retention, rollup,
};
use crate::cases::{Case, Effect, Event};
use dedupe::Held;
use retention::{Cutoffs, Retention};

/// `PRAGMA application_id` of an aggregator store: "FGAG".
pub const APPLICATION_ID: i64 = 0x4647_4147;

/// A data step of an upgrade that SQL alone cannot do, run after the file's SQL in the same
/// transaction.
type Step = fn(&Transaction<'_>) -> rusqlite::Result<()>;

/// Forward-only schema upgrades; the number is the `user_version` after applying it.
const MIGRATIONS: &[(i64, &str, Option<Step>)] = &[
    (1, include_str!("migrations/0001_initial.sql"), None),
    (2, include_str!("migrations/0002_alarms.sql"), None),
    (3, include_str!("migrations/0003_cases.sql"), None),
    (4, include_str!("migrations/0004_notifications.sql"), None),
    (5, include_str!("migrations/0005_case_alarms.sql"), None),
    (
        6,
        include_str!("migrations/0006_case_contacts.sql"),
        Some(cases_sql::move_contacts_out_of_events),
    ),
    (7, include_str!("migrations/0007_item_digests.sql"), None),
    (8, include_str!("migrations/0008_custom_units.sql"), None),
    (
        9,
        include_str!("migrations/0009_contact_description.sql"),
        Some(cases_sql::redact_open311_descriptions),
    ),
    (10, include_str!("migrations/0010_evidence.sql"), None),
    (11, include_str!("migrations/0011_periods.sql"), None),
    (
        12,
        include_str!("migrations/0012_rollups.sql"),
        Some(backfill_rollups),
    ),
    (
        13,
        include_str!("migrations/0013_picture_captures.sql"),
        None,
    ),
    (14, include_str!("migrations/0014_minute_once.sql"), None),
    (15, include_str!("migrations/0015_held_ranges.sql"), None),
    (16, include_str!("migrations/0016_drones.sql"), None),
    (
        17,
        include_str!("migrations/0017_case_positions.sql"),
        Some(cases_sql::positions_of_old_cases),
    ),
];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

pub(crate) fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Reads `(application_id, user_version)`; a file that is not a database maps to `Corrupt`.
pub(crate) fn identify(conn: &Connection, path: &Path) -> Result<(i64, i64), StoreError> {
    let read = || -> rusqlite::Result<(i64, i64)> {
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let ver: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        // Touch the schema so that a garbage file fails here, not at the first insert.
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })?;
        Ok((app, ver))
    };
    let (app, ver) = read().map_err(|e| StoreError::Corrupt {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    let empty: bool = conn
        .query_row("SELECT count(*) = 0 FROM sqlite_master", [], |r| r.get(0))
        .map_err(StoreError::Db)?;
    if app != APPLICATION_ID && !(app == 0 && ver == 0 && empty) {
        return Err(StoreError::Corrupt {
            path: path.display().to_string(),
            detail: format!("application_id {app:#x}, expected {APPLICATION_ID:#x}"),
        });
    }
    if ver > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found: ver,
            known: SCHEMA_VERSION,
        });
    }
    Ok((app, ver))
}

/// Checks an existing store without changing it (for `validate`): `Ok(None)` when the file does
/// not exist yet, else its schema version.
pub fn inspect(path: &Path) -> Result<Option<i64>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
    identify(&conn, path).map(|(_, v)| Some(v))
}

/// Opens (creating if needed) and upgrades the store; returns the writer.
pub fn open(path: &Path, sync: Synchronous) -> Result<SqliteWriter, StoreError> {
    let mut conn = open_conn(path)?;
    let (_, version) = identify(&conn, path)?;
    if version == 0 {
        // A new file: freed pages can be given back to the file system after a retention sweep
        // (an older store is switched once by `sweep_sql::convert_to_incremental`).
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    }
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(
        None,
        "synchronous",
        match sync {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        },
    )?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    // Deleted content (erased contact details) is overwritten, not left in free space.
    conn.pragma_update(None, "secure_delete", "ON")?;
    let mut upgraded = false;
    for &(v, sql, step) in MIGRATIONS.iter().filter(|(v, _, _)| *v > version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|()| step.map_or(Ok(()), |f| f(&tx)))
            .and_then(|()| tx.pragma_update(None, "application_id", APPLICATION_ID))
            .and_then(|()| tx.pragma_update(None, "user_version", v))
            .map_err(|source| StoreError::Migrate { version: v, source })?;
        tx.commit()
            .map_err(|source| StoreError::Migrate { version: v, source })?;
        tracing::info!(store = %path.display(), version = v, "store schema upgraded");
        upgraded = true;
    }
    if upgraded {
        // An upgrade may have rewritten private data out of old rows: no old page stays in the WAL.
        cases_sql::checkpoint(&conn)?;
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(SqliteWriter {
        conn,
        streams: HashMap::new(),
        series: HashMap::new(),
        retention: None,
        window: dedupe::WINDOW,
    })
}

/// Opens a reader on a store that [`open`] has already created.
pub fn open_reader(path: &Path) -> Result<SqliteReader, StoreError> {
    let conn = open_conn(path)?;
    let (_, v) = identify(&conn, path)?;
    if v != SCHEMA_VERSION {
        return Err(StoreError::Corrupt {
            path: path.display().to_string(),
            detail: format!("schema version {v}, expected {SCHEMA_VERSION}"),
        });
    }
    conn.pragma_update(None, "query_only", "ON")?;
    Ok(SqliteReader {
        conn: Mutex::new(conn),
    })
}

/// The ingest side. Caches interned ids; the caches are dropped when a transaction fails so
/// that no id of a rolled-back row survives.
#[derive(Debug)]
pub struct SqliteWriter {
    conn: Connection,
    /// gateway → stream → streams.id
    streams: HashMap<String, HashMap<String, i64>>,
    /// gateway → device → series.id per metric (0 = not looked up yet)
    series: HashMap<String, HashMap<String, [i64; Metric::ALL.len()]>>,
    /// `[retention]`: rollup buckets whose sources may have been swept are frozen.
    retention: Option<Retention>,
    /// Seqs of the conflict window ([`dedupe::WINDOW`]).
    window: u64,
}

/// The transaction a [`CaseTx`] works in (the caller commits it).
struct SqlCaseTx<'a>(&'a Connection);

impl CaseTx for SqlCaseTx<'_> {
    fn open_cases_for(
        &mut self,
        gateway: &str,
        device: &str,
        kind: AlarmKind,
    ) -> Result<Vec<Case>, StoreError> {
        Ok(cases_sql::open_cases_for(self.0, gateway, device, kind)?)
    }

    fn episode_case(&mut self, gateway: &str, episode: &str) -> Result<Option<Case>, StoreError> {
        Ok(cases_sql::episode_case(self.0, gateway, episode)?)
    }

    fn next_case_number(&mut self, prefix: &str) -> Result<u64, StoreError> {
        Ok(cases_sql::next_case_number(self.0, prefix)?)
    }

    fn save_case(
        &mut self,
        case: &Case,
        events: &[Event],
        effects: &[Effect],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        cases_sql::save_case(self.0, case, events, now_ms)??;
        notify_sql::enqueue(self.0, effects, now_ms)?;
        Ok(())
    }

    fn save_contact(
        &mut self,
        case_id: &str,
        contact: &cases_sql::Contact,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(cases_sql::save_contact(self.0, case_id, contact, now_ms)?)
    }

    fn record_pass(&mut self, pass: &PassRecord, now_ms: i64) -> Result<bool, StoreError> {
        Ok(drone_sql::record_pass(self.0, pass, now_ms)?)
    }

    fn link_picture(
        &mut self,
        sha256: &str,
        case_id: &str,
        by: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(drone_sql::link_picture(
            self.0, sha256, case_id, by, now_ms,
        )?)
    }
}

impl SqliteWriter {
    /// Retention is on (`[retention]`): ingest freezes the rollup buckets whose sources the
    /// sweeper may have deleted ([`retention`], "Rollups after a sweep").
    pub fn set_retention(&mut self, r: Retention) {
        self.retention = Some(r);
    }

    /// A conflict window of `window` seqs instead of [`dedupe::WINDOW`] (tests make it small).
    #[cfg(test)]
    pub(crate) fn set_dedupe_window(&mut self, window: u64) {
        self.window = window;
    }

    #[cfg(test)]
    pub(crate) fn conn_for_tests(&self) -> &Connection {
        &self.conn
    }
}

impl CaseStore for SqliteWriter {
    fn case_tx(
        &mut self,
        f: &mut dyn FnMut(&mut dyn CaseTx) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        f(&mut SqlCaseTx(&tx))?;
        tx.commit()?;
        Ok(())
    }

    fn load_case(&mut self, id: &str) -> Result<Option<Case>, StoreError> {
        Ok(cases_sql::case(&self.conn, id)?.map(|d| d.case))
    }

    fn open_cases(&mut self) -> Result<Vec<Case>, StoreError> {
        Ok(cases_sql::open_cases(&self.conn)?)
    }

    fn case_event(&mut self, case_id: &str, seq: u64) -> Result<Option<Event>, StoreError> {
        Ok(notify_sql::event(&self.conn, case_id, seq)?)
    }

    fn scan_case_events(&mut self, f: &mut dyn FnMut(EventFacts<'_>)) -> Result<(), StoreError> {
        Ok(cases_sql::scan_case_events(&self.conn, f)?)
    }

    fn contact(&mut self, case_id: &str) -> Result<Option<cases_sql::Contact>, StoreError> {
        Ok(cases_sql::contact(&self.conn, case_id)?)
    }

    fn erase_contact(&mut self, case_id: &str) -> Result<bool, StoreError> {
        let erased = cases_sql::erase_contact(&self.conn, case_id)?;
        if erased {
            cases_sql::checkpoint(&self.conn)?;
        }
        Ok(erased)
    }

    fn erase_contacts_closed_before(&mut self, before_ms: i64) -> Result<usize, StoreError> {
        let n = cases_sql::erase_contacts_closed_before(&self.conn, before_ms)?;
        if n > 0 {
            cases_sql::checkpoint(&self.conn)?;
        }
        Ok(n)
    }

    fn device_last_reading_ms(
        &mut self,
        gateway: &str,
        device: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT max(latest_ts_ms) FROM series WHERE gateway = ?1 AND device = ?2",
            )?
            .query_row(params![gateway, device], |r| r.get(0))?)
    }

    fn due_notifications(
        &mut self,
        now_ms: i64,
        limit: u32,
    ) -> Result<Vec<Notification>, StoreError> {
        Ok(notify_sql::due(&self.conn, now_ms, limit)?)
    }

    fn next_notification_ms(&mut self) -> Result<Option<i64>, StoreError> {
        Ok(notify_sql::next_due_ms(&self.conn)?)
    }

    fn record_attempt(
        &mut self,
        id: i64,
        attempt: &Attempt,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        Ok(notify_sql::record(&self.conn, id, attempt, now_ms)?)
    }
}

fn metric_index(m: Metric) -> usize {
    m.index().unwrap_or(0)
}

/// The series of a custom `x_` metric, keeping the unit its latest reading declared. Not
/// cached: vendor extras are few, and their unit may change with the profile.
fn custom_series_id(
    tx: &Transaction<'_>,
    gateway: &str,
    device: &str,
    metric: &str,
    unit: Option<&str>,
) -> rusqlite::Result<i64> {
    tx.prepare_cached(
        "INSERT INTO series (gateway, device, metric, unit) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (gateway, device, metric) DO UPDATE SET unit = excluded.unit \
         WHERE unit IS NOT excluded.unit",
    )?
    .execute(params![gateway, device, metric, unit])?;
    tx.prepare_cached("SELECT id FROM series WHERE gateway = ?1 AND device = ?2 AND metric = ?3")?
        .query_row(params![gateway, device, metric], |r| r.get(0))
}

/// The unit of a stored series: the declared one of a custom metric, else the canonical one.
fn unit_of(metric: &str, unit: Option<String>) -> String {
    unit.unwrap_or_else(|| {
        Metric::from_name(metric)
            .map(|m| m.unit().to_string())
            .unwrap_or_default()
    })
}

fn stream_id(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, HashMap<String, i64>>,
    gateway: &str,
    stream: &str,
    now_ms: i64,
) -> rusqlite::Result<i64> {
    if let Some(id) = cache.get(gateway).and_then(|m| m.get(stream)) {
        return Ok(*id);
    }
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM streams WHERE gateway = ?1 AND stream = ?2")?
        .query_row(params![gateway, stream], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached(
                "INSERT INTO streams (gateway, stream, first_seen_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![gateway, stream, now_ms])?;
            tracing::info!(gateway, stream, "new stream");
            tx.last_insert_rowid()
        }
    };
    cache
        .entry(gateway.to_string())
        .or_default()
        .insert(stream.to_string(), id);
    Ok(id)
}

fn series_id(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, HashMap<String, [i64; Metric::ALL.len()]>>,
    gateway: &str,
    device: &str,
    metric: Metric,
) -> rusqlite::Result<i64> {
    let mi = metric_index(metric);
    if let Some(ids) = cache.get(gateway).and_then(|m| m.get(device)) {
        if ids[mi] != 0 {
            return Ok(ids[mi]);
        }
    }
    let found: Option<i64> = tx
        .prepare_cached("SELECT id FROM series WHERE gateway = ?1 AND device = ?2 AND metric = ?3")?
        .query_row(params![gateway, device, metric.name()], |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached("INSERT INTO series (gateway, device, metric) VALUES (?1, ?2, ?3)")?
                .execute(params![gateway, device, metric.name()])?;
            tx.last_insert_rowid()
        }
    };
    let per_gw = match cache.get_mut(gateway) {
        Some(m) => m,
        None => cache.entry(gateway.to_string()).or_default(),
    };
    match per_gw.get_mut(device) {
        Some(ids) => ids[mi] = id,
        None => {
            let mut ids = [0; Metric::ALL.len()];
            ids[mi] = id;
            per_gw.insert(device.to_string(), ids);
        }
    }
    Ok(id)
}

fn event_kind(k: EventKind) -> &'static str {
    match k {
        EventKind::Started => "started",
        EventKind::Gap => "gap",
        EventKind::StoreReset => "store_reset",
        EventKind::CameraFailed => "camera_failed",
        EventKind::CommandRefused => "command_refused",
        EventKind::DroneLinkLost => "drone_link_lost",
        EventKind::DroneLinkRestored => "drone_link_restored",
        EventKind::ItemRefused => "item_refused",
    }
}

/// Appends one alarm transition and folds it into its episode ([`episode::apply`]).
fn store_alarm(
    tx: &Transaction<'_>,
    gateway: &str,
    stream_id: i64,
    seq: i64,
    a: &Alarm,
    now_ms: i64,
) -> rusqlite::Result<()> {
    let metric = a.metric.as_ref().map(|m| m.name());
    tx.prepare_cached(
        "INSERT INTO alarm_transitions (gateway, alarm_id, stream_id, seq, device, kind, metric, \
         phase, started_ms, ts_ms, cleared_ms, value, peak, peak_ms, limit_value, suppressed, \
         message, received_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
    )?
    .execute(params![
        gateway,
        a.id,
        stream_id,
        seq,
        a.device,
        a.kind.name(),
        metric,
        phase_name(a.phase),
        a.started_ms,
        a.ts_ms,
        a.cleared_ms,
        a.value,
        a.peak,
        a.peak_ms,
        a.limit,
        a.suppressed,
        a.message,
        now_ms
    ])?;
    let prev = tx
        .prepare_cached(
            "SELECT device, kind, metric, phase, suppressed, started_ms, cleared_ms, last_ts_ms, \
             value, peak, peak_ms, limit_value, message, first_seen_ms, last_received_ms, updates \
             FROM alarms WHERE gateway = ?1 AND id = ?2",
        )?
        .query_row(params![gateway, a.id], |r| {
            let phase: String = r.get(3)?;
            Ok(Episode {
                device: r.get(0)?,
                kind: r.get(1)?,
                metric: r.get(2)?,
                // Only this module writes the column; an unknown name cannot win a rank.
                phase: phase_from_name(&phase).unwrap_or(fumegrid_common::wire::AlarmPhase::Raised),
                suppressed: r.get(4)?,
                started_ms: r.get(5)?,
                cleared_ms: r.get(6)?,
                last_ts_ms: r.get(7)?,
                value: r.get(8)?,
                peak: r.get(9)?,
                peak_ms: r.get(10)?,
                limit: r.get(11)?,
                message: r.get(12)?,
                first_seen_ms: r.get(13)?,
                last_received_ms: r.get(14)?,
                updates: r.get(15)?,
            })
        })
        .optional()?;
    let applied = episode::apply(prev, a, now_ms);
    if applied.identity_mismatch {
        tracing::warn!(
            gateway,
            alarm = %a.id,
            device = %a.device,
            kind = a.kind.name(),
            "alarm transition names another device, kind or metric than its episode; \
             the episode keeps the first"
        );
    }
    if !applied.advanced {
        tracing::debug!(gateway, alarm = %a.id, phase = phase_name(a.phase), ts_ms = a.ts_ms,
            "late alarm transition: peak and count folded in, episode not rewound");
    }
    let e = applied.episode;
    tx.prepare_cached(
        "INSERT INTO alarms (gateway, id, device, kind, metric, phase, suppressed, started_ms, \
         cleared_ms, last_ts_ms, value, peak, peak_ms, limit_value, message, first_seen_ms, \
         last_received_ms, updates) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) \
         ON CONFLICT (gateway, id) DO UPDATE SET device = excluded.device, \
           kind = excluded.kind, metric = excluded.metric, phase = excluded.phase, \
           suppressed = excluded.suppressed, started_ms = excluded.started_ms, \
           cleared_ms = excluded.cleared_ms, last_ts_ms = excluded.last_ts_ms, \
           value = excluded.value, peak = excluded.peak, peak_ms = excluded.peak_ms, \
           limit_value = excluded.limit_value, message = excluded.message, \
           first_seen_ms = excluded.first_seen_ms, last_received_ms = excluded.last_received_ms, \
           updates = excluded.updates",
    )?
    .execute(params![
        gateway,
        a.id,
        e.device,
        e.kind,
        e.metric,
        phase_name(e.phase),
        e.suppressed,
        e.started_ms,
        e.cleared_ms,
        e.last_ts_ms,
        e.value,
        e.peak,
        e.peak_ms,
        e.limit,
        e.message,
        e.first_seen_ms,
        e.last_received_ms,
        e.updates
    ])?;
    Ok(())
}

/// Stores one metric's period aggregate, merged ([`merge_period`]) into a row already stored
/// for the same series and period.
fn store_period(
    tx: &Transaction<'_>,
    series_id: i64,
    start_ms: i64,
    period_s: u32,
    v: &PeriodVals,
) -> rusqlite::Result<()> {
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO periods (series_id, start_ms, period_s, polls, count, avg, \
             min, max, last, valid) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            series_id, start_ms, period_s, v.polls, v.count, v.avg, v.min, v.max, v.last, v.valid
        ])?;
    if inserted == 1 {
        return Ok(());
    }
    let stored = tx
        .prepare_cached(
            "SELECT polls, count, avg, min, max, last, valid FROM periods \
             WHERE series_id = ?1 AND start_ms = ?2 AND period_s = ?3",
        )?
        .query_row(params![series_id, start_ms, period_s], period_vals)?;
    let m = merge_period(&stored, v);
    tx.prepare_cached(
        "UPDATE periods SET polls = ?4, count = ?5, avg = ?6, min = ?7, max = ?8, last = ?9, \
         valid = ?10 WHERE series_id = ?1 AND start_ms = ?2 AND period_s = ?3",
    )?
    .execute(params![
        series_id, start_ms, period_s, m.polls, m.count, m.avg, m.min, m.max, m.last, m.valid
    ])?;
    Ok(())
}

/// Recomputes every rollup bucket in `touched` (`(level, series id, start)`) from what lies
/// under it ([`rollup::compute`]), then the bucket above each, level by level up to the day:
/// stored when there is something under it, deleted when nothing is left. A minute that is
/// exactly one 60-s period is not stored twice: the 1-minute level reads it from `periods`
/// ([`minute_buckets`]). With `cut` (retention is on), a stored bucket whose sources may have
/// been swept is frozen, not recomputed ([`retention`]). Returns how many
/// buckets were refreshed and how many were frozen.
pub(crate) fn refresh_rollups(
    conn: &Connection,
    mut touched: BTreeSet<(usize, i64, i64)>,
    cut: Option<&Cutoffs>,
) -> rusqlite::Result<(u64, u64)> {
    let (mut n, mut frozen) = (0, 0);
    while let Some((level, ser, start)) = touched.pop_first() {
        if let Some(c) = cut
            && start < retention::source_cutoff(c, level)
            && rollup_row_exists(conn, level, ser, start)?
        {
            frozen += 1;
            continue;
        }
        match rollup_bucket(conn, level, ser, start)? {
            Some((b, true)) => {
                conn.prepare_cached(
                    "INSERT INTO rollups (series_id, res_s, start_ms, sum, count, polls, min, \
                     max, last_ts_ms, last, valid_subs, expected) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
                     ON CONFLICT (series_id, res_s, start_ms) DO UPDATE SET sum = excluded.sum, \
                       count = excluded.count, polls = excluded.polls, min = excluded.min, \
                       max = excluded.max, last_ts_ms = excluded.last_ts_ms, \
                       last = excluded.last, valid_subs = excluded.valid_subs, \
                       expected = excluded.expected",
                )?
                .execute(params![
                    ser,
                    rollup::LEVELS[level],
                    start,
                    b.sum,
                    b.count as i64,
                    b.polls as i64,
                    b.min,
                    b.max,
                    b.last.map(|l| l.0),
                    b.last.map(|l| l.1),
                    b.valid_subs,
                    b.expected
                ])?;
            }
            // Nothing under it, or a minute that is its 60-s period: no row.
            Some((_, false)) | None => {
                conn.prepare_cached(
                    "DELETE FROM rollups WHERE series_id = ?1 AND res_s = ?2 AND start_ms = ?3",
                )?
                .execute(params![ser, rollup::LEVELS[level], start])?;
            }
        }
        n += 1;
        if level + 1 < rollup::LEVELS.len() {
            touched.insert((level + 1, ser, rollup::bucket_of(level + 1, start)));
        }
    }
    Ok((n, frozen))
}

/// Whether the level-`level` bucket at `start` holds something now (for a minute: a stored row
/// or a 60-s period).
fn rollup_row_exists(
    conn: &Connection,
    level: usize,
    ser: i64,
    start: i64,
) -> rusqlite::Result<bool> {
    let row = conn
        .prepare_cached(
            "SELECT 1 FROM rollups WHERE series_id = ?1 AND res_s = ?2 AND start_ms = ?3",
        )?
        .exists(params![ser, rollup::LEVELS[level], start])?;
    Ok(row)
}

/// One bucket computed from the stored rows under it (see [`rollup`] for which), and whether it
/// is stored as a row: not when it is a minute made of exactly one 60-s period, which the
/// 1-minute level reads from `periods` instead.
fn rollup_bucket(
    conn: &Connection,
    level: usize,
    ser: i64,
    start: i64,
) -> rusqlite::Result<Option<(rollup::Bucket, bool)>> {
    let end = start + i64::from(rollup::LEVELS[level]) * 1000;
    let shortest = if level == 0 {
        1
    } else {
        rollup::LEVELS[level - 1] + 1
    };
    let periods: Vec<rollup::PeriodAt> = conn
        .prepare_cached(
            "SELECT polls, count, avg, min, max, last, valid, start_ms, period_s FROM periods \
             WHERE series_id = ?1 AND start_ms >= ?2 AND start_ms < ?3 \
               AND period_s BETWEEN ?4 AND ?5",
        )?
        .query_map(
            params![ser, start, end, shortest, rollup::LEVELS[level]],
            |r| Ok((r.get(7)?, r.get(8)?, period_vals(r)?)),
        )?
        .collect::<rusqlite::Result<_>>()?;
    if let Some(b) = rollup::from_periods(level, &periods) {
        let one_minute_period = level == 0 && periods.len() == 1 && periods[0].1 == 60;
        return Ok(Some((b, !one_minute_period)));
    }
    if level == 0 {
        let raw: Vec<rollup::Raw> = conn
            .prepare_cached(
                "SELECT ts_ms, value, quality FROM readings \
                 WHERE series_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3",
            )?
            .query_map(params![ser, start, end], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        return Ok(rollup::from_raw(&raw).map(|b| (b, true)));
    }
    let children: Vec<rollup::Bucket> = if level == 1 {
        minute_buckets(conn, ser, start, end, u32::MAX)?
            .into_iter()
            .map(|(_, b)| b)
            .collect()
    } else {
        conn.prepare_cached(
            "SELECT sum, count, polls, min, max, last_ts_ms, last, valid_subs, expected \
             FROM rollups WHERE series_id = ?1 AND res_s = ?2 AND start_ms >= ?3 \
               AND start_ms < ?4",
        )?
        .query_map(
            params![ser, rollup::LEVELS[level - 1], start, end],
            bucket_row,
        )?
        .collect::<rusqlite::Result<_>>()?
    };
    Ok(rollup::from_children(level, &children).map(|b| (b, true)))
}

/// The 1-minute buckets of series `ser` starting in `[from, to)`, oldest first, at most
/// `limit`: the stored 1-minute rows, and for a minute without one its 60-s period (a minute
/// that is exactly one 60-s period is not stored twice, see [`refresh_rollups`]).
fn minute_buckets(
    conn: &Connection,
    ser: i64,
    from: i64,
    to: i64,
    limit: u32,
) -> rusqlite::Result<Vec<(i64, rollup::Bucket)>> {
    let mut out: std::collections::BTreeMap<i64, rollup::Bucket> = conn
        .prepare_cached(
            "SELECT sum, count, polls, min, max, last_ts_ms, last, valid_subs, expected, \
               start_ms FROM rollups WHERE series_id = ?1 AND res_s = 60 AND start_ms >= ?2 \
               AND start_ms < ?3 ORDER BY start_ms LIMIT ?4",
        )?
        .query_map(params![ser, from, to, limit], |r| {
            Ok((r.get(9)?, bucket_row(r)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare_cached(
        "SELECT polls, count, avg, min, max, last, valid, start_ms FROM periods \
         WHERE series_id = ?1 AND period_s = 60 AND start_ms >= ?2 AND start_ms < ?3 \
         ORDER BY start_ms LIMIT ?4",
    )?;
    let mut rows = st.query(params![ser, from, to, limit])?;
    while let Some(r) = rows.next()? {
        let start: i64 = r.get(7)?;
        if let std::collections::btree_map::Entry::Vacant(e) = out.entry(start)
            && let Some(b) = rollup::from_periods(0, &[(start, 60, period_vals(r)?)])
        {
            e.insert(b);
        }
    }
    Ok(out.into_iter().take(limit as usize).collect())
}

/// A stored bucket from `sum, count, polls, min, max, last_ts_ms, last, valid_subs, expected`.
fn bucket_row(r: &Row<'_>) -> rusqlite::Result<rollup::Bucket> {
    let (last_ts, last): (Option<i64>, Option<f64>) = (r.get(5)?, r.get(6)?);
    Ok(rollup::Bucket {
        sum: r.get(0)?,
        count: r.get::<_, i64>(1)?.max(0) as u64,
        polls: r.get::<_, i64>(2)?.max(0) as u64,
        min: r.get(3)?,
        max: r.get(4)?,
        last: last_ts.zip(last),
        valid_subs: r.get(7)?,
        expected: r.get(8)?,
    })
}

/// Migration 12's data step: the rollups of every reading and period already stored.
fn backfill_rollups(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let mut touched: BTreeSet<(usize, i64, i64)> = BTreeSet::new();
    {
        let mut st = tx.prepare("SELECT series_id, ts_ms FROM readings")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            touched.insert((0, r.get(0)?, rollup::bucket_of(0, r.get(1)?)));
        }
        let mut st = tx.prepare("SELECT series_id, start_ms, period_s FROM periods")?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let level = rollup::level_of_period(r.get(2)?);
            touched.insert((level, r.get(0)?, rollup::bucket_of(level, r.get(1)?)));
        }
    }
    refresh_rollups(tx, touched, None).map(|_| ())
}

/// `polls, count, avg, min, max, last, valid` from the first seven columns of `r`.
fn period_vals(r: &Row<'_>) -> rusqlite::Result<PeriodVals> {
    Ok(PeriodVals {
        polls: r.get(0)?,
        count: r.get(1)?,
        avg: r.get(2)?,
        min: r.get(3)?,
        max: r.get(4)?,
        last: r.get(5)?,
        valid: r.get(6)?,
    })
}

/// What stream `sid` holds ([`dedupe::Held`]). Seqs are u64 stored as their two's-complement
/// i64 (a gateway never gets near 2^63).
fn held_ranges(conn: &Connection, sid: i64) -> rusqlite::Result<Held> {
    let ranges: Vec<(u64, u64)> = conn
        .prepare_cached("SELECT first_seq, last_seq FROM stream_ranges WHERE stream_id = ?1")?
        .query_map([sid], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Held::from_ranges(ranges))
}

/// Writes what changed from `stored` to `held` and drops the digests that left the conflict
/// window ([`dedupe::WINDOW`]).
fn store_held(
    conn: &Connection,
    sid: i64,
    stored: &Held,
    held: &Held,
    window: u64,
) -> rusqlite::Result<()> {
    if stored == held {
        return Ok(());
    }
    let mut del =
        conn.prepare_cached("DELETE FROM stream_ranges WHERE stream_id = ?1 AND first_seq = ?2")?;
    for (first, _) in stored.minus(held) {
        del.execute(params![sid, first as i64])?;
    }
    let mut ins = conn.prepare_cached(
        "INSERT OR REPLACE INTO stream_ranges (stream_id, first_seq, last_seq) VALUES (?1, ?2, ?3)",
    )?;
    for (first, last) in held.minus(stored) {
        ins.execute(params![sid, first as i64, last as i64])?;
    }
    if let Some(below) = held.window_floor(window) {
        conn.prepare_cached("DELETE FROM items WHERE stream_id = ?1 AND seq <= ?2")?
            .execute(params![sid, below as i64])?;
    }
    Ok(())
}

const ALARM_COLUMNS: &str = "gateway, id, device, kind, metric, phase, suppressed, started_ms, \
     cleared_ms, last_ts_ms, value, peak, peak_ms, limit_value, message, first_seen_ms, \
     last_received_ms, updates";

fn alarm_row(r: &Row<'_>) -> rusqlite::Result<AlarmRow> {
    Ok(AlarmRow {
        gateway: r.get(0)?,
        id: r.get(1)?,
        device: r.get(2)?,
        kind: r.get(3)?,
        metric: r.get(4)?,
        phase: r.get(5)?,
        suppressed: r.get(6)?,
        started_ms: r.get(7)?,
        cleared_ms: r.get(8)?,
        last_ts_ms: r.get(9)?,
        value: r.get(10)?,
        peak: r.get(11)?,
        peak_ms: r.get(12)?,
        limit: r.get(13)?,
        message: r.get(14)?,
        first_seen_ms: r.get(15)?,
        last_received_ms: r.get(16)?,
        updates: r.get(17)?,
    })
}

impl SqliteWriter {
    // The writer's caches, borrowed one by one beside the transaction that borrows `conn`.
    fn commit_in(
        tx: &Transaction<'_>,
        streams: &mut HashMap<String, HashMap<String, i64>>,
        series: &mut HashMap<String, HashMap<String, [i64; Metric::ALL.len()]>>,
        batches: &[&Batch],
        now_ms: i64,
        hook: &mut dyn AlarmHook,
        (retention, window): (Option<&Retention>, u64),
    ) -> Result<Vec<Committed>, StoreError> {
        // The digest of a new seq, for the conflict window ([`dedupe`]).
        let mut ins_item = tx.prepare_cached(
            "INSERT OR REPLACE INTO items (stream_id, seq, digest) VALUES (?1, ?2, ?3)",
        )?;
        let mut old_digest =
            tx.prepare_cached("SELECT digest FROM items WHERE stream_id = ?1 AND seq = ?2")?;
        let mut ins_conflict = tx.prepare_cached(
            "INSERT OR IGNORE INTO conflicts (stream_id, seq, digest, body, received_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut ins_reading = tx.prepare_cached(
            "INSERT INTO readings (series_id, ts_ms, value, quality, stream_id, seq) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut ins_event = tx.prepare_cached(
            "INSERT INTO events (gateway, stream_id, seq, ts_ms, kind, message, dropped, \
             from_ms, to_ms, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut seen = tx.prepare_cached(
            "INSERT INTO gateways (id, last_seen_ms) VALUES (?1, ?2) \
             ON CONFLICT (id) DO UPDATE SET last_seen_ms = excluded.last_seen_ms",
        )?;
        // series id → newest (ts, value, quality) among the new readings of this group.
        let mut latest: HashMap<i64, (i64, Option<f64>, i64)> = HashMap::new();
        // (level, series id, bucket start) of every rollup bucket this group touches.
        let mut touched: BTreeSet<(usize, i64, i64)> = BTreeSet::new();
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let sid = stream_id(tx, streams, &b.gateway, &b.stream, now_ms)?;
            let stored_held = held_ranges(tx, sid)?;
            let mut held = stored_held.clone();
            let mut c = Committed::default();
            for item in &b.items {
                let seq = item.seq as i64;
                let (json, digest) = body_digest(&item.body);
                if !held.insert(item.seq) {
                    c.duplicates += 1;
                    // No row: below the conflict window (or stored before version 5).
                    let stored: Option<i64> = old_digest
                        .query_row(params![sid, seq], |r| r.get(0))
                        .optional()?
                        .flatten();
                    if stored.is_some_and(|d| d != digest) {
                        // Same seq, other content: never taken for a resend silently.
                        c.conflicts += 1;
                        c.conflicts_new +=
                            ins_conflict.execute(params![sid, seq, digest, json, now_ms])? as u64;
                        if c.first_conflict.is_none() {
                            c.first_conflict = Some(item.seq);
                        }
                    }
                    continue;
                }
                ins_item.execute(params![sid, seq, digest])?;
                c.new += 1;
                match &item.body {
                    Body::Reading(r) => {
                        let ser = match (&r.metric, &r.unit) {
                            (Metric::Custom(_), unit) => custom_series_id(
                                tx,
                                &b.gateway,
                                &r.device,
                                r.metric.name(),
                                unit.as_deref(),
                            )?,
                            _ => series_id(tx, series, &b.gateway, &r.device, r.metric)?,
                        };
                        let q = quality_code(r.quality);
                        ins_reading.execute(params![ser, r.ts_ms, r.value, q, sid, seq])?;
                        touched.insert((0, ser, rollup::bucket_of(0, r.ts_ms)));
                        let e = latest.entry(ser).or_insert((i64::MIN, None, 0));
                        if r.ts_ms >= e.0 {
                            *e = (r.ts_ms, r.value, q);
                        }
                    }
                    Body::Alarm(a) => {
                        store_alarm(tx, &b.gateway, sid, seq, a, now_ms)?;
                        hook.on_alarm(&mut SqlCaseTx(tx), &b.gateway, a, now_ms)?;
                    }
                    Body::Event(ev) => {
                        ins_event.execute(params![
                            b.gateway,
                            sid,
                            seq,
                            ev.ts_ms,
                            event_kind(ev.kind),
                            ev.message,
                            ev.dropped.map(|d| d as i64),
                            ev.from_ms,
                            ev.to_ms,
                            now_ms
                        ])?;
                    }
                    Body::Track(t) => {
                        drone_sql::store_track(
                            tx,
                            DroneSource::Mavlink,
                            Some(&b.gateway),
                            t,
                            now_ms,
                        )?;
                    }
                    Body::DronePhoto(p) => {
                        drone_sql::store_photo(
                            tx,
                            DroneSource::Mavlink,
                            Some(&b.gateway),
                            p,
                            now_ms,
                        )?;
                    }
                    Body::Period(p) => {
                        for m in &p.metrics {
                            let ser = match &m.metric {
                                Metric::Custom(_) => custom_series_id(
                                    tx,
                                    &b.gateway,
                                    &p.device,
                                    m.metric.name(),
                                    m.unit.as_deref(),
                                )?,
                                _ => series_id(tx, series, &b.gateway, &p.device, m.metric)?,
                            };
                            let vals = PeriodVals::of(m);
                            store_period(tx, ser, p.start_ms, p.period_s, &vals)?;
                            let level = rollup::level_of_period(p.period_s);
                            touched.insert((level, ser, rollup::bucket_of(level, p.start_ms)));
                            if let Some(l) = vals.latest(p.start_ms, p.period_s) {
                                let e = latest.entry(ser).or_insert((i64::MIN, None, 0));
                                if l.0 >= e.0 {
                                    *e = l;
                                }
                            }
                        }
                    }
                    Body::Evidence(e) => {
                        c.parts += 1;
                        if let Some(ev) = evidence_sql::store_part(tx, &b.gateway, e, now_ms)? {
                            hook.on_picture(&ev);
                        }
                    }
                }
            }
            store_held(tx, sid, &stored_held, &held, window)?;
            seen.execute(params![b.gateway, now_ms])?;
            out.push(c);
        }
        let cut = retention.map(|r| r.cutoffs(now_ms));
        let (_, frozen) = refresh_rollups(tx, touched, cut.as_ref())?;
        if frozen > 0 {
            metrics::counter!(crate::telemetry::RETENTION_FROZEN).increment(frozen);
            tracing::warn!(
                buckets = frozen,
                "late data older than retention: stored, but rollup buckets whose sources were \
                 already swept are kept as they were"
            );
        }
        let mut upd = tx.prepare_cached(
            "UPDATE series SET latest_ts_ms = ?2, latest_value = ?3, latest_quality = ?4 \
             WHERE id = ?1 AND (latest_ts_ms IS NULL OR latest_ts_ms <= ?2)",
        )?;
        for (ser, (ts, v, q)) in latest {
            upd.execute(params![ser, ts, v, q])?;
        }
        Ok(out)
    }
}

impl Writer for SqliteWriter {
    fn ensure_gateways(&mut self, ids: &[String]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut st = tx.prepare_cached("INSERT OR IGNORE INTO gateways (id) VALUES (?1)")?;
            for id in ids {
                st.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn commit_with(
        &mut self,
        batches: &[&Batch],
        now_ms: i64,
        hook: &mut dyn AlarmHook,
    ) -> Result<Vec<Committed>, StoreError> {
        let SqliteWriter {
            conn,
            streams,
            series,
            retention,
            window,
        } = self;
        let result = (|| {
            let tx = conn.transaction()?;
            let out = Self::commit_in(
                &tx,
                streams,
                series,
                batches,
                now_ms,
                hook,
                (retention.as_ref(), *window),
            )?;
            let mut tx = Some(tx);
            hook.commit(&mut || match tx.take() {
                Some(tx) => Ok(tx.commit()?),
                None => Ok(()),
            })?;
            Ok(out)
        })();
        if result.is_err() {
            hook.rolled_back();
            streams.clear();
            series.clear();
        }
        result
    }

    fn stream_holds(
        &mut self,
        gateway: &str,
        stream: &str,
        from_seq: u64,
    ) -> Result<(u64, u64), StoreError> {
        let sid: Option<i64> = self
            .conn
            .prepare_cached("SELECT id FROM streams WHERE gateway = ?1 AND stream = ?2")?
            .query_row(params![gateway, stream], |r| r.get(0))
            .optional()?;
        let Some(sid) = sid else { return Ok((0, 0)) };
        let held = held_ranges(&self.conn, sid)?;
        Ok((held.high(), held.count_from(from_seq)))
    }

    fn set_status(
        &mut self,
        gateway: &str,
        state: State,
        ts_ms: Option<i64>,
        version: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        // An older status (a retained document replayed after a newer one) does not win.
        self.conn
            .prepare_cached(
                "INSERT INTO gateways (id, online, status_ts_ms, version, last_seen_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (id) DO UPDATE SET online = excluded.online, \
                   status_ts_ms = excluded.status_ts_ms, \
                   version = coalesce(excluded.version, version), \
                   last_seen_ms = excluded.last_seen_ms \
                 WHERE excluded.status_ts_ms IS NULL OR status_ts_ms IS NULL \
                   OR excluded.status_ts_ms >= status_ts_ms",
            )?
            .execute(params![
                gateway,
                state == State::Online,
                ts_ms,
                version,
                now_ms
            ])?;
        Ok(())
    }
}

impl DroneWriter for SqliteWriter {
    fn store_track(
        &mut self,
        source: DroneSource,
        gateway: Option<&str>,
        track: &fumegrid_common::wire::Track,
        now_ms: i64,
    ) -> Result<TrackStored, StoreError> {
        let tx = self.conn.transaction()?;
        let out = drone_sql::store_track(&tx, source, gateway, track, now_ms)?;
        tx.commit()?;
        Ok(out)
    }

    fn store_photo(
        &mut self,
        source: DroneSource,
        gateway: Option<&str>,
        photo: &fumegrid_common::wire::DronePhoto,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(drone_sql::store_photo(
            &self.conn, source, gateway, photo, now_ms,
        )?)
    }
}

impl DroneReader for SqliteReader {
    fn drones(&self, since_ms: i64) -> Result<Vec<DroneRow>, StoreError> {
        self.with(|c| drone_sql::drones(c, since_ms))
    }

    fn track(
        &self,
        drone: &str,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<fumegrid_common::wire::TrackPoint>, StoreError> {
        self.with(|c| drone_sql::track(c, drone, from_ms, to_ms, limit))
    }

    fn photos(
        &self,
        drone: Option<&str>,
        from_ms: i64,
        to_ms: i64,
        limit: u32,
    ) -> Result<Vec<PhotoRow>, StoreError> {
        self.with(|c| drone_sql::photos(c, drone, from_ms, to_ms, limit))
    }

    fn points_after(&self, cursor: i64, limit: u32) -> Result<Vec<ArrivedPoint>, StoreError> {
        self.with(|c| drone_sql::points_after(c, cursor, limit))
    }

    fn cursor_before(&self, received_ms: i64) -> Result<i64, StoreError> {
        self.with(|c| drone_sql::cursor_before(c, received_ms))
    }

    fn passes(
        &self,
        drone: Option<&str>,
        site: Option<&str>,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<PassRecord>, StoreError> {
        self.with(|c| drone_sql::passes(c, drone, site, from_ms, to_ms))
    }
}

impl EvidenceWriter for SqliteWriter {
    fn pictures_to_move(&mut self, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(evidence_sql::pictures_to_move(&self.conn, limit)?)
    }

    fn assembled(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(evidence_sql::assembled(&self.conn, sha256)?)
    }

    fn mark_stored(&mut self, sha256: &str, now_ms: i64) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let done = evidence_sql::mark_stored(&tx, sha256, now_ms)?;
        if done {
            notify_sql::enqueue_evidence(&tx, sha256, None, now_ms)?;
        }
        tx.commit()?;
        Ok(done)
    }

    fn add_upload(&mut self, upload: &Upload, now_ms: i64) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let new = evidence_sql::add_upload(&tx, upload, now_ms)?;
        if new {
            notify_sql::enqueue_evidence(&tx, &upload.sha256, Some(&upload.case_id), now_ms)?;
        }
        tx.commit()?;
        Ok(new)
    }

    fn add_request(&mut self, request: &SnapshotRequest) -> Result<(), StoreError> {
        Ok(evidence_sql::add_request(&self.conn, request)?)
    }

    fn expired(&mut self, unlinked_before_ms: i64, limit: u32) -> Result<Vec<String>, StoreError> {
        Ok(evidence_sql::expired(
            &self.conn,
            unlinked_before_ms,
            limit,
        )?)
    }

    fn delete_picture(&mut self, sha256: &str) -> Result<bool, StoreError> {
        let tx = self.conn.transaction()?;
        let gone = evidence_sql::delete_picture(&tx, sha256)?;
        tx.commit()?;
        Ok(gone)
    }
}

impl EvidenceReader for SqliteReader {
    fn case_pictures(&self, case_id: &str) -> Result<Vec<PictureRow>, StoreError> {
        self.with(|c| evidence_sql::case_pictures(c, case_id))
    }

    fn picture(&self, sha256: &str) -> Result<Option<PictureRow>, StoreError> {
        self.with(|c| evidence_sql::picture(c, sha256))
    }

    fn picture_cases(&self, sha256: &str) -> Result<Vec<String>, StoreError> {
        self.with(|c| evidence_sql::picture_cases(c, sha256))
    }

    fn case_requests(&self, case_id: &str) -> Result<Vec<SnapshotRequest>, StoreError> {
        self.with(|c| evidence_sql::case_requests(c, case_id))
    }
}

/// The API side: one connection behind a mutex (WAL lets it read while ingest writes).
#[derive(Debug)]
pub struct SqliteReader {
    conn: Mutex<Connection>,
}

impl SqliteReader {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(StoreError::Db)
    }
}

impl Reader for SqliteReader {
    fn contact(&self, case_id: &str) -> Result<Option<cases_sql::Contact>, StoreError> {
        self.with(|c| cases_sql::contact(c, case_id))
    }

    fn notifications(&self, q: &NotificationQuery) -> Result<(u64, Vec<Notification>), StoreError> {
        self.with(|c| notify_sql::list(c, q))
    }

    fn gateways(&self) -> Result<Vec<GatewayRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT id, online, last_seen_ms, status_ts_ms, version FROM gateways ORDER BY id",
            )?;
            st.query_map([], |r| {
                Ok(GatewayRow {
                    id: r.get(0)?,
                    online: r.get(1)?,
                    last_seen_ms: r.get(2)?,
                    status_ts_ms: r.get(3)?,
                    version: r.get(4)?,
                })
            })?
            .collect()
        })
    }

    fn devices(&self) -> Result<Vec<DeviceRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT gateway, device, metric, latest_ts_ms, latest_value, latest_quality, unit \
                 FROM series WHERE latest_ts_ms IS NOT NULL ORDER BY gateway, device, metric",
            )?;
            let mut rows = st.query([])?;
            let mut out: Vec<DeviceRow> = Vec::new();
            while let Some(r) = rows.next()? {
                let (gw, dev): (String, String) = (r.get(0)?, r.get(1)?);
                let metric: String = r.get(2)?;
                let latest = Latest {
                    unit: unit_of(&metric, r.get(6)?),
                    metric,
                    ts_ms: r.get(3)?,
                    value: r.get(4)?,
                    quality: quality_name(r.get(5)?),
                };
                match out.last_mut() {
                    Some(d) if d.gateway == gw && d.device == dev => d.latest.push(latest),
                    _ => out.push(DeviceRow {
                        gateway: gw,
                        device: dev,
                        latest: vec![latest],
                    }),
                }
            }
            Ok(out)
        })
    }

    fn readings(&self, q: &ReadingQuery) -> Result<Vec<ReadingRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT s.gateway, s.metric, r.ts_ms, r.value, r.quality, s.unit \
                 FROM series s JOIN readings r ON r.series_id = s.id \
                 WHERE s.device = ?1 AND (?2 IS NULL OR s.gateway = ?2) \
                   AND (?3 IS NULL OR s.metric = ?3) AND r.ts_ms >= ?4 AND r.ts_ms < ?5 \
                 ORDER BY r.ts_ms, s.metric LIMIT ?6",
            )?;
            st.query_map(
                params![q.device, q.gateway, q.metric, q.from_ms, q.to_ms, q.limit],
                |r| {
                    let metric: String = r.get(1)?;
                    Ok(ReadingRow {
                        gateway: r.get(0)?,
                        unit: unit_of(&metric, r.get(5)?),
                        metric,
                        ts_ms: r.get(2)?,
                        value: r.get(3)?,
                        quality: quality_name(r.get(4)?),
                    })
                },
            )?
            .collect()
        })
    }

    fn periods(&self, q: &ReadingQuery) -> Result<Vec<PeriodRow>, StoreError> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT p.polls, p.count, p.avg, p.min, p.max, p.last, p.valid, s.gateway, \
                   s.metric, s.unit, p.start_ms, p.period_s \
                 FROM series s JOIN periods p ON p.series_id = s.id \
                 WHERE s.device = ?1 AND (?2 IS NULL OR s.gateway = ?2) \
                   AND (?3 IS NULL OR s.metric = ?3) AND p.start_ms >= ?4 AND p.start_ms < ?5 \
                 ORDER BY p.start_ms, s.metric, p.period_s, s.gateway LIMIT ?6",
            )?;
            st.query_map(
                params![q.device, q.gateway, q.metric, q.from_ms, q.to_ms, q.limit],
                |r| {
                    let metric: String = r.get(8)?;
                    Ok(PeriodRow {
                        vals: period_vals(r)?,
                        gateway: r.get(7)?,
                        unit: unit_of(&metric, r.get(9)?),
                        metric,
                        start_ms: r.get(10)?,
                        period_s: r.get(11)?,
                    })
                },
            )?
            .collect()
        })
    }

    fn rollups(&self, q: &ReadingQuery, level: usize) -> Result<Vec<RollupRow>, StoreError> {
        let Some(&res) = rollup::LEVELS.get(level) else {
            return Ok(Vec::new());
        };
        if level == 0 {
            return self.with(|c| minute_rollups(c, q));
        }
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT r.sum, r.count, r.polls, r.min, r.max, r.last_ts_ms, r.last, \
                   r.valid_subs, r.expected, s.gateway, s.metric, s.unit, r.start_ms \
                 FROM series s JOIN rollups r ON r.series_id = s.id \
                 WHERE s.device = ?1 AND (?2 IS NULL OR s.gateway = ?2) \
                   AND (?3 IS NULL OR s.metric = ?3) AND r.res_s = ?4 \
                   AND r.start_ms >= ?5 AND r.start_ms < ?6 \
                 ORDER BY r.start_ms, s.metric, s.gateway LIMIT ?7",
            )?;
            st.query_map(
                params![
                    q.device, q.gateway, q.metric, res, q.from_ms, q.to_ms, q.limit
                ],
                |r| {
                    let b = bucket_row(r)?;
                    let (gw, metric): (String, String) = (r.get(9)?, r.get(10)?);
                    let unit = unit_of(&metric, r.get(11)?);
                    Ok(RollupRow::new(&gw, &metric, unit, r.get(12)?, &b))
                },
            )?
            .collect()
        })
    }

    fn alarms(&self, q: &AlarmQuery) -> Result<Vec<AlarmRow>, StoreError> {
        self.with(|c| Self::alarms_in(c, q))
    }

    fn case(&self, id: &str) -> Result<Option<CaseDetail>, StoreError> {
        self.with(|c| cases_sql::case(c, id))
    }

    fn cases(&self, q: &CaseQuery) -> Result<CasePage, StoreError> {
        self.with(|c| cases_sql::cases(c, q))
    }

    fn case_events_until(&self, to_ms: i64) -> Result<Vec<Event>, StoreError> {
        self.with(|c| cases_sql::case_events_until(c, to_ms))
    }

    fn alarm(&self, gateway: &str, id: &str) -> Result<Option<AlarmDetail>, StoreError> {
        self.with(|c| Self::alarm_in(c, gateway, id))
    }
}

/// The 1-minute level of `q.device`'s series ([`minute_buckets`]), oldest first, then by metric
/// and gateway, at most `q.limit`.
fn minute_rollups(c: &Connection, q: &ReadingQuery) -> rusqlite::Result<Vec<RollupRow>> {
    let series: Vec<(i64, String, String, Option<String>)> = c
        .prepare_cached(
            "SELECT id, gateway, metric, unit FROM series \
             WHERE device = ?1 AND (?2 IS NULL OR gateway = ?2) AND (?3 IS NULL OR metric = ?3)",
        )?
        .query_map(params![q.device, q.gateway, q.metric], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    for (id, gw, metric, unit) in series {
        let unit = unit_of(&metric, unit);
        for (start, b) in minute_buckets(c, id, q.from_ms, q.to_ms, q.limit)? {
            out.push(RollupRow::new(&gw, &metric, unit.clone(), start, &b));
        }
    }
    out.sort_by(|a, b| {
        (a.start_ms, &a.metric, &a.gateway).cmp(&(b.start_ms, &b.metric, &b.gateway))
    });
    out.truncate(q.limit as usize);
    Ok(out)
}

/// The SQL of an alarm list: only the conditions the query uses, so that SQLite can pick the
/// partial index of open episodes or the per-device index. Parameters are numbered by name.
fn alarms_sql(q: &AlarmQuery) -> String {
    let mut w: Vec<&str> = vec!["started_ms < :to", "coalesce(cleared_ms, :from) >= :from"];
    match q.state {
        AlarmState::Open => w.push("phase <> 'cleared'"),
        AlarmState::Cleared => w.push("phase = 'cleared'"),
        AlarmState::All => {}
    }
    if q.gateway.is_some() {
        w.push("gateway = :gateway");
    }
    if q.device.is_some() {
        w.push("device = :device");
    }
    if q.kind.is_some() {
        w.push("kind = :kind");
    }
    if q.suppressed.is_some() {
        w.push("suppressed = :suppressed");
    }
    format!(
        "SELECT {ALARM_COLUMNS} FROM alarms WHERE {} \
         ORDER BY started_ms DESC, gateway, id LIMIT :limit",
        w.join(" AND ")
    )
}

impl SqliteReader {
    fn alarms_in(c: &Connection, q: &AlarmQuery) -> rusqlite::Result<Vec<AlarmRow>> {
        let sql = alarms_sql(q);
        let mut st = c.prepare_cached(&sql)?;
        let mut named: Vec<(&str, &dyn rusqlite::ToSql)> = vec![
            (":to", &q.to_ms),
            (":from", &q.from_ms),
            (":limit", &q.limit),
        ];
        if let Some(g) = &q.gateway {
            named.push((":gateway", g));
        }
        if let Some(d) = &q.device {
            named.push((":device", d));
        }
        if let Some(k) = &q.kind {
            named.push((":kind", k));
        }
        if let Some(s) = &q.suppressed {
            named.push((":suppressed", s));
        }
        st.query_map(named.as_slice(), alarm_row)?.collect()
    }

    fn alarm_in(c: &Connection, gateway: &str, id: &str) -> rusqlite::Result<Option<AlarmDetail>> {
        let sql = format!("SELECT {ALARM_COLUMNS} FROM alarms WHERE gateway = ?1 AND id = ?2");
        let Some(alarm) = c
            .prepare_cached(&sql)?
            .query_row(params![gateway, id], alarm_row)
            .optional()?
        else {
            return Ok(None);
        };
        let mut st = c.prepare_cached(
            "SELECT t.phase, t.ts_ms, t.started_ms, t.cleared_ms, t.value, t.peak, t.peak_ms, \
             t.limit_value, t.suppressed, t.message, s.stream, t.seq, t.received_ms \
             FROM alarm_transitions t JOIN streams s ON s.id = t.stream_id \
             WHERE t.gateway = ?1 AND t.alarm_id = ?2 \
             ORDER BY t.ts_ms, CASE t.phase WHEN 'raised' THEN 0 WHEN 'updated' THEN 1 ELSE 2 END, \
               t.id",
        )?;
        let transitions = st
            .query_map(params![gateway, id], |r| {
                Ok(AlarmTransitionRow {
                    phase: r.get(0)?,
                    ts_ms: r.get(1)?,
                    started_ms: r.get(2)?,
                    cleared_ms: r.get(3)?,
                    value: r.get(4)?,
                    peak: r.get(5)?,
                    peak_ms: r.get(6)?,
                    limit: r.get(7)?,
                    suppressed: r.get(8)?,
                    message: r.get(9)?,
                    stream: r.get(10)?,
                    seq: r.get::<_, i64>(11)? as u64,
                    received_ms: r.get(12)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(Some(AlarmDetail { alarm, transitions }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::episode::tests::alarm;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Event, Item};

    /// The store's files (main and WAL) whose bytes contain `needle`: what erasure must empty.
    fn files_holding(p: &std::path::Path, needle: &str) -> Vec<String> {
        ["", "-wal"]
            .iter()
            .map(|s| format!("{}{s}", p.display()))
            .filter(|f| {
                std::fs::read(f)
                    .unwrap_or_default()
                    .windows(needle.len())
                    .any(|w| w == needle.as_bytes())
            })
            .collect()
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("fumegrid-agg-store-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpdir");
        let p = d.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
        p
    }

    fn batch(stream: &str, seqs: std::ops::Range<u64>) -> Batch {
        Batch {
            gateway: "gw-1".into(),
            stream: stream.into(),
            sent_ms: 0,
            items: seqs
                .map(|seq| Item {
                    seq,
                    body: Body::Reading(Reading {
                        device: "rest-1".into(),
                        unit: None,
                        metric: if seq % 2 == 0 {
                            Metric::FumeMgM3
                        } else {
                            Metric::FanOn
                        },
                        value: Some(seq as f64),
                        quality: Quality::Ok,
                        ts_ms: 1000 * seq as i64,
                    }),
                })
                .collect(),
        }
    }

    #[test]
    fn fresh_file_is_migrated_and_reopens() {
        let p = tmp("fresh.sqlite3");
        assert_eq!(inspect(&p).expect("inspect"), None);
        {
            let mut w = open(&p, Synchronous::Normal).expect("open");
            w.ensure_gateways(&["gw-1".into()]).expect("gateways");
        }
        assert_eq!(inspect(&p).expect("inspect"), Some(SCHEMA_VERSION));
        let mut w = open(&p, Synchronous::Full).expect("reopen");
        let r = open_reader(&p).expect("reader");
        assert_eq!(r.gateways().expect("gw").len(), 1);
        w.commit(&[&batch("s", 1..3)], 5).expect("commit");
    }

    #[test]
    fn custom_metrics_are_stored_with_their_unit_beside_canonical_ones() {
        let p = tmp("custom.sqlite3");
        let mut w = open(&p, Synchronous::Normal).expect("open");
        let mut b = batch("s", 1..5);
        let x = Metric::parse("x_run_hours").expect("valid");
        for (i, item) in b.items.iter_mut().enumerate() {
            if let (Body::Reading(r), true) = (&mut item.body, i % 2 == 0) {
                // seq 1 and 3: a vendor extra, its unit changed by a new profile in between.
                r.metric = x;
                r.unit = Some(if i == 0 { "h" } else { "hours" }.into());
            }
        }
        w.commit(&[&b], 5).expect("commit");
        let r = open_reader(&p).expect("reader");
        let devices = r.devices().expect("devices");
        let latest: Vec<(&str, &str, Option<f64>)> = devices[0]
            .latest
            .iter()
            .map(|l| (l.metric.as_str(), l.unit.as_str(), l.value))
            .collect();
        assert_eq!(
            latest,
            vec![
                ("fume_mg_m3", "mg/m³", Some(4.0)),
                ("x_run_hours", "hours", Some(3.0))
            ]
        );
        let q = ReadingQuery {
            device: "rest-1".into(),
            metric: Some("x_run_hours".into()),
            to_ms: i64::MAX,
            limit: 10,
            ..ReadingQuery::default()
        };
        let rows = r.readings(&q).expect("readings");
        assert_eq!(rows.len(), 2);
        assert!(rows.iter().all(|r| r.unit == "hours"), "{rows:?}");
        // A canonical series after a custom one for the same device keeps its own cache slot.
        w.commit(&[&batch("s", 10..12)], 6).expect("commit");
        let r = open_reader(&p).expect("reader");
        let n = r.devices().expect("devices")[0].latest.len();
        assert_eq!(n, 3, "fume, fan_on, x_run_hours");
    }

    #[test]
    fn same_batch_twice_is_stored_once() {
        let p = tmp("dedupe.sqlite3");
        let mut w = open(&p, Synchronous::Normal).expect("open");
        let b = batch("s1", 0..10);
        let c1 = w.commit(&[&b], 1).expect("commit");
        let c2 = w.commit(&[&b], 2).expect("commit again");
        assert_eq!(
            c1,
            vec![Committed {
                new: 10,
                duplicates: 0,
                ..Default::default()
            }]
        );
        assert_eq!(
            c2,
            vec![Committed {
                new: 0,
                duplicates: 10,
                ..Default::default()
            }]
        );
        // Overlap inside one group, and a new stream with the same seqs is not a duplicate.
        let c3 = w
            .commit(&[&batch("s1", 5..15), &batch("s2", 0..10)], 3)
            .expect("commit");
        assert_eq!(
            c3[0],
            Committed {
                new: 5,
                duplicates: 5,
                ..Default::default()
            }
        );
        assert_eq!(
            c3[1],
            Committed {
                new: 10,
                duplicates: 0,
                ..Default::default()
            }
        );
        let r = open_reader(&p).expect("reader");
        let all = r
            .readings(&ReadingQuery {
                device: "rest-1".into(),
                from_ms: i64::MIN,
                to_ms: i64::MAX,
                limit: 1000,
                ..Default::default()
            })
            .expect("readings");
        assert_eq!(all.len(), 25);
        let devs = r.devices().expect("devices");
        assert_eq!(devs.len(), 1);
        let fume = devs[0]
            .latest
            .iter()
            .find(|l| l.metric == "fume_mg_m3")
            .expect("fume");
        assert_eq!((fume.ts_ms, fume.value), (14_000, Some(14.0)));
        assert_eq!(r.gateways().expect("gw")[0].last_seen_ms, Some(3));
    }

    /// Issue 14 item 4: no row per item forever — a stream delivered in order is one range,
    /// and only the conflict window keeps digests.
    #[test]
    fn dedupe_state_is_a_range_and_a_window_not_a_row_per_item() {
        let p = tmp("dedupe-window.sqlite3");
        let mut w = open(&p, Synchronous::Normal).expect("open");
        let n = 3 * dedupe::WINDOW;
        for from in (1..=n).step_by(1000) {
            w.commit(&[&batch("s", from..(from + 1000).min(n + 1))], 1)
                .expect("commit");
        }
        let c = w.conn_for_tests();
        let count = |sql: &str| -> i64 { c.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT count(*) FROM stream_ranges"), 1);
        assert_eq!(
            count("SELECT seqs FROM stream_held WHERE stream = 's'"),
            n as i64
        );
        assert_eq!(count("SELECT count(*) FROM items"), dedupe::WINDOW as i64);
        assert_eq!(w.stream_holds("gw-1", "s", 1).expect("holds"), (n, n));
    }

    /// Stores from before version 15 keep their dedupe: the upgrade turns `items` into ranges.
    #[test]
    fn version_14_items_become_ranges() {
        let p = tmp("v14.sqlite3");
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in &MIGRATIONS[..14] {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 14).expect("version");
            c.execute_batch(
                "INSERT INTO streams (gateway, stream, first_seen_ms) VALUES ('gw-1', 's', 1); \
                 WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 5000) \
                 INSERT INTO items (stream_id, seq) SELECT 1, x FROM n WHERE x NOT IN (7, 8);",
            )
            .expect("v14 rows");
        }
        let mut w = open(&p, Synchronous::Normal).expect("upgrade");
        let ranges: Vec<(i64, i64)> = w
            .conn_for_tests()
            .prepare("SELECT first_seq, last_seq FROM stream_ranges ORDER BY first_seq")
            .expect("sql")
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("rows")
            .collect::<rusqlite::Result<_>>()
            .expect("ranges");
        assert_eq!(ranges, [(1, 6), (9, 5000)]);
        assert_eq!(w.stream_holds("gw-1", "s", 1).expect("holds"), (5000, 4998));
        let c = w.commit(&[&batch("s", 5..10)], 2).expect("commit");
        assert_eq!((c[0].new, c[0].duplicates), (2, 3), "7 and 8 only");
    }

    #[test]
    fn events_and_status() {
        let p = tmp("events.sqlite3");
        let mut w = open(&p, Synchronous::Normal).expect("open");
        let b = Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items: vec![Item {
                seq: 1,
                body: Body::Event(Event {
                    ts_ms: 1,
                    kind: EventKind::Gap,
                    message: "full".into(),
                    dropped: Some(10),
                    from_ms: Some(0),
                    to_ms: Some(1),
                }),
            }],
        };
        w.commit(&[&b], 1).expect("commit");
        w.set_status("gw-1", State::Online, Some(10), Some("0.1.0"), 11)
            .expect("status");
        w.set_status("gw-1", State::Offline, Some(5), None, 12)
            .expect("older status");
        let r = open_reader(&p).expect("reader");
        let g = &r.gateways().expect("gw")[0];
        assert!(g.online, "an older status does not win");
        assert_eq!(g.version.as_deref(), Some("0.1.0"));
        w.set_status("gw-1", State::Offline, Some(20), None, 13)
            .expect("newer status");
        assert!(!r.gateways().expect("gw")[0].online);
    }

    fn alarm_batch(stream: &str, items: Vec<(u64, Alarm)>) -> Batch {
        Batch {
            gateway: "gw-1".into(),
            stream: stream.into(),
            sent_ms: 0,
            items: items
                .into_iter()
                .map(|(seq, a)| Item {
                    seq,
                    body: Body::Alarm(a),
                })
                .collect(),
        }
    }

    fn all_alarms(r: &SqliteReader) -> Vec<AlarmRow> {
        r.alarms(&AlarmQuery {
            state: AlarmState::All,
            ..Default::default()
        })
        .expect("alarms")
    }

    #[test]
    fn alarm_transitions_are_stored_once_and_never_rewind() {
        use fumegrid_common::wire::AlarmPhase::{Cleared, Raised, Updated};
        let p = tmp("alarms.sqlite3");
        let mut w = open(&p, Synchronous::Normal).expect("open");
        let r = open_reader(&p).expect("reader");
        let raised = alarm(Raised, 2000, 2.5);
        let updated = alarm(Updated, 3000, 3.1);
        let cleared = alarm(Cleared, 5000, 1.2);
        // Raised with readings in the same batch and transaction.
        let mut b1 = batch("s1", 1..3);
        b1.items.push(Item {
            seq: 3,
            body: Body::Alarm(raised.clone()),
        });
        assert_eq!(w.commit(&[&b1], 100).expect("commit")[0].new, 3);
        let open_now = r.alarms(&AlarmQuery::default()).expect("open");
        assert_eq!(open_now.len(), 1);
        assert_eq!(
            (open_now[0].phase.as_str(), open_now[0].first_seen_ms),
            ("raised", 100)
        );

        // Cleared arrives before the update (the update is resent late).
        let b2 = alarm_batch("s1", vec![(5, cleared.clone())]);
        let b3 = alarm_batch("s1", vec![(4, updated.clone())]);
        w.commit(&[&b2], 200).expect("commit");
        w.commit(&[&b3], 300).expect("commit");
        // A redelivery of the same items is a duplicate and changes nothing.
        let c = w.commit(&[&b3, &b2], 400).expect("commit");
        assert_eq!(c[0].duplicates + c[1].duplicates, 2);

        let all = all_alarms(&r);
        assert_eq!(all.len(), 1);
        let e = &all[0];
        assert_eq!(e.phase, "cleared", "the late update does not reopen it");
        assert_eq!((e.cleared_ms, e.last_ts_ms), (Some(5000), 5000));
        assert_eq!(
            (e.peak, e.peak_ms),
            (Some(3.1), Some(3000)),
            "peak is the max"
        );
        assert_eq!(e.value, Some(1.2));
        assert_eq!(e.updates, 3);
        assert_eq!((e.first_seen_ms, e.last_received_ms), (100, 300));
        assert_eq!(e.kind, "exceedance");
        assert_eq!(e.metric.as_deref(), Some("fume_mg_m3"));
        assert!(r.alarms(&AlarmQuery::default()).expect("open").is_empty());

        let d = r
            .alarm("gw-1", &raised.id)
            .expect("detail")
            .expect("exists");
        let phases: Vec<(&str, u64)> = d
            .transitions
            .iter()
            .map(|t| (t.phase.as_str(), t.seq))
            .collect();
        assert_eq!(phases, vec![("raised", 3), ("updated", 4), ("cleared", 5)]);
        assert_eq!(d.transitions[2].stream, "s1");
        assert_eq!(d.transitions[1].received_ms, 300);
        assert!(r.alarm("gw-2", &raised.id).expect("detail").is_none());

        // The same transitions again on a new stream (a gateway whose outbox was reset and
        // re-judged): stored as transitions, the episode stays cleared.
        let b4 = alarm_batch("s2", vec![(1, raised.clone()), (2, updated.clone())]);
        assert_eq!(w.commit(&[&b4], 500).expect("commit")[0].new, 2);
        let e = &all_alarms(&r)[0];
        assert_eq!((e.phase.as_str(), e.updates), ("cleared", 5));
        assert_eq!(
            r.alarm("gw-1", &raised.id)
                .expect("d")
                .expect("e")
                .transitions
                .len(),
            5
        );
    }

    #[test]
    fn every_delivery_order_of_alarm_batches_gives_the_same_row() {
        use fumegrid_common::wire::AlarmPhase::{Cleared, Raised, Updated};
        let ts = [
            (1, alarm(Raised, 2000, 2.5)),
            (2, alarm(Updated, 3000, 3.1)),
            (3, alarm(Updated, 4000, 2.9)),
            (4, alarm(Cleared, 5000, 1.2)),
        ];
        let orders: [[usize; 4]; 6] = [
            [0, 1, 2, 3],
            [3, 2, 1, 0],
            [2, 0, 3, 1],
            [1, 3, 0, 2],
            [3, 0, 1, 2],
            [0, 3, 3, 1],
        ];
        let mut want: Option<AlarmRow> = None;
        for (n, order) in orders.iter().enumerate() {
            let p = tmp(&format!("order-{n}.sqlite3"));
            let mut w = open(&p, Synchronous::Normal).expect("open");
            for (k, &i) in order.iter().enumerate() {
                let b = alarm_batch("s", vec![ts[i].clone()]);
                w.commit(&[&b], 10 + k as i64).expect("commit");
            }
            // Whatever was missed arrives at the end in one group.
            let rest: Vec<_> = (0..4)
                .filter(|i| !order.contains(i))
                .map(|i| ts[i].clone())
                .collect();
            if !rest.is_empty() {
                w.commit(&[&alarm_batch("s", rest)], 20).expect("commit");
            }
            let r = open_reader(&p).expect("reader");
            let mut e = all_alarms(&r).remove(0);
            (e.first_seen_ms, e.last_received_ms) = (0, 0);
            match &want {
                None => want = Some(e),
                Some(w) => assert_eq!(&e, w, "order {order:?}"),
            }
        }
        let e = want.expect("row");
        assert_eq!(e.phase, "cleared");
        assert_eq!((e.peak, e.updates), (Some(3.1), 4));
    }

    #[test]
    fn alarm_queries_filter_and_sort_newest_first() {
        use fumegrid_common::wire::AlarmKind;
        use fumegrid_common::wire::AlarmPhase::{Cleared, Raised};
        let p = tmp("alarm-query.sqlite3");
        let mut w = open(&p, Synchronous::Normal).expect("open");
        let mk = |dev: &str, kind: AlarmKind, start: i64, phase, suppressed| {
            let mut a = alarm(phase, start + 500, 3.0);
            a.device = dev.into();
            a.kind = kind;
            a.id = format!("{dev}:{}:{start}", kind.name());
            a.started_ms = start;
            a.suppressed = suppressed;
            a
        };
        let b = alarm_batch(
            "s",
            vec![
                (1, mk("rest-1", AlarmKind::Exceedance, 1000, Cleared, false)),
                (
                    2,
                    mk("rest-1", AlarmKind::PurifierIdle, 3000, Raised, false),
                ),
                (3, mk("rest-2", AlarmKind::Exceedance, 2000, Raised, true)),
                (
                    4,
                    mk("rest-2", AlarmKind::SensorFault, 4000, Cleared, false),
                ),
            ],
        );
        w.commit(&[&b], 1).expect("commit");
        let r = open_reader(&p).expect("reader");
        let ids = |q: AlarmQuery| -> Vec<String> {
            r.alarms(&q)
                .expect("alarms")
                .into_iter()
                .map(|a| a.id)
                .collect()
        };
        assert_eq!(
            ids(AlarmQuery::default()),
            ["rest-1:purifier_idle:3000", "rest-2:exceedance:2000"]
        );
        assert_eq!(
            ids(AlarmQuery {
                state: AlarmState::Cleared,
                ..Default::default()
            }),
            ["rest-2:sensor_fault:4000", "rest-1:exceedance:1000"]
        );
        let all = AlarmQuery {
            state: AlarmState::All,
            ..Default::default()
        };
        assert_eq!(ids(all.clone()).len(), 4);
        assert_eq!(
            ids(AlarmQuery {
                device: Some("rest-2".into()),
                kind: Some("exceedance".into()),
                ..all.clone()
            }),
            ["rest-2:exceedance:2000"]
        );
        assert_eq!(
            ids(AlarmQuery {
                suppressed: Some(false),
                ..Default::default()
            }),
            ["rest-1:purifier_idle:3000"]
        );
        assert_eq!(
            ids(AlarmQuery {
                gateway: Some("gw-2".into()),
                ..all.clone()
            }),
            Vec::<String>::new()
        );
        // Active in [1600, 2100): rest-1 exceedance cleared at 1500 is out, rest-2 (open since
        // 2000) is in, the others started later.
        assert_eq!(
            ids(AlarmQuery {
                from_ms: 1600,
                to_ms: 2100,
                ..all.clone()
            }),
            ["rest-2:exceedance:2000"]
        );
        assert_eq!(
            ids(AlarmQuery { limit: 1, ..all }),
            ["rest-2:sensor_fault:4000"]
        );
    }

    /// Issue 15 item 4: the upgrade to version 16 gives every existing case (and each of its
    /// events, column and JSON) a source from its origin.
    #[test]
    fn version_13_cases_get_their_source_from_their_origin() {
        use crate::cases::model::{Intake, Origin, Source};
        use crate::cases::{Actor, open as open_case};
        use fumegrid_common::wire::AlarmKind;
        let p = tmp("v13-source.sqlite3");
        let cat = crate::cases::Catalogue::builtin().expect("catalogue");
        let file = |id: &str, origin: Origin| {
            let intake = Intake {
                category: "complaint".into(),
                title: "smoke".into(),
                origin,
                site: None,
                grid_cell: None,
            };
            open_case(id, intake, &Actor::system(), "", 1000, &cat).expect("open")
        };
        let alarm = Origin::Alarm {
            gateway: "gw-1".into(),
            device: "d1".into(),
            kind: AlarmKind::Exceedance,
        };
        let mut stored = Vec::new();
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in MIGRATIONS.iter().filter(|m| m.0 <= 13) {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 13).expect("version");
            for (id, origin) in [
                ("C1", alarm),
                ("C2", Origin::Citizen),
                ("C3", Origin::Operator),
            ] {
                let (case, events, _) = file(id, origin);
                save_in_old_schema(&c, &case, &events);
                stored.push(case);
            }
            // What an older aggregator wrote has no source anywhere.
            c.execute_batch(
                "UPDATE cases SET json = json_remove(json, '$.source'); \
                 UPDATE case_events SET json = json_remove(json, '$.source');",
            )
            .expect("strip");
        }
        let mut w = open(&p, Synchronous::Full).expect("upgrade");
        let want = [Source::Sensor, Source::Citizen, Source::Inspector];
        for (case, src) in stored.iter().zip(want) {
            let got = w.load_case(&case.id).expect("load").expect("case");
            assert_eq!(got.source, src, "{}", case.id);
            assert_eq!(&got, case);
            let ev = w.case_event(&case.id, 1).expect("event").expect("one");
            assert_eq!(ev.source, src);
        }
        let mut seen = Vec::new();
        w.scan_case_events(&mut |f| seen.push((f.case_id.to_string(), f.source)))
            .expect("scan");
        assert_eq!(
            seen,
            vec![
                ("C1".to_string(), Source::Sensor),
                ("C2".to_string(), Source::Citizen),
                ("C3".to_string(), Source::Inspector)
            ]
        );
    }

    /// Issue 15: the upgrade to version 17 gives the cases stored before it their own point
    /// where it is known: a patrol find's, a citizen request's `lat,long` site, or the
    /// `lat,long` its `reported` note kept beside an address. Case JSON without `position`
    /// (what version 16 wrote) still reads.
    #[test]
    fn version_16_cases_get_their_positions() {
        use crate::cases::model::{Coord, Intake, Origin, Position};
        use crate::cases::{Actor, open as open_case};
        let p = tmp("v16-position.sqlite3");
        let cat = crate::cases::Catalogue::builtin().expect("catalogue");
        let patrol = Origin::Patrol {
            drone: None,
            lat: Coord(30.655),
            lon: Coord(104.081),
            observed_ms: 900,
        };
        let cases = [
            ("P1", patrol, None, ""),
            (
                "R1",
                Origin::Citizen,
                Some("30.1,120.2"),
                "smoke\n\n— Open311",
            ),
            (
                "R2",
                Origin::Citizen,
                Some("12 Xinhua Road"),
                "smoke\n\n— Open311: media https://x.example/p.jpg · lat,long 30.25,120.17",
            ),
            (
                "R3",
                Origin::Citizen,
                Some("12 Xinhua Road"),
                "smoke\n\n— Open311",
            ),
            ("R4", Origin::Citizen, Some("91,120"), "smoke"),
            ("O1", Origin::Operator, Some("30.1,120.2"), ""),
        ];
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in MIGRATIONS.iter().filter(|m| m.0 <= 16) {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 16).expect("version");
            for (id, origin, site, note) in cases.clone() {
                let intake = Intake {
                    category: "complaint".into(),
                    title: "smoke".into(),
                    origin,
                    site: site.map(String::from),
                    grid_cell: None,
                };
                let (case, events, _) =
                    open_case(id, intake, &Actor::system(), note, 1000, &cat).expect("open");
                cases_sql::save_case(&c, &case, &events, 1000)
                    .expect("db")
                    .expect("save");
            }
            c.execute_batch("UPDATE cases SET json = json_remove(json, '$.position');")
                .expect("strip");
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM cases WHERE json LIKE '%position%'",
                    [],
                    |r| r.get(0),
                )
                .expect("count");
            assert_eq!(n, 0, "stored as version 16 did");
        }
        let mut w = open(&p, Synchronous::Full).expect("upgrade");
        let want = [
            Some(Position::new(30.655, 104.081)),
            Some(Position::new(30.1, 120.2)),
            Some(Position::new(30.25, 120.17)),
            None,
            None,
            None,
        ];
        for ((id, ..), want) in cases.iter().zip(want) {
            let got = w.load_case(id).expect("load").expect("case");
            assert_eq!(got.position, want, "{id}");
        }
    }

    /// Saves a case as today's code does into a store of an older schema (before the `source`
    /// columns of version 16): with them added for the save and dropped again.
    fn save_in_old_schema(c: &Connection, case: &Case, events: &[crate::cases::Event]) {
        c.execute_batch(
            "ALTER TABLE cases ADD COLUMN source TEXT; \
             ALTER TABLE case_events ADD COLUMN source TEXT;",
        )
        .expect("add source");
        cases_sql::save_case(c, case, events, 1000)
            .expect("db")
            .expect("save");
        c.execute_batch(
            "ALTER TABLE cases DROP COLUMN source; \
             ALTER TABLE case_events DROP COLUMN source;",
        )
        .expect("drop source");
    }

    /// Issue 11 item 4, existing stores: the upgrade to schema 6 moves contact details that
    /// older versions wrote into events into `case_contacts`, rewrites the events, and leaves
    /// no copy in the database file or its WAL.
    #[test]
    fn version_5_store_moves_contact_details_out_of_events() {
        use crate::cases::model::{Intake, Origin, Role};
        use crate::cases::{Actor, open as open_case};
        let p = tmp("v5-contacts.sqlite3");
        let cat = crate::cases::Catalogue::builtin().expect("catalogue");
        let reporter = Actor {
            id: "citizen-1".into(),
            role: Role::Reporter,
        };
        let intake = Intake {
            category: "complaint".into(),
            title: "smoke".into(),
            origin: Origin::Citizen,
            site: Some("here".into()),
            grid_cell: None,
        };
        let old_note = "smoke at night\n\n— Open311: email sun.mei@example.cn · phone 13900001111 \
                        · name Sun Mei · lat,long 30.1,120.2";
        let (case, events, _) =
            open_case("C20251103-0001", intake, &reporter, old_note, 1000, &cat).expect("open");
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in &MIGRATIONS[..5] {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 5).expect("version");
            save_in_old_schema(&c, &case, &events);
        }
        let grep = |needle: &str| files_holding(&p, needle);
        assert!(!grep("sun.mei@example.cn").is_empty(), "old store holds it");
        let w = open(&p, Synchronous::Normal).expect("upgrade");
        assert_eq!(inspect(&p).expect("inspect"), Some(SCHEMA_VERSION));
        let r = open_reader(&p).expect("reader");
        let d = r.case("C20251103-0001").expect("case").expect("exists");
        assert_eq!(
            d.events[0].note,
            "smoke at night\n\n— Open311: lat,long 30.1,120.2"
        );
        let contact = r
            .contact("C20251103-0001")
            .expect("contact")
            .expect("moved");
        assert_eq!(contact.email.as_deref(), Some("sun.mei@example.cn"));
        assert_eq!(contact.name.as_deref(), Some("Sun Mei"));
        drop(r);
        drop(w);
        // Only the contact row holds it now; erased, it is nowhere in the files.
        let mut w = open(&p, Synchronous::Normal).expect("reopen");
        assert!(w.erase_contact("C20251103-0001").expect("erase"));
        for needle in ["sun.mei@example.cn", "13900001111", "Sun Mei"] {
            assert!(grep(needle).is_empty(), "{needle} in {:?}", grep(needle));
        }
    }

    /// Issue 11, existing stores: the upgrade to schema 9 redacts the personal data in the
    /// descriptions and titles of Open311 requests, keeps the text as sent with the contact
    /// details (a row is made where there was none), and once those are erased the data is
    /// nowhere in the files.
    #[test]
    fn version_8_store_redacts_personal_data_in_descriptions() {
        use crate::cases::model::{Intake, Origin, Role};
        use crate::cases::{Actor, open as open_case};
        let p = tmp("v8-descriptions.sqlite3");
        let cat = crate::cases::Catalogue::builtin().expect("catalogue");
        let reporter = Actor {
            id: "citizen-1".into(),
            role: Role::Reporter,
        };
        let sent = "smoke, call 139 0000 2222 or mei.sun@example.cn";
        let file = |id: &str, description: &str| {
            let intake = Intake {
                category: "complaint".into(),
                title: description.into(),
                origin: Origin::Citizen,
                site: Some("here".into()),
                grid_cell: None,
            };
            let note = format!("{description}\n\n— Open311: lat,long 30.1,120.2");
            open_case(id, intake, &reporter, &note, 1000, &cat).expect("open")
        };
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in &MIGRATIONS[..8] {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 8).expect("version");
            for (id, d) in [
                ("C20251103-0001", sent),
                ("C20251103-0002", sent),
                ("C20251103-0003", "smoke at 19:30"),
            ] {
                let (case, events, _) = file(id, d);
                save_in_old_schema(&c, &case, &events);
            }
            c.execute(
                "INSERT INTO case_contacts (case_id, email, created_ms) \
                 VALUES ('C20251103-0001', 'x@example.cn', 1000)",
                [],
            )
            .expect("contact");
        }
        let grep = |needle: &str| files_holding(&p, needle);
        let w = open(&p, Synchronous::Normal).expect("upgrade");
        let r = open_reader(&p).expect("reader");
        for (id, email) in [
            ("C20251103-0001", Some("x@example.cn")),
            ("C20251103-0002", None),
        ] {
            let d = r.case(id).expect("case").expect("exists");
            assert_eq!(d.case.title, "smoke, call [phone] or [email]");
            assert_eq!(
                d.events[0].note,
                "smoke, call [phone] or [email]\n\n— Open311: lat,long 30.1,120.2"
            );
            let contact = r.contact(id).expect("contact").expect("kept");
            assert_eq!(contact.description.as_deref(), Some(sent), "{id}");
            assert_eq!(contact.email.as_deref(), email, "{id}");
        }
        let d = r.case("C20251103-0003").expect("case").expect("exists");
        assert_eq!(d.case.title, "smoke at 19:30");
        assert_eq!(r.contact("C20251103-0003").expect("contact"), None);
        drop(r);
        drop(w);
        let mut w = open(&p, Synchronous::Normal).expect("reopen");
        for id in ["C20251103-0001", "C20251103-0002"] {
            assert!(w.erase_contact(id).expect("erase"));
        }
        for needle in ["139 0000 2222", "mei.sun@example.cn"] {
            assert!(grep(needle).is_empty(), "{needle} in {:?}", grep(needle));
        }
    }

    #[test]
    fn the_rollups_of_readings_stored_before_version_12_are_computed_by_the_upgrade() {
        let p = tmp("v11.sqlite3");
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in &MIGRATIONS[..11] {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 11).expect("version");
            // Two minutes of one series: 1.0 and 3.0, then an invalid poll and 5.0.
            c.execute_batch(
                "INSERT INTO streams (gateway, stream, first_seen_ms) VALUES ('gw-1', 's', 1); \
                 INSERT INTO series (gateway, device, metric) VALUES ('gw-1', 'rest-1', 'fume_mg_m3'); \
                 INSERT INTO readings (series_id, ts_ms, value, quality, stream_id, seq) VALUES \
                   (1, 60000, 1.0, 0, 1, 1), (1, 61000, 3.0, 0, 1, 2), \
                   (1, 120000, NULL, 3, 1, 3), (1, 121000, 5.0, 0, 1, 4);",
            )
            .expect("v11 rows");
        }
        let _w = open(&p, Synchronous::Normal).expect("upgrade");
        let r = open_reader(&p).expect("reader");
        let q = ReadingQuery {
            device: "rest-1".into(),
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 10,
            ..ReadingQuery::default()
        };
        let m: Vec<(i64, u64, u64, Option<f64>)> = r
            .rollups(&q, 0)
            .expect("1m")
            .iter()
            .map(|b| (b.start_ms, b.count, b.polls, b.avg))
            .collect();
        assert_eq!(m, [(60_000, 2, 2, Some(2.0)), (120_000, 1, 2, Some(5.0))]);
        let d = r.rollups(&q, 3).expect("1d");
        assert_eq!(
            (d.len(), d[0].count, d[0].polls, d[0].avg),
            (1, 3, 4, Some(3.0))
        );
    }

    /// Issue 14 item 4: a minute reported as one 60-s period is stored once (its period), in a
    /// new store and after the upgrade of one that stored it twice; the 1-minute level and the
    /// levels above answer the same.
    #[test]
    fn a_minute_that_is_one_period_is_stored_once_and_version_13_copies_are_dropped() {
        let p = tmp("v13.sqlite3");
        let period = |seq: u64, start_ms: i64, period_s: u32, avg: f64| Item {
            seq,
            body: Body::Period(fumegrid_common::wire::Period {
                device: "rest-1".into(),
                start_ms,
                period_s,
                metrics: vec![fumegrid_common::wire::PeriodMetric {
                    metric: Metric::FumeMgM3,
                    unit: None,
                    polls: 60 / (60 / period_s),
                    count: 60 / (60 / period_s),
                    avg: Some(avg),
                    min: Some(avg - 1.0),
                    max: Some(avg + 1.0),
                    last: Some(avg),
                    valid: true,
                }],
            }),
        };
        // Minutes 1 and 2: one 60-s period each; minute 3: two 30-s periods; minute 4: raw.
        let mut items = vec![
            period(1, 60_000, 60, 1.0),
            period(2, 120_000, 60, 2.0),
            period(3, 180_000, 30, 3.0),
            period(4, 210_000, 30, 5.0),
        ];
        items.extend(batch("s", 240..242).items.into_iter().map(|mut i| {
            if let Body::Reading(r) = &mut i.body {
                r.metric = Metric::FumeMgM3;
            }
            i
        }));
        let b = Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items,
        };
        let q = ReadingQuery {
            device: "rest-1".into(),
            metric: Some("fume_mg_m3".into()),
            from_ms: 0,
            to_ms: i64::MAX,
            limit: 100,
            ..ReadingQuery::default()
        };
        let minute_rows = |c: &Connection| -> i64 {
            c.query_row("SELECT count(*) FROM rollups WHERE res_s = 60", [], |r| {
                r.get(0)
            })
            .expect("count")
        };
        type Level = Vec<(i64, u64, Option<f64>, bool)>;
        let levels = |r: &SqliteReader| -> Vec<Level> {
            (0..4)
                .map(|l| {
                    r.rollups(&q, l)
                        .expect("rollups")
                        .iter()
                        .map(|x| (x.start_ms, x.count, x.avg, x.valid))
                        .collect()
                })
                .collect()
        };
        // A v13 store: the old code stored every minute as a rollup row.
        {
            let c = Connection::open(&p).expect("raw");
            for (_, sql, _) in &MIGRATIONS[..13] {
                c.execute_batch(sql).expect("schema");
            }
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 13).expect("version");
        }
        // Written with version 14's code, then the copies version 13 made put back.
        let mut w = open(&p, Synchronous::Normal).expect("open");
        w.commit(&[&b], 1).expect("commit");
        let r = open_reader(&p).expect("reader");
        let want = levels(&r);
        assert_eq!(
            want[0].iter().map(|m| m.0).collect::<Vec<_>>(),
            [60_000, 120_000, 180_000, 240_000]
        );
        assert_eq!(want[0][0], (60_000, 60, Some(1.0), true));
        assert_eq!(want[0][2].2, Some(4.0), "two 30-s periods");
        assert_eq!(
            want[1][0].1,
            60 + 60 + 60 + 2,
            "10 minutes from the minutes"
        );
        assert_eq!(minute_rows(w.conn_for_tests()), 2, "minutes 3 and 4 only");
        drop(r);
        drop(w);
        {
            let c = Connection::open(&p).expect("raw");
            c.execute_batch(
                "INSERT INTO rollups (series_id, res_s, start_ms, sum, count, polls, min, max, \
                   last_ts_ms, last, valid_subs, expected) \
                 SELECT series_id, 60, start_ms, avg * count, count, polls, min, max, \
                   start_ms + 60000, last, valid, 1 FROM periods WHERE period_s = 60; \
                 DROP VIEW stream_held; DROP TABLE stream_ranges; \
                 DROP TABLE drone_points; DROP TABLE drone_photos; DROP TABLE aerial_passes; \
                 ALTER TABLE cases DROP COLUMN source; \
                 ALTER TABLE case_events DROP COLUMN source; PRAGMA user_version = 13;",
            )
            .expect("v13 copies");
            assert_eq!(minute_rows(&c), 4);
        }
        let w = open(&p, Synchronous::Normal).expect("upgrade");
        assert_eq!(minute_rows(w.conn_for_tests()), 2, "the copies are dropped");
        let r = open_reader(&p).expect("reader");
        assert_eq!(levels(&r), want, "every level answers the same");
    }

    #[test]
    fn version_1_store_is_upgraded_and_keeps_its_rows() {
        let p = tmp("v1.sqlite3");
        {
            let c = Connection::open(&p).expect("raw");
            c.execute_batch(MIGRATIONS[0].1).expect("v1 schema");
            c.pragma_update(None, "application_id", APPLICATION_ID)
                .expect("app id");
            c.pragma_update(None, "user_version", 1).expect("version");
            c.execute_batch(
                "INSERT INTO gateways (id) VALUES ('gw-old'); \
                 INSERT INTO streams (gateway, stream, first_seen_ms) VALUES ('gw-1', 's', 1); \
                 INSERT INTO items (stream_id, seq) VALUES (1, 1);",
            )
            .expect("v1 rows");
        }
        assert_eq!(inspect(&p).expect("inspect"), Some(1));
        let mut w = open(&p, Synchronous::Normal).expect("upgrade");
        assert_eq!(inspect(&p).expect("inspect"), Some(SCHEMA_VERSION));
        assert_eq!(SCHEMA_VERSION, 17);
        let r = open_reader(&p).expect("reader");
        assert_eq!(r.gateways().expect("gw")[0].id, "gw-old");
        // Seq 1 of stream s was stored under version 1: still a duplicate.
        let b = alarm_batch(
            "s",
            vec![
                (
                    1,
                    alarm(fumegrid_common::wire::AlarmPhase::Raised, 2000, 2.5),
                ),
                (
                    2,
                    alarm(fumegrid_common::wire::AlarmPhase::Updated, 3000, 2.6),
                ),
            ],
        );
        assert_eq!(
            w.commit(&[&b], 5).expect("commit"),
            vec![Committed {
                new: 1,
                duplicates: 1,
                ..Default::default()
            }]
        );
        assert_eq!(all_alarms(&r)[0].phase, "updated");
    }

    #[test]
    fn garbage_and_newer_files_are_refused() {
        let p = tmp("garbage.sqlite3");
        std::fs::write(&p, vec![b'x'; 8192]).expect("write");
        let e = open(&p, Synchronous::Full).expect_err("garbage");
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
        assert_eq!(
            std::fs::read(&p).expect("read").len(),
            8192,
            "left untouched"
        );

        let p = tmp("newer.sqlite3");
        drop(open(&p, Synchronous::Full).expect("open"));
        {
            let c = Connection::open(&p).expect("raw");
            c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
                .expect("bump");
        }
        let e = open(&p, Synchronous::Full).expect_err("newer");
        assert!(matches!(e, StoreError::TooNew { .. }), "{e}");
        assert!(e.to_string().contains("newer"), "{e}");

        let p = tmp("foreign.sqlite3");
        {
            let c = Connection::open(&p).expect("raw");
            c.execute_batch("CREATE TABLE t (x)").expect("foreign");
        }
        let e = open(&p, Synchronous::Full).expect_err("foreign");
        assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    }
}
