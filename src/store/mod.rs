//! The projection store: the only place with SQL. One batch is written in one
//! transaction: counters, case and document facts, seen event ids, dead
//! letters and the partitions' next offsets, fenced by the owner generation.

mod codec;
pub mod postgres;
pub mod sqlite;

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{
    CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState, Fold, Units,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// The projection store, PostgreSQL or SQLite, chosen by the URL scheme.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// What a batch names: the working set to load for it.
#[derive(Debug, Clone, Copy)]
pub struct BatchKeys<'a> {
    pub cases: &'a [CaseKey],
    pub documents: &'a [DocumentKey],
    pub event_ids: &'a [String],
}

impl Store {
    /// Connects to `postgres://…` or `sqlite://…` and migrates the schema.
    pub async fn connect(url: &str, max_connections: u32, topic: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store::Sqlite(SqliteStore::connect(url, topic).await?))
        } else {
            Ok(Store::Postgres(
                PgStore::connect(url, max_connections, topic).await?,
            ))
        }
    }

    pub fn topic(&self) -> &str {
        match self {
            Store::Postgres(s) => s.topic(),
            Store::Sqlite(s) => s.topic(),
        }
    }

    /// Takes ownership of a partition: bumps its generation, so that any
    /// earlier owner's commits are refused from now on, and returns where
    /// the partition's projections stand.
    pub async fn claim(&self, partition: i32) -> Result<Claim, StoreError> {
        match self {
            Store::Postgres(s) => s.claim(partition).await,
            Store::Sqlite(s) => s.claim(partition).await,
        }
    }

    /// The stored next offset of every partition of the topic.
    pub async fn offsets(&self) -> Result<Vec<(i32, Option<i64>)>, StoreError> {
        match self {
            Store::Postgres(s) => s.offsets().await,
            Store::Sqlite(s) => s.offsets().await,
        }
    }

    /// A working set for one partition's batch: the stored facts of the
    /// cases and documents the batch names, which of its event ids were
    /// already applied, and the open cases that become overdue when the clock
    /// moves from `claim_clock` to `now`.
    pub async fn load(
        &self,
        units: &Units,
        partition: i32,
        claim_clock: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        keys: &BatchKeys<'_>,
    ) -> Result<Fold, StoreError> {
        match self {
            Store::Postgres(s) => s.load(units, partition, claim_clock, now, keys).await,
            Store::Sqlite(s) => s.load(units, partition, claim_clock, now, keys).await,
        }
    }

    /// Writes a batch, all partitions in one transaction. Fails with
    /// [`StoreError::Fenced`], writing nothing, if any partition has been
    /// claimed by another owner since.
    pub async fn commit(&self, writes: &[PartitionWrite]) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => s.commit(writes).await,
            Store::Sqlite(s) => s.commit(writes).await,
        }
    }

    /// Every stored day counter, by commune and day.
    pub async fn day_counters(&self) -> Result<Vec<(String, NaiveDate, DayCounters)>, StoreError> {
        match self {
            Store::Postgres(s) => s.day_counters().await,
            Store::Sqlite(s) => s.day_counters().await,
        }
    }

    /// Dead letters as (partition, offset, reason code), in offset order.
    pub async fn dead_letter_reasons(&self) -> Result<Vec<(i32, i64, String)>, StoreError> {
        match self {
            Store::Postgres(s) => s.dead_letter_reasons().await,
            Store::Sqlite(s) => s.dead_letter_reasons().await,
        }
    }
}

/// A partition's stored position, as claimed by a new owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Bumped by every claim; a commit with an older one is refused.
    pub generation: i64,
    /// The first offset not yet applied; `None` for a partition never seen.
    pub next_offset: Option<i64>,
    /// The clock the partition's projections reflect.
    pub clock: Option<DateTime<Utc>>,
}

/// A record kept aside because it is not a valid event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub reason_code: &'static str,
    pub reason: String,
}

/// Everything one batch changes for one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionWrite {
    pub partition: i32,
    pub generation: i64,
    /// The first offset not yet applied after this batch (`None`: no record
    /// was ever seen on this partition; only the clock moves).
    pub next_offset: Option<i64>,
    pub clock: Option<DateTime<Utc>>,
    pub deltas: Vec<(DayKey, DayCounters)>,
    pub cases: Vec<(CaseKey, CaseState)>,
    pub documents: Vec<(DocumentKey, DocumentState)>,
    pub seen: Vec<String>,
    pub dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another member claimed the partition since this one did: nothing of
    /// the batch was written.
    #[error("partition {partition} is owned by a newer generation than {generation}")]
    Fenced { partition: i32, generation: i64 },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data this version cannot read.
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether retrying the same work later may succeed (connection lost,
    /// database restarting, serialization failure).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Fenced { .. } => false,
            StoreError::Migrate(_) | StoreError::Corrupt(_) => false,
            StoreError::Database(e) => match e {
                sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_) => true,
                sqlx::Error::Database(db) => {
                    // 08: connection exception; 40: transaction rollback
                    // (serialization, deadlock); 57P: operator intervention
                    // (admin shutdown, cannot connect now); 53: resources.
                    let code = db.code().unwrap_or_default();
                    ["08", "40", "57", "53"].iter().any(|c| code.starts_with(c))
                }
                _ => false,
            },
        }
    }
}
