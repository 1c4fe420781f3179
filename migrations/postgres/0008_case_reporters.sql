-- Who reported each of a case's facts, where that is not the unit the case
-- is kept under (a case received by a unit that then merged, resolved by its
-- successor: docs/UNITS.md). NULL: the case's own unit, as for every case
-- stored before this migration.
ALTER TABLE cases ADD COLUMN received_by TEXT;
ALTER TABLE cases ADD COLUMN closing_by TEXT;
ALTER TABLE cases ADD COLUMN rating_by TEXT;

-- Whether an open case counts late, as the batch that last wrote it counted
-- it (the pipeline's clock of its partition). NULL for a case stored before
-- this migration: derived from its partition's clock when next loaded, as it
-- was counted.
ALTER TABLE cases ADD COLUMN late BOOLEAN;
