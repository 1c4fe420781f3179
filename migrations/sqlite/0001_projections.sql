-- The same schema as migrations/postgres, for the embedded SQLite store.
-- Dates are TEXT (YYYY-MM-DD, which sorts as dates do); times are TEXT.

CREATE TABLE partition_offsets (
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    next_offset INTEGER,
    generation  INTEGER NOT NULL,
    clock       TEXT,
    updated_at  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE day_counters (
    commune             TEXT    NOT NULL,
    day                 TEXT    NOT NULL,
    received            INTEGER NOT NULL DEFAULT 0,
    received_online     INTEGER NOT NULL DEFAULT 0,
    received_electronic INTEGER NOT NULL DEFAULT 0,
    due                 INTEGER NOT NULL DEFAULT 0,
    on_time             INTEGER NOT NULL DEFAULT 0,
    ratings             INTEGER NOT NULL DEFAULT 0,
    satisfied           INTEGER NOT NULL DEFAULT 0,
    signatures          INTEGER NOT NULL DEFAULT 0,
    digital             INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (commune, day)
);

CREATE TABLE cases (
    commune             TEXT    NOT NULL,
    case_id             TEXT    NOT NULL,
    partition           INTEGER NOT NULL,
    received_at         TEXT,
    received_channel    INTEGER,
    received_level      INTEGER,
    received_electronic INTEGER,
    received_digitized  INTEGER,
    received_due        TEXT,
    closing_at          TEXT,
    closing_kind        INTEGER,
    closing_due         TEXT,
    closing_outcome     INTEGER,
    rating_at           TEXT,
    rating              INTEGER,
    rating_score        INTEGER,
    open_due            TEXT,
    PRIMARY KEY (commune, case_id)
);
CREATE INDEX cases_open_due ON cases (partition, open_due) WHERE open_due IS NOT NULL;

CREATE TABLE documents (
    commune     TEXT    NOT NULL,
    document_id TEXT    NOT NULL,
    signed_at   TEXT    NOT NULL,
    digital     INTEGER NOT NULL,
    PRIMARY KEY (commune, document_id)
);

CREATE TABLE seen_events (
    event_id TEXT PRIMARY KEY
);

CREATE TABLE dead_letters (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    topic       TEXT    NOT NULL,
    partition   INTEGER NOT NULL,
    "offset"    INTEGER NOT NULL,
    record_key  BLOB,
    value       BLOB,
    reason_code TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    kept_at     TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    UNIQUE (topic, partition, "offset")
);
