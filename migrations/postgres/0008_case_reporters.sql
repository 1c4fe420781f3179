-- Who reported each of a case's facts, where that is not the unit the case
-- is kept under (a case received by a unit that then merged, resolved by its
-- successor: docs/UNITS.md). NULL: the case's own unit, as for every case
-- stored before this migration.
ALTER TABLE cases ADD COLUMN received_by TEXT;
ALTER TABLE cases ADD COLUMN closing_by TEXT;
ALTER TABLE cases ADD COLUMN rating_by TEXT;
