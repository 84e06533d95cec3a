-- fumegrid aggregator store, schema version 12: rollups (issue 14, DESIGN.md §13).
--
-- Per series and clock-aligned bucket of 60, 600, 3600 or 86400 s: the sum and count of the
-- valid values, the polls, min, max, the newest valid value and its time, and how many of the
-- bucket's expected sub-periods were valid (`store/rollup.rs` says which source feeds a bucket
-- so that nothing counts twice, and how validity is carried up). Kept inside ingest's commit:
-- every bucket the commit touched is recomputed from what lies under it. The migration's data
-- step computes them for the readings already stored.

CREATE TABLE rollups (
    series_id  INTEGER NOT NULL REFERENCES series (id),
    res_s      INTEGER NOT NULL,    -- 60 | 600 | 3600 | 86400
    start_ms   INTEGER NOT NULL,    -- a multiple of res_s × 1000 (UTC)
    sum        REAL NOT NULL,       -- of the valid values
    count      INTEGER NOT NULL,    -- valid values
    polls      INTEGER NOT NULL,
    min        REAL,
    max        REAL,
    last_ts_ms INTEGER,
    last       REAL,
    valid_subs INTEGER NOT NULL,    -- sub-periods present and valid
    expected   INTEGER NOT NULL,    -- sub-periods a full bucket has
    PRIMARY KEY (series_id, res_s, start_ms)
) WITHOUT ROWID;
