//! The SQL of pictures ([`super::evidence`]; schema in `migrations/0010_evidence.sql`): parts
//! stored inside ingest's transaction, and the evidence side's reads and writes.

use fumegrid_common::wire::Evidence;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;
use super::evidence::{
    self, ARRIVING, CAMERA, COMPLETE, Outcome, PictureEvent, PictureRow, Refusal, STORED,
    SnapshotRequest, UPLOAD, Upload,
};

/// Stores one new part (an item stored now, inside ingest's transaction); assembles and checks
/// the picture when it was the last one missing. What happened to the picture, if anything.
pub fn store_part(
    tx: &Connection,
    gateway: &str,
    e: &Evidence,
    now_ms: i64,
) -> Result<Option<PictureEvent>, StoreError> {
    let event = |outcome| PictureEvent {
        gateway: gateway.to_string(),
        camera: e.meta.camera.clone(),
        sha256: e.sha256.clone(),
        outcome,
    };
    type Held = (i64, u32, String, Option<String>, Option<String>, i64);
    let held: Option<Held> = tx
        .prepare_cached(
            "SELECT size, parts, state, gateway, camera, captured_ms FROM pictures \
             WHERE sha256 = ?1",
        )?
        .query_row([&e.sha256], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .optional()?;
    // Another capture that brought the same bytes: recorded, so that its episode or request
    // links the picture too (every part carries the capture's metadata; recorded once).
    if let Some((_, _, _, g, cam, captured)) = &held
        && (g.as_deref(), cam.as_deref(), *captured)
            != (
                Some(gateway),
                Some(e.meta.camera.as_str()),
                e.meta.captured_ms,
            )
    {
        add_capture(tx, gateway, e, now_ms)?;
    }
    match held.map(|(size, parts, state, g, _, _)| (size, parts, state, g)) {
        None => {
            let m = &e.meta;
            let readings: Vec<(&str, &str, f64)> = m
                .readings
                .iter()
                .map(|(d, metric, v)| (d.as_str(), metric.name(), *v))
                .collect();
            tx.prepare_cached(
                "INSERT INTO pictures (sha256, source, gateway, camera, devices, captured_ms, \
                 trigger, alarm, request, media, size, width, height, site, readings, parts, \
                 state, received_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, \
                 ?17, ?18)",
            )?
            .execute(params![
                e.sha256,
                CAMERA,
                gateway,
                m.camera,
                serde_json::to_string(&m.devices).unwrap_or_default(),
                m.captured_ms,
                m.trigger.name(),
                m.alarm,
                m.request,
                m.media.mime(),
                m.size as i64,
                m.width,
                m.height,
                m.site,
                serde_json::to_string(&readings).unwrap_or_default(),
                e.parts,
                ARRIVING,
                now_ms
            ])?;
        }
        // Complete or stored already: this part is not needed.
        Some((_, _, state, _)) if state != ARRIVING => return Ok(None),
        // Another gateway's parts never join a picture that is arriving from one.
        Some((_, _, _, g)) if g.as_deref() != Some(gateway) => return Ok(None),
        Some((size, parts, _, _)) if !evidence::fits(size.max(0) as u64, parts, e) => {
            return Ok(Some(event(Outcome::Refused(Refusal::Inconsistent))));
        }
        Some(_) => {}
    }
    let data = evidence::decode_part(e)?;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO picture_parts (sha256, part, data) VALUES (?1, ?2, ?3)",
    )?
    .execute(params![e.sha256, e.part, data])?;
    let held: u32 = tx
        .prepare_cached("SELECT count(*) FROM picture_parts WHERE sha256 = ?1")?
        .query_row([&e.sha256], |r| r.get(0))?;
    if held < e.parts {
        return Ok(None);
    }
    let parts = parts_of(tx, &e.sha256)?;
    match evidence::assemble(&e.sha256, &parts) {
        Ok(bytes) => {
            tx.prepare_cached("UPDATE pictures SET state = ?2 WHERE sha256 = ?1")?
                .execute(params![e.sha256, COMPLETE])?;
            Ok(Some(event(Outcome::Complete {
                size: bytes.len() as u64,
            })))
        }
        Err(refusal) => {
            delete(tx, &e.sha256)?;
            Ok(Some(event(Outcome::Refused(refusal))))
        }
    }
}

/// Records a capture of bytes already held under another capture's metadata.
fn add_capture(tx: &Connection, gateway: &str, e: &Evidence, now_ms: i64) -> rusqlite::Result<()> {
    let m = &e.meta;
    tx.prepare_cached(
        "INSERT OR IGNORE INTO picture_captures (sha256, gateway, camera, captured_ms, trigger, \
         alarm, request, received_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        e.sha256,
        gateway,
        m.camera,
        m.captured_ms,
        m.trigger.name(),
        m.alarm,
        m.request,
        now_ms
    ])?;
    Ok(())
}

fn parts_of(c: &Connection, sha256: &str) -> rusqlite::Result<Vec<Vec<u8>>> {
    c.prepare_cached("SELECT data FROM picture_parts WHERE sha256 = ?1 ORDER BY part")?
        .query_map([sha256], |r| r.get(0))?
        .collect()
}

fn delete(c: &Connection, sha256: &str) -> rusqlite::Result<bool> {
    c.prepare_cached("DELETE FROM picture_parts WHERE sha256 = ?1")?
        .execute([sha256])?;
    c.prepare_cached("DELETE FROM picture_uploads WHERE sha256 = ?1")?
        .execute([sha256])?;
    c.prepare_cached("DELETE FROM picture_captures WHERE sha256 = ?1")?
        .execute([sha256])?;
    Ok(c.prepare_cached("DELETE FROM pictures WHERE sha256 = ?1")?
        .execute([sha256])?
        > 0)
}

pub fn pictures_to_move(c: &Connection, limit: u32) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT sha256 FROM pictures WHERE state = ?1 ORDER BY received_ms, sha256 LIMIT ?2",
    )?
    .query_map(params![COMPLETE, limit], |r| r.get(0))?
    .collect()
}

pub fn assembled(c: &Connection, sha256: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    let complete: bool = c
        .prepare_cached("SELECT count(*) FROM pictures WHERE sha256 = ?1 AND state = ?2")?
        .query_row(params![sha256, COMPLETE], |r| r.get(0))?;
    if !complete {
        return Ok(None);
    }
    Ok(Some(parts_of(c, sha256)?.concat()))
}

pub fn mark_stored(c: &Connection, sha256: &str, now_ms: i64) -> rusqlite::Result<bool> {
    let n = c
        .prepare_cached(
            "UPDATE pictures SET state = ?2, stored_ms = ?3 WHERE sha256 = ?1 AND state = ?4",
        )?
        .execute(params![sha256, STORED, now_ms, COMPLETE])?;
    c.prepare_cached("DELETE FROM picture_parts WHERE sha256 = ?1")?
        .execute([sha256])?;
    Ok(n > 0)
}

pub fn add_upload(c: &Connection, u: &Upload, now_ms: i64) -> rusqlite::Result<bool> {
    let new =
        c.prepare_cached(
            "INSERT INTO pictures (sha256, source, captured_ms, media, size, width, height, \
             parts, state, received_ms, stored_ms, uploaded_by) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?3, ?3, ?9) \
             ON CONFLICT (sha256) DO NOTHING",
        )?
        .execute(params![
            u.sha256,
            UPLOAD,
            now_ms,
            u.media,
            u.size as i64,
            u.width,
            u.height,
            STORED,
            u.by
        ])? > 0;
    if !new {
        // The same bytes arrived from a camera and are still in parts: they are in the blob
        // store now, so the picture is stored.
        c.prepare_cached(
            "UPDATE pictures SET state = ?2, stored_ms = ?3 WHERE sha256 = ?1 AND state <> ?2",
        )?
        .execute(params![u.sha256, STORED, now_ms])?;
        c.prepare_cached("DELETE FROM picture_parts WHERE sha256 = ?1")?
            .execute([&u.sha256])?;
    }
    c.prepare_cached(
        "INSERT OR IGNORE INTO picture_uploads (sha256, case_id, uploaded_by, uploaded_ms) \
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![u.sha256, u.case_id, u.by, now_ms])?;
    Ok(new)
}

pub fn add_request(c: &Connection, r: &SnapshotRequest) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO snapshot_requests (id, case_id, gateway, device, issued_ms, \
         expires_ms, requested_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        r.id,
        r.case_id,
        r.gateway,
        r.device,
        r.issued_ms,
        r.expires_ms,
        r.requested_by
    ])?;
    Ok(())
}

/// The condition "picture `p` belongs to some case".
const LINKED: &str = "(EXISTS (SELECT 1 FROM case_alarms a \
       WHERE a.gateway = p.gateway AND a.episode = p.alarm) \
     OR EXISTS (SELECT 1 FROM snapshot_requests r \
       WHERE r.id = p.request AND r.gateway = p.gateway) \
     OR EXISTS (SELECT 1 FROM picture_uploads u WHERE u.sha256 = p.sha256) \
     OR EXISTS (SELECT 1 FROM picture_captures k JOIN case_alarms a \
       ON a.gateway = k.gateway AND a.episode = k.alarm WHERE k.sha256 = p.sha256) \
     OR EXISTS (SELECT 1 FROM picture_captures k JOIN snapshot_requests r \
       ON r.id = k.request AND r.gateway = k.gateway WHERE k.sha256 = p.sha256))";

pub fn expired(c: &Connection, before_ms: i64, limit: u32) -> rusqlite::Result<Vec<String>> {
    let sql = format!(
        "SELECT p.sha256 FROM pictures p WHERE p.received_ms < ?1 \
         AND (p.state = ?2 OR NOT {LINKED}) ORDER BY p.received_ms, p.sha256 LIMIT ?3"
    );
    c.prepare_cached(&sql)?
        .query_map(params![before_ms, ARRIVING, limit], |r| r.get(0))?
        .collect()
}

pub fn delete_picture(c: &Connection, sha256: &str) -> rusqlite::Result<bool> {
    delete(c, sha256)
}

const COLUMNS: &str = "p.sha256, p.source, p.gateway, p.camera, p.devices, p.captured_ms, \
     p.trigger, p.alarm, p.request, p.media, p.size, p.width, p.height, p.site, p.readings, \
     p.parts, p.state, p.received_ms, p.stored_ms, p.uploaded_by, \
     (SELECT count(*) FROM picture_parts x WHERE x.sha256 = p.sha256)";

fn row(r: &Row<'_>) -> rusqlite::Result<PictureRow> {
    let devices: String = r.get(4)?;
    let readings: String = r.get(14)?;
    let state: String = r.get(16)?;
    let parts: u32 = r.get(15)?;
    let held: u32 = r.get(20)?;
    Ok(PictureRow {
        sha256: r.get(0)?,
        source: r.get(1)?,
        gateway: r.get(2)?,
        camera: r.get(3)?,
        devices: serde_json::from_str(&devices).unwrap_or_default(),
        captured_ms: r.get(5)?,
        trigger: r.get(6)?,
        alarm: r.get(7)?,
        request: r.get(8)?,
        media: r.get(9)?,
        size: r.get::<_, i64>(10)?.max(0) as u64,
        width: r.get(11)?,
        height: r.get(12)?,
        site: r.get(13)?,
        readings: serde_json::from_str(&readings).unwrap_or_default(),
        parts_held: if state == ARRIVING { held } else { parts },
        state,
        parts,
        received_ms: r.get(17)?,
        stored_ms: r.get(18)?,
        uploaded_by: r.get(19)?,
    })
}

pub fn picture(c: &Connection, sha256: &str) -> rusqlite::Result<Option<PictureRow>> {
    let sql = format!("SELECT {COLUMNS} FROM pictures p WHERE p.sha256 = ?1");
    c.prepare_cached(&sql)?.query_row([sha256], row).optional()
}

pub fn case_pictures(c: &Connection, case_id: &str) -> rusqlite::Result<Vec<PictureRow>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM pictures p WHERE p.sha256 IN ( \
           SELECT q.sha256 FROM case_alarms a JOIN pictures q \
             ON q.gateway = a.gateway AND q.alarm = a.episode WHERE a.case_id = ?1 \
           UNION SELECT q.sha256 FROM snapshot_requests r JOIN pictures q \
             ON q.request = r.id AND q.gateway = r.gateway WHERE r.case_id = ?1 \
           UNION SELECT u.sha256 FROM picture_uploads u WHERE u.case_id = ?1 \
           UNION SELECT k.sha256 FROM case_alarms a JOIN picture_captures k \
             ON k.gateway = a.gateway AND k.alarm = a.episode WHERE a.case_id = ?1 \
           UNION SELECT k.sha256 FROM snapshot_requests r JOIN picture_captures k \
             ON k.request = r.id AND k.gateway = r.gateway WHERE r.case_id = ?1) \
         ORDER BY p.captured_ms, p.sha256"
    );
    c.prepare_cached(&sql)?.query_map([case_id], row)?.collect()
}

pub fn picture_cases(c: &Connection, sha256: &str) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT a.case_id FROM pictures p JOIN case_alarms a \
           ON a.gateway = p.gateway AND a.episode = p.alarm WHERE p.sha256 = ?1 \
         UNION SELECT r.case_id FROM pictures p JOIN snapshot_requests r \
           ON r.id = p.request AND r.gateway = p.gateway WHERE p.sha256 = ?1 \
         UNION SELECT u.case_id FROM picture_uploads u WHERE u.sha256 = ?1 \
         UNION SELECT a.case_id FROM picture_captures k JOIN case_alarms a \
           ON a.gateway = k.gateway AND a.episode = k.alarm WHERE k.sha256 = ?1 \
         UNION SELECT r.case_id FROM picture_captures k JOIN snapshot_requests r \
           ON r.id = k.request AND r.gateway = k.gateway WHERE k.sha256 = ?1 \
         ORDER BY 1",
    )?
    .query_map([sha256], |r| r.get(0))?
    .collect()
}

pub fn case_requests(c: &Connection, case_id: &str) -> rusqlite::Result<Vec<SnapshotRequest>> {
    c.prepare_cached(
        "SELECT id, case_id, gateway, device, issued_ms, expires_ms, requested_by \
         FROM snapshot_requests WHERE case_id = ?1 ORDER BY issued_ms, id",
    )?
    .query_map([case_id], |r| {
        Ok(SnapshotRequest {
            id: r.get(0)?,
            case_id: r.get(1)?,
            gateway: r.get(2)?,
            device: r.get(3)?,
            issued_ms: r.get(4)?,
            expires_ms: r.get(5)?,
            requested_by: r.get(6)?,
        })
    })?
    .collect()
}
