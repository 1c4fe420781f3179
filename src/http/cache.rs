//! A small read cache of the query API, so that most one-commune queries
//! need no database round trip (the store's pool is shared with the ingest).
//!
//! - **Freshness**: the store's value (the max over partitions of event time,
//!   clock and commit time), kept up to date by the projector's change notes
//!   (each note is merged in, component by component, with `max`), and read
//!   again from the store at most once per TTL: that covers what comes
//!   without a note here (another member's commits, a claim, a commit whose
//!   outcome was lost).
//! - **Sums** of one commune over one date range, dropped when a change note
//!   names the commune, and kept at most one TTL in any case (a commit whose
//!   outcome was lost and then resynced tells nothing; another member's
//!   commits are noted by that member only). A query stores its result only
//!   if no note about its commune was taken in while it read the database
//!   (a per-commune generation), so that a read from before a commit is
//!   never kept after the commit's note.
//!
//! Notes are taken in by the requests themselves, before they look anything
//! up (no task of its own). Missed notes (a receiver left behind) and a
//! rebuild's switch to another schema (seen in [`Store::schema`]) clear
//! everything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, NaiveDate, Utc};
use tokio::sync::broadcast::{self, error::TryRecvError};

use crate::domain::DayCounters;
use crate::projector::{ChangeNote, LiveChanges};
use crate::store::{Freshness, Store, StoreError};

/// How long a cached answer may be served without a note confirming it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(1);
/// At most this many cached sums (date ranges are arbitrary).
pub const DEFAULT_CAPACITY: usize = 4096;

/// The read cache (see the module documentation).
#[derive(Debug)]
pub struct QueryCache {
    ttl: Duration,
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    notes: broadcast::Receiver<Arc<ChangeNote>>,
    /// The schema the cached values were read from.
    schema: Option<String>,
    /// Bumped whenever everything is dropped.
    epoch: u64,
    /// Per commune: bumped by every note naming it.
    generations: HashMap<String, u64>,
    /// Per commune: (from, to) -> (read started at, sums).
    sums: HashMap<String, CommuneSums>,
    entries: usize,
    freshness: Option<Freshness>,
    /// When the store's freshness was last read (or that read started).
    freshness_read: Option<Instant>,
}

/// One commune's cached sums: (from, to) -> (read started at, sums).
type CommuneSums = HashMap<(NaiveDate, NaiveDate), (Instant, DayCounters)>;

/// What a query saw before reading the database: its result is kept only if
/// nothing changed since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    generation: u64,
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    a.max(b)
}

impl QueryCache {
    /// A cache told of changes by `changes`, with the default TTL and size.
    pub fn new(changes: &LiveChanges) -> Self {
        Self::with_limits(changes, DEFAULT_TTL, DEFAULT_CAPACITY)
    }

    pub fn with_limits(changes: &LiveChanges, ttl: Duration, capacity: usize) -> Self {
        QueryCache {
            ttl,
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                notes: changes.subscribe(),
                schema: None,
                epoch: 0,
                generations: HashMap::new(),
                sums: HashMap::new(),
                entries: 0,
                freshness: None,
                freshness_read: None,
            }),
        }
    }

    /// The state, with every note sent so far taken in and everything
    /// dropped if the store now serves another schema.
    fn current(&self, store: &Store) -> MutexGuard<'_, Inner> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let schema = store.schema();
        if inner.schema.as_deref() != Some(schema.as_str()) {
            inner.clear();
            inner.schema = Some(schema);
        }
        let postgres = matches!(store, Store::Postgres(_));
        loop {
            match inner.notes.try_recv() {
                Ok(note) => inner.take_in(&note, postgres),
                Err(TryRecvError::Lagged(_)) => inner.clear(),
                Err(TryRecvError::Empty | TryRecvError::Closed) => break,
            }
        }
        inner
    }

    /// The sums of `commune` over `from..=to`: cached, or read from the store.
    pub async fn commune_sums(
        &self,
        store: &Store,
        commune: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DayCounters, StoreError> {
        let started = Instant::now();
        let ticket = match self.cached_sums(store, commune, from, to) {
            Ok(sums) => return Ok(sums),
            Err(ticket) => ticket,
        };
        let sums = store.commune_sums(commune, from, to).await?;
        self.keep_sums(store, ticket, started, commune, (from, to), sums);
        Ok(sums)
    }

    /// The cached sums, if fresh; else the ticket to store them with.
    pub fn cached_sums(
        &self,
        store: &Store,
        commune: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<DayCounters, Ticket> {
        let inner = self.current(store);
        let hit = inner
            .sums
            .get(commune)
            .and_then(|m| m.get(&(from, to)))
            .filter(|(read, _)| read.elapsed() < self.ttl);
        match hit {
            Some((_, sums)) => Ok(*sums),
            None => Err(inner.ticket(commune)),
        }
    }

    /// Keeps sums read (the read started at `started`) with `ticket`, unless
    /// a note about the commune (or a clear) came in since the ticket.
    /// Returns whether they were kept.
    pub fn keep_sums(
        &self,
        store: &Store,
        ticket: Ticket,
        started: Instant,
        commune: &str,
        range: (NaiveDate, NaiveDate),
        sums: DayCounters,
    ) -> bool {
        let mut inner = self.current(store);
        if inner.ticket(commune) != ticket {
            return false;
        }
        if inner.entries >= self.capacity {
            let ttl = self.ttl;
            inner.drop_expired(ttl);
            if inner.entries >= self.capacity {
                inner.drop_sums();
            }
        }
        let previous = inner
            .sums
            .entry(commune.to_string())
            .or_default()
            .insert(range, (started, sums));
        if previous.is_none() {
            inner.entries += 1;
        }
        true
    }

    /// What the projections reflect: as last read from the store with every
    /// note since merged in, read again once older than the TTL.
    pub async fn freshness(&self, store: &Store) -> Result<Freshness, StoreError> {
        let epoch = {
            let mut inner = self.current(store);
            let due = inner
                .freshness_read
                .is_none_or(|read| read.elapsed() >= self.ttl);
            match &inner.freshness {
                Some(f) if !due => return Ok(f.clone()),
                Some(_) => {
                    // This request reads it again; the others meanwhile
                    // answer with what is known.
                    inner.freshness_read = Some(Instant::now());
                    inner.epoch
                }
                None => inner.epoch,
            }
        };
        let read = store.freshness().await?;
        Ok(self.merge_freshness(store, epoch, read))
    }

    /// Merges a freshness read from the store (since `epoch`) into the
    /// known one, and returns the result.
    fn merge_freshness(&self, store: &Store, epoch: u64, read: Freshness) -> Freshness {
        let mut inner = self.current(store);
        if inner.epoch != epoch {
            // Read from a schema since left, or with notes missed.
            return read;
        }
        let merged = match &inner.freshness {
            Some(known) => Freshness {
                event_time: later(known.event_time, read.event_time),
                committed_at: later(known.committed_at, read.committed_at),
                clock: later(known.clock, read.clock),
            },
            None => read,
        };
        inner.freshness = Some(merged.clone());
        if inner.freshness_read.is_none() {
            inner.freshness_read = Some(Instant::now());
        }
        merged
    }

    /// Cached sums, for tests and metrics.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).entries
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn ticket(&self, commune: &str) -> Ticket {
        Ticket {
            epoch: self.epoch,
            generation: self.generations.get(commune).copied().unwrap_or(0),
        }
    }

    fn take_in(&mut self, note: &ChangeNote, postgres: bool) {
        for commune in &note.communes {
            *self.generations.entry(commune.clone()).or_default() += 1;
            if let Some(dropped) = self.sums.remove(commune) {
                self.entries -= dropped.len();
            }
        }
        // Only on top of a value read from the store: a note tells of one
        // partition, the freshness is the max over all of them.
        if let Some(f) = &mut self.freshness {
            // As the store keeps them: PostgreSQL to the microsecond.
            let stored = |t: Option<DateTime<Utc>>| {
                if postgres {
                    t.map(|t| {
                        t.duration_trunc(chrono::Duration::microseconds(1))
                            .unwrap_or(t)
                    })
                } else {
                    t
                }
            };
            f.event_time = later(f.event_time, stored(note.event_time));
            f.clock = later(f.clock, stored(note.clock));
            f.committed_at = later(f.committed_at, stored(Some(note.committed_at)));
        }
    }

    fn drop_expired(&mut self, ttl: Duration) {
        for m in self.sums.values_mut() {
            m.retain(|_, (read, _)| read.elapsed() < ttl);
        }
        self.sums.retain(|_, m| !m.is_empty());
        self.entries = self.sums.values().map(HashMap::len).sum();
    }

    fn drop_sums(&mut self) {
        self.sums.clear();
        self.entries = 0;
    }

    /// Drops everything, and voids every ticket handed out.
    fn clear(&mut self) {
        self.epoch += 1;
        self.generations.clear();
        self.drop_sums();
        self.freshness = None;
        self.freshness_read = None;
    }
}
