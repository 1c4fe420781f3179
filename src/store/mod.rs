//! The projection store: the only place with SQL, PostgreSQL or SQLite.
//!
//! - [`BatchTx`]: the writes and reads of one partition batch's transaction,
//!   which `projector::commit` makes in one fixed order for both stores;
//! - [`Store`]: everything else (claims, the working set a batch loads, the
//!   alert outbox and webhook deliveries in `outbox`, the queries of the API
//!   and the operator commands in `queries`).

/// Runs `$body` with `$pool` bound to the store's pool, whichever store it
/// is, for portable SQL (numbered parameters, `CAST`) written once: `read`
/// uses SQLite's read-only connections, `write` its writing one.
macro_rules! on_pool {
    (read $store:expr, |$pool:ident| $body:expr) => {
        on_pool!(@ $store, |$pool| $body, read_pool)
    };
    (write $store:expr, |$pool:ident| $body:expr) => {
        on_pool!(@ $store, |$pool| $body, pool)
    };
    (@ $store:expr, |$pool:ident| $body:expr, $sqlite:ident) => {
        match $store {
            Store::Postgres(s) => {
                let pool = s.pool();
                let $pool = &pool;
                $body
            }
            Store::Sqlite(s) => {
                let $pool = s.$sqlite();
                $body
            }
        }
    };
}

mod codec;
mod copy;
mod outbox;
pub mod postgres;
mod queries;
pub mod sqlite;

use std::future::Future;

pub use codec::{CaseRow, KeyedCaseRow};

use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{
    Alert, BreachState, CaseEvent, CaseKey, CaseState, DayCounters, DayKey, DocumentKey,
    DocumentState, Fold, StateKey, Units,
};

pub use outbox::{Delivery, OutboxAlert};
pub use postgres::{PgBatch, PgStore, RebuildTarget, SwitchReport};
pub use queries::{BreachNow, ComingDueCase, DeadLetterRow, Freshness, OverdueCase};
pub use sqlite::{SqliteBatch, SqliteStore};

/// The projection store, PostgreSQL or SQLite, chosen by the URL scheme.
#[derive(Debug, Clone)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// The writes and reads of one partition batch's transaction, each one
/// statement (or one per row, in SQLite) inside it. `projector::commit` calls
/// them in the order they are declared here; nothing is visible to anyone
/// else until [`BatchTx::commit`], and dropping the value rolls everything
/// back.
pub trait BatchTx: Send {
    /// The partition's stored position, its row locked until the
    /// transaction ends (a claim by another member waits for it).
    fn position(
        &mut self,
        partition: i32,
    ) -> impl Future<Output = Result<Option<Position>, StoreError>> + Send;

    /// The working set of the batch, read inside its transaction: the
    /// stored facts of the cases and documents it names, which of its event
    /// ids were already applied, and the open cases that become overdue when
    /// the clock moves from `claim_clock` to `now`. The cases that other
    /// partitions may also write (kept under a unit that others merged into)
    /// are locked until the transaction ends, so the batch folds them as
    /// they stay until its commit.
    fn load(
        &mut self,
        units: &Units,
        partition: i32,
        claim_clock: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        keys: &BatchKeys<'_>,
    ) -> impl Future<Output = Result<Fold, StoreError>> + Send;

    /// How many of the batch's stored cases [`BatchTx::load`] read only
    /// because the batch was careful ([`BatchKeys::careful`]): cases this
    /// store did not remember. While there are such, the partition stays
    /// careful. A store that reads every case anyway says 0.
    fn cases_read(&self) -> usize {
        0
    }

    /// Adds the batch's counter changes to the stored day counters.
    fn add_counters(
        &mut self,
        deltas: &[(DayKey, DayCounters)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes changed cases: `stored` ones replace their rows, `new` ones
    /// are inserted (one stored meanwhile is [`StoreError::StoredAlready`]).
    fn write_cases(
        &mut self,
        partition: i32,
        stored: &[(CaseKey, CaseState)],
        new: &[(CaseKey, CaseState)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes changed documents, as [`BatchTx::write_cases`].
    fn write_documents(
        &mut self,
        partition: i32,
        stored: &[(DocumentKey, DocumentState)],
        new: &[(DocumentKey, DocumentState)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Keeps the records that are not valid events, whole.
    fn keep_dead_letters(
        &mut self,
        dead: &[DeadLetter],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records that `communes` arrive on `partition` (so that a clock tick
    /// of the partition knows whom to re-evaluate).
    fn note_communes(
        &mut self,
        partition: i32,
        communes: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The communes seen on `partition`.
    fn communes_of(
        &mut self,
        partition: i32,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Each of `communes`' counters summed over the local days
    /// `[from, to)`, in one grouped query (communes without counters left
    /// out).
    fn window_sums(
        &mut self,
        communes: &[String],
        days: (NaiveDate, NaiveDate),
    ) -> impl Future<Output = Result<Vec<(String, DayCounters)>, StoreError>> + Send;

    /// The partitions that carry `communes` ([`BatchTx::note_communes`]),
    /// and whether each one's last batch was evaluated for breaches (the
    /// caught-up state; [`BatchTx::move_position`]).
    fn carriers(
        &mut self,
        communes: &[String],
    ) -> impl Future<Output = Result<Vec<Carrier>, StoreError>> + Send;

    /// Locks the breach evaluation of `units` (sorted) until the commit:
    /// a unit fed from several partitions is evaluated by one batch at a
    /// time, each reading what the one before committed.
    fn lock_units(
        &mut self,
        units: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The open cases of `communes` on `partitions` due from `days.0` to
    /// `days.1` (both included): (commune, due date, how many).
    fn coming_due(
        &mut self,
        partitions: &[i32],
        communes: &[String],
        days: (NaiveDate, NaiveDate),
    ) -> impl Future<Output = Result<Vec<(String, NaiveDate, i64)>, StoreError>> + Send;

    /// The stored breach states of `communes` (indicators this version
    /// does not know are left out).
    fn breach_states(
        &mut self,
        communes: &[String],
    ) -> impl Future<Output = Result<Vec<(StateKey, BreachState)>, StoreError>> + Send;

    /// Stores new breach states.
    fn write_breach_states(
        &mut self,
        states: &[(StateKey, BreachState)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Adds alerts to the outbox (one whose id is there already is left
    /// as it is).
    fn add_to_outbox(
        &mut self,
        alerts: &[Alert],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves the partition's position past the batch, noting whether the
    /// batch was evaluated for breaches (`evaluated`: the partition is
    /// caught up).
    fn move_position(
        &mut self,
        w: &PartitionWrite,
        evaluated: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Commits the transaction; what it returns takes the batch's written
    /// cases once the caller is done with them ([`Committed::remember`]).
    fn commit(self) -> impl Future<Output = Result<Committed, StoreError>> + Send;
}

/// A committed batch transaction's hand-back: where its written cases are
/// kept for the partition's next batch (a PostgreSQL store's remembered
/// cases, `src/store/postgres/cache.rs`), so that they are moved there
/// rather than copied; nothing for a store that reads them back (SQLite,
/// or PostgreSQL with the cache off).
#[derive(Debug, Default)]
#[must_use = "the written cases are remembered only if handed over"]
pub struct Committed {
    remember: Option<postgres::Remember>,
}

impl Committed {
    /// Keeps `cases`, the batch's written cases as it wrote them, where
    /// the store remembers them (or drops them).
    pub fn remember(self, cases: impl IntoIterator<Item = (CaseKey, CaseState)>) {
        if let Some(r) = self.remember {
            r.put(cases);
        }
    }
}

/// A partition that carries a commune, as [`BatchTx::carriers`] finds it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Carrier {
    pub commune: String,
    pub partition: i32,
    /// Its last batch was evaluated for breaches.
    pub caught_up: bool,
}

/// What a batch names: the working set to load for it.
#[derive(Debug, Clone, Copy)]
pub struct BatchKeys<'a> {
    pub cases: &'a [CaseKey],
    pub documents: &'a [DocumentKey],
    /// The batch's events: those of a case or document stored before ids
    /// were kept with it are looked up among the ids applied before then.
    pub events: &'a [CaseEvent],
    /// Folded again after a first try took something stored as new: a
    /// store that remembers the cases it wrote reads the others too (when
    /// not careful, it takes them as new, and the commit's unique insert
    /// decides).
    pub careful: bool,
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

    /// How many written cases the store remembers (PostgreSQL only; see
    /// [`PgStore::remember_cases`]).
    pub fn remember_cases(&self, cases: usize) {
        if let Store::Postgres(s) = self {
            s.remember_cases(cases);
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

/// A partition's position as stored: its owner generation, the first offset
/// not yet applied, and the clock its projections reflect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Position {
    pub generation: i64,
    pub next_offset: Option<i64>,
    pub clock: Option<DateTime<Utc>>,
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
    /// Why the partition's stored position refuses a batch read from this
    /// claim, if it does: another owner's generation ([`StoreError::Fenced`]),
    /// or this owner's but not where the claim stands
    /// ([`StoreError::Resync`]).
    pub fn refusal(&self, partition: i32, stored: Option<Position>) -> Option<StoreError> {
        match stored {
            Some(p) if p.generation == self.generation => {
                let moved = p.next_offset != self.next_offset || p.clock != self.clock;
                moved.then_some(StoreError::Resync {
                    partition,
                    next_offset: p.next_offset,
                    clock: p.clock,
                })
            }
            _ => Some(StoreError::Fenced {
                partition,
                generation: self.generation,
            }),
        }
    }

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
    pub dead_letters: Vec<DeadLetter>,
}

impl PartitionWrite {
    /// Why the partition's stored position refuses this batch, if it does
    /// (see [`Claim::refusal`]).
    pub fn refusal(&self, stored: Option<Position>) -> Option<StoreError> {
        Claim {
            generation: self.generation,
            next_offset: self.start_offset,
            clock: self.start_clock,
            reevaluate: false,
        }
        .refusal(self.partition, stored)
    }

    /// The communes whose counters the batch changes, in code order.
    pub fn changed_communes(&self) -> Vec<String> {
        let communes: std::collections::BTreeSet<&str> = self
            .deltas
            .iter()
            .filter(|(_, c)| !c.is_zero())
            .map(|((commune, _), _)| commune.as_str())
            .collect();
        communes.into_iter().map(str::to_string).collect()
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
                    // (admin shutdown, cannot connect now); 53: resources;
                    // 25P03: the session sat idle in a transaction too long.
                    let code = db.code().unwrap_or_default();
                    ["08", "40", "57", "53", "25P03"]
                        .iter()
                        .any(|c| code.starts_with(c))
                }
                _ => false,
            },
        }
    }
}
