-- fumegrid aggregator store, schema version 16: drones (issue 15, docs/drones.md).
--
-- `drone_points` holds every stored position of every drone, from a gateway's MAVLink source
-- (wire `Track` items, stored inside ingest's commit) or from a DJI dock (stored by the DJI
-- intake through `DroneWriter::store_track`). A point is identified by (drone, ts_ms): a resend
-- or a second route to the same position is kept once, the first one wins. `id` is the order
-- of arrival: the aerial-pass judgment reads the points that arrived after the last it judged.
-- `drone_photos` holds the photos drones reported (wire `DronePhoto`), identified by
-- (drone, ts_ms, image index).
-- `aerial_passes` holds each pass of a drone near a site that was judged (casework/aerial.rs),
-- so that a pass is recorded once whatever is judged again after a restart.
-- `cases.source` (and `case_events.source`, with the events' JSON) says how each case came in
-- (sensor, citizen, drone, inspector); existing cases get it from their origin.

CREATE TABLE drone_points (
    id           INTEGER PRIMARY KEY,
    drone        TEXT NOT NULL,
    source       TEXT NOT NULL,      -- mavlink | dji
    gateway      TEXT,               -- the gateway that forwarded it (mavlink); NULL for DJI
    ts_ms        INTEGER NOT NULL,
    lat          REAL NOT NULL,
    lon          REAL NOT NULL,
    alt_m        REAL NOT NULL,
    rel_alt_m    REAL,
    heading_deg  REAL,
    speed_m_s    REAL,
    battery_pct  INTEGER,
    received_ms  INTEGER NOT NULL
);
CREATE UNIQUE INDEX drone_points_by_time ON drone_points (drone, ts_ms);
-- The map's "last hour of every drone".
CREATE INDEX drone_points_ts ON drone_points (ts_ms);

CREATE TABLE drone_photos (
    drone        TEXT NOT NULL,
    ts_ms        INTEGER NOT NULL,
    image_index  INTEGER NOT NULL,
    source       TEXT NOT NULL,
    gateway      TEXT,
    lat          REAL NOT NULL,
    lon          REAL NOT NULL,
    alt_m        REAL NOT NULL,
    file         TEXT,
    ok           INTEGER NOT NULL,
    sha256       TEXT,
    received_ms  INTEGER NOT NULL,
    PRIMARY KEY (drone, ts_ms, image_index)
) WITHOUT ROWID;
CREATE INDEX drone_photos_ts ON drone_photos (ts_ms);

CREATE TABLE aerial_passes (
    id              INTEGER PRIMARY KEY,
    drone           TEXT NOT NULL,
    site            TEXT NOT NULL,      -- the site's gateway id
    start_ms        INTEGER NOT NULL,
    end_ms          INTEGER NOT NULL,
    min_distance_m  REAL NOT NULL,
    cases           TEXT NOT NULL,      -- JSON array of the case ids it was added to
    recorded_ms     INTEGER NOT NULL
);
CREATE INDEX aerial_passes_by_site ON aerial_passes (drone, site, start_ms);

ALTER TABLE cases ADD COLUMN source TEXT NOT NULL DEFAULT 'inspector';
UPDATE cases SET source = CASE origin
    WHEN 'alarm' THEN 'sensor'
    WHEN 'citizen' THEN 'citizen'
    ELSE 'inspector' END;
UPDATE cases SET json = json_set(json, '$.source', source);
ALTER TABLE case_events ADD COLUMN source TEXT NOT NULL DEFAULT 'inspector';
UPDATE case_events SET source = (SELECT c.source FROM cases c WHERE c.id = case_events.case_id);
UPDATE case_events SET json = json_set(json, '$.source', source);
