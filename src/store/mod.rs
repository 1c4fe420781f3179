//! The projection store: the only place with SQL. One batch is written in one
//! transaction: counters, case and document facts, seen event ids, dead
//! letters and the partitions' next offsets, fenced by the owner generation.

mod codec;
pub mod postgres;

use chrono::{DateTime, Utc};

use crate::domain::{CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState};

pub use postgres::{BatchKeys, PgStore};

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
