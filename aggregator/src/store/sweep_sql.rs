//! The retention sweeper's SQL ([`super::retention`] decides, this deletes): its own connection
//! to the store, expired rows deleted per series in chunks of at most `chunk` rows — each
//! `DELETE` is its own short transaction, so ingest waits for the write lock at most one chunk
//! — and the freed pages given back to the file system (`PRAGMA incremental_vacuum`, then a WAL
//! checkpoint that truncates the file).
//!
//! **Space is reclaimed, not only rows deleted.** A new store is created with
//! `auto_vacuum = INCREMENTAL` ([`super::sqlite::open`]). A store made before schema 14 has
//! `auto_vacuum = NONE`, which only a `VACUUM` can change: [`convert_to_incremental`] runs it
//! once, at `run` before anything listens (logged, systemd's start timeout extended); it rewrites
//! the file, so it needs free disk space of about the file's size and takes about as long as
//! copying it.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::StoreError;
use super::retention::{self, Cutoffs, Retention, Swept};
use super::rollup;
use super::sqlite::{identify, open_conn};

/// `PRAGMA auto_vacuum` of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoVacuum {
    None,
    Full,
    Incremental,
}

/// One series as the sweeper walks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesRef {
    pub id: i64,
    pub gateway: String,
    pub device: String,
}

/// The sweeper's connection.
#[derive(Debug)]
pub struct Sweeper {
    conn: Connection,
    path: PathBuf,
}

/// Opens a sweeper on a store that [`super::sqlite::open`] has already created and upgraded.
pub fn open(path: &Path) -> Result<Sweeper, StoreError> {
    let conn = open_conn(path)?;
    identify(&conn, path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // Readings and rollups are not personal data: freed pages need not be zeroed first.
    conn.pragma_update(None, "secure_delete", "OFF")?;
    Ok(Sweeper {
        conn,
        path: path.to_path_buf(),
    })
}

/// The store's `auto_vacuum` mode.
pub fn auto_vacuum(conn: &Connection) -> Result<AutoVacuum, StoreError> {
    let v: i64 = conn.query_row("PRAGMA auto_vacuum", [], |r| r.get(0))?;
    Ok(match v {
        1 => AutoVacuum::Full,
        2 => AutoVacuum::Incremental,
        _ => AutoVacuum::None,
    })
}

/// Bytes of the store on disk: the main file and its WAL.
pub fn file_bytes(path: &Path) -> u64 {
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    [path, wal.as_path()]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum()
}

/// Switches a store to `auto_vacuum = INCREMENTAL` with one `VACUUM` (see the module doc);
/// nothing to do when it already is. Returns whether it ran.
pub fn convert_to_incremental(path: &Path) -> Result<bool, StoreError> {
    let conn = open_conn(path)?;
    identify(&conn, path)?;
    if auto_vacuum(&conn)? == AutoVacuum::Incremental {
        return Ok(false);
    }
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.execute_batch("VACUUM")?;
    checkpoint(&conn)?;
    Ok(true)
}

impl Sweeper {
    pub fn auto_vacuum(&self) -> Result<AutoVacuum, StoreError> {
        auto_vacuum(&self.conn)
    }

    /// Bytes of the store on disk now (main file and WAL).
    pub fn file_bytes(&self) -> u64 {
        file_bytes(&self.path)
    }

    /// Every series, in id order.
    pub fn series(&mut self) -> Result<Vec<SeriesRef>, StoreError> {
        let mut st = self
            .conn
            .prepare_cached("SELECT id, gateway, device FROM series ORDER BY id")?;
        let rows = st
            .query_map([], |r| {
                Ok(SeriesRef {
                    id: r.get(0)?,
                    gateway: r.get(1)?,
                    device: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(rows)
    }

    /// The evidence windows of the alarm episodes of `(gateway, device)` that belong to a case
    /// ([`retention::pin`]).
    pub fn pins(
        &mut self,
        gateway: &str,
        device: &str,
        margin_s: u32,
    ) -> Result<Vec<(i64, i64)>, StoreError> {
        let mut st = self.conn.prepare_cached(
            "SELECT a.started_ms, a.cleared_ms FROM alarms a \
             JOIN case_alarms c ON c.gateway = a.gateway AND c.episode = a.id \
             WHERE a.device = ?2 AND a.gateway = ?1",
        )?;
        let pins = st
            .query_map(params![gateway, device], |r| {
                Ok(retention::pin(r.get(0)?, r.get(1)?, margin_s))
            })?
            .collect::<rusqlite::Result<_>>()?;
        Ok(pins)
    }

    /// Deletes the expired rows of one series: raw readings and periods outside its case
    /// evidence windows, rollups by level; at most `chunk` rows per statement (transaction).
    pub fn sweep_series(
        &mut self,
        s: &SeriesRef,
        policy: &Retention,
        cut: &Cutoffs,
        chunk: u32,
    ) -> Result<Swept, StoreError> {
        let pins = self.pins(&s.gateway, &s.device, policy.case_margin_s)?;
        let mut out = Swept::default();
        for (from, to) in retention::sweepable(pins.clone(), cut.raw) {
            out.raw += self.chunked(
                "DELETE FROM readings WHERE rowid IN (SELECT rowid FROM readings \
                 WHERE series_id = ?1 AND ts_ms >= ?2 AND ts_ms < ?3 LIMIT ?4)",
                params![s.id, from, to, chunk],
                chunk,
            )?;
        }
        for (from, to) in retention::sweepable(pins.clone(), cut.minute) {
            out.minute_periods += self.chunked(
                "DELETE FROM periods WHERE (series_id, start_ms, period_s) IN \
                 (SELECT series_id, start_ms, period_s FROM periods WHERE series_id = ?1 \
                  AND start_ms >= ?2 AND start_ms < ?3 AND period_s = 60 LIMIT ?4)",
                params![s.id, from, to, chunk],
                chunk,
            )?;
        }
        for (from, to) in retention::sweepable(pins, cut.other_periods) {
            out.other_periods += self.chunked(
                "DELETE FROM periods WHERE (series_id, start_ms, period_s) IN \
                 (SELECT series_id, start_ms, period_s FROM periods WHERE series_id = ?1 \
                  AND start_ms >= ?2 AND start_ms < ?3 AND period_s <> 60 LIMIT ?4)",
                params![s.id, from, to, chunk],
                chunk,
            )?;
        }
        for (level, &res) in rollup::LEVELS.iter().enumerate() {
            out.rollups[level] += self.chunked(
                "DELETE FROM rollups WHERE (series_id, res_s, start_ms) IN \
                 (SELECT series_id, res_s, start_ms FROM rollups WHERE series_id = ?1 \
                  AND res_s = ?2 AND start_ms < ?3 LIMIT ?4)",
                params![s.id, res, cut.rollups[level], chunk],
                chunk,
            )?;
        }
        Ok(out)
    }

    /// Runs a `DELETE … LIMIT chunk` until it deletes fewer than `chunk` rows.
    fn chunked(
        &mut self,
        sql: &str,
        p: &[&dyn rusqlite::ToSql],
        chunk: u32,
    ) -> Result<u64, StoreError> {
        let mut total = 0u64;
        loop {
            let n = self.conn.prepare_cached(sql)?.execute(p)? as u64;
            total += n;
            if n < u64::from(chunk) {
                return Ok(total);
            }
        }
    }

    /// Gives up to `pages` free pages back to the file system (`PRAGMA incremental_vacuum`);
    /// returns how many free pages are left.
    pub fn reclaim(&mut self, pages: u32) -> Result<u64, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
        // Each step frees one page; run it to the end.
        let mut rows = st.query([])?;
        while rows.next()?.is_some() {}
        drop(rows);
        let left: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(left.max(0) as u64)
    }

    /// Free pages in the file now.
    pub fn free_pages(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn
            .query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(n.max(0) as u64)
    }

    /// Copies the WAL into the file and truncates both, so the file shrinks on disk; `false`
    /// when a reader kept it from completing (the next one does).
    pub fn checkpoint(&mut self) -> Result<bool, StoreError> {
        checkpoint(&self.conn)
    }
}

fn checkpoint(c: &Connection) -> Result<bool, StoreError> {
    let busy: i64 = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    Ok(busy == 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::sqlite::{self, SqliteWriter};
    use crate::store::{AlarmState, Reader, ReadingQuery, Synchronous, Writer};
    use fumegrid_common::metric::Metric;
    use fumegrid_common::reading::{Quality, Reading};
    use fumegrid_common::wire::{AlarmPhase, Batch, Body, Item};

    pub(crate) const DAY: i64 = 86_400_000;
    /// 2026-01-01T00:00:00Z: the first reading of the tests.
    pub(crate) const T0: i64 = 1_767_225_600_000;

    pub(crate) fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fumegrid-agg-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpdir");
        let p = d.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
        p
    }

    /// `n` fume readings of `device` every `step_ms` from `from`, seqs from `seq`.
    pub(crate) fn readings(device: &str, seq: u64, from: i64, step_ms: i64, n: u64) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                seq: seq + i,
                body: Body::Reading(Reading {
                    device: device.into(),
                    unit: None,
                    metric: Metric::FumeMgM3,
                    value: Some(1.0 + (i % 7) as f64),
                    quality: Quality::Ok,
                    ts_ms: from + i as i64 * step_ms,
                }),
            })
            .collect()
    }

    pub(crate) fn commit(w: &mut SqliteWriter, items: Vec<Item>) {
        for chunk in items.chunks(10_000) {
            let b = Batch {
                gateway: "gw-1".into(),
                stream: "s".into(),
                sent_ms: 0,
                items: chunk.to_vec(),
            };
            w.commit(&[&b], 1).expect("commit");
        }
    }

    pub(crate) fn sweep_all(path: &Path, policy: &Retention, now_ms: i64) -> Swept {
        let mut sw = open(path).expect("sweeper");
        let cut = policy.cutoffs(now_ms);
        let mut all = Swept::default();
        for s in sw.series().expect("series") {
            let x = sw.sweep_series(&s, policy, &cut, 100).expect("sweep");
            all.raw += x.raw;
            all.minute_periods += x.minute_periods;
            all.other_periods += x.other_periods;
            for (a, b) in all.rollups.iter_mut().zip(x.rollups) {
                *a += b;
            }
        }
        all
    }

    fn raw_ts(r: &sqlite::SqliteReader, device: &str) -> Vec<i64> {
        r.readings(&ReadingQuery {
            device: device.into(),
            from_ms: i64::MIN,
            to_ms: i64::MAX,
            limit: u32::MAX,
            ..ReadingQuery::default()
        })
        .expect("readings")
        .iter()
        .map(|x| x.ts_ms)
        .collect()
    }

    /// Issue 14 item 4: a case's raw readings outlive raw retention, its neighbours' do not,
    /// and the coarser levels of the swept span still answer.
    #[test]
    fn a_cases_raw_readings_outlive_raw_retention_and_neighbours_are_swept() {
        let p = tmp("pins.sqlite3");
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
        // Two devices, one reading a minute for a day.
        let mut items = readings("rest-1", 1, T0, 60_000, 1440);
        items.extend(readings("rest-2", 10_001, T0, 60_000, 1440));
        commit(&mut w, items);
        // rest-1 has an exceedance episode from 10:00 to 10:30 that opens a case; rest-2 one
        // that is suppressed (no case).
        let ep = |dev: &str, phase, ts: i64, suppressed| {
            let mut a = crate::store::episode::tests::alarm(phase, ts, 3.0);
            a.device = dev.into();
            a.id = format!("{dev}:exceedance:fume_mg_m3:{}", T0 + 600 * 60_000);
            a.started_ms = T0 + 600 * 60_000;
            a.cleared_ms = (phase == AlarmPhase::Cleared).then_some(ts);
            a.suppressed = suppressed;
            a
        };
        let alarms = vec![
            (
                20_001,
                ep("rest-1", AlarmPhase::Raised, T0 + 600 * 60_000, false),
            ),
            (
                20_002,
                ep("rest-1", AlarmPhase::Cleared, T0 + 630 * 60_000, false),
            ),
            (
                20_003,
                ep("rest-2", AlarmPhase::Raised, T0 + 600 * 60_000, true),
            ),
            (
                20_004,
                ep("rest-2", AlarmPhase::Cleared, T0 + 630 * 60_000, true),
            ),
        ];
        let b = Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items: alarms
                .into_iter()
                .map(|(seq, a)| Item {
                    seq,
                    body: Body::Alarm(a),
                })
                .collect(),
        };
        let cat = std::sync::Arc::new(crate::cases::Catalogue::builtin().expect("catalogue"));
        let mut cases = crate::casework::alarms::AlarmCases::new(cat);
        w.commit_with(&[&b], T0 + DAY, &mut cases).expect("alarms");
        let r = sqlite::open_reader(&p).expect("reader");
        let opened = r
            .cases(&crate::store::CaseQuery::default())
            .expect("cases")
            .cases;
        assert_eq!(opened.len(), 1, "the unsuppressed episode opened a case");
        assert_eq!(
            r.alarms(&crate::store::AlarmQuery {
                state: AlarmState::All,
                ..Default::default()
            })
            .expect("alarms")
            .len(),
            2
        );

        // 40 days later, raw kept 30: only rest-1's evidence window stays, 09:55 to 10:35.
        let policy = Retention::default();
        let swept = sweep_all(&p, &policy, T0 + 40 * DAY);
        let kept = raw_ts(&r, "rest-1");
        let want: Vec<i64> = (595..=635).map(|m| T0 + m * 60_000).collect();
        assert_eq!(kept, want, "the case's window, margins included");
        assert!(raw_ts(&r, "rest-2").is_empty(), "no case, nothing pinned");
        assert_eq!(swept.raw, 2 * 1440 - want.len() as u64);
        assert_eq!(
            swept.total(),
            swept.raw,
            "the other levels are within retention"
        );
        // The day's 10-minute and hourly rollups still answer for the swept span.
        let q = ReadingQuery {
            device: "rest-2".into(),
            from_ms: T0,
            to_ms: T0 + DAY,
            limit: 1000,
            ..ReadingQuery::default()
        };
        assert_eq!(r.rollups(&q, 1).expect("10m").len(), 144);
        assert_eq!(r.rollups(&q, 2).expect("1h")[5].count, 60);
        // A second pass finds nothing more to delete.
        assert_eq!(sweep_all(&p, &policy, T0 + 40 * DAY).total(), 0);
        // Past minute retention the 1-minute rollups go too, 10-minute ones stay.
        let swept = sweep_all(&p, &policy, T0 + 100 * DAY);
        assert_eq!((swept.raw, swept.rollups[0]), (0, 2 * 1440));
        assert_eq!(r.rollups(&q, 0).expect("1m").len(), 0);
        assert_eq!(r.rollups(&q, 1).expect("10m").len(), 144);
        assert_eq!(raw_ts(&r, "rest-1"), want, "still pinned");
    }

    /// A late item under a bucket whose raw polls were swept is stored, but the bucket keeps
    /// what it had (recomputing it from what is left would forget the swept polls).
    #[test]
    fn a_late_item_under_swept_data_freezes_its_bucket() {
        let p = tmp("frozen.sqlite3");
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
        w.set_retention(Retention::default());
        // Ten polls a minute for 20 minutes.
        commit(&mut w, readings("rest-1", 1, T0, 6_000, 200));
        let r = sqlite::open_reader(&p).expect("reader");
        let q = ReadingQuery {
            device: "rest-1".into(),
            from_ms: T0,
            to_ms: T0 + DAY,
            limit: 100,
            ..ReadingQuery::default()
        };
        let before: Vec<_> = (0..4).map(|l| r.rollups(&q, l).expect("rollups")).collect();
        assert_eq!(before[0][0].count, 10);
        let now = T0 + 40 * DAY;
        assert_eq!(sweep_all(&p, &Retention::default(), now).raw, 200);
        // A poll of the first minute arrives 40 days late.
        let late = Batch {
            gateway: "gw-1".into(),
            stream: "s".into(),
            sent_ms: 0,
            items: readings("rest-1", 1000, T0 + 500, 1, 1),
        };
        assert_eq!(w.commit(&[&late], now).expect("late")[0].new, 1);
        assert_eq!(raw_ts(&r, "rest-1"), [T0 + 500], "stored");
        let after: Vec<_> = (0..4).map(|l| r.rollups(&q, l).expect("rollups")).collect();
        assert_eq!(after, before, "every level as it was");
        // Within retention a late poll still counts.
        let mut w2 = sqlite::open(&p, Synchronous::Normal).expect("open");
        w2.set_retention(Retention::default());
        let late = Batch {
            items: readings("rest-1", 2000, T0 + DAY + 500, 1, 1),
            ..late
        };
        w2.commit(&[&late], T0 + DAY + 600).expect("late in time");
        let q = ReadingQuery {
            from_ms: T0 + DAY,
            to_ms: T0 + 2 * DAY,
            ..q
        };
        assert_eq!(r.rollups(&q, 0).expect("1m")[0].count, 1);
    }

    /// Issue 14 item 4: space is given back — the file on disk shrinks after a sweep.
    #[test]
    fn a_sweep_of_many_rows_shrinks_the_file_on_disk() {
        let p = tmp("shrink.sqlite3");
        let mut w = sqlite::open(&p, Synchronous::Normal).expect("open");
        let mut sw = open(&p).expect("sweeper");
        assert_eq!(sw.auto_vacuum().expect("mode"), AutoVacuum::Incremental);
        // 60 000 readings, one per second: 16 2/3 hours.
        commit(&mut w, readings("rest-1", 1, T0, 1000, 60_000));
        sw.checkpoint().expect("checkpoint");
        let before = sw.file_bytes();
        assert!(before > 2 << 20, "{before} bytes");
        let policy = Retention::default();
        let swept = sweep_all(&p, &policy, T0 + 31 * DAY);
        assert_eq!(swept.raw, 60_000);
        let freed = sw.free_pages().expect("free");
        assert!(freed > 500, "{freed} free pages");
        assert_eq!(sw.reclaim(u32::MAX).expect("reclaim"), 0);
        assert!(sw.checkpoint().expect("checkpoint"));
        let after = sw.file_bytes();
        assert!(
            after * 2 < before,
            "the file went from {before} to {after} bytes on disk"
        );
    }
}
