-- fumegrid aggregator store, schema version 5: units of custom metrics.
--
-- A profile may map a vendor extra with no canonical name as an `x_` metric with a declared
-- unit; each such reading carries its unit on the wire. The series keeps the latest unit seen
-- (NULL for canonical metrics, whose name carries the unit).

ALTER TABLE series ADD COLUMN unit TEXT;
