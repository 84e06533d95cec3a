-- fumegrid aggregator store, schema version 10: camera pictures and uploads (issue 13,
-- store/evidence.rs).
--
-- The bytes of a stored picture are in the blob store (object_store, key `sha256/ab/cd/<hash>`);
-- here are its metadata and, while it arrives, its parts. Which case a picture belongs to is
-- derived when asked (case_alarms, snapshot_requests, picture_uploads), never stored with it.

CREATE TABLE pictures (
    sha256       TEXT PRIMARY KEY,        -- 64 lowercase hex of the original bytes
    source       TEXT NOT NULL,           -- camera | upload
    gateway      TEXT,
    camera       TEXT,
    devices      TEXT NOT NULL DEFAULT '[]',   -- JSON array of device ids
    captured_ms  INTEGER NOT NULL,
    trigger      TEXT,
    alarm        TEXT,                    -- the wire Alarm id of its episode
    request      TEXT,                    -- the snapshot request it answers
    media        TEXT NOT NULL,           -- MIME type of the original
    size         INTEGER NOT NULL,
    width        INTEGER,
    height       INTEGER,
    site         TEXT NOT NULL DEFAULT '',
    readings     TEXT NOT NULL DEFAULT '[]',   -- JSON [[device, metric, value]]
    parts        INTEGER NOT NULL,
    state        TEXT NOT NULL,           -- arriving | complete | stored
    received_ms  INTEGER NOT NULL,
    stored_ms    INTEGER,
    uploaded_by  TEXT
) WITHOUT ROWID;

CREATE INDEX pictures_episode ON pictures (gateway, alarm) WHERE alarm IS NOT NULL;
CREATE INDEX pictures_request ON pictures (request) WHERE request IS NOT NULL;
CREATE INDEX pictures_state ON pictures (state, received_ms);

-- Parts of pictures not yet in the blob store (a rowid table: rows are up to 48 KiB).
CREATE TABLE picture_parts (
    sha256  TEXT NOT NULL,
    part    INTEGER NOT NULL,
    data    BLOB NOT NULL,
    PRIMARY KEY (sha256, part)
);

CREATE TABLE picture_uploads (
    sha256       TEXT NOT NULL,
    case_id      TEXT NOT NULL,
    uploaded_by  TEXT NOT NULL,
    uploaded_ms  INTEGER NOT NULL,
    PRIMARY KEY (sha256, case_id)
) WITHOUT ROWID;
CREATE INDEX picture_uploads_case ON picture_uploads (case_id);

CREATE TABLE snapshot_requests (
    id            TEXT PRIMARY KEY,       -- the wire Command id
    case_id       TEXT NOT NULL,
    gateway       TEXT NOT NULL,
    device        TEXT,
    issued_ms     INTEGER NOT NULL,
    expires_ms    INTEGER NOT NULL,
    requested_by  TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX snapshot_requests_case ON snapshot_requests (case_id);

-- The episodes of a case, for its pictures.
CREATE INDEX case_alarms_case ON case_alarms (case_id);
