-- The latest event time each partition's projections reflect, and when a
-- dead letter was sent through again.
ALTER TABLE partition_offsets ADD COLUMN event_time TIMESTAMPTZ;
ALTER TABLE dead_letters ADD COLUMN resent_at TIMESTAMPTZ;
