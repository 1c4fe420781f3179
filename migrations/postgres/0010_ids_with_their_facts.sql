-- A repeated event id is recognised within its case, or its document for a
-- document.signed (DOMAIN.md, event contract): the ids applied to a case or
-- document are kept in its row (`applied`: 8 bytes of SHA-256 per id), and
-- the table of every id applied stops growing. It was a third of the
-- database's time in a replay (docs/BENCHMARKS.md).
--
-- Rows stored before this migration keep `older_ids`: the ids applied to
-- them until now are in `seen_event_digests`, which stays, read only, and is
-- looked up for the events of those rows alone. Both statements below only
-- change the catalogue: existing rows read the first default, new rows get
-- the second.
ALTER TABLE cases ADD COLUMN applied BYTEA;
ALTER TABLE cases ADD COLUMN older_ids BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE cases ALTER COLUMN older_ids SET DEFAULT FALSE;
ALTER TABLE documents ADD COLUMN applied BYTEA;
ALTER TABLE documents ADD COLUMN older_ids BOOLEAN NOT NULL DEFAULT TRUE;
ALTER TABLE documents ALTER COLUMN older_ids SET DEFAULT FALSE;
