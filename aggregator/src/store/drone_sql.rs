//! The SQL of drones ([`super::drone`]): called inside ingest's commit for a gateway's items,
//! in a transaction of their own for the DJI intake, and by the reader.

use fumegrid_common::wire::{DronePhoto, Track, TrackPoint};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::drone::{ArrivedPoint, DroneRow, DroneSource, PassRecord, PhotoRow, TrackStored};

/// Stores the points of `track` (first one of a `(drone, ts_ms)` wins).
pub fn store_track(
    c: &Connection,
    source: DroneSource,
    gateway: Option<&str>,
    track: &Track,
    now_ms: i64,
) -> rusqlite::Result<TrackStored> {
    let mut ins = c.prepare_cached(
        "INSERT OR IGNORE INTO drone_points (drone, source, gateway, ts_ms, lat, lon, alt_m, \
         rel_alt_m, heading_deg, speed_m_s, battery_pct, received_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    let mut out = TrackStored::default();
    for p in &track.points {
        let n = ins.execute(params![
            track.drone,
            source.name(),
            gateway,
            p.ts_ms,
            p.lat,
            p.lon,
            p.alt_m,
            p.rel_alt_m,
            p.heading_deg,
            p.speed_m_s,
            p.battery_pct,
            now_ms
        ])?;
        if n == 0 {
            out.duplicates += 1;
        } else {
            out.new += 1;
        }
    }
    Ok(out)
}

/// Stores a photo report; whether it was new.
pub fn store_photo(
    c: &Connection,
    source: DroneSource,
    gateway: Option<&str>,
    p: &DronePhoto,
    now_ms: i64,
) -> rusqlite::Result<bool> {
    let n = c
        .prepare_cached(
            "INSERT OR IGNORE INTO drone_photos (drone, ts_ms, image_index, source, gateway, \
             lat, lon, alt_m, file, ok, sha256, received_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?
        .execute(params![
            p.drone,
            p.ts_ms,
            p.index,
            source.name(),
            gateway,
            p.lat,
            p.lon,
            p.alt_m,
            p.file,
            p.ok,
            p.sha256,
            now_ms
        ])?;
    Ok(n > 0)
}

const POINT_COLUMNS: &str =
    "ts_ms, lat, lon, alt_m, rel_alt_m, heading_deg, speed_m_s, battery_pct";

/// A [`TrackPoint`] from [`POINT_COLUMNS`] starting at column `at`.
fn point(r: &Row<'_>, at: usize) -> rusqlite::Result<TrackPoint> {
    Ok(TrackPoint {
        ts_ms: r.get(at)?,
        lat: r.get(at + 1)?,
        lon: r.get(at + 2)?,
        alt_m: r.get(at + 3)?,
        rel_alt_m: r.get(at + 4)?,
        heading_deg: r.get(at + 5)?,
        speed_m_s: r.get(at + 6)?,
        battery_pct: r.get(at + 7)?,
    })
}

fn source(r: &Row<'_>, at: usize) -> rusqlite::Result<DroneSource> {
    let s: String = r.get(at)?;
    DroneSource::from_name(&s).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            at,
            rusqlite::types::Type::Text,
            format!("unknown drone source `{s}`").into(),
        )
    })
}

pub fn drones(c: &Connection, since_ms: i64) -> rusqlite::Result<Vec<DroneRow>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT drone, source, gateway, received_ms, {POINT_COLUMNS} FROM drone_points p \
         WHERE ts_ms = (SELECT max(ts_ms) FROM drone_points q WHERE q.drone = p.drone) \
         AND ts_ms >= ?1 ORDER BY drone"
    ))?;
    let rows = st.query_map([since_ms], |r| {
        Ok(DroneRow {
            drone: r.get(0)?,
            source: source(r, 1)?,
            gateway: r.get(2)?,
            last_received_ms: r.get(3)?,
            last: point(r, 4)?,
        })
    })?;
    rows.collect()
}

pub fn track(
    c: &Connection,
    drone: &str,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> rusqlite::Result<Vec<TrackPoint>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {POINT_COLUMNS} FROM drone_points WHERE drone = ?1 AND ts_ms >= ?2 \
         AND ts_ms < ?3 ORDER BY ts_ms LIMIT ?4"
    ))?;
    let rows = st.query_map(params![drone, from_ms, to_ms, limit], |r| point(r, 0))?;
    rows.collect()
}

pub fn photos(
    c: &Connection,
    drone: Option<&str>,
    from_ms: i64,
    to_ms: i64,
    limit: u32,
) -> rusqlite::Result<Vec<PhotoRow>> {
    let mut st = c.prepare_cached(
        "SELECT drone, source, gateway, ts_ms, lat, lon, alt_m, image_index, file, ok, sha256, \
         received_ms FROM drone_photos WHERE (?1 IS NULL OR drone = ?1) AND ts_ms >= ?2 \
         AND ts_ms < ?3 ORDER BY ts_ms, drone, image_index LIMIT ?4",
    )?;
    let rows = st.query_map(params![drone, from_ms, to_ms, limit], |r| {
        Ok(PhotoRow {
            drone: r.get(0)?,
            source: source(r, 1)?,
            gateway: r.get(2)?,
            ts_ms: r.get(3)?,
            lat: r.get(4)?,
            lon: r.get(5)?,
            alt_m: r.get(6)?,
            index: r.get(7)?,
            file: r.get(8)?,
            ok: r.get(9)?,
            sha256: r.get(10)?,
            received_ms: r.get(11)?,
        })
    })?;
    rows.collect()
}

pub fn points_after(
    c: &Connection,
    cursor: i64,
    limit: u32,
) -> rusqlite::Result<Vec<ArrivedPoint>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT id, drone, source, {POINT_COLUMNS} FROM drone_points WHERE id > ?1 \
         ORDER BY id LIMIT ?2"
    ))?;
    let rows = st.query_map(params![cursor, limit], |r| {
        Ok(ArrivedPoint {
            cursor: r.get(0)?,
            drone: r.get(1)?,
            source: source(r, 2)?,
            point: point(r, 3)?,
        })
    })?;
    rows.collect()
}

pub fn cursor_before(c: &Connection, received_ms: i64) -> rusqlite::Result<i64> {
    let first: Option<i64> = c
        .prepare_cached("SELECT min(id) FROM drone_points WHERE received_ms >= ?1")?
        .query_row([received_ms], |r| r.get(0))
        .optional()?
        .flatten();
    match first {
        Some(id) => Ok(id - 1),
        None => c
            .prepare_cached("SELECT coalesce(max(id), 0) FROM drone_points")?
            .query_row([], |r| r.get(0)),
    }
}

pub fn passes(
    c: &Connection,
    drone: Option<&str>,
    site: Option<&str>,
    from_ms: i64,
    to_ms: i64,
) -> rusqlite::Result<Vec<PassRecord>> {
    let mut st = c.prepare_cached(
        "SELECT drone, site, start_ms, end_ms, min_distance_m, cases FROM aerial_passes \
         WHERE (?1 IS NULL OR drone = ?1) AND (?2 IS NULL OR site = ?2) \
         AND start_ms <= ?4 AND end_ms >= ?3 ORDER BY start_ms, drone, site",
    )?;
    let rows = st.query_map(params![drone, site, from_ms, to_ms], |r| {
        let cases: String = r.get(5)?;
        Ok(PassRecord {
            drone: r.get(0)?,
            site: r.get(1)?,
            start_ms: r.get(2)?,
            end_ms: r.get(3)?,
            min_distance_m: r.get(4)?,
            cases: serde_json::from_str(&cases).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    5,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
        })
    })?;
    rows.collect()
}

/// Records a pass unless one of the same drone and site overlapping it is held; whether it
/// was recorded.
pub fn record_pass(c: &Connection, p: &PassRecord, now_ms: i64) -> rusqlite::Result<bool> {
    if !passes(c, Some(&p.drone), Some(&p.site), p.start_ms, p.end_ms)?.is_empty() {
        return Ok(false);
    }
    let cases = serde_json::to_string(&p.cases).unwrap_or_else(|_| "[]".into());
    c.prepare_cached(
        "INSERT INTO aerial_passes (drone, site, start_ms, end_ms, min_distance_m, cases, \
         recorded_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        p.drone,
        p.site,
        p.start_ms,
        p.end_ms,
        p.min_distance_m,
        cases,
        now_ms
    ])?;
    Ok(true)
}

/// Links a drone's picture to a case (as an upload by `by`: the evidence store shows a case's
/// uploads among its pictures and keeps them as long as the case).
pub fn link_picture(
    c: &Connection,
    sha256: &str,
    case_id: &str,
    by: &str,
    now_ms: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR IGNORE INTO picture_uploads (sha256, case_id, uploaded_by, uploaded_ms) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![sha256, case_id, by, now_ms])?;
    Ok(())
}
