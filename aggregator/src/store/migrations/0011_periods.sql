-- fumegrid aggregator store, schema version 11: period aggregates (issue 14, DESIGN.md §13).
--
-- A gateway on the `period` report strategy sends one item per device and clock-aligned period
-- carrying each metric's polls, valid count, average, minimum, maximum and last valid value and
-- a validity flag (`Body::Period`, docs/wire.md "Period"). Each metric becomes one row here,
-- under the same interned series as its raw readings. The key is the series, the start and the
-- length: two items for the same series and period (a gateway restarted mid-period) are merged
-- into one row (polls and counts added, the average weighted by count, min/max folded, the
-- last kept from the row stored first, valid if either was).

CREATE TABLE periods (
    series_id INTEGER NOT NULL REFERENCES series (id),
    start_ms  INTEGER NOT NULL,      -- a multiple of period_s × 1000 (UTC)
    period_s  INTEGER NOT NULL,      -- 1 … 86400
    polls     INTEGER NOT NULL,
    count     INTEGER NOT NULL,      -- valid polls, ≤ polls
    avg       REAL,                  -- the four aggregates: NULL exactly when count = 0
    min       REAL,
    max       REAL,
    last      REAL,
    valid     INTEGER NOT NULL,      -- 0/1: enough valid polls (HJ 212 validity flag)
    PRIMARY KEY (series_id, start_ms, period_s)
) WITHOUT ROWID;

CREATE VIEW periods_flat AS
SELECT s.gateway, s.device, s.metric, p.start_ms, p.period_s, p.polls, p.count, p.avg, p.min,
       p.max, p.last, p.valid
FROM periods p
JOIN series s ON s.id = p.series_id;
