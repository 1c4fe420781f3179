//! PostgreSQL store. Batches are written inside one transaction whose first
//! statement checks the owner generation of every partition written: rows
//! new to the store (event ids, cases, documents) with `COPY`, updates with
//! one statement per table binding whole columns as arrays (`UNNEST`).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool, Postgres, Transaction};
use tracing::{info, instrument};
use uuid::Uuid;

use super::codec::{
    encode_document, evaluate_alerts_in, overdue_range, CaseRow, CounterRow, LoadedRows,
    CASE_COLUMNS,
};
use super::copy::CopyRows;
use super::{stored_already, BatchKeys, Claim, PartitionWrite, StoreError};
use crate::domain::{Alert, CaseKey, CaseState, DayCounters, Evaluator, Fold, Units};

/// The PostgreSQL projection store for one topic.
///
/// The projections live in one schema, named in `cchc_control.projection`
/// (`public` until the first rebuild). `cchc rebuild` fills a fresh schema
/// from the topic's beginning and then switches that row over; a store that
/// *follows* the switch (the running pipeline's) then opens a pool on the new
/// schema and serves from it, without a restart.
#[derive(Debug, Clone)]
pub struct PgStore {
    shared: Arc<Shared>,
    topic: String,
}

#[derive(Debug)]
struct Shared {
    /// Connection options without a search path.
    options: PgConnectOptions,
    max_connections: u32,
    /// Whether [`PgStore::refresh_active`] moves this store to the active
    /// schema (the pipeline's store), or it stays on its own (a rebuild's).
    follow: bool,
    /// The schema served, and a pool whose search path is that schema.
    current: RwLock<(String, PgPool)>,
    /// One switch at a time.
    switching: tokio::sync::Mutex<()>,
}

/// Where the projection control row lives; not itself rebuilt.
const CONTROL_SCHEMA: &str = "cchc_control";
/// The prefix of the schemas `cchc rebuild` creates: `cchc_gen_2`, `cchc_gen_3`, …
pub const GENERATION_PREFIX: &str = "cchc_gen_";

/// A schema for a rebuild, as prepared by [`PgStore::prepare_rebuild`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildTarget {
    /// The schema being filled.
    pub schema: String,
    /// The schema served now, to be replaced.
    pub active: String,
    /// An interrupted rebuild into `schema` is continued from its stored offsets.
    pub resumed: bool,
}

/// What a switch-over did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwitchReport {
    pub from: String,
    pub to: String,
    /// Alert history, breach states and webhook deliveries carried over.
    pub alerts: i64,
    pub breach_states: i64,
    pub webhook_deliveries: i64,
}

impl PgStore {
    /// Connects to the active projection schema, bringing it up to date.
    /// The store follows later switches (see [`PgStore::refresh_active`]).
    pub async fn connect(url: &str, max_connections: u32, topic: &str) -> Result<Self, StoreError> {
        let options = connect_options(url)?;
        let mut conn = options.connect().await?;
        let active = ensure_control(&mut conn).await?;
        drop(conn);
        Self::open(options, max_connections, topic, active, true).await
    }

    async fn open(
        options: PgConnectOptions,
        max_connections: u32,
        topic: &str,
        schema: String,
        follow: bool,
    ) -> Result<Self, StoreError> {
        let pool = schema_pool(&options, max_connections, &schema).await?;
        Ok(PgStore {
            shared: Arc::new(Shared {
                options,
                max_connections,
                follow,
                current: RwLock::new((schema, pool)),
                switching: tokio::sync::Mutex::new(()),
            }),
            topic: topic.to_string(),
        })
    }

    /// The pool of the schema served now.
    pub fn pool(&self) -> PgPool {
        self.shared.current.read().expect("pool lock").1.clone()
    }

    /// The schema served now.
    pub fn schema(&self) -> String {
        self.shared.current.read().expect("pool lock").0.clone()
    }

    /// Moves a following store to the schema named active in the control
    /// row, if that changed: later statements run there, statements running
    /// finish where they started. Returns the new schema after a move.
    pub async fn refresh_active(&self) -> Result<Option<String>, StoreError> {
        if !self.shared.follow {
            return Ok(None);
        }
        let _one = self.shared.switching.lock().await;
        let active: String = sqlx::query_scalar(&format!(
            "SELECT active_schema FROM {CONTROL_SCHEMA}.projection"
        ))
        .fetch_one(&self.pool())
        .await?;
        if active == self.schema() {
            return Ok(None);
        }
        let pool = schema_pool(&self.shared.options, self.shared.max_connections, &active).await?;
        let old = std::mem::replace(
            &mut *self.shared.current.write().expect("pool lock"),
            (active.clone(), pool),
        );
        tokio::spawn(async move { old.1.close().await });
        info!(schema = %active, previous = %old.0, "projections switched: now served from the rebuilt schema");
        Ok(Some(active))
    }

    /// Prepares the schema a rebuild fills: the one an interrupted rebuild
    /// left (unless `restart`, which drops it), or a new `cchc_gen_N`. Returns
    /// a store on that schema, which does not follow switches.
    pub async fn prepare_rebuild(
        url: &str,
        max_connections: u32,
        topic: &str,
        restart: bool,
    ) -> Result<(PgStore, RebuildTarget), StoreError> {
        let options = connect_options(url)?;
        let mut conn = options.connect().await?;
        ensure_control(&mut conn).await?;
        let mut tx = conn.begin().await?;
        let (active, building): (String, Option<String>) = sqlx::query_as(&format!(
            "SELECT active_schema, building_schema FROM {CONTROL_SCHEMA}.projection FOR UPDATE"
        ))
        .fetch_one(&mut *tx)
        .await?;
        let resume = match building {
            Some(b) if !restart => Some(b),
            Some(b) => {
                sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(&b)?))
                    .execute(&mut *tx)
                    .await?;
                None
            }
            None => None,
        };
        let (schema, resumed) = match resume {
            Some(b) => (b, true),
            None => {
                let existing: Vec<String> = sqlx::query_scalar(
                    "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname, $1)",
                )
                .bind(GENERATION_PREFIX)
                .fetch_all(&mut *tx)
                .await?;
                let next = existing
                    .iter()
                    .filter_map(|n| n.strip_prefix(GENERATION_PREFIX)?.parse::<u32>().ok())
                    .max()
                    .unwrap_or(1)
                    + 1;
                let schema = format!("{GENERATION_PREFIX}{next}");
                sqlx::query(&format!("CREATE SCHEMA {}", ident(&schema)?))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(&format!(
                    "UPDATE {CONTROL_SCHEMA}.projection SET building_schema = $1, building_started_at = now()"
                ))
                .bind(&schema)
                .execute(&mut *tx)
                .await?;
                (schema, false)
            }
        };
        tx.commit().await?;
        let store = Self::open(options, max_connections, topic, schema.clone(), false).await?;
        Ok((
            store,
            RebuildTarget {
                schema,
                active,
                resumed,
            },
        ))
    }

    /// Makes this (rebuilt) store's schema the active one, in one
    /// transaction: the members still writing to the old schema are fenced
    /// (their next commit is refused, and they follow the switch), and
    /// what subscribers have been told is carried over (alert outbox, breach
    /// states, webhook deliveries, dead letters' resend marks), so that the
    /// first evaluation on the new schema emits exactly the differences.
    /// Readers are never blocked; writers to the old schema wait for it.
    pub async fn switch_over(&self, expected_active: &str) -> Result<SwitchReport, StoreError> {
        let to = self.schema();
        let new = ident(&to)?;
        let old = ident(expected_active)?;
        let mut tx = self.pool().begin().await?;
        let (active, building): (String, Option<String>) = sqlx::query_as(&format!(
            "SELECT active_schema, building_schema FROM {CONTROL_SCHEMA}.projection FOR UPDATE"
        ))
        .fetch_one(&mut *tx)
        .await?;
        if active != expected_active || building.as_deref() != Some(to.as_str()) {
            return Err(StoreError::Corrupt(format!(
                "the projections changed during the rebuild (active schema {active}, \
                 building {building:?}; expected {expected_active} and {to}): run the rebuild again"
            )));
        }
        // In the order a batch commit takes them, so that the two wait for
        // each other instead of deadlocking.
        sqlx::query(&format!(
            "LOCK TABLE {old}.partition_offsets, {old}.day_counters, {old}.breach_states,
                        {old}.alert_outbox, {old}.webhook_deliveries, {old}.dead_letters
             IN EXCLUSIVE MODE"
        ))
        .execute(&mut *tx)
        .await?;
        // Every generation of the new schema above every one of the old, so
        // that no claim made in one can pass for a claim made in the other;
        // partitions the rebuild never claimed start from their beginning.
        let statements = [
            format!("UPDATE {old}.partition_offsets SET generation = generation + 1"),
            format!(
                "UPDATE {new}.partition_offsets SET generation = generation + 1 +
                   (SELECT COALESCE(max(generation), 0) FROM {old}.partition_offsets)"
            ),
            format!(
                "INSERT INTO {new}.partition_offsets (topic, partition, next_offset, generation)
                 SELECT topic, partition, NULL,
                        (SELECT COALESCE(max(generation), 0) + 1 FROM {old}.partition_offsets)
                 FROM {old}.partition_offsets
                 ON CONFLICT (topic, partition) DO NOTHING"
            ),
            format!("DELETE FROM {new}.webhook_deliveries"),
            format!("DELETE FROM {new}.alert_outbox"),
            format!("DELETE FROM {new}.breach_states"),
        ];
        for sql in &statements {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        // What subscribers have been told, in foreign-key order.
        let mut carried = Vec::new();
        for (table, columns) in [
            (
                "breach_states",
                "commune, indicator, \"window\", in_breach, transitions",
            ),
            (
                "alert_outbox",
                "seq, alert_id, commune, payload, created_at, published_at",
            ),
            (
                "webhook_deliveries",
                "alert_seq, url, attempts, next_attempt, delivered_at, last_error",
            ),
        ] {
            let rows = sqlx::query(&format!(
                "INSERT INTO {new}.{table} ({columns}) SELECT {columns} FROM {old}.{table}"
            ))
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
            carried.push(rows);
        }
        let [breach_states, alerts, webhook_deliveries] = carried[..] else {
            unreachable!("three tables")
        };
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{new}.alert_outbox', 'seq'),
                           COALESCE((SELECT max(seq) FROM {new}.alert_outbox), 0) + 1, false)"
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE {new}.dead_letters d SET resent_at = o.resent_at FROM {old}.dead_letters o
             WHERE o.resent_at IS NOT NULL AND o.topic = d.topic AND o.partition = d.partition
               AND o.\"offset\" = d.\"offset\""
        ))
        .execute(&mut *tx)
        .await?;
        sqlx::query(&format!(
            "UPDATE {CONTROL_SCHEMA}.projection SET active_schema = $1, previous_schema = $2,
                    building_schema = NULL, building_started_at = NULL, switched_at = now()"
        ))
        .bind(&to)
        .bind(expected_active)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(SwitchReport {
            from: expected_active.to_string(),
            to,
            alerts,
            breach_states,
            webhook_deliveries,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Takes ownership of a partition: bumps its generation, so that any
    /// earlier owner's commits are refused from now on, and returns where
    /// the partition's projections stand.
    #[instrument(name = "store.claim", skip(self), err)]
    pub async fn claim(&self, partition: i32) -> Result<Claim, StoreError> {
        let (generation, next_offset, clock): (i64, Option<i64>, Option<DateTime<Utc>>) = sqlx::query_as(
            "INSERT INTO partition_offsets (topic, partition, next_offset, generation) VALUES ($1, $2, NULL, 1)
             ON CONFLICT (topic, partition) DO UPDATE
               SET generation = partition_offsets.generation + 1, updated_at = now()
             RETURNING generation, next_offset, clock",
        )
        .bind(&self.topic)
        .bind(partition)
        .fetch_one(&self.pool())
        .await?;
        Ok(Claim {
            generation,
            next_offset,
            clock,
            reevaluate: true,
        })
    }

    /// The stored next offset of every partition of the topic.
    pub async fn offsets(&self) -> Result<Vec<(i32, Option<i64>)>, StoreError> {
        Ok(sqlx::query_as("SELECT partition, next_offset FROM partition_offsets WHERE topic = $1 ORDER BY partition")
            .bind(&self.topic)
            .fetch_all(&self.pool())
            .await?)
    }

    /// A working set for one partition's batch: the stored facts of the
    /// cases and documents the batch names, which of its event ids were
    /// already applied, and the open cases that become overdue when the clock
    /// moves from `claim_clock` to `now`.
    #[instrument(name = "store.load", skip_all, fields(partition, cases = keys.cases.len()), err)]
    pub async fn load(
        &self,
        units: &Units,
        partition: i32,
        claim_clock: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        keys: &BatchKeys<'_>,
    ) -> Result<Fold, StoreError> {
        let BatchKeys {
            cases,
            documents,
            event_ids,
        } = *keys;
        let mut conn = self.pool().acquire().await?;
        let mut rows = LoadedRows::default();
        if !event_ids.is_empty() {
            let digests: Vec<Uuid> = event_ids.iter().map(|id| id_digest(id)).collect();
            let stored: HashSet<Uuid> =
                sqlx::query_scalar("SELECT digest FROM seen_event_digests WHERE digest = ANY($1)")
                    .bind(&digests)
                    .fetch_all(&mut *conn)
                    .await?
                    .into_iter()
                    .collect();
            rows.seen = event_ids
                .iter()
                .zip(&digests)
                .filter(|(_, d)| stored.contains(d))
                .map(|(id, _)| id.clone())
                .collect();
        }
        if !cases.is_empty() {
            let communes: Vec<&str> = cases.iter().map(|k| k.commune.as_str()).collect();
            let ids: Vec<&str> = cases.iter().map(|k| k.case_id.as_str()).collect();
            rows.cases = sqlx::query_as(&format!(
                "SELECT {CASE_COLUMNS} FROM cases
                 WHERE (commune, case_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
            ))
            .bind(&communes)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
        }
        if let Some((from, to)) = overdue_range(claim_clock, now) {
            rows.overdue = sqlx::query_as(&format!(
                "SELECT {CASE_COLUMNS} FROM cases
                 WHERE partition = $1 AND ($2::date IS NULL OR open_due >= $2) AND open_due < $3"
            ))
            .bind(partition)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *conn)
            .await?;
        }
        if !documents.is_empty() {
            let communes: Vec<&str> = documents.iter().map(|k| k.commune.as_str()).collect();
            let ids: Vec<&str> = documents.iter().map(|k| k.document_id.as_str()).collect();
            rows.documents = sqlx::query_as(
                "SELECT commune, document_id, signed_at, digital FROM documents
                 WHERE (commune, document_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
            )
            .bind(&communes)
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
        }
        rows.into_fold(units, claim_clock)
    }

    /// Writes a batch, all partitions in one transaction. Fails with
    /// [`StoreError::Fenced`], writing nothing, if any partition has been
    /// claimed by another owner since.
    #[instrument(name = "store.commit", skip_all, fields(partitions = writes.len()), err(level = "debug"))]
    pub async fn commit(
        &self,
        writes: &[PartitionWrite],
        evaluator: Option<&Evaluator>,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut tx = self.pool().begin().await?;
        for w in writes {
            let updated = sqlx::query(
                "UPDATE partition_offsets SET next_offset = COALESCE($3, next_offset), clock = COALESCE($4, clock),
                        event_time = GREATEST(event_time, $6), updated_at = now()
                 WHERE topic = $1 AND partition = $2 AND generation = $5
                   AND next_offset IS NOT DISTINCT FROM $7 AND clock IS NOT DISTINCT FROM $8",
            )
            .bind(&self.topic)
            .bind(w.partition)
            .bind(w.next_offset)
            .bind(w.clock)
            .bind(w.generation)
            .bind(w.event_time)
            .bind(w.start_offset)
            .bind(w.start_clock)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                let stored = sqlx::query_as(
                    "SELECT generation, next_offset, clock FROM partition_offsets WHERE topic = $1 AND partition = $2",
                )
                .bind(&self.topic)
                .bind(w.partition)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                return Err(super::refusal(w, stored));
            }
        }
        // The ids first: a batch folded without looking them up fails here,
        // before the heavier statements, if one of them was applied already.
        for w in writes {
            if let Err(e) = write_seen(&mut tx, w).await {
                tx.rollback().await?;
                return Err(e);
            }
        }
        for w in writes {
            write_counters(&mut tx, w).await?;
            write_cases(&mut tx, w).await?;
            write_documents(&mut tx, w).await?;
            write_dead_letters(&mut tx, &self.topic, w).await?;
        }
        let alerts = match evaluator {
            Some(evaluator) => evaluate_alerts(&mut tx, evaluator, writes).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        Ok(alerts)
    }

    /// Every stored day counter, by commune and day.
    pub async fn day_counters(&self) -> Result<Vec<(String, NaiveDate, DayCounters)>, StoreError> {
        let rows: Vec<CounterRow> = sqlx::query_as(
            "SELECT commune, day, received, received_online, received_electronic, due, on_time,
                    ratings, satisfied, signatures, digital
             FROM day_counters ORDER BY commune, day",
        )
        .fetch_all(&self.pool())
        .await?;
        Ok(rows.into_iter().map(CounterRow::into_parts).collect())
    }

    /// Dead letters as (partition, offset, reason code), in offset order.
    pub async fn dead_letter_reasons(&self) -> Result<Vec<(i32, i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT partition, \"offset\", reason_code FROM dead_letters WHERE topic = $1 ORDER BY partition, \"offset\"",
        )
        .bind(&self.topic)
        .fetch_all(&self.pool())
        .await?)
    }
}

/// The key an event id is kept under in `seen_event_digests`: the first 16
/// bytes of the SHA-256 of its UTF-8 bytes (migration 0004 computes the same
/// in SQL).
pub fn id_digest(event_id: &str) -> Uuid {
    let hash = Sha256::digest(event_id.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash[..16]);
    Uuid::from_bytes(digest)
}

/// Stores the batch's event ids: a plain `COPY`, in key order (no `ON
/// CONFLICT`, whose speculative insertion costs a second index descent per
/// row). An id stored already is a unique violation, which aborts the
/// transaction: [`StoreError::StoredAlready`].
async fn write_seen(
    tx: &mut Transaction<'_, Postgres>,
    w: &PartitionWrite,
) -> Result<(), StoreError> {
    if w.seen.is_empty() {
        return Ok(());
    }
    let mut digests: Vec<Uuid> = w.seen.iter().map(|id| id_digest(id)).collect();
    digests.sort_unstable();
    let mut rows = CopyRows::with_capacity(digests.len() * 37);
    for d in digests {
        rows.col(d).end_row();
    }
    copy_in(tx, "COPY seen_event_digests (digest) FROM STDIN", rows)
        .await
        .map_err(|e| stored_already(e, w.partition, "an event id"))
}

/// Sends `rows` through `statement` (a `COPY … FROM STDIN` in text format).
async fn copy_in(
    tx: &mut Transaction<'_, Postgres>,
    statement: &str,
    rows: CopyRows,
) -> Result<(), sqlx::Error> {
    let mut copy = tx.copy_in_raw(statement).await?;
    copy.send(rows.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

async fn write_counters(
    tx: &mut Transaction<'_, Postgres>,
    w: &PartitionWrite,
) -> Result<(), StoreError> {
    let deltas: Vec<_> = w.deltas.iter().filter(|(_, c)| !c.is_zero()).collect();
    if deltas.is_empty() {
        return Ok(());
    }
    let col = |f: fn(&DayCounters) -> i64| deltas.iter().map(|(_, c)| f(c)).collect::<Vec<i64>>();
    sqlx::query(
        "INSERT INTO day_counters AS d (commune, day, received, received_online, received_electronic, due, on_time,
                                        ratings, satisfied, signatures, digital)
         SELECT * FROM UNNEST($1::text[], $2::date[], $3::int8[], $4::int8[], $5::int8[], $6::int8[], $7::int8[],
                              $8::int8[], $9::int8[], $10::int8[], $11::int8[])
         ON CONFLICT (commune, day) DO UPDATE SET
            received = d.received + EXCLUDED.received,
            received_online = d.received_online + EXCLUDED.received_online,
            received_electronic = d.received_electronic + EXCLUDED.received_electronic,
            due = d.due + EXCLUDED.due,
            on_time = d.on_time + EXCLUDED.on_time,
            ratings = d.ratings + EXCLUDED.ratings,
            satisfied = d.satisfied + EXCLUDED.satisfied,
            signatures = d.signatures + EXCLUDED.signatures,
            digital = d.digital + EXCLUDED.digital",
    )
    .bind(deltas.iter().map(|((c, _), _)| c.as_str()).collect::<Vec<_>>())
    .bind(deltas.iter().map(|((_, d), _)| *d).collect::<Vec<_>>())
    .bind(col(|c| c.received))
    .bind(col(|c| c.received_online))
    .bind(col(|c| c.received_electronic))
    .bind(col(|c| c.due))
    .bind(col(|c| c.on_time))
    .bind(col(|c| c.ratings))
    .bind(col(|c| c.satisfied))
    .bind(col(|c| c.signatures))
    .bind(col(|c| c.digital))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Cases: the new ones copied in (one stored since the batch was loaded is a
/// unique violation, [`StoreError::StoredAlready`]), those the store had
/// upserted.
async fn write_cases(
    tx: &mut Transaction<'_, Postgres>,
    w: &PartitionWrite,
) -> Result<(), StoreError> {
    if !w.new_cases.is_empty() {
        let mut rows = CopyRows::with_capacity(w.new_cases.len() * 160);
        for (k, s) in &w.new_cases {
            let r = CaseRow::encode(s);
            rows.col(k.commune.as_str())
                .col(k.case_id.as_str())
                .col(w.partition)
                .col(r.received_at)
                .col(r.received_channel)
                .col(r.received_level)
                .col(r.received_electronic)
                .col(r.received_digitized)
                .col(r.received_due)
                .col(r.closing_at)
                .col(r.closing_kind)
                .col(r.closing_due)
                .col(r.closing_outcome)
                .col(r.rating_at)
                .col(r.rating)
                .col(r.rating_score)
                .col(s.open_due_date())
                .end_row();
        }
        copy_in(
            tx,
            "COPY cases (commune, case_id, partition, received_at, received_channel, received_level,
                         received_electronic, received_digitized, received_due, closing_at, closing_kind,
                         closing_due, closing_outcome, rating_at, rating, rating_score, open_due) FROM STDIN",
            rows,
        )
        .await
        .map_err(|e| stored_already(e, w.partition, "a case"))?;
    }
    upsert_cases(tx, w.partition, &w.cases).await?;
    Ok(())
}

async fn upsert_cases(
    tx: &mut Transaction<'_, Postgres>,
    partition: i32,
    cases: &[(CaseKey, CaseState)],
) -> Result<(), sqlx::Error> {
    if cases.is_empty() {
        return Ok(());
    }
    let rows: Vec<CaseRow> = cases.iter().map(|(_, s)| CaseRow::encode(s)).collect();
    let open_due: Vec<Option<NaiveDate>> = cases.iter().map(|(_, s)| s.open_due_date()).collect();
    macro_rules! col {
        ($f:ident) => {
            rows.iter().map(|r| r.$f).collect::<Vec<_>>()
        };
    }
    sqlx::query(
        "INSERT INTO cases AS c (commune, case_id, partition, received_at, received_channel, received_level,
                                 received_electronic, received_digitized, received_due, closing_at, closing_kind,
                                 closing_due, closing_outcome, rating_at, rating, rating_score, open_due)
         SELECT u.commune, u.case_id, $3, u.received_at, u.received_channel, u.received_level,
                u.received_electronic, u.received_digitized, u.received_due, u.closing_at, u.closing_kind,
                u.closing_due, u.closing_outcome, u.rating_at, u.rating, u.rating_score, u.open_due
         FROM UNNEST($1::text[], $2::text[], $4::timestamptz[], $5::int2[], $6::int2[], $7::bool[], $8::bool[],
                     $9::date[], $10::timestamptz[], $11::int2[], $12::date[], $13::int2[], $14::timestamptz[],
                     $15::int2[], $16::int2[], $17::date[])
              AS u(commune, case_id, received_at, received_channel, received_level, received_electronic,
                   received_digitized, received_due, closing_at, closing_kind, closing_due, closing_outcome,
                   rating_at, rating, rating_score, open_due)
         ON CONFLICT (commune, case_id) DO UPDATE SET
            partition = EXCLUDED.partition,
            received_at = EXCLUDED.received_at, received_channel = EXCLUDED.received_channel,
            received_level = EXCLUDED.received_level, received_electronic = EXCLUDED.received_electronic,
            received_digitized = EXCLUDED.received_digitized, received_due = EXCLUDED.received_due,
            closing_at = EXCLUDED.closing_at, closing_kind = EXCLUDED.closing_kind,
            closing_due = EXCLUDED.closing_due, closing_outcome = EXCLUDED.closing_outcome,
            rating_at = EXCLUDED.rating_at, rating = EXCLUDED.rating, rating_score = EXCLUDED.rating_score,
            open_due = EXCLUDED.open_due",
    )
    .bind(cases.iter().map(|(k, _)| k.commune.as_str()).collect::<Vec<_>>())
    .bind(cases.iter().map(|(k, _)| k.case_id.as_str()).collect::<Vec<_>>())
    .bind(partition)
    .bind(col!(received_at))
    .bind(col!(received_channel))
    .bind(col!(received_level))
    .bind(col!(received_electronic))
    .bind(col!(received_digitized))
    .bind(col!(received_due))
    .bind(col!(closing_at))
    .bind(col!(closing_kind))
    .bind(col!(closing_due))
    .bind(col!(closing_outcome))
    .bind(col!(rating_at))
    .bind(col!(rating))
    .bind(col!(rating_score))
    .bind(open_due)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Documents, as cases: the new ones copied in, the stored ones upserted.
async fn write_documents(
    tx: &mut Transaction<'_, Postgres>,
    w: &PartitionWrite,
) -> Result<(), StoreError> {
    if !w.new_documents.is_empty() {
        let mut rows = CopyRows::with_capacity(w.new_documents.len() * 64);
        for (k, d) in &w.new_documents {
            let (at, digital) = encode_document(d);
            rows.col(k.commune.as_str())
                .col(k.document_id.as_str())
                .col(at)
                .col(digital)
                .end_row();
        }
        copy_in(
            tx,
            "COPY documents (commune, document_id, signed_at, digital) FROM STDIN",
            rows,
        )
        .await
        .map_err(|e| stored_already(e, w.partition, "a document"))?;
    }
    if w.documents.is_empty() {
        return Ok(());
    }
    let d = &w.documents;
    let encoded: Vec<_> = d.iter().map(|(_, d)| encode_document(d)).collect();
    sqlx::query(
        "INSERT INTO documents AS d (commune, document_id, signed_at, digital)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::bool[])
         ON CONFLICT (commune, document_id) DO UPDATE SET signed_at = EXCLUDED.signed_at, digital = EXCLUDED.digital",
    )
    .bind(d.iter().map(|(k, _)| k.commune.as_str()).collect::<Vec<_>>())
    .bind(d.iter().map(|(k, _)| k.document_id.as_str()).collect::<Vec<_>>())
    .bind(encoded.iter().map(|e| e.0).collect::<Vec<_>>())
    .bind(encoded.iter().map(|e| e.1).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_dead_letters(
    tx: &mut Transaction<'_, Postgres>,
    topic: &str,
    w: &PartitionWrite,
) -> Result<(), StoreError> {
    if w.dead_letters.is_empty() {
        return Ok(());
    }
    let d = &w.dead_letters;
    sqlx::query(
        "INSERT INTO dead_letters (topic, partition, \"offset\", record_key, value, reason_code, reason)
         SELECT $1, * FROM UNNEST($2::int4[], $3::int8[], $4::bytea[], $5::bytea[], $6::text[], $7::text[])
         ON CONFLICT (topic, partition, \"offset\") DO NOTHING",
    )
    .bind(topic)
    .bind(d.iter().map(|x| x.partition).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.offset).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.key.clone()).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.value.clone()).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.reason_code).collect::<Vec<_>>())
    .bind(d.iter().map(|x| x.reason.clone()).collect::<Vec<_>>())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Breach evaluation in the batch's transaction (see `codec::evaluate_alerts_in`).
async fn evaluate_alerts(
    tx: &mut Transaction<'_, Postgres>,
    evaluator: &Evaluator,
    writes: &[PartitionWrite],
) -> Result<Vec<Alert>, StoreError> {
    evaluate_alerts_in!(tx, evaluator, writes)
}

/// The URL's options; connections say they are `cchc` (in
/// `pg_stat_activity` and the server's log) unless the URL names itself.
fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let options = url
        .parse::<PgConnectOptions>()?
        .log_statements(tracing::log::LevelFilter::Trace);
    Ok(match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("cchc"),
    })
}

/// A pool whose connections resolve table names in `schema` only, which is
/// brought up to date by the migrations.
async fn schema_pool(
    options: &PgConnectOptions,
    max_connections: u32,
    schema: &str,
) -> Result<PgPool, StoreError> {
    ident(schema)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone().options([("search_path", schema)]))
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// Creates the control row on first use and returns the active schema.
async fn ensure_control(conn: &mut PgConnection) -> Result<String, StoreError> {
    let mut tx = conn.begin().await?;
    // Concurrent first starts would race on CREATE … IF NOT EXISTS.
    sqlx::query("SELECT pg_advisory_xact_lock(42420001)")
        .execute(&mut *tx)
        .await?;
    for sql in [
        format!("CREATE SCHEMA IF NOT EXISTS {CONTROL_SCHEMA}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {CONTROL_SCHEMA}.projection (
                 singleton           BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
                 active_schema       TEXT NOT NULL,
                 previous_schema     TEXT,
                 switched_at         TIMESTAMPTZ,
                 building_schema     TEXT,
                 building_started_at TIMESTAMPTZ
             )"
        ),
        format!(
            "INSERT INTO {CONTROL_SCHEMA}.projection (active_schema) VALUES ('public')
             ON CONFLICT DO NOTHING"
        ),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await?;
    }
    let active: String = sqlx::query_scalar(&format!(
        "SELECT active_schema FROM {CONTROL_SCHEMA}.projection"
    ))
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(active)
}

/// A schema name fit to splice into SQL: only names this program makes.
fn ident(schema: &str) -> Result<String, StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(schema.to_string())
    } else {
        Err(StoreError::Corrupt(format!(
            "{schema:?} is not a projection schema name"
        )))
    }
}
