-- fumegrid aggregator store, schema version 1.
-- Names of gateways, streams and (gateway, device, metric) series are interned so that a
-- reading row is a few integers; `readings_flat` shows them joined back for people and tools.

CREATE TABLE gateways (
    id           TEXT PRIMARY KEY,
    online       INTEGER NOT NULL DEFAULT 0,   -- from the retained status / Last Will
    status_ts_ms INTEGER,                      -- when the status document says it was written
    version      TEXT,                         -- gateway software version from its status
    last_seen_ms INTEGER                       -- aggregator clock: last accepted batch or status
) WITHOUT ROWID;

-- A stream is one gateway outbox's sequence space (a wiped gateway starts a new one).
CREATE TABLE streams (
    id            INTEGER PRIMARY KEY,
    gateway       TEXT NOT NULL,
    stream        TEXT NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    UNIQUE (gateway, stream)
);

-- Dedupe: every item ever committed, readings and events alike. seq is a u64 stored as its
-- two's-complement i64 (order above 2^63 is not needed, identity is).
CREATE TABLE items (
    stream_id INTEGER NOT NULL REFERENCES streams (id),
    seq       INTEGER NOT NULL,
    PRIMARY KEY (stream_id, seq)
) WITHOUT ROWID;

-- One row per (gateway, device, metric), carrying its latest value.
CREATE TABLE series (
    id             INTEGER PRIMARY KEY,
    gateway        TEXT NOT NULL,
    device         TEXT NOT NULL,
    metric         TEXT NOT NULL,
    latest_ts_ms   INTEGER,
    latest_value   REAL,
    latest_quality INTEGER,
    UNIQUE (gateway, device, metric)
);
CREATE INDEX series_by_device ON series (device);

CREATE TABLE qualities (
    code INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO qualities (code, name) VALUES
    (0, 'ok'), (1, 'out_of_range'), (2, 'stale'), (3, 'device_error');

CREATE TABLE readings (
    series_id INTEGER NOT NULL REFERENCES series (id),
    ts_ms     INTEGER NOT NULL,
    value     REAL,                 -- NULL only with quality device_error
    quality   INTEGER NOT NULL REFERENCES qualities (code),
    stream_id INTEGER NOT NULL REFERENCES streams (id),
    seq       INTEGER NOT NULL
);
CREATE INDEX readings_by_series_ts ON readings (series_id, ts_ms);

CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    gateway     TEXT NOT NULL,
    stream_id   INTEGER NOT NULL REFERENCES streams (id),
    seq         INTEGER NOT NULL,
    ts_ms       INTEGER NOT NULL,
    kind        TEXT NOT NULL,      -- started | gap | store_reset
    message     TEXT NOT NULL,
    dropped     INTEGER,
    from_ms     INTEGER,
    to_ms       INTEGER,
    received_ms INTEGER NOT NULL
);
CREATE INDEX events_by_gateway ON events (gateway, ts_ms);

CREATE VIEW readings_flat AS
SELECT s.gateway, s.device, s.metric, r.ts_ms, r.value, q.name AS quality, st.stream, r.seq
FROM readings r
JOIN series s ON s.id = r.series_id
JOIN streams st ON st.id = r.stream_id
JOIN qualities q ON q.code = r.quality;
