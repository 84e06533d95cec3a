//! SQL of dispatch cases (schema version 3, `migrations/0003_cases.sql`), shared by the writer
//! (ingest's transaction, API transitions) and the reader. Cases and events are stored as the
//! pure engine ([`crate::cases`]) returns them: the columns the API filters on plus the whole
//! value as JSON, which is what is read back.

use std::collections::HashMap;

use fumegrid_common::wire::AlarmKind;
use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;

use super::{CaseDetail, CasePage, CaseQuery, EventFacts};
use crate::cases::Role;
use crate::cases::model::{Case, Event, Origin, Position};

/// The JSON name of a unit-like enum value (`State::Dispatched` → `dispatched`).
fn name<T: Serialize>(t: &T) -> String {
    match serde_json::to_value(t) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

fn json<T: Serialize>(t: &T) -> rusqlite::Result<String> {
    serde_json::to_string(t).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn from_json<T: serde::de::DeserializeOwned>(col: usize, s: &str) -> rusqlite::Result<T> {
    serde_json::from_str(s).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn role_name(r: &Role) -> &'static str {
    match r {
        Role::Operator => "operator",
        Role::Department { .. } => "department",
        Role::Viewer => "viewer",
        Role::System => "system",
        Role::Reporter => "reporter",
    }
}

/// Why a case could not be saved although the database works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaveConflict {
    /// Another change of the case was saved first (its last seq is not the one the events
    /// follow); reload and retry.
    Stale { id: String },
    /// The events do not belong to the case or are not numbered consecutively.
    Malformed(String),
}

/// Writes the case row and appends its new events. `events` are the ones the engine just
/// returned: seq 1.. for a new case (the row is inserted), else `case.seq - n + 1 ..= case.seq`
/// (the row is updated only if it still ends at the seq before them). The caller provides the
/// transaction.
pub fn save_case(
    c: &Connection,
    case: &Case,
    events: &[Event],
    now_ms: i64,
) -> rusqlite::Result<Result<(), SaveConflict>> {
    let n = events.len() as u64;
    if n == 0 || n > case.seq {
        return Ok(Err(SaveConflict::Malformed(format!(
            "{} event(s) for case {} at seq {}",
            n, case.id, case.seq
        ))));
    }
    let first = case.seq - n + 1;
    for (i, e) in events.iter().enumerate() {
        if e.case_id != case.id || e.seq != first + i as u64 {
            return Ok(Err(SaveConflict::Malformed(format!(
                "event {} of case {} does not follow seq {}",
                e.seq,
                e.case_id,
                first + i as u64 - 1
            ))));
        }
    }
    let (origin, gateway, device, kind) = match &case.origin {
        Origin::Alarm {
            gateway,
            device,
            kind,
        } => (
            "alarm",
            Some(gateway.as_str()),
            Some(device.as_str()),
            Some(kind.name()),
        ),
        Origin::Citizen => ("citizen", None, None, None),
        Origin::Operator => ("operator", None, None, None),
        Origin::Patrol { .. } => ("patrol", None, None, None),
    };
    let cj = json(case)?;
    let state = case.state.name();
    let changed = if first == 1 {
        c.prepare_cached(
            "INSERT OR IGNORE INTO cases (id, state, is_open, category, department, origin, \
             gateway, device, alarm_kind, site, grid_cell, reported_ms, sign_for_deadline_ms, \
             handle_deadline_ms, escalate_at_ms, sign_for_overdue, handle_overdue, escalated, \
             rating, seq, json, created_ms, updated_ms, source) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, \
             ?18, ?19, ?20, ?21, ?22, ?22, ?23)",
        )?
        .execute(params![
            case.id,
            state,
            case.state.is_open(),
            case.category,
            case.department,
            origin,
            gateway,
            device,
            kind,
            case.site,
            case.grid_cell,
            case.reported_ms,
            case.sign_for_deadline_ms,
            case.handle_deadline_ms,
            case.escalate_at_ms,
            case.sign_for_overdue,
            case.handle_overdue,
            case.escalated,
            case.rating,
            case.seq as i64,
            cj,
            now_ms,
            case.source.name()
        ])?
    } else {
        c.prepare_cached(
            "UPDATE cases SET state = ?2, is_open = ?3, category = ?4, department = ?5, \
             site = ?6, grid_cell = ?7, sign_for_deadline_ms = ?8, handle_deadline_ms = ?9, \
             escalate_at_ms = ?10, sign_for_overdue = ?11, handle_overdue = ?12, \
             escalated = ?13, rating = ?14, seq = ?15, json = ?16, updated_ms = ?17 \
             WHERE id = ?1 AND seq = ?18",
        )?
        .execute(params![
            case.id,
            state,
            case.state.is_open(),
            case.category,
            case.department,
            case.site,
            case.grid_cell,
            case.sign_for_deadline_ms,
            case.handle_deadline_ms,
            case.escalate_at_ms,
            case.sign_for_overdue,
            case.handle_overdue,
            case.escalated,
            case.rating,
            case.seq as i64,
            cj,
            now_ms,
            (first - 1) as i64
        ])?
    };
    if changed == 0 {
        return Ok(Err(SaveConflict::Stale {
            id: case.id.clone(),
        }));
    }
    if first == 1 {
        count_case_id(c, &case.id)?;
    }
    if !case.alarms.is_empty() {
        let mut link = c.prepare_cached(
            "INSERT OR IGNORE INTO case_alarms (gateway, episode, case_id) VALUES (?1, ?2, ?3)",
        )?;
        for a in &case.alarms {
            link.execute(params![a.gateway, a.id, case.id])?;
        }
    }
    let mut ins = c.prepare_cached(
        "INSERT INTO case_events (case_id, seq, kind, actor_id, actor_role, ts_ms, note, \
         from_state, to_state, department, category, site, grid_cell, json, source) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?;
    for e in events {
        ins.execute(params![
            e.case_id,
            e.seq as i64,
            name(&e.kind),
            e.actor.id,
            role_name(&e.actor.role),
            e.ts_ms,
            e.note,
            e.from_state.map(|s| s.name()),
            e.to_state.name(),
            e.department,
            e.category,
            e.site,
            e.grid_cell,
            json(e)?,
            e.source.name()
        ])?;
    }
    Ok(Ok(()))
}

/// The open cases opened by alarms of `kind` on `device` behind `gateway` (normally at most one).
pub fn open_cases_for(
    c: &Connection,
    gateway: &str,
    device: &str,
    kind: AlarmKind,
) -> rusqlite::Result<Vec<Case>> {
    let mut st = c.prepare_cached(
        "SELECT json FROM cases WHERE gateway = ?1 AND device = ?2 AND alarm_kind = ?3 \
         AND is_open = 1 ORDER BY reported_ms, id",
    )?;
    let rows = st.query_map(params![gateway, device, kind.name()], |r| {
        let s: String = r.get(0)?;
        from_json(0, &s)
    })?;
    rows.collect()
}

/// The case alarm episode `episode` from `gateway` is linked to, in any state.
pub fn episode_case(
    c: &Connection,
    gateway: &str,
    episode: &str,
) -> rusqlite::Result<Option<Case>> {
    c.prepare_cached(
        "SELECT c.json FROM case_alarms a JOIN cases c ON c.id = a.case_id \
         WHERE a.gateway = ?1 AND a.episode = ?2",
    )?
    .query_row(params![gateway, episode], |r| {
        let s: String = r.get(0)?;
        from_json(0, &s)
    })
    .optional()
}

/// Every open case, oldest reported first.
pub fn open_cases(c: &Connection) -> rusqlite::Result<Vec<Case>> {
    let mut st =
        c.prepare_cached("SELECT json FROM cases WHERE is_open = 1 ORDER BY reported_ms, id")?;
    let rows = st.query_map([], |r| {
        let s: String = r.get(0)?;
        from_json(0, &s)
    })?;
    rows.collect()
}

pub fn case(c: &Connection, id: &str) -> rusqlite::Result<Option<CaseDetail>> {
    let Some(case) = c
        .prepare_cached("SELECT json FROM cases WHERE id = ?1")?
        .query_row([id], |r| {
            let s: String = r.get(0)?;
            from_json::<Case>(0, &s)
        })
        .optional()?
    else {
        return Ok(None);
    };
    let mut st =
        c.prepare_cached("SELECT json FROM case_events WHERE case_id = ?1 ORDER BY seq")?;
    let events = st
        .query_map([id], |r| {
            let s: String = r.get(0)?;
            from_json::<Event>(0, &s)
        })?
        .collect::<rusqlite::Result<Vec<Event>>>()?;
    Ok(Some(CaseDetail { case, events }))
}

/// Cases matching `q`, newest reported first, with the total count before paging.
pub fn cases(c: &Connection, q: &CaseQuery) -> rusqlite::Result<CasePage> {
    let mut sql = String::from(" FROM cases WHERE reported_ms >= ? AND reported_ms < ?");
    let mut args: Vec<rusqlite::types::Value> = vec![q.from_ms.into(), q.to_ms.into()];
    for (col, v) in [
        ("state", &q.state),
        ("category", &q.category),
        ("department", &q.department),
        ("device", &q.device),
        ("origin", &q.origin),
    ] {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(v.clone().into());
        }
    }
    if let Some(open) = q.open {
        sql.push_str(" AND is_open = ?");
        args.push(i64::from(open).into());
    }
    let total: i64 = c.query_row(
        &format!("SELECT count(*){sql}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    let page = format!("SELECT json{sql} ORDER BY reported_ms DESC, id DESC LIMIT ? OFFSET ?");
    args.push(i64::from(q.limit).into());
    args.push(i64::from(q.offset).into());
    let mut st = c.prepare(&page)?;
    let cases = st
        .query_map(params_from_iter(args.iter()), |r| {
            let s: String = r.get(0)?;
            from_json::<Case>(0, &s)
        })?
        .collect::<rusqlite::Result<Vec<Case>>>()?;
    Ok(CasePage {
        total: total as u64,
        cases,
    })
}

/// Every event with `ts_ms < to_ms` (what [`crate::cases::stats::compute`] needs for any
/// period ending at `to_ms`: a case reported before the period can fall due in it).
pub fn case_events_until(c: &Connection, to_ms: i64) -> rusqlite::Result<Vec<Event>> {
    let mut st = c.prepare_cached("SELECT json FROM case_events WHERE ts_ms < ?1")?;
    st.query_map([to_ms], |r| {
        let s: String = r.get(0)?;
        from_json::<Event>(0, &s)
    })?
    .collect()
}

/// The number of the next case id `{prefix}{n}`: one more than the highest stored (ids are the
/// engine's, [`crate::cases::case_id`]; `prefix` ends with `-`). O(1): reads the prefix's
/// counter (`case_day_counters`, advanced by [`save_case`] when a new case is inserted); a
/// prefix without a counter row is counted from `cases` (ids with that prefix only, through the
/// primary key).
pub fn next_case_number(c: &Connection, prefix: &str) -> rusqlite::Result<u64> {
    let last: Option<i64> = c
        .prepare_cached("SELECT last FROM case_day_counters WHERE day = ?1")?
        .query_row([prefix], |r| r.get(0))
        .optional()?;
    let last = match last {
        Some(n) => n,
        None => {
            // '.' follows '-': [prefix, upper) is exactly the ids with that prefix.
            let base = prefix.strip_suffix('-').unwrap_or(prefix);
            let upper = format!("{base}.");
            c.prepare_cached(
                "SELECT max(CAST(substr(id, ?3) AS INTEGER)) FROM cases \
                 WHERE id >= ?1 AND id < ?2",
            )?
            .query_row(params![prefix, upper, prefix.len() as i64 + 1], |r| {
                r.get::<_, Option<i64>>(0)
            })?
            .unwrap_or(0)
        }
    };
    Ok(u64::try_from(last).unwrap_or(0) + 1)
}

/// Hands every stored case event's statistics fields to `f`, grouped by case and in seq order
/// (primary-key order), reading a snapshot.
pub fn scan_case_events(c: &Connection, f: &mut dyn FnMut(EventFacts<'_>)) -> rusqlite::Result<()> {
    let mut kinds: HashMap<String, crate::cases::EventKind> = HashMap::new();
    let mut states: HashMap<String, crate::cases::State> = HashMap::new();
    let tx = c.unchecked_transaction()?;
    {
        let mut st = tx.prepare(
            "SELECT case_id, ts_ms, kind, to_state, json_extract(json, '$.deadline_ms'), \
             json_extract(json, '$.rating'), category, department, site, grid_cell, source \
             FROM case_events ORDER BY case_id, seq",
        )?;
        let mut rows = st.query([])?;
        while let Some(r) = rows.next()? {
            let text = |i: usize| -> rusqlite::Result<Option<&str>> {
                r.get_ref(i)?
                    .as_str_or_null()
                    .map_err(rusqlite::Error::from)
            };
            let kind = parse_name(&mut kinds, text(2)?.unwrap_or(""), 2)?;
            let to_state = parse_name(&mut states, text(3)?.unwrap_or(""), 3)?;
            let source_name = text(10)?.unwrap_or("");
            let source = crate::cases::model::Source::from_name(source_name).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    10,
                    rusqlite::types::Type::Text,
                    format!("unknown case source `{source_name}`").into(),
                )
            })?;
            f(EventFacts {
                case_id: text(0)?.unwrap_or(""),
                ts_ms: r.get(1)?,
                kind,
                to_state,
                deadline_ms: r.get(4)?,
                rating: r.get(5)?,
                category: text(6)?,
                department: text(7)?,
                site: text(8)?,
                grid_cell: text(9)?,
                source,
            });
        }
    }
    tx.finish()
}

/// A unit-like enum value from its JSON name, remembered per name.
fn parse_name<T: serde::de::DeserializeOwned + Copy>(
    cache: &mut HashMap<String, T>,
    s: &str,
    col: usize,
) -> rusqlite::Result<T> {
    if let Some(v) = cache.get(s) {
        return Ok(*v);
    }
    let v: T = serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e))
    })?;
    cache.insert(s.to_string(), v);
    Ok(v)
}

/// Advances the day counter past a newly inserted case id `C{YYYYMMDD}-{n}`.
fn count_case_id(c: &Connection, id: &str) -> rusqlite::Result<()> {
    let Some((day, n)) = id.rsplit_once('-') else {
        return Ok(());
    };
    let Ok(n) = n.parse::<i64>() else {
        return Ok(());
    };
    c.prepare_cached(
        "INSERT INTO case_day_counters (day, last) VALUES (?1, ?2) \
         ON CONFLICT (day) DO UPDATE SET last = max(last, excluded.last)",
    )?
    .execute(params![format!("{day}-"), n])?;
    Ok(())
}

/// Starts the block of Open311 details after the description in the note of a citizen
/// request's `reported` event. Always written, so the last one found is ours even if a citizen
/// types it.
pub const OPEN311_MARK: &str = "\n\n— Open311";

/// Contact details sent with a citizen request (Open311 `email`, `phone`, `first_name` +
/// `last_name`, `account_id`, `device_id`): personal information, stored apart from the event
/// log (`case_contacts`), shown to operators and the reporter who filed the case only, erased on
/// request and after the retention period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Contact {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// The request's description as the citizen sent it, when it held personal data that was
    /// redacted from the case title and timeline ([`crate::cases::privacy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Contact {
    pub fn is_empty(&self) -> bool {
        self == &Contact::default()
    }
}

/// Stores the contact details of case `case_id` (replacing any).
pub fn save_contact(
    c: &Connection,
    case_id: &str,
    contact: &Contact,
    now_ms: i64,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT OR REPLACE INTO case_contacts (case_id, email, phone, name, account_id, \
         device_id, created_ms, description) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        case_id,
        contact.email,
        contact.phone,
        contact.name,
        contact.account_id,
        contact.device_id,
        now_ms,
        contact.description
    ])?;
    Ok(())
}

/// The contact details of case `case_id`, if any are (still) stored.
pub fn contact(c: &Connection, case_id: &str) -> rusqlite::Result<Option<Contact>> {
    c.prepare_cached(
        "SELECT email, phone, name, account_id, device_id, description FROM case_contacts \
         WHERE case_id = ?1",
    )?
    .query_row([case_id], |r| {
        Ok(Contact {
            email: r.get(0)?,
            phone: r.get(1)?,
            name: r.get(2)?,
            account_id: r.get(3)?,
            device_id: r.get(4)?,
            description: r.get(5)?,
        })
    })
    .optional()
}

/// Deletes the contact details of case `case_id`; whether there were any.
pub fn erase_contact(c: &Connection, case_id: &str) -> rusqlite::Result<bool> {
    Ok(
        c.prepare_cached("DELETE FROM case_contacts WHERE case_id = ?1")?
            .execute([case_id])?
            > 0,
    )
}

/// Deletes the contact details of every case closed (or rejected) before `before_ms`; how
/// many. A rejected case counts from its last change. Driven by `case_contacts` (the citizen
/// requests still holding contact details), not by every closed case: it runs every timer pass.
pub fn erase_contacts_closed_before(c: &Connection, before_ms: i64) -> rusqlite::Result<usize> {
    c.prepare_cached(
        "DELETE FROM case_contacts WHERE case_id IN (SELECT k.case_id FROM case_contacts k \
         JOIN cases c ON c.id = k.case_id WHERE c.is_open = 0 \
         AND coalesce(json_extract(c.json, '$.closed_ms'), c.updated_ms) < ?1)",
    )?
    .execute([before_ms])
}

/// Copies the WAL into the database and truncates it, so that pages holding erased data do not
/// stay in the WAL file (with `secure_delete` the database file itself is already clean).
pub fn checkpoint(c: &Connection) -> rusqlite::Result<()> {
    let (busy, _, _): (i64, i64, i64) =
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    if busy != 0 {
        tracing::warn!(
            "WAL checkpoint after an erasure was blocked by a reader; the next one completes it"
        );
    }
    Ok(())
}

/// Splits the note of an Open311 `reported` event as older versions wrote it
/// (`{description}\n\n— Open311: email … · phone … · name … · account … · device … ·
/// address_id … · media … · lat,long …`) into the note without the contact details and the
/// contact details. `None`: no Open311 block, or nothing private in it. Pure.
pub fn split_contact_note(note: &str) -> Option<(String, Contact)> {
    let (description, block) = note.rsplit_once(OPEN311_MARK)?;
    let parts = block.strip_prefix(": ")?;
    let mut contact = Contact::default();
    let mut kept = Vec::new();
    for part in parts.split(" · ") {
        let (label, value) = part.split_once(' ').unwrap_or((part, ""));
        let slot = match label {
            "email" => &mut contact.email,
            "phone" => &mut contact.phone,
            "name" => &mut contact.name,
            "account" => &mut contact.account_id,
            "device" => &mut contact.device_id,
            _ => {
                kept.push(part);
                continue;
            }
        };
        *slot = Some(value.to_string());
    }
    if contact.is_empty() {
        return None;
    }
    let mut out = format!("{description}{OPEN311_MARK}");
    if !kept.is_empty() {
        out.push_str(": ");
        out.push_str(&kept.join(" · "));
    }
    Some((out, contact))
}

/// Upgrade step of schema 6: moves the contact details out of the `reported` events of citizen
/// requests into `case_contacts`, rewriting those events (note and JSON).
pub fn move_contacts_out_of_events(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(String, i64, String, i64)> = tx
        .prepare(
            "SELECT e.case_id, e.seq, e.json, e.ts_ms FROM case_events e \
             JOIN cases c ON c.id = e.case_id \
             WHERE c.origin = 'citizen' AND e.kind = 'reported' AND instr(e.note, ?1) > 0",
        )?
        .query_map([OPEN311_MARK], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut moved = 0usize;
    for (case_id, seq, js, ts_ms) in rows {
        let mut ev: Event = from_json(2, &js)?;
        let Some((note, contact)) = split_contact_note(&ev.note) else {
            continue;
        };
        ev.note = note;
        tx.execute(
            "UPDATE case_events SET note = ?3, json = ?4 WHERE case_id = ?1 AND seq = ?2",
            params![case_id, seq, ev.note, json(&ev)?],
        )?;
        // The columns of schema 6 (a later upgrade adds more).
        tx.execute(
            "INSERT OR REPLACE INTO case_contacts (case_id, email, phone, name, account_id, \
             device_id, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                case_id,
                contact.email,
                contact.phone,
                contact.name,
                contact.account_id,
                contact.device_id,
                ts_ms
            ],
        )?;
        moved += 1;
    }
    tracing::info!(
        requests = moved,
        "contact details moved out of the case event log"
    );
    Ok(())
}

/// Splits the note of a citizen request's `reported` event into the description and the
/// Open311 block after it (from [`OPEN311_MARK`], empty if there is none). Pure.
pub fn split_open311_note(note: &str) -> (&str, &str) {
    match note.rfind(OPEN311_MARK) {
        Some(i) => note.split_at(i),
        None => (note, ""),
    }
}

/// `lat,long` as Open311 requests wrote it into the site or the `reported` note before schema
/// 17 (`{lat},{long}` of two f64s); none for anything else.
fn written_point(text: &str) -> Option<Position> {
    let (a, b) = text.split_once(',')?;
    let (lat, long) = (a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?);
    Position::checked(lat, long).ok()
}

/// Upgrade step of schema 17: gives the cases stored before it their own point
/// (`Case::position`) where it is known — a patrol find's position, a citizen request's
/// `lat`/`long` (its site when no address was sent, else the `lat,long` detail of its
/// `reported` note).
pub fn positions_of_old_cases(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let rows: Vec<(String, String, Option<String>)> = tx
        .prepare(
            "SELECT c.id, c.json, e.json FROM cases c \
             LEFT JOIN case_events e ON e.case_id = c.id AND e.kind = 'reported' \
             WHERE c.origin IN ('citizen', 'patrol')",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (id, cj, ej) in rows {
        let mut case: Case = from_json(1, &cj)?;
        if case.position.is_some() {
            continue;
        }
        case.position = match &case.origin {
            Origin::Patrol { lat, lon, .. } => Some(Position {
                lat: *lat,
                lon: *lon,
            }),
            Origin::Citizen => {
                let from_note = || -> rusqlite::Result<Option<Position>> {
                    let Some(ej) = &ej else { return Ok(None) };
                    let ev: Event = from_json(2, ej)?;
                    let (_, block) = split_open311_note(&ev.note);
                    Ok(block
                        .rsplit_once("lat,long ")
                        .and_then(|(_, rest)| written_point(rest.split(" · ").next()?)))
                };
                match case.site.as_deref().and_then(written_point) {
                    Some(p) => Some(p),
                    None => from_note()?,
                }
            }
            _ => None,
        };
        if case.position.is_some() {
            tx.execute(
                "UPDATE cases SET json = ?2 WHERE id = ?1",
                params![id, json(&case)?],
            )?;
        }
    }
    Ok(())
}

/// Upgrade step of schema 9: redacts the personal data in the descriptions of existing citizen
/// requests (the `reported` event's note and the case title) and keeps the text as sent with
/// the contact details.
pub fn redact_open311_descriptions(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    use crate::cases::privacy::{redact, title_of};
    let rows: Vec<(String, i64, String, i64, String)> = tx
        .prepare(
            "SELECT e.case_id, e.seq, e.json, e.ts_ms, c.json FROM case_events e \
             JOIN cases c ON c.id = e.case_id \
             WHERE c.origin = 'citizen' AND e.kind = 'reported'",
        )?
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut redacted = 0usize;
    for (case_id, seq, ej, ts_ms, cj) in rows {
        let mut ev: Event = from_json(2, &ej)?;
        let mut case: Case = from_json(4, &cj)?;
        let (description, block) = split_open311_note(&ev.note);
        let (original, block) = (description.to_string(), block.to_string());
        let red = redact(&original);
        let title = redact(&case.title);
        if !red.changed() && !title.changed() {
            continue;
        }
        ev.note = format!("{}{block}", red.text);
        case.title = if case.title == title_of(&original) {
            title_of(&red.text)
        } else {
            title.text
        };
        tx.execute(
            "UPDATE case_events SET note = ?3, json = ?4 WHERE case_id = ?1 AND seq = ?2",
            params![case_id, seq, ev.note, json(&ev)?],
        )?;
        tx.execute(
            "UPDATE cases SET json = ?2 WHERE id = ?1",
            params![case_id, json(&case)?],
        )?;
        let updated = tx.execute(
            "UPDATE case_contacts SET description = ?2 WHERE case_id = ?1",
            params![case_id, original],
        )?;
        if updated == 0 {
            let contact = Contact {
                description: Some(original),
                ..Contact::default()
            };
            save_contact(tx, &case_id, &contact, ts_ms)?;
        }
        redacted += 1;
    }
    tracing::info!(
        requests = redacted,
        "personal data redacted from the descriptions of citizen requests"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::Catalogue;
    use crate::cases::model::{Action, Actor, Command, EventKind, Intake, apply, open};
    use crate::cases::stats::{Period, compute};
    use crate::store::sqlite::{self, SqliteReader, SqliteWriter};
    use crate::store::{CaseStore, Reader, StoreError, Synchronous};

    /// 2025-11-03 (a Monday) 10:00 at UTC+08:00.
    const T0: i64 = 1_762_135_200_000;

    fn stores(name: &str) -> (SqliteWriter, SqliteReader) {
        let d = std::env::temp_dir().join(format!("fumegrid-agg-cases-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("tmpdir");
        let p = d.join(name);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", p.display()));
        }
        let w = sqlite::open(&p, Synchronous::Normal).expect("open");
        let r = sqlite::open_reader(&p).expect("reader");
        (w, r)
    }

    fn all(r: &SqliteReader) -> CasePage {
        r.cases(&CaseQuery::default()).expect("cases")
    }

    #[test]
    fn case_and_events_are_saved_together_and_read_back() {
        let (mut w, r) = stores("save.sqlite3");
        let cat = Catalogue::builtin().expect("catalogue");
        let op = Actor::operator("op-1");
        let intake = |title: &str| Intake {
            category: cat.categories[0].id.clone(),
            title: title.into(),
            origin: Origin::Operator,
            site: Some("gw-1".into()),
            grid_cell: None,
        };
        let (c, ev, _) = open("C1", intake("one"), &op, "", T0, &cat).expect("open");
        w.save_case(&c, &ev, &[], T0).expect("save new");
        let (c2, ev2, _) =
            apply(&c, Command::new(Action::Register), &op, T0 + 1, &cat).expect("register");
        let (c3, ev3, _) = apply(
            &c2,
            Command::note(Action::Dispatch { department: None }, "go"),
            &op,
            T0 + 2,
            &cat,
        )
        .expect("dispatch");
        let mut both = ev2.clone();
        both.extend(ev3.iter().cloned());
        w.save_case(&c3, &both, &[], T0 + 2)
            .expect("save two events");
        // Saving the register step again is stale (the row is at seq 3 now), and nothing is
        // appended.
        assert!(matches!(
            w.save_case(&c2, &ev2, &[], T0 + 3),
            Err(StoreError::Stale(id)) if id == "C1"
        ));
        assert!(matches!(
            w.save_case(&c3, &ev2, &[], T0 + 3),
            Err(StoreError::Malformed(_))
        ));
        let d = r.case("C1").expect("case").expect("exists");
        assert_eq!(d.case, c3);
        assert_eq!(
            d.events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [
                EventKind::Reported,
                EventKind::Registered,
                EventKind::Dispatched
            ]
        );
        assert_eq!(d.events[2].note, "go");
        assert_eq!(r.case("nope").expect("case"), None);
        // Two more cases, then filters and pages.
        for (i, t) in [(2, T0 + 10), (3, T0 + 20)] {
            let (c, ev, _) = open(&format!("C{i}"), intake("x"), &op, "", t, &cat).expect("open");
            w.save_case(&c, &ev, &[], t).expect("save");
        }
        let page = all(&r);
        assert_eq!(page.total, 3);
        let ids: Vec<&str> = page.cases.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["C3", "C2", "C1"], "newest first");
        let q = |f: &dyn Fn(&mut CaseQuery)| {
            let mut q = CaseQuery::default();
            f(&mut q);
            let p = r.cases(&q).expect("cases");
            (
                p.total,
                p.cases.into_iter().map(|c| c.id).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            q(&|q| q.state = Some("dispatched".into())),
            (1, vec!["C1".to_string()])
        );
        assert_eq!(
            q(&|q| q.department = Some("epb".into())).0,
            u64::from(c3.department.as_deref() == Some("epb"))
        );
        assert_eq!(
            q(&|q| {
                q.limit = 1;
                q.offset = 1
            }),
            (3, vec!["C2".to_string()])
        );
        assert_eq!(q(&|q| q.from_ms = T0 + 10).0, 2);
        assert_eq!(q(&|q| q.to_ms = T0 + 10).0, 1);
        assert_eq!(q(&|q| q.state = Some("closed".into())), (0, vec![]));
        assert_eq!(q(&|q| q.origin = Some("operator".into())).0, 3);
        assert_eq!(q(&|q| q.origin = Some("citizen".into())).0, 0);
        assert_eq!(q(&|q| q.open = Some(true)).0, 3);
        assert_eq!(q(&|q| q.open = Some(false)).0, 0);
        // The statistics' input: events before `to`.
        assert_eq!(r.case_events_until(i64::MAX).expect("events").len(), 5);
        assert_eq!(r.case_events_until(T0 + 2).expect("events").len(), 2);
        let st = compute(&r.case_events_until(i64::MAX).expect("ev"), Period::all());
        assert_eq!((st.total.received, st.total.registered), (3, 1));
    }

    #[test]
    fn case_ids_count_per_local_day() {
        let (w, _) = stores("ids.sqlite3");
        let cat = Catalogue::builtin().expect("catalogue");
        let conn = &w.conn_for_tests();
        let next_case_id = |c: &Connection, now: i64, cat: &Catalogue| {
            let prefix = crate::cases::case_id_prefix(cat, now);
            next_case_number(c, &prefix).map(|n| crate::cases::case_id(&prefix, n))
        };
        assert_eq!(next_case_id(conn, T0, &cat).expect("id"), "C20251103-0001");
        conn.execute(
            "INSERT INTO cases (id, state, is_open, category, origin, reported_ms, \
             sign_for_overdue, handle_overdue, escalated, seq, json, created_ms, updated_ms) \
             VALUES ('C20251103-0009', 'reported', 1, 'x', 'operator', 0, 0, 0, 0, 1, '{}', 0, 0)",
            [],
        )
        .expect("row");
        assert_eq!(next_case_id(conn, T0, &cat).expect("id"), "C20251103-0010");
        // Saved cases advance the day's counter; past 9999 the number just grows a digit.
        count_case_id(conn, "C20251103-0010").expect("count");
        assert_eq!(next_case_id(conn, T0, &cat).expect("id"), "C20251103-0011");
        count_case_id(conn, "C20251103-9999").expect("count");
        assert_eq!(next_case_id(conn, T0, &cat).expect("id"), "C20251103-10000");
        count_case_id(conn, "C20251103-10000").expect("count");
        count_case_id(conn, "C20251103-0012").expect("late, lower: ignored");
        assert_eq!(next_case_id(conn, T0, &cat).expect("id"), "C20251103-10001");
        // 16:30 UTC is 00:30 the next local day.
        let next_day = T0 + 14 * 3_600_000 + 1_800_000;
        assert_eq!(
            next_case_id(conn, next_day, &cat).expect("id"),
            "C20251104-0001"
        );
    }

    #[test]
    fn old_open311_notes_split_into_note_and_contact() {
        let note = "smoke\n\n— Open311: email a@b.cn · phone 123 · name Li Wei · account acct-1 · \
                    device dev-9 · address_id A-7 · media http://x/y.jpg · lat,long 30.1,120.2";
        let (n, c) = split_contact_note(note).expect("contact");
        assert_eq!(
            n,
            "smoke\n\n— Open311: address_id A-7 · media http://x/y.jpg · lat,long 30.1,120.2"
        );
        assert_eq!(
            c,
            Contact {
                email: Some("a@b.cn".into()),
                phone: Some("123".into()),
                name: Some("Li Wei".into()),
                account_id: Some("acct-1".into()),
                device_id: Some("dev-9".into()),
                description: None,
            }
        );
        let (n, _) = split_contact_note("a\n\n— Open311 b\n\n— Open311: email x").expect("last");
        assert_eq!(n, "a\n\n— Open311 b\n\n— Open311");
        assert_eq!(split_contact_note("smoke\n\n— Open311: media m"), None);
        assert_eq!(split_contact_note("smoke\n\n— Open311"), None);
        assert_eq!(split_contact_note("smoke"), None);
    }
}
