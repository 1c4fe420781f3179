//! The SQLite store, for the embedded default (nothing installed) and for
//! small single-process deployments: the same schema and semantics as the
//! PostgreSQL store, one writing connection (SQLite has one writer) and
//! read-only connections beside it. The batch transaction is in [`batch`].

mod batch;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::codec::{CounterRow, ALL_DAY_COUNTERS};
use super::{Claim, StoreError};
use crate::domain::DayCounters;

pub use batch::SqliteBatch;

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
            "INSERT INTO partition_offsets (topic, partition, next_offset, generation, updated_at, caught_up)
             VALUES (?1, ?2, NULL, 1, ?3, 0)
             ON CONFLICT (topic, partition) DO UPDATE
               SET generation = partition_offsets.generation + 1, updated_at = ?3, caught_up = 0
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

    /// The committed offsets (read beside the writer, which a batch may be
    /// holding).
    pub async fn offsets(&self) -> Result<Vec<(i32, Option<i64>)>, StoreError> {
        Ok(sqlx::query_as("SELECT partition, next_offset FROM partition_offsets WHERE topic = ?1 ORDER BY partition")
            .bind(&self.topic)
            .fetch_all(&self.read_pool)
            .await?)
    }

    /// Begins one batch's transaction.
    pub async fn begin_batch(&self) -> Result<SqliteBatch, StoreError> {
        Ok(SqliteBatch {
            tx: self.pool.begin().await?,
            topic: self.topic.clone(),
        })
    }

    pub async fn day_counters(&self) -> Result<Vec<(String, NaiveDate, DayCounters)>, StoreError> {
        let rows: Vec<CounterRow> = sqlx::query_as(&ALL_DAY_COUNTERS)
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
