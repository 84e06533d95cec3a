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

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use fumegrid_common::metric::Metric;
use fumegrid_common::wire::{Batch, Body, EventKind, State};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{
    Committed, DeviceRow, GatewayRow, Latest, Reader, ReadingQuery, ReadingRow, StoreError, Writer,
    quality_code, quality_name,
};
use crate::config::Synchronous;

/// `PRAGMA application_id` of an aggregator store: "FGAG".
pub const APPLICATION_ID: i64 = 0x4647_4147;

/// Forward-only schema upgrades; the number is the `user_version` after applying it.
const MIGRATIONS: &[(i64, &str)] = &[(1, include_str!("migrations/0001_initial.sql"))];

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open {
        path: path.display().to_string(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// Reads `(application_id, user_version)`; a file that is not a database maps to `Corrupt`.
fn identify(conn: &Connection, path: &Path) -> Result<(i64, i64), StoreError> {
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
    for &(v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > version) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)
            .and_then(|()| tx.pragma_update(None, "application_id", APPLICATION_ID))
            .and_then(|()| tx.pragma_update(None, "user_version", v))
            .map_err(|source| StoreError::Migrate { version: v, source })?;
        tx.commit()
            .map_err(|source| StoreError::Migrate { version: v, source })?;
        tracing::info!(store = %path.display(), version = v, "store schema upgraded");
    }
    conn.set_prepared_statement_cache_capacity(32);
    Ok(SqliteWriter {
        conn,
        streams: HashMap::new(),
        series: HashMap::new(),
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
}

fn metric_index(m: Metric) -> usize {
    Metric::ALL.iter().position(|x| *x == m).unwrap_or(0)
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
    }
}

impl SqliteWriter {
    fn commit_in(
        tx: &Transaction<'_>,
        streams: &mut HashMap<String, HashMap<String, i64>>,
        series: &mut HashMap<String, HashMap<String, [i64; Metric::ALL.len()]>>,
        batches: &[&Batch],
        now_ms: i64,
    ) -> rusqlite::Result<Vec<Committed>> {
        let mut ins_item =
            tx.prepare_cached("INSERT OR IGNORE INTO items (stream_id, seq) VALUES (?1, ?2)")?;
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
        let mut out = Vec::with_capacity(batches.len());
        for b in batches {
            let sid = stream_id(tx, streams, &b.gateway, &b.stream, now_ms)?;
            let mut c = Committed::default();
            for item in &b.items {
                let seq = item.seq as i64;
                if ins_item.execute(params![sid, seq])? == 0 {
                    c.duplicates += 1;
                    continue;
                }
                c.new += 1;
                match &item.body {
                    Body::Reading(r) => {
                        let ser = series_id(tx, series, &b.gateway, &r.device, r.metric)?;
                        let q = quality_code(r.quality);
                        ins_reading.execute(params![ser, r.ts_ms, r.value, q, sid, seq])?;
                        let e = latest.entry(ser).or_insert((i64::MIN, None, 0));
                        if r.ts_ms >= e.0 {
                            *e = (r.ts_ms, r.value, q);
                        }
                    }
                    // Refused by validation until the alarm store exists (issue 5).
                    Body::Alarm(_) => {}
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
                }
            }
            seen.execute(params![b.gateway, now_ms])?;
            out.push(c);
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

    fn commit(&mut self, batches: &[&Batch], now_ms: i64) -> Result<Vec<Committed>, StoreError> {
        let SqliteWriter {
            conn,
            streams,
            series,
        } = self;
        let result = (|| {
            let tx = conn.transaction()?;
            let out = Self::commit_in(&tx, streams, series, batches, now_ms)?;
            tx.commit()?;
            Ok(out)
        })();
        if result.is_err() {
            streams.clear();
            series.clear();
        }
        result.map_err(StoreError::Db)
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
                "SELECT gateway, device, metric, latest_ts_ms, latest_value, latest_quality \
                 FROM series WHERE latest_ts_ms IS NOT NULL ORDER BY gateway, device, metric",
            )?;
            let mut rows = st.query([])?;
            let mut out: Vec<DeviceRow> = Vec::new();
            while let Some(r) = rows.next()? {
                let (gw, dev): (String, String) = (r.get(0)?, r.get(1)?);
                let latest = Latest {
                    metric: r.get(2)?,
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
                "SELECT s.gateway, s.metric, r.ts_ms, r.value, r.quality \
                 FROM series s JOIN readings r ON r.series_id = s.id \
                 WHERE s.device = ?1 AND (?2 IS NULL OR s.gateway = ?2) \
                   AND (?3 IS NULL OR s.metric = ?3) AND r.ts_ms >= ?4 AND r.ts_ms < ?5 \
                 ORDER BY r.ts_ms, s.metric LIMIT ?6",
            )?;
            st.query_map(
                params![q.device, q.gateway, q.metric, q.from_ms, q.to_ms, q.limit],
                |r| {
                    Ok(ReadingRow {
                        gateway: r.get(0)?,
                        metric: r.get(1)?,
                        ts_ms: r.get(2)?,
                        value: r.get(3)?,
                        quality: quality_name(r.get(4)?),
                    })
                },
            )?
            .collect()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{Event, Item};

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
                duplicates: 0
            }]
        );
        assert_eq!(
            c2,
            vec![Committed {
                new: 0,
                duplicates: 10
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
                duplicates: 5
            }
        );
        assert_eq!(
            c3[1],
            Committed {
                new: 10,
                duplicates: 0
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
