-- The ids applied to a case or document are kept in its row (see the
-- PostgreSQL migration of the same number); rows stored before keep
-- `older_ids`: their earlier ids are in `seen_events`, which stays, read
-- only.
ALTER TABLE cases ADD COLUMN applied BLOB;
ALTER TABLE cases ADD COLUMN older_ids BOOLEAN NOT NULL DEFAULT 0;
UPDATE cases SET older_ids = 1;
ALTER TABLE documents ADD COLUMN applied BLOB;
ALTER TABLE documents ADD COLUMN older_ids BOOLEAN NOT NULL DEFAULT 0;
UPDATE documents SET older_ids = 1;
