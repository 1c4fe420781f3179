-- The procedure (MaTTHC) of a case's winning receipt (see the PostgreSQL
-- migration of the same number).
ALTER TABLE cases ADD COLUMN received_procedure TEXT;
