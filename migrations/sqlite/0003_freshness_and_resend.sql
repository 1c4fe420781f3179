ALTER TABLE partition_offsets ADD COLUMN event_time TEXT;
ALTER TABLE dead_letters ADD COLUMN resent_at TEXT;
