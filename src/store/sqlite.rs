//! SQLite store, for the embedded default (nothing installed) and for small
//! single-process deployments. Same schema and semantics as the PostgreSQL
//! store; rows are written one prepared statement at a time inside the
//! batch's transaction, which is how SQLite is fast.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::codec::{
    encode_document, evaluate_alerts_in, overdue_range, CaseRow, CounterRow, LoadedRows,
    CASE_COLUMNS,
};
use super::{stored_already, BatchKeys, Claim, PartitionWrite, StoreError};
use crate::domain::{Alert, DayCounters, Evaluator, Fold, Units};

/// The SQLite projection store for one topic.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// Queries read through their own connections: in WAL mode they run
    /// beside the writer instead of queueing behind it.
    read_pool: SqlitePool,
    topic: String,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings the schema up
    /// to date. `url` is `sqlite://PATH` or `sqlite::memory:`.
    pub async fn connect(url: &str, topic: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        // One writing connection: SQLite has one writer, and an in-memory
        // database exists per connection (so it is read through it too).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        let read_pool = if url.contains(":memory:") {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options.read_only(true))
                .await?
        };
        Ok(SqliteStore {
            pool,
            read_pool,
            topic: topic.to_string(),
        })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Connections for queries.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.read_pool
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub async fn claim(&self, partition: i32) -> Result<Claim, StoreError> {
        let (generation, next_offset, clock): (i64, Option<i64>, Option<DateTime<Utc>>) = sqlx::query_as(
            "INSERT INTO partition_offsets (topic, partition, next_offset, generation, updated_at) VALUES (?1, ?2, NULL, 1, ?3)
             ON CONFLICT (topic, partition) DO UPDATE
               SET generation = partition_offsets.generation + 1, updated_at = ?3
             RETURNING generation, next_offset, clock",
        )
        .bind(&self.topic)
        .bind(partition)
        .bind(Utc::now())
        .fetch_one(&self.pool)
        .await?;
        Ok(Claim {
            generation,
            next_offset,
            clock,
            reevaluate: true,
        })
    }

    pub async fn offsets(&self) -> Result<Vec<(i32, Option<i64>)>, StoreError> {
        Ok(sqlx::query_as("SELECT partition, next_offset FROM partition_offsets WHERE topic = ?1 ORDER BY partition")
            .bind(&self.topic)
            .fetch_all(&self.pool)
            .await?)
    }

    pub async fn load(
        &self,
        units: &Units,
        partition: i32,
        claim_clock: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        keys: &BatchKeys<'_>,
    ) -> Result<Fold, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let mut rows = LoadedRows::default();
        for id in keys.event_ids {
            let seen: Option<String> =
                sqlx::query_scalar("SELECT event_id FROM seen_events WHERE event_id = ?1")
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?;
            rows.seen.extend(seen);
        }
        let by_key =
            format!("SELECT {CASE_COLUMNS} FROM cases WHERE commune = ?1 AND case_id = ?2");
        for key in keys.cases {
            let row = sqlx::query_as(&by_key)
                .bind(key.commune.as_str())
                .bind(&key.case_id)
                .fetch_optional(&mut *conn)
                .await?;
            rows.cases.extend(row);
        }
        if let Some((from, to)) = overdue_range(claim_clock, now) {
            rows.overdue = sqlx::query_as(&format!(
                "SELECT {CASE_COLUMNS} FROM cases
                 WHERE partition = ?1 AND (?2 IS NULL OR open_due >= ?2) AND open_due < ?3"
            ))
            .bind(partition)
            .bind(from)
            .bind(to)
            .fetch_all(&mut *conn)
            .await?;
        }
        for key in keys.documents {
            let row = sqlx::query_as(
                "SELECT commune, document_id, signed_at, digital FROM documents WHERE commune = ?1 AND document_id = ?2",
            )
            .bind(key.commune.as_str())
            .bind(&key.document_id)
            .fetch_optional(&mut *conn)
            .await?;
            rows.documents.extend(row);
        }
        rows.into_fold(units, claim_clock)
    }

    pub async fn commit(
        &self,
        writes: &[PartitionWrite],
        evaluator: Option<&Evaluator>,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut tx = self.pool.begin().await?;
        for w in writes {
            let updated = sqlx::query(
                "UPDATE partition_offsets SET next_offset = COALESCE(?3, next_offset), clock = COALESCE(?4, clock),
                        event_time = COALESCE(max(event_time, ?6), ?6, event_time), updated_at = ?7
                 WHERE topic = ?1 AND partition = ?2 AND generation = ?5 AND next_offset IS ?8 AND clock IS ?9",
            )
            .bind(&self.topic)
            .bind(w.partition)
            .bind(w.next_offset)
            .bind(w.clock)
            .bind(w.generation)
            .bind(w.event_time)
            .bind(Utc::now())
            .bind(w.start_offset)
            .bind(w.start_clock)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() != 1 {
                let stored = sqlx::query_as(
                    "SELECT generation, next_offset, clock FROM partition_offsets WHERE topic = ?1 AND partition = ?2",
                )
                .bind(&self.topic)
                .bind(w.partition)
                .fetch_optional(&mut *tx)
                .await?;
                tx.rollback().await?;
                return Err(super::refusal(w, stored));
            }
        }
        for w in writes {
            write_partition(&mut tx, &self.topic, w).await?;
        }
        let alerts = match evaluator {
            Some(evaluator) => evaluate_alerts(&mut tx, evaluator, writes).await?,
            None => Vec::new(),
        };
        tx.commit().await?;
        Ok(alerts)
    }

    pub async fn day_counters(&self) -> Result<Vec<(String, NaiveDate, DayCounters)>, StoreError> {
        let rows: Vec<CounterRow> = sqlx::query_as(
            "SELECT commune, day, received, received_online, received_electronic, due, on_time,
                    ratings, satisfied, signatures, digital
             FROM day_counters ORDER BY commune, day",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(CounterRow::into_parts).collect())
    }

    pub async fn dead_letter_reasons(&self) -> Result<Vec<(i32, i64, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT partition, \"offset\", reason_code FROM dead_letters WHERE topic = ?1 ORDER BY partition, \"offset\"",
        )
        .bind(&self.topic)
        .fetch_all(&self.pool)
        .await?)
    }
}

async fn write_partition(
    tx: &mut Transaction<'_, Sqlite>,
    topic: &str,
    w: &PartitionWrite,
) -> Result<(), StoreError> {
    for ((commune, day), c) in w.deltas.iter().filter(|(_, c)| !c.is_zero()) {
        sqlx::query(
            "INSERT INTO day_counters (commune, day, received, received_online, received_electronic, due, on_time,
                                       ratings, satisfied, signatures, digital)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (commune, day) DO UPDATE SET
                received = received + excluded.received,
                received_online = received_online + excluded.received_online,
                received_electronic = received_electronic + excluded.received_electronic,
                due = due + excluded.due,
                on_time = on_time + excluded.on_time,
                ratings = ratings + excluded.ratings,
                satisfied = satisfied + excluded.satisfied,
                signatures = signatures + excluded.signatures,
                digital = digital + excluded.digital",
        )
        .bind(commune.as_str())
        .bind(day)
        .bind(c.received)
        .bind(c.received_online)
        .bind(c.received_electronic)
        .bind(c.due)
        .bind(c.on_time)
        .bind(c.ratings)
        .bind(c.satisfied)
        .bind(c.signatures)
        .bind(c.digital)
        .execute(&mut **tx)
        .await?;
    }
    // As in PostgreSQL: cases and documents taken as new are plainly
    // inserted, so that one stored since the batch was loaded is refused.
    let stored_cases = w.cases.iter().map(|c| (c, "INSERT OR REPLACE"));
    for ((key, state), verb) in stored_cases.chain(w.new_cases.iter().map(|c| (c, "INSERT"))) {
        let r = CaseRow::encode(state);
        sqlx::query(&format!(
            "{verb} INTO cases (commune, case_id, partition, received_at, received_channel, received_level,
                                received_electronic, received_digitized, received_due, closing_at, closing_kind,
                                closing_due, closing_outcome, rating_at, rating, rating_score, open_due)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ))
        .bind(key.commune.as_str())
        .bind(&key.case_id)
        .bind(w.partition)
        .bind(r.received_at)
        .bind(r.received_channel)
        .bind(r.received_level)
        .bind(r.received_electronic)
        .bind(r.received_digitized)
        .bind(r.received_due)
        .bind(r.closing_at)
        .bind(r.closing_kind)
        .bind(r.closing_due)
        .bind(r.closing_outcome)
        .bind(r.rating_at)
        .bind(r.rating)
        .bind(r.rating_score)
        .bind(state.open_due_date())
        .execute(&mut **tx)
        .await
        .map_err(|e| stored_already(e, w.partition, "a case"))?;
    }
    let stored_documents = w.documents.iter().map(|d| (d, "INSERT OR REPLACE"));
    for ((key, doc), verb) in stored_documents.chain(w.new_documents.iter().map(|d| (d, "INSERT")))
    {
        let (at, digital) = encode_document(doc);
        sqlx::query(&format!(
            "{verb} INTO documents (commune, document_id, signed_at, digital) VALUES (?1, ?2, ?3, ?4)"
        ))
        .bind(key.commune.as_str())
        .bind(&key.document_id)
        .bind(at)
        .bind(digital)
        .execute(&mut **tx)
        .await
        .map_err(|e| stored_already(e, w.partition, "a document"))?;
    }
    let mut stored = 0;
    for id in &w.seen {
        stored += sqlx::query("INSERT OR IGNORE INTO seen_events (event_id) VALUES (?1)")
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
    }
    if stored != w.seen.len() as u64 {
        // Dropping the transaction rolls it back.
        return Err(StoreError::StoredAlready {
            partition: w.partition,
            what: "an event id",
        });
    }
    for d in &w.dead_letters {
        sqlx::query(
            "INSERT OR IGNORE INTO dead_letters (topic, partition, \"offset\", record_key, value, reason_code, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(topic)
        .bind(d.partition)
        .bind(d.offset)
        .bind(&d.key)
        .bind(&d.value)
        .bind(d.reason_code)
        .bind(&d.reason)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Breach evaluation in the batch's transaction (see `codec::evaluate_alerts_in`).
async fn evaluate_alerts(
    tx: &mut Transaction<'_, Sqlite>,
    evaluator: &Evaluator,
    writes: &[PartitionWrite],
) -> Result<Vec<Alert>, StoreError> {
    evaluate_alerts_in!(tx, evaluator, writes)
}
