-- The same as migrations/postgres/0002_alerts.sql, for SQLite.

CREATE TABLE commune_partitions (
    commune   TEXT    PRIMARY KEY,
    partition INTEGER NOT NULL
);

CREATE TABLE breach_states (
    commune     TEXT    NOT NULL,
    indicator   TEXT    NOT NULL,
    "window"    TEXT    NOT NULL,
    in_breach   INTEGER NOT NULL,
    transitions INTEGER NOT NULL,
    PRIMARY KEY (commune, indicator, "window")
);

CREATE TABLE alert_outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id     TEXT    NOT NULL UNIQUE,
    commune      TEXT    NOT NULL,
    payload      TEXT    NOT NULL,
    created_at   TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    published_at TEXT
);
CREATE INDEX alert_outbox_unpublished ON alert_outbox (seq) WHERE published_at IS NULL;

CREATE TABLE webhook_deliveries (
    alert_seq     INTEGER NOT NULL REFERENCES alert_outbox (seq),
    url           TEXT    NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_attempt  TEXT    NOT NULL DEFAULT CURRENT_TIMESTAMP,
    delivered_at  TEXT,
    last_error    TEXT,
    PRIMARY KEY (alert_seq, url)
);
