-- Event ids already applied are kept as the first 16 bytes of the SHA-256 of
-- the id (its UTF-8 bytes), as a `uuid`: a fixed-width key whose index is
-- about a third the size of the text one and compares with one memcmp. The
-- replay inserts one per event, so this index is the largest single cost of
-- rebuilding projections (docs/BENCHMARKS.md). Two different ids would have to
-- share 128 bits of SHA-256 to be taken for one another.
CREATE TABLE seen_event_digests (
    digest UUID PRIMARY KEY
);
INSERT INTO seen_event_digests (digest)
SELECT DISTINCT encode(substring(sha256(convert_to(event_id, 'UTF8')) FROM 1 FOR 16), 'hex')::uuid
FROM seen_events;
DROP TABLE seen_events;
