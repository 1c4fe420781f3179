//! The projection store: the only place with SQL. One batch is written in one
//! transaction: counters, case and document facts, seen event ids, dead
//! letters and the partitions' next offsets, fenced by the owner generation
//! and guarded by the offset each partition's batch starts from.

mod codec;
mod copy;
pub mod postgres;
mod queries;
pub mod sqlite;

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{
    Alert, CaseKey, CaseState, DayCounters, DayKey, DocumentKey, DocumentState, Evaluator, Fold,
    Units,
};

pub use postgres::{PgStore, RebuildTarget, SwitchReport};
pub use queries::{DeadLetterRow, Freshness, OverdueCase};
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

    /// Where the projections served now live: the PostgreSQL schema, or
    /// `main` for SQLite.
    pub fn schema(&self) -> String {
        match self {
            Store::Postgres(s) => s.schema(),
            Store::Sqlite(_) => "main".to_string(),
        }
    }

    /// Follows a rebuild's switch-over: moves to the schema now active, if
    /// it changed, and returns it. SQLite stores are never rebuilt in place.
    pub async fn refresh_active(&self) -> Result<Option<String>, StoreError> {
        match self {
            Store::Postgres(s) => s.refresh_active().await,
            Store::Sqlite(_) => Ok(None),
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

    /// Writes a batch, all its partitions in one transaction (the projector
    /// writes one partition per call). Writes nothing and fails with
    /// [`StoreError::Fenced`] if a partition has been claimed by another
    /// owner since, [`StoreError::Resync`] if the partition does not stand
    /// where the batch starts (offset and clock), or
    /// [`StoreError::StoredAlready`] if one of its event ids, or a case or
    /// document it writes as new, is stored already.
    /// With an evaluator, the batch's breach transitions are evaluated and
    /// written to the alert outbox in the same transaction, and returned.
    pub async fn commit(
        &self,
        writes: &[PartitionWrite],
        evaluator: Option<&Evaluator>,
    ) -> Result<Vec<Alert>, StoreError> {
        match self {
            Store::Postgres(s) => s.commit(writes, evaluator).await,
            Store::Sqlite(s) => s.commit(writes, evaluator).await,
        }
    }

    /// Up to `limit` alerts not yet published, oldest first.
    pub async fn unpublished_alerts(&self, limit: i64) -> Result<Vec<OutboxAlert>, StoreError> {
        let sql = "SELECT seq, alert_id, commune, payload FROM alert_outbox
                   WHERE published_at IS NULL ORDER BY seq LIMIT $1";
        Ok(match self {
            Store::Postgres(s) => sqlx::query_as(sql).bind(limit).fetch_all(&s.pool()).await?,
            Store::Sqlite(s) => sqlx::query_as(sql).bind(limit).fetch_all(s.pool()).await?,
        })
    }

    /// Marks alerts published, and queues each for every webhook URL, in one
    /// transaction.
    pub async fn mark_published(
        &self,
        seqs: &[i64],
        webhook_urls: &[String],
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query("UPDATE alert_outbox SET published_at = now() WHERE seq = ANY($1) AND published_at IS NULL")
                    .bind(seqs)
                    .execute(&mut *tx)
                    .await?;
                for url in webhook_urls {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (alert_seq, url) SELECT unnest($1::int8[]), $2 ON CONFLICT DO NOTHING",
                    )
                    .bind(seqs)
                    .bind(url)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin().await?;
                for seq in seqs {
                    sqlx::query("UPDATE alert_outbox SET published_at = CURRENT_TIMESTAMP WHERE seq = ?1 AND published_at IS NULL")
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                    for url in webhook_urls {
                        sqlx::query("INSERT OR IGNORE INTO webhook_deliveries (alert_seq, url) VALUES (?1, ?2)")
                            .bind(seq)
                            .bind(url)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Webhook deliveries whose next attempt is due, with their payloads.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = "SELECT d.alert_seq, d.url, d.attempts, o.alert_id, o.payload
                   FROM webhook_deliveries d JOIN alert_outbox o ON o.seq = d.alert_seq
                   WHERE d.delivered_at IS NULL AND d.next_attempt <= $1 ORDER BY d.alert_seq LIMIT $2";
        Ok(match self {
            Store::Postgres(s) => {
                sqlx::query_as(sql)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(&s.pool())
                    .await?
            }
            Store::Sqlite(s) => {
                sqlx::query_as(sql)
                    .bind(now)
                    .bind(limit)
                    .fetch_all(s.pool())
                    .await?
            }
        })
    }

    /// Records one delivery attempt: delivered, or failed with the time of
    /// the next attempt.
    pub async fn record_delivery(
        &self,
        seq: i64,
        url: &str,
        outcome: Result<(), (String, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let (delivered, error, next) = match outcome {
            Ok(()) => (Some(Utc::now()), None, Utc::now()),
            Err((e, next)) => (None, Some(e), next),
        };
        let sql = "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = $3, last_error = $4, next_attempt = $5
                   WHERE alert_seq = $1 AND url = $2";
        match self {
            Store::Postgres(s) => {
                sqlx::query(sql)
                    .bind(seq)
                    .bind(url)
                    .bind(delivered)
                    .bind(error)
                    .bind(next)
                    .execute(&s.pool())
                    .await?;
            }
            Store::Sqlite(s) => {
                sqlx::query(sql)
                    .bind(seq)
                    .bind(url)
                    .bind(delivered)
                    .bind(error)
                    .bind(next)
                    .execute(s.pool())
                    .await?;
            }
        }
        Ok(())
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

/// An alert in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxAlert {
    pub seq: i64,
    pub alert_id: String,
    pub commune: String,
    pub payload: String,
}

/// A webhook delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub alert_seq: i64,
    pub url: String,
    pub attempts: i32,
    pub alert_id: String,
    pub payload: String,
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
    /// Every commune of the partition is evaluated for breaches with the
    /// next batch: set by a claim, since the stored states may have been
    /// written by another member, or carried over by a rebuild's switch.
    pub reevaluate: bool,
}

impl Claim {
    /// Whether a batch at `now` evaluates every commune of the partition for
    /// breaches: after a claim, and whenever the clock has passed a local
    /// midnight since the partition's last batch.
    pub fn evaluates_all(&self, now: DateTime<Utc>) -> bool {
        use crate::domain::time::local_date;
        self.reevaluate || self.clock.map(local_date) != Some(local_date(now))
    }
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
    /// The stored next offset the batch was read from (the owner's view;
    /// `None` for a partition never seen): the commit is refused if the
    /// stored one differs, so that no batch is ever applied twice, even when
    /// a commit whose outcome was lost with the connection is tried again.
    pub start_offset: Option<i64>,
    /// The stored clock the batch was folded from (the owner's view), also
    /// checked by the commit: a clock tick is applied once too.
    pub start_clock: Option<DateTime<Utc>>,
    /// The first offset not yet applied after this batch (`None`: no record
    /// was ever seen on this partition; only the clock moves).
    pub next_offset: Option<i64>,
    pub clock: Option<DateTime<Utc>>,
    /// The clock passed a local midnight since the partition's last batch:
    /// every commune of the partition is re-evaluated for breaches.
    pub clock_moved: bool,
    /// The latest `occurred_at` among the batch's events.
    pub event_time: Option<DateTime<Utc>>,
    pub deltas: Vec<(DayKey, DayCounters)>,
    /// Changed cases that were stored when the batch was loaded (updated),
    pub cases: Vec<(CaseKey, CaseState)>,
    /// and those that were not (inserted: one stored since is a
    /// [`StoreError::StoredAlready`]). Each in key order.
    pub new_cases: Vec<(CaseKey, CaseState)>,
    /// Changed documents, likewise.
    pub documents: Vec<(DocumentKey, DocumentState)>,
    pub new_documents: Vec<(DocumentKey, DocumentState)>,
    pub seen: Vec<String>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Why a partition's offset row refused a batch, given the row as stored
/// (`generation`, `next_offset`, `clock`), if any.
fn refusal(
    w: &PartitionWrite,
    stored: Option<(i64, Option<i64>, Option<DateTime<Utc>>)>,
) -> StoreError {
    match stored {
        Some((generation, next_offset, clock)) if generation == w.generation => {
            StoreError::Resync {
                partition: w.partition,
                next_offset,
                clock,
            }
        }
        _ => StoreError::Fenced {
            partition: w.partition,
            generation: w.generation,
        },
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another member claimed the partition since this one did: nothing of
    /// the batch was written.
    #[error("partition {partition} is owned by a newer generation than {generation}")]
    Fenced { partition: i32, generation: i64 },
    /// The partition, still this owner's, does not stand where the batch
    /// starts: an earlier commit of this owner whose outcome was lost with
    /// the connection did go through. Nothing was written; the owner goes
    /// on from the stored position.
    #[error("partition {partition} stands at offset {next_offset:?}, clock {clock:?}, not where the batch starts")]
    Resync {
        partition: i32,
        next_offset: Option<i64>,
        clock: Option<DateTime<Utc>>,
    },
    /// Something the batch took as new is stored already: one of its event
    /// ids, when the batch was folded without looking its ids up (or by
    /// another partition's transaction since: the same id on two
    /// partitions), or a case or document that was not stored when the
    /// batch was loaded. Nothing was written; folded again with its ids
    /// loaded, and its cases and documents as they are stored now, the
    /// batch comes out right.
    #[error("partition {partition}: {what} of the batch is stored already")]
    StoredAlready {
        partition: i32,
        /// `"an event id"`, `"a case"` or `"a document"`.
        what: &'static str,
    },
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Stored data this version cannot read.
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A unique violation as [`StoreError::StoredAlready`]; any other error as it is.
pub(crate) fn stored_already(e: sqlx::Error, partition: i32, what: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::StoredAlready { partition, what }
        }
        _ => StoreError::Database(e),
    }
}

impl StoreError {
    /// Whether retrying the same work later may succeed (connection lost,
    /// database restarting, serialization failure).
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::StoredAlready { .. } => true,
            StoreError::Fenced { .. } | StoreError::Resync { .. } => false,
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
