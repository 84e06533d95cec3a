-- fumegrid aggregator store, schema version 11: every capture of a picture's bytes (issue 13,
-- store/evidence.rs).
--
-- A picture is content-addressed: one row in `pictures` per SHA-256, with the metadata of the
-- first capture that brought those bytes. Two captures can bring the same bytes (two cameras on
-- one shared stream, a still scene encoded the same way twice, a camera that serves a cached
-- snapshot): each later capture is recorded here, so that its alarm episode or snapshot request
-- links the picture to its case as the first capture's does. Rows go with their picture.

CREATE TABLE picture_captures (
    sha256       TEXT NOT NULL,
    gateway      TEXT NOT NULL,
    camera       TEXT NOT NULL,
    captured_ms  INTEGER NOT NULL,
    trigger      TEXT NOT NULL,
    alarm        TEXT,                    -- the wire Alarm id of its episode
    request      TEXT,                    -- the snapshot request it answers
    received_ms  INTEGER NOT NULL,
    PRIMARY KEY (sha256, gateway, camera, captured_ms)
) WITHOUT ROWID;

CREATE INDEX picture_captures_episode ON picture_captures (gateway, alarm) WHERE alarm IS NOT NULL;
CREATE INDEX picture_captures_request ON picture_captures (request) WHERE request IS NOT NULL;
