-- fumegrid aggregator store, schema version 4: department notifications (webhooks), and the
-- per-day case number counter.
--
-- Every `notify` effect of the case engine is queued here in the same transaction as the case
-- change that caused it, so a notification is never lost to a crash or a restart. The notifier
-- delivers them in id order per department, retries with backoff and records every outcome;
-- the API lists this table as the delivery log.

CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    department      TEXT NOT NULL,
    case_id         TEXT NOT NULL,
    seq             INTEGER NOT NULL,   -- the case event it announces
    kind            TEXT NOT NULL,      -- that event's kind
    created_ms      INTEGER NOT NULL,
    state           TEXT NOT NULL,      -- pending | delivered | failed | unrouted
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_attempt_ms INTEGER,
    last_status     INTEGER,            -- HTTP status of the last attempt, if any answered
    last_error      TEXT,               -- why the last attempt failed
    delivered_ms    INTEGER
);
CREATE INDEX notifications_due ON notifications (next_attempt_ms) WHERE state = 'pending';
CREATE INDEX notifications_by_case ON notifications (case_id, id);
CREATE INDEX notifications_by_department ON notifications (department, id);

-- The last case number given out per local day (case ids are C{YYYYMMDD}-{n:04}); read for
-- every alarm, so it must not scan `cases`. Days before this table existed are counted once
-- from `cases` the first time they are needed.
CREATE TABLE case_day_counters (
    day  TEXT PRIMARY KEY,   -- C{YYYYMMDD}-
    last INTEGER NOT NULL
) WITHOUT ROWID;
