-- Whether a partition's last batch was evaluated for breaches (see the
-- PostgreSQL migration of the same number).
ALTER TABLE partition_offsets ADD COLUMN caught_up BOOLEAN NOT NULL DEFAULT TRUE;
