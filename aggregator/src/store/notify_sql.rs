//! The notification queue and delivery log (schema v4, `notifications`).
//!
//! [`enqueue`] runs inside the transaction that saves a case change, so every `notify` effect
//! of the engine is either stored with the change or not at all. The notifier
//! (`notify.rs`) takes what is [`due`] and records each attempt with [`record`].

use rusqlite::{Connection, OptionalExtension, params, params_from_iter};
use serde::Serialize;

use crate::cases::{Effect, Event};

/// A queued notification and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Notification {
    pub id: i64,
    pub department: String,
    pub case_id: String,
    pub seq: u64,
    pub kind: String,
    pub created_ms: i64,
    /// `pending`, `delivered`, `failed` (gave up) or `unrouted` (no webhook for the department).
    pub state: String,
    pub attempts: u32,
    pub next_attempt_ms: i64,
    pub last_attempt_ms: Option<i64>,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_ms: Option<i64>,
}

/// The outcome of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: u16,
    },
    /// Try again at `next_ms`.
    Retry {
        status: Option<u16>,
        error: String,
        next_ms: i64,
    },
    /// Given up after too many attempts.
    Failed {
        status: Option<u16>,
        error: String,
    },
    /// No endpoint is configured for the department.
    Unrouted,
}

/// A delivery log query; filters are exact, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationQuery {
    pub department: Option<String>,
    pub case_id: Option<String>,
    pub state: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

pub const STATES: [&str; 4] = ["pending", "delivered", "failed", "unrouted"];

/// Queues the `notify` effects (other effects are ignored). Caller provides the transaction.
pub fn enqueue(c: &Connection, effects: &[Effect], now_ms: i64) -> rusqlite::Result<usize> {
    let mut ins = c.prepare_cached(
        "INSERT INTO notifications (department, case_id, seq, kind, created_ms, state, \
         next_attempt_ms) VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?5)",
    )?;
    let mut n = 0;
    for e in effects {
        if let Effect::Notify {
            department,
            case_id,
            seq,
            kind,
        } = e
        {
            let kind = serde_json::to_value(kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            ins.execute(params![department, case_id, *seq as i64, kind, now_ms])?;
            n += 1;
        }
    }
    Ok(n)
}

/// The kind of the notification [`enqueue_evidence`] queues.
pub const EVIDENCE: &str = "evidence";

/// Queues an [`EVIDENCE`] notification to the department of each open case that picture
/// `sha256` belongs to (through an alarm episode, a snapshot request or an upload), announcing
/// the case's latest event: the picture has just been stored, and a camera's picture reaches
/// the aggregator seconds after the alarm whose dispatch notification went out without it. A
/// case with no department (not dispatched yet) gets none: its dispatch will carry the
/// picture. `only_case`: that case only (an upload to it). Caller provides the transaction,
/// the one that stores the picture.
pub fn enqueue_evidence(
    c: &Connection,
    sha256: &str,
    only_case: Option<&str>,
    now_ms: i64,
) -> rusqlite::Result<usize> {
    let mut ins = c.prepare_cached(
        "INSERT INTO notifications (department, case_id, seq, kind, created_ms, state, \
         next_attempt_ms) \
         SELECT c.department, c.id, c.seq, ?2, ?3, 'pending', ?3 FROM cases c \
         WHERE c.id = ?1 AND c.is_open = 1 AND c.department IS NOT NULL",
    )?;
    let mut n = 0;
    // The cases it belongs to, as the evidence API sees them.
    for id in super::evidence_sql::picture_cases(c, sha256)? {
        if only_case.is_none_or(|only| only == id) {
            n += ins.execute(params![id, EVIDENCE, now_ms])?;
        }
    }
    Ok(n)
}

const COLUMNS: &str = "id, department, case_id, seq, kind, created_ms, state, attempts, \
                       next_attempt_ms, last_attempt_ms, last_status, last_error, delivered_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Notification> {
    Ok(Notification {
        id: r.get(0)?,
        department: r.get(1)?,
        case_id: r.get(2)?,
        seq: r.get::<_, i64>(3)? as u64,
        kind: r.get(4)?,
        created_ms: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get::<_, i64>(7)? as u32,
        next_attempt_ms: r.get(8)?,
        last_attempt_ms: r.get(9)?,
        last_status: r.get::<_, Option<i64>>(10)?.map(|s| s as u16),
        last_error: r.get(11)?,
        delivered_ms: r.get(12)?,
    })
}

/// Pending notifications due at `now_ms`, oldest first. Per department only the oldest pending
/// one is returned (deliveries to one department stay in order; a department whose endpoint
/// is down does not hold up the others).
pub fn due(c: &Connection, now_ms: i64, limit: u32) -> rusqlite::Result<Vec<Notification>> {
    let mut st = c.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM notifications WHERE id IN \
         (SELECT min(id) FROM notifications WHERE state = 'pending' GROUP BY department) \
         AND next_attempt_ms <= ?1 ORDER BY id LIMIT ?2"
    ))?;
    st.query_map(params![now_ms, i64::from(limit)], row)?
        .collect()
}

/// The earliest `next_attempt_ms` of anything pending.
pub fn next_due_ms(c: &Connection) -> rusqlite::Result<Option<i64>> {
    c.query_row(
        "SELECT min(next_attempt_ms) FROM notifications WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )
}

/// Records one attempt.
pub fn record(c: &Connection, id: i64, attempt: &Attempt, now_ms: i64) -> rusqlite::Result<()> {
    let (state, status, error, next, delivered, counts) = match attempt {
        Attempt::Delivered { status } => (
            "delivered",
            Some(i64::from(*status)),
            None,
            None,
            Some(now_ms),
            true,
        ),
        Attempt::Retry {
            status,
            error,
            next_ms,
        } => (
            "pending",
            status.map(i64::from),
            Some(error.as_str()),
            Some(*next_ms),
            None,
            true,
        ),
        Attempt::Failed { status, error } => (
            "failed",
            status.map(i64::from),
            Some(error.as_str()),
            None,
            None,
            true,
        ),
        Attempt::Unrouted => (
            "unrouted",
            None,
            Some("no webhook is configured for this department"),
            None,
            None,
            false,
        ),
    };
    c.prepare_cached(
        "UPDATE notifications SET state = ?2, attempts = attempts + ?3, \
         last_attempt_ms = CASE WHEN ?3 = 1 THEN ?4 ELSE last_attempt_ms END, \
         last_status = ?5, last_error = ?6, next_attempt_ms = coalesce(?7, next_attempt_ms), \
         delivered_ms = ?8 WHERE id = ?1",
    )?
    .execute(params![
        id,
        state,
        counts as i64,
        now_ms,
        status,
        error,
        next,
        delivered
    ])?;
    Ok(())
}

/// The delivery log, newest first, with the total before paging.
pub fn list(c: &Connection, q: &NotificationQuery) -> rusqlite::Result<(u64, Vec<Notification>)> {
    let mut sql = String::from(" FROM notifications WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for (col, v) in [
        ("department", &q.department),
        ("case_id", &q.case_id),
        ("state", &q.state),
    ] {
        if let Some(v) = v {
            sql.push_str(&format!(" AND {col} = ?"));
            args.push(v.clone().into());
        }
    }
    let total: i64 = c.query_row(
        &format!("SELECT count(*){sql}"),
        params_from_iter(args.iter()),
        |r| r.get(0),
    )?;
    args.push(i64::from(q.limit).into());
    args.push(i64::from(q.offset).into());
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS}{sql} ORDER BY id DESC LIMIT ? OFFSET ?"
    ))?;
    let rows = st
        .query_map(params_from_iter(args.iter()), row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok((total as u64, rows))
}

/// One event of a case (what a notification announces).
pub fn event(c: &Connection, case_id: &str, seq: u64) -> rusqlite::Result<Option<Event>> {
    c.prepare_cached("SELECT json FROM case_events WHERE case_id = ?1 AND seq = ?2")?
        .query_row(params![case_id, seq as i64], |r| {
            let s: String = r.get(0)?;
            serde_json::from_str(&s).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })
        })
        .optional()
}
