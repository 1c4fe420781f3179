-- Projections of the case-event stream, and the consumer's own position in
-- it. Everything a batch changes is written in one transaction.

-- Where each partition's owner has got to. `generation` fences a member that
-- lost the partition: every batch commit checks it.
CREATE TABLE partition_offsets (
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    next_offset BIGINT,
    generation  BIGINT      NOT NULL,
    clock       TIMESTAMPTZ,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

-- Per commune and local day (Asia/Ho_Chi_Minh): every indicator is a ratio
-- of two of these columns, and every window a sum of days.
CREATE TABLE day_counters (
    commune             TEXT   NOT NULL,
    day                 DATE   NOT NULL,
    received            BIGINT NOT NULL DEFAULT 0,
    received_online     BIGINT NOT NULL DEFAULT 0,
    received_electronic BIGINT NOT NULL DEFAULT 0,
    due                 BIGINT NOT NULL DEFAULT 0,
    on_time             BIGINT NOT NULL DEFAULT 0,
    ratings             BIGINT NOT NULL DEFAULT 0,
    satisfied           BIGINT NOT NULL DEFAULT 0,
    signatures          BIGINT NOT NULL DEFAULT 0,
    digital             BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (commune, day)
);

-- The winning facts of each case (see src/domain/fold.rs).
CREATE TABLE cases (
    commune             TEXT     NOT NULL,
    case_id             TEXT     NOT NULL,
    partition           INTEGER  NOT NULL,
    received_at         TIMESTAMPTZ,
    received_channel    SMALLINT,
    received_level      SMALLINT,
    received_electronic BOOLEAN,
    received_digitized  BOOLEAN,
    received_due        DATE,
    closing_at          TIMESTAMPTZ,
    closing_kind        SMALLINT,
    closing_due         DATE,
    closing_outcome     SMALLINT,
    rating_at           TIMESTAMPTZ,
    rating              SMALLINT,
    rating_score        SMALLINT,
    -- Due date of a case still open: what the clock looks for.
    open_due            DATE,
    PRIMARY KEY (commune, case_id)
);
CREATE INDEX cases_open_due ON cases (partition, open_due) WHERE open_due IS NOT NULL;

CREATE TABLE documents (
    commune     TEXT        NOT NULL,
    document_id TEXT        NOT NULL,
    signed_at   TIMESTAMPTZ NOT NULL,
    digital     BOOLEAN     NOT NULL,
    PRIMARY KEY (commune, document_id)
);

-- Event ids already applied: a repeat changes nothing.
CREATE TABLE seen_events (
    event_id TEXT PRIMARY KEY
);

-- Records that are not valid version-1 events, kept whole.
CREATE TABLE dead_letters (
    id          BIGSERIAL   PRIMARY KEY,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL,
    "offset"    BIGINT      NOT NULL,
    record_key  BYTEA,
    value       BYTEA,
    reason_code TEXT        NOT NULL,
    reason      TEXT        NOT NULL,
    kept_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (topic, partition, "offset")
);
