-- fumegrid aggregator store, schema version 3: dispatch cases (docs/cases.md).
--
-- `case_events` is the append-only timeline of every case (one row per event, numbered 1, 2, …
-- per case); statistics are computed from it alone, so any past period can be recomputed.
-- `cases` is the current picture of each case (the fold of its events, as the pure engine in
-- src/cases/ returns it): the columns the API filters on, plus the whole case as JSON.
-- Every change of a case writes its row and appends its events in one transaction.

CREATE TABLE cases (
    id                   TEXT PRIMARY KEY,   -- e.g. C20251103-0001
    state                TEXT NOT NULL,      -- reported | registered | rejected | dispatched | accepted | handled | verified | closed
    is_open              INTEGER NOT NULL,   -- 0/1: not rejected and not closed
    category             TEXT NOT NULL,      -- catalogue category id
    department           TEXT,               -- the department it is with (NULL before dispatch and after return)
    origin               TEXT NOT NULL,      -- alarm | citizen | operator
    gateway              TEXT,               -- origin alarm: gateway, device, alarm kind
    device               TEXT,
    alarm_kind           TEXT,
    site                 TEXT,
    grid_cell            TEXT,
    reported_ms          INTEGER NOT NULL,   -- aggregator clock, like every *_ms here
    sign_for_deadline_ms INTEGER,
    handle_deadline_ms   INTEGER,
    escalate_at_ms       INTEGER,
    sign_for_overdue     INTEGER NOT NULL,
    handle_overdue       INTEGER NOT NULL,
    escalated            INTEGER NOT NULL,
    rating               INTEGER,
    seq                  INTEGER NOT NULL,   -- seq of the last event
    json                 TEXT NOT NULL,      -- the whole Case
    created_ms           INTEGER NOT NULL,
    updated_ms           INTEGER NOT NULL
);
-- "The open case of (gateway, device, alarm kind)" that an alarm links to.
CREATE INDEX cases_open_by_origin ON cases (gateway, device, alarm_kind) WHERE is_open = 1;
CREATE INDEX cases_by_reported ON cases (reported_ms);
CREATE INDEX cases_by_state ON cases (state, reported_ms);
CREATE INDEX cases_by_department ON cases (department, reported_ms);
CREATE INDEX cases_by_device ON cases (device, reported_ms);

CREATE TABLE case_events (
    case_id        TEXT NOT NULL,
    seq            INTEGER NOT NULL,   -- 1, 2, … per case
    kind           TEXT NOT NULL,      -- reported | registered | dispatched | … (EventKind)
    actor_id       TEXT NOT NULL,
    actor_role     TEXT NOT NULL,      -- operator | department | viewer | system | reporter
    ts_ms          INTEGER NOT NULL,
    note           TEXT NOT NULL,
    from_state     TEXT,               -- NULL for `reported`
    to_state       TEXT NOT NULL,
    department     TEXT,               -- the case's dimensions after the event
    category       TEXT NOT NULL,
    site           TEXT,
    grid_cell      TEXT,
    json           TEXT NOT NULL,      -- the whole Event
    PRIMARY KEY (case_id, seq)
) WITHOUT ROWID;
-- Statistics of a period read the events by time.
CREATE INDEX case_events_by_ts ON case_events (ts_ms);
