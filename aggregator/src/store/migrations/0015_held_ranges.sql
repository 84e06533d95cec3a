-- fumegrid aggregator store, schema version 15: dedupe as a watermark plus a small window
-- (issue 14 item 4, `store/dedupe.rs`).
--
-- Until 14, `items` kept a row for every item ever committed. Now what a stream holds is a set
-- of seq ranges: the first one ends at the stream's floor (every seq up to it is held), the
-- others are runs that arrived out of order above it, merged as the holes between them fill; a
-- hole that never fills (seqs a full outbox dropped) costs one range. `items` keeps only the
-- content digest of the last 4096 seqs below each stream's highest, for the conflict check.

CREATE TABLE stream_ranges (
    stream_id INTEGER NOT NULL REFERENCES streams (id),
    first_seq INTEGER NOT NULL,
    last_seq  INTEGER NOT NULL,     -- inclusive
    PRIMARY KEY (stream_id, first_seq)
) WITHOUT ROWID;

-- The runs of consecutive seqs of each stream ("gaps and islands").
INSERT INTO stream_ranges (stream_id, first_seq, last_seq)
SELECT stream_id, min(seq), max(seq)
FROM (SELECT stream_id, seq, seq - row_number() OVER (PARTITION BY stream_id ORDER BY seq) AS run
      FROM items)
GROUP BY stream_id, run;

DELETE FROM items
WHERE seq <= (SELECT max(r.last_seq) FROM stream_ranges r WHERE r.stream_id = items.stream_id) - 4096;

-- For people and tools: what each gateway stream holds.
CREATE VIEW stream_held AS
SELECT s.gateway, s.stream, r.first_seq, r.last_seq, r.last_seq - r.first_seq + 1 AS seqs
FROM stream_ranges r
JOIN streams s ON s.id = r.stream_id;
