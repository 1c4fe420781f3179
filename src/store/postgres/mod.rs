//! The PostgreSQL store: connections, claims and the batch's working set
//! here; the batch transaction in [`batch`]; the projection schemas and
//! `cchc rebuild`'s switch in [`schemas`].

mod batch;
mod cache;
mod schemas;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tracing::{info, instrument};
use uuid::Uuid;

use super::codec::{CounterRow, ALL_DAY_COUNTERS};
use super::{Claim, StoreError};
use crate::domain::DayCounters;
use schemas::{ensure_control, ident, CONTROL_SCHEMA};

pub use batch::PgBatch;
pub(crate) use cache::Remember;
pub use cache::DEFAULT_CASES as DEFAULT_CACHED_CASES;
pub use schemas::{RebuildTarget, SwitchReport, GENERATION_PREFIX};

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
    /// The cases this store's batches wrote (see [`cache`]).
    cases: Arc<cache::CaseCache>,
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
                cases: Arc::new(cache::CaseCache::new(cache::DEFAULT_CASES)),
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
        // The cases remembered are the old schema's rows.
        self.shared.cases.clear();
        tokio::spawn(async move { old.1.close().await });
        info!(schema = %active, previous = %old.0, "projections switched: now served from the rebuilt schema");
        Ok(Some(active))
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// How many written cases the store remembers for the next batches of
    /// their partitions (0: none; each is read back from the database).
    pub fn remember_cases(&self, cases: usize) {
        self.shared.cases.set_capacity(cases);
    }

    /// Begins one batch's transaction.
    pub async fn begin_batch(&self) -> Result<PgBatch, StoreError> {
        Ok(PgBatch::new(
            self.pool().begin().await?,
            self.topic.clone(),
            self.shared.cases.clone(),
        ))
    }

    /// Takes ownership of a partition: bumps its generation, so that any
    /// earlier owner's commits are refused from now on, and returns where
    /// the partition's projections stand. The partition counts as not
    /// caught up until its new owner's first evaluated batch.
    #[instrument(name = "store.claim", skip(self), err)]
    pub async fn claim(&self, partition: i32) -> Result<Claim, StoreError> {
        let (generation, next_offset, clock): (i64, Option<i64>, Option<DateTime<Utc>>) = sqlx::query_as(
            "INSERT INTO partition_offsets (topic, partition, next_offset, generation, caught_up)
             VALUES ($1, $2, NULL, 1, false)
             ON CONFLICT (topic, partition) DO UPDATE
               SET generation = partition_offsets.generation + 1, updated_at = now(), caught_up = false
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

    /// Every stored day counter, by commune and day.
    pub async fn day_counters(&self) -> Result<Vec<(String, NaiveDate, DayCounters)>, StoreError> {
        let rows: Vec<CounterRow> = sqlx::query_as(&ALL_DAY_COUNTERS)
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

/// The key an event id applied before migration 0010 is kept under in
/// `seen_event_digests`: the first 16 bytes of the SHA-256 of its UTF-8
/// bytes (migration 0004 computes the same in SQL). Ids applied since are
/// kept with their case or document ([`crate::domain::id_digest`]).
pub fn id_digest(event_id: &str) -> Uuid {
    let hash = Sha256::digest(event_id.as_bytes());
    let mut digest = [0u8; 16];
    digest.copy_from_slice(&hash[..16]);
    Uuid::from_bytes(digest)
}

/// The URL's options; connections say they are `cchc` (in
/// `pg_stat_activity` and the server's log) unless the URL names itself.
pub(super) fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    let options = url
        .parse::<PgConnectOptions>()?
        .log_statements(tracing::log::LevelFilter::Trace);
    Ok(match options.get_application_name() {
        Some(_) => options,
        None => options.application_name("cchc"),
    })
}

/// How long a session may sit inside a transaction between statements
/// before the server ends it. A batch's transaction is idle only while its
/// fold runs (milliseconds); a member frozen mid-batch (SIGSTOP, a VM
/// paused, a network partition) would otherwise keep its partition's row
/// locked, and the member the group gave the partition to would wait on its
/// claim until the frozen one woke up. Ended, its locks are released and
/// the new owner claims; the frozen member's batch fails when it wakes, and
/// is given up (`BatchLetGo`) once its partition is revoked, or fenced if
/// retried first.
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "5s";

/// A pool whose connections resolve table names in `schema` only, which is
/// brought up to date by the migrations.
pub(super) async fn schema_pool(
    options: &PgConnectOptions,
    max_connections: u32,
    schema: &str,
) -> Result<PgPool, StoreError> {
    ident(schema)?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options.clone().options([
            ("search_path", schema),
            (
                "idle_in_transaction_session_timeout",
                IDLE_IN_TRANSACTION_TIMEOUT,
            ),
        ]))
        .await?;
    sqlx::migrate!("migrations/postgres").run(&pool).await?;
    Ok(pool)
}
