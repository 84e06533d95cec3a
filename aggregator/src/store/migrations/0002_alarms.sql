-- fumegrid aggregator store, schema version 2: alarm episodes.
--
-- A gateway judges alarms at the edge and sends every transition of an episode (raised →
-- updated* → cleared), each carrying the whole picture so far. `alarm_transitions` keeps every
-- transition received, append-only (the rowid is a cursor for consumers such as dispatch
-- cases); `alarms` is their fold, one row per episode, and can be rebuilt from them:
--
-- - the episode shows the transition that ranks highest by (phase, ts_ms), phases ranked
--   raised < updated < cleared, so late or repeated delivery never reopens or rewinds it;
-- - peak is the largest peak of any transition (peak_ms goes with it), started_ms the earliest;
-- - device, kind and metric are those of the first transition stored (they are part of the id).
--
-- Dedupe of deliveries is on (stream, seq) in `items`, like readings and events.

CREATE TABLE alarms (
    gateway          TEXT NOT NULL,
    id               TEXT NOT NULL,     -- episode id, unique per gateway
    device           TEXT NOT NULL,
    kind             TEXT NOT NULL,     -- exceedance | purifier_idle | purifier_dirty | device_offline | sensor_fault
    metric           TEXT,              -- canonical metric name; NULL for purifier and offline alarms
    phase            TEXT NOT NULL,     -- raised | updated | cleared: of the winning transition
    suppressed       INTEGER NOT NULL,  -- 0/1, of the winning transition
    started_ms       INTEGER NOT NULL,  -- gateway clock, like all *_ms below unless noted
    cleared_ms       INTEGER,           -- set iff phase = 'cleared'
    last_ts_ms       INTEGER NOT NULL,  -- ts_ms of the winning transition
    value            REAL,              -- of the winning transition
    peak             REAL,              -- max over all transitions
    peak_ms          INTEGER,
    limit_value      REAL,              -- the limit judged against ("limit" is an SQL keyword)
    message          TEXT NOT NULL,
    first_seen_ms    INTEGER NOT NULL,  -- aggregator clock: first transition stored
    last_received_ms INTEGER NOT NULL,  -- aggregator clock: last transition stored
    updates          INTEGER NOT NULL,  -- transitions stored (duplicates of (stream, seq) excluded)
    PRIMARY KEY (gateway, id)
) WITHOUT ROWID;

-- Open episodes (few, partial indices): the open list newest first, and "the open episodes of
-- (gateway, device, kind)" that a dispatch case is opened from.
CREATE INDEX alarms_open ON alarms (started_ms) WHERE phase <> 'cleared';
CREATE INDEX alarms_open_by_device_kind ON alarms (gateway, device, kind) WHERE phase <> 'cleared';
-- History per device, and every list newest first.
CREATE INDEX alarms_by_device ON alarms (device, started_ms);
CREATE INDEX alarms_by_started ON alarms (started_ms);

CREATE TABLE alarm_transitions (
    id          INTEGER PRIMARY KEY,   -- arrival order; never reused (append-only)
    gateway     TEXT NOT NULL,
    alarm_id    TEXT NOT NULL,         -- alarms.id
    stream_id   INTEGER NOT NULL REFERENCES streams (id),
    seq         INTEGER NOT NULL,
    device      TEXT NOT NULL,
    kind        TEXT NOT NULL,
    metric      TEXT,
    phase       TEXT NOT NULL,
    started_ms  INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    cleared_ms  INTEGER,
    value       REAL,
    peak        REAL,
    peak_ms     INTEGER,
    limit_value REAL,
    suppressed  INTEGER NOT NULL,
    message     TEXT NOT NULL,
    received_ms INTEGER NOT NULL       -- aggregator clock
);
CREATE INDEX alarm_transitions_by_alarm ON alarm_transitions (gateway, alarm_id, ts_ms);
