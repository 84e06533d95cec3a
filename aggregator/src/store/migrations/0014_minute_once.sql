-- fumegrid aggregator store, schema version 14: a minute is stored once (issue 14 item 4).
--
-- Until version 13 a minute reported as one 60-s period was stored twice: its `periods` row and
-- a 1-minute `rollups` row with the same numbers. From 14 on the 1-minute level of such a minute
-- is read from its period (`store/sqlite.rs` `minute_buckets`); `rollups` keeps 1-minute rows
-- only for minutes made of raw polls or of other periods (10-s, 30-s, several ones). This drops
-- the copies already stored: about 72 bytes of the ~133 a stored metric-minute cost.
-- (`auto_vacuum = INCREMENTAL` cannot be switched inside a transaction: see `sweep_sql.rs`.)

DELETE FROM rollups
WHERE res_s = 60
  AND EXISTS (SELECT 1 FROM periods p
              WHERE p.series_id = rollups.series_id AND p.start_ms = rollups.start_ms
                AND p.period_s = 60)
  AND (SELECT count(*) FROM periods p
       WHERE p.series_id = rollups.series_id AND p.start_ms >= rollups.start_ms
         AND p.start_ms < rollups.start_ms + 60000 AND p.period_s <= 60) = 1;
