-- fumegrid aggregator store, schema version 6: citizens' contact details, private.
--
-- The contact details sent with an Open311 request (email, phone, name, account and device
-- ids) are personal information: they are kept here, one row per case, and never in the
-- append-only event log that every viewer reads. Only operators and the reporter who filed
-- the case see them; the row is deleted on an operator's request and, by the timer loop,
-- `[cases] contact_retention_days` after the case was closed or rejected. The store runs with
-- `PRAGMA secure_delete` and checkpoints its WAL after an erasure, so the bytes leave the file.
--
-- The upgrade also moves the contact details out of the `reported` events of existing Open311
-- requests (older versions wrote them into the note): done in code
-- (`cases_sql::move_contacts_out_of_events`), in the same transaction as this file.

CREATE TABLE case_contacts (
    case_id     TEXT PRIMARY KEY,
    email       TEXT,
    phone       TEXT,
    name        TEXT,
    account_id  TEXT,
    device_id   TEXT,
    created_ms  INTEGER NOT NULL
) WITHOUT ROWID;
