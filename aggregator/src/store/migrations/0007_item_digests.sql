-- fumegrid aggregator store, schema version 5: a digest of each item's content with its dedupe
-- row, and the conflicts it reveals.
--
-- A gateway whose outbox came back older than what it had delivered (a restored copy, a torn
-- file) could send new items under seqs that are already stored. Dedupe alone would take them
-- for resends, ack them and drop them. With the digest, a duplicate whose content differs is a
-- conflict: kept here (whole body, as received), counted and logged, then acked — its content
-- is stored, so the gateway may delete it. Rows stored before version 5 have no digest and
-- cannot be compared.

ALTER TABLE items ADD COLUMN digest INTEGER;   -- first 8 bytes of SHA-256 of the body's JSON

CREATE TABLE conflicts (
    stream_id   INTEGER NOT NULL REFERENCES streams (id),
    seq         INTEGER NOT NULL,
    digest      INTEGER NOT NULL,
    body        TEXT NOT NULL,        -- the conflicting item's body as JSON
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (stream_id, seq, digest)
) WITHOUT ROWID;
