-- Threshold-breach alerts: per (commune, indicator, window) state, and an
-- outbox written in the same transaction as the counters that caused them.

-- Which partition a commune's events arrive on, so that the owner of that
-- partition re-evaluates the commune when the clock moves.
CREATE TABLE commune_partitions (
    commune   TEXT    PRIMARY KEY,
    partition INTEGER NOT NULL
);

CREATE TABLE breach_states (
    commune     TEXT    NOT NULL,
    indicator   TEXT    NOT NULL,
    "window"    TEXT    NOT NULL,
    in_breach   BOOLEAN NOT NULL,
    transitions BIGINT  NOT NULL,
    PRIMARY KEY (commune, indicator, "window")
);

CREATE TABLE alert_outbox (
    seq          BIGSERIAL   PRIMARY KEY,
    alert_id     TEXT        NOT NULL UNIQUE,
    commune      TEXT        NOT NULL,
    payload      TEXT        NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX alert_outbox_unpublished ON alert_outbox (seq) WHERE published_at IS NULL;

-- One row per alert and webhook URL: delivery survives restarts.
CREATE TABLE webhook_deliveries (
    alert_seq     BIGINT      NOT NULL REFERENCES alert_outbox (seq),
    url           TEXT        NOT NULL,
    attempts      INTEGER     NOT NULL DEFAULT 0,
    next_attempt  TIMESTAMPTZ NOT NULL DEFAULT now(),
    delivered_at  TIMESTAMPTZ,
    last_error    TEXT,
    PRIMARY KEY (alert_seq, url)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt) WHERE delivered_at IS NULL;
