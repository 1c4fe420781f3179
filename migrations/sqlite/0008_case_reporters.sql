-- Who reported each of a case's facts (see the PostgreSQL migration of the
-- same number).
ALTER TABLE cases ADD COLUMN received_by TEXT;
ALTER TABLE cases ADD COLUMN closing_by TEXT;
ALTER TABLE cases ADD COLUMN rating_by TEXT;
ALTER TABLE cases ADD COLUMN late BOOLEAN;
