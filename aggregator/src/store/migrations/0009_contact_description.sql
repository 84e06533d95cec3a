-- fumegrid aggregator store, schema version 9: a citizen's description as sent, private.
--
-- A citizen may write a phone number, an e-mail address, an ID number or their name into an
-- Open311 request's description. The case title and the note of the `reported` event (the
-- append-only timeline, served publicly by Open311) get the description with that personal
-- data redacted (`cases::privacy::redact`); the text as sent is kept only here, with the other
-- contact details: shown to operators and the reporter who filed it, erased with them.
--
-- The upgrade also redacts the descriptions (and titles) of existing requests and moves their
-- original text here: done in code (`cases_sql::redact_open311_descriptions`), in the same
-- transaction as this file.

ALTER TABLE case_contacts ADD COLUMN description TEXT;
