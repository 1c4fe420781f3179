-- Whether a partition's last batch was evaluated for breaches (not deferred
-- while a backlog or history was read). A unit fed by the codes of several
-- partitions (docs/UNITS.md) is evaluated only when every one of them is
-- caught up, so that its alerts describe the caught-up state.
ALTER TABLE partition_offsets ADD COLUMN caught_up BOOLEAN NOT NULL DEFAULT TRUE;
