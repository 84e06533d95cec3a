-- fumegrid aggregator store, schema version 5: which case each alarm episode belongs to.
--
-- One alarm episode, at most one case, ever (docs/cases.md): a later transition of an episode
-- joins the case it is linked to, whatever that case's state, so the case is found by episode
-- and not only among the open cases of (gateway, device, alarm kind). Written by every save of
-- a case (the episodes in its `alarms`); filled here from the cases already stored.

CREATE TABLE case_alarms (
    gateway  TEXT NOT NULL,
    episode  TEXT NOT NULL,   -- the wire Alarm id
    case_id  TEXT NOT NULL,
    PRIMARY KEY (gateway, episode)
) WITHOUT ROWID;

-- Oldest case first: if an old store has an episode in two cases, the first one keeps it.
INSERT OR IGNORE INTO case_alarms (gateway, episode, case_id)
    SELECT json_extract(a.value, '$.gateway'), json_extract(a.value, '$.id'), c.id
    FROM cases c, json_each(c.json, '$.alarms') a
    ORDER BY c.reported_ms, c.id;
