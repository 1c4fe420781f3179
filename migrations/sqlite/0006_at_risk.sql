-- The at-risk alert's state (see the PostgreSQL migration of the same
-- number).
ALTER TABLE breach_states ADD COLUMN at_risk INTEGER NOT NULL DEFAULT 0;
ALTER TABLE breach_states ADD COLUMN risk_transitions INTEGER NOT NULL DEFAULT 0;
