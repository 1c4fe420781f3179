-- The at-risk alert (indicator.at_risk / indicator.at_risk_cleared): whether
-- a (commune, indicator, window) is at risk, and how many at-risk
-- transitions it has made (they number the alerts' ids, as `transitions`
-- numbers the breach alerts'). Existing rows start not at risk: the first
-- evaluation announces the communes at risk now.
ALTER TABLE breach_states
    ADD COLUMN at_risk          BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN risk_transitions BIGINT  NOT NULL DEFAULT 0;
