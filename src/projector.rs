//! One partition batch, top to bottom:
//!
//! 1. [`Decoded`]: each record decoded as the consumer reads it (or kept as
//!    a dead letter), so that a batch waits as events;
//! 2. [`Projector::fold`]: load the facts the batch touches, move the clock,
//!    fold (pure, `domain::Fold`), and say what to write;
//! 3. [`commit`]: one transaction, in this order for both stores: guard
//!    (owner generation, offset, clock) → event ids → counters → cases →
//!    documents → dead letters → the communes the partition carries → breach
//!    evaluation, unless the batch is not the caught-up state (the units
//!    valid today that the communes concerned count in, locked when other
//!    partitions feed them too; their window sums, one grouped query per
//!    window; the pure
//!    rules of `domain::breach`; breach states and outbox) → the partition's
//!    next position → commit;
//! 4. [`Projector::committed`]: what follows a commit: the outcome's metrics
//!    and log line, the relay woken for new alerts, a [`ChangeNote`] for
//!    live subscribers and the query cache.
//!
//! Nothing of a batch is written unless all of it is; a failed batch can be
//! tried again, and one that was in fact committed is then refused with
//! [`StoreError::Resync`].

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::Serialize;
use tokio::sync::{broadcast, Notify};
use tracing::{debug, instrument};

use crate::domain::time::local_date;
use crate::domain::{
    decode, Alert, Applied, BatchPosition, CaseEvent, CaseKey, DayCounters, Deferral, DocumentKey,
    Evaluator, EventKey, UnitCode, Units,
};
use crate::internal_events::{
    BatchCommitted, BatchRefolded, BreachesDeferred, DeadLettersKept, InternalEvent,
};
use crate::metrics::Metrics;
use crate::store::{
    BatchKeys, BatchTx, Claim, Committed, DeadLetter, PartitionWrite, Store, StoreError,
};

/// One Kafka record as it came (tests and tools build batches of these;
/// the consumer decodes what it reads at once, see [`Decoded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// When it was written to the log (its Kafka timestamp), in
    /// milliseconds since the epoch.
    pub written_ms: Option<i64>,
}

/// One record, decoded when it was read: a waiting batch holds events, not
/// copies of the raw records, and only a record that is not a valid event
/// is kept as it came, as its dead letter.
#[derive(Debug, Clone)]
pub struct Decoded {
    pub partition: i32,
    pub offset: i64,
    pub written_ms: Option<i64>,
    pub outcome: Result<CaseEvent, Box<DeadLetter>>,
}

impl Decoded {
    /// Decodes one record of `partition` at `offset`.
    pub fn new(
        units: &Units,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        written_ms: Option<i64>,
    ) -> Self {
        let outcome = decode(value, units).map_err(|why| {
            Box::new(DeadLetter {
                partition,
                offset,
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                reason_code: why.code(),
                // Stored as text, which cannot hold a NUL (a reason may
                // quote the record).
                reason: why.to_string().replace('\0', "\\u0000"),
            })
        });
        Decoded {
            partition,
            offset,
            written_ms,
            outcome,
        }
    }
}

/// A batch's records: its valid events, its dead letters, and where it
/// ends.
#[derive(Debug, Clone, Default)]
pub struct Records {
    pub events: Vec<CaseEvent>,
    pub dead_letters: Vec<DeadLetter>,
    /// The last record's offset and Kafka timestamp.
    last: Option<(i64, Option<i64>)>,
}

impl Records {
    /// How many records, events and dead letters together.
    pub fn len(&self) -> usize {
        self.events.len() + self.dead_letters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The offset after the last record, if there is one.
    pub fn next_offset(&self) -> Option<i64> {
        self.last.map(|(offset, _)| offset + 1)
    }

    /// When the last record was written to the log.
    pub fn written_ms(&self) -> Option<i64> {
        self.last.and_then(|(_, written)| written)
    }
}

impl From<Vec<Decoded>> for Records {
    /// The records in offset order, as the batcher hands them out.
    fn from(decoded: Vec<Decoded>) -> Self {
        let last = decoded.last().map(|d| (d.offset, d.written_ms));
        let mut events = Vec::with_capacity(decoded.len());
        let mut dead_letters = Vec::new();
        for d in decoded {
            match d.outcome {
                Ok(e) => events.push(e),
                Err(dead) => dead_letters.push(*dead),
            }
        }
        Records {
            events,
            dead_letters,
            last,
        }
    }
}

/// The records of one partition in a batch (possibly none: a clock tick).
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    pub partition: i32,
    pub claim: Claim,
    pub records: Records,
    /// Records on the partition after this batch, as far as the consumer
    /// knows (`None`: its end is not known yet): whether a backlog is being
    /// read (see `domain::CatchUp`).
    pub behind: Option<i64>,
}

impl PartitionBatch {
    /// What the catch-up rule looks at.
    fn position(&self) -> BatchPosition {
        BatchPosition {
            records: self.records.len(),
            behind: self.behind,
            written_at: self
                .records
                .written_ms()
                .and_then(DateTime::from_timestamp_millis),
            newest_event: self.records.events.iter().map(|e| e.occurred_at).max(),
        }
    }
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    pub records: usize,
    pub applied: usize,
    pub superseded: usize,
    pub duplicates: usize,
    pub dead_letters: usize,
    /// Breach transitions written to the outbox with this batch.
    pub alerts: Vec<Alert>,
    /// Breaches were not evaluated: the batch is not the caught-up state
    /// (the next one that is evaluates every commune of the partition).
    pub deferred: Option<Deferral>,
}

/// What a committed batch (or clock tick) changed, for live subscribers
/// (`/api/v1/projections/stream`) and the query cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChangeNote {
    pub partition: i32,
    pub records: usize,
    /// The communes whose counters, cases or documents changed.
    pub communes: Vec<String>,
    /// The batch's latest event time.
    pub event_time: Option<DateTime<Utc>>,
    /// The clock the partition's projections now reflect.
    pub clock: Option<DateTime<Utc>>,
    pub committed_at: DateTime<Utc>,
}

/// Where [`ChangeNote`]s are sent.
pub type LiveChanges = broadcast::Sender<Arc<ChangeNote>>;

/// Folds batches into the store.
#[derive(Debug, Clone)]
pub struct Projector {
    store: Store,
    units: Units,
    evaluator: Option<Evaluator>,
    metrics: Arc<Metrics>,
    alerts_written: Arc<Notify>,
    changes: LiveChanges,
    /// Partitions whose batches load their stored event ids before folding
    /// (see [`Projector::project_partition`]).
    careful: Arc<Mutex<HashSet<i32>>>,
}

/// One try at a batch: what [`Projector::attempt`] folds and writes.
#[derive(Clone, Copy)]
struct Attempt<'a> {
    batch: &'a PartitionBatch,
    now: DateTime<Utc>,
    events: &'a [CaseEvent],
    dead_letters: &'a [DeadLetter],
    /// The batch's stored documents are loaded too.
    careful: bool,
}

/// A batch folded and ready to commit, and whether it repeated an event id
/// or a document stored before it.
struct Folded {
    write: PartitionWrite,
    report: BatchReport,
    repeated: bool,
}

impl Projector {
    /// A projector; with an evaluator, every batch also evaluates breaches.
    pub fn new(
        store: Store,
        units: Units,
        evaluator: Option<Evaluator>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Projector {
            store,
            units,
            evaluator,
            metrics,
            alerts_written: Arc::new(Notify::new()),
            changes: broadcast::channel(256).0,
            careful: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Notified after a batch that wrote alerts to the outbox, so the relay
    /// publishes them at once.
    pub fn alerts_written(&self) -> Arc<Notify> {
        self.alerts_written.clone()
    }

    /// Told of every committed batch (see [`ChangeNote`]).
    pub fn changes(&self) -> LiveChanges {
        self.changes.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The units records are decoded against.
    pub fn units(&self) -> &Units {
        &self.units
    }

    /// Projects one partition's batch with the clock at `now`, in one
    /// transaction.
    ///
    /// A repeated event id is recognised by the case it belongs to, which
    /// keeps the ids applied to it. A case usually has several events, in
    /// different batches: SQLite's store always reads the batch's cases;
    /// PostgreSQL's does too, unless told to remember those its batches of
    /// the partition wrote (`database.cached_cases`), and then reads none.
    /// Documents, and such a store's cases it does not remember, are not
    /// looked up while the partition's recent
    /// batches repeated none: the commit inserts them, and their unique key
    /// decides. Should one turn out stored already, that transaction is
    /// rolled back and the batch folded again careful, with its stored
    /// documents and cases loaded, and the partition stays careful until a
    /// batch comes that repeats none and reads no case it did not remember
    /// (a stream that re-signs documents often thus keeps looking them up;
    /// a pipeline started on stored cases reads them until it remembers
    /// them).
    #[instrument(name = "projector.batch", skip_all, fields(partition = batch.partition, records = batch.records.len()), err(level = "debug"))]
    pub async fn project_partition(
        &self,
        batch: &PartitionBatch,
        now: DateTime<Utc>,
    ) -> Result<BatchReport, StoreError> {
        let started = Instant::now();
        let deferred = self
            .evaluator
            .as_ref()
            .and_then(|e| e.catch_up.defers(now, &batch.position()));
        let evaluator = self.evaluator.as_ref().filter(|_| deferred.is_none());
        let mut careful = self.careful_set().contains(&batch.partition);
        let (folded, alerts, committed) = loop {
            let attempt = Attempt {
                batch,
                now,
                events: &batch.records.events,
                dead_letters: &batch.records.dead_letters,
                careful,
            };
            let outcome = match &self.store {
                Store::Postgres(s) => {
                    self.attempt(s.begin_batch().await?, &attempt, evaluator)
                        .await
                }
                Store::Sqlite(s) => {
                    self.attempt(s.begin_batch().await?, &attempt, evaluator)
                        .await
                }
            };
            match outcome {
                Ok(done) => break done,
                Err(StoreError::StoredAlready { what, .. }) if !careful => {
                    BatchRefolded {
                        partition: batch.partition,
                        what,
                    }
                    .emit(&self.metrics);
                    self.careful_set().insert(batch.partition);
                    careful = true;
                }
                Err(e) => return Err(e),
            }
        };
        if !folded.repeated {
            self.careful_set().remove(&batch.partition);
        }
        let report = BatchReport {
            alerts,
            deferred,
            ..folded.report
        };
        self.committed(&folded.write, &report, started);
        let PartitionWrite {
            cases, new_cases, ..
        } = folded.write;
        committed.remember(cases.into_iter().chain(new_cases));
        Ok(report)
    }

    fn careful_set(&self) -> std::sync::MutexGuard<'_, HashSet<i32>> {
        self.careful.lock().expect("careful lock")
    }

    /// `records` decoded, as one batch holds them.
    pub fn decode_records(&self, records: Vec<Record>) -> Records {
        let decoded: Vec<Decoded> = records
            .into_iter()
            .map(|r| {
                Decoded::new(
                    &self.units,
                    r.partition,
                    r.offset,
                    r.key.as_deref(),
                    r.value.as_deref(),
                    r.written_ms,
                )
            })
            .collect();
        Records::from(decoded)
    }

    /// One try at the batch, in the transaction `tx`: the partition's
    /// position checked against the claim, the batch folded from what is
    /// stored, and written (see [`write`]).
    async fn attempt<T: BatchTx>(
        &self,
        mut tx: T,
        a: &Attempt<'_>,
        evaluator: Option<&Evaluator>,
    ) -> Result<(Folded, Vec<Alert>, Committed), StoreError> {
        let partition = a.batch.partition;
        if let Some(refused) = a
            .batch
            .claim
            .refusal(partition, tx.position(partition).await?)
        {
            return Err(refused);
        }
        let folded = self.fold(&mut tx, a).await?;
        let (alerts, committed) = write(tx, &folded.write, evaluator).await?;
        Ok((folded, alerts, committed))
    }

    /// Loads the working set inside the batch's transaction (with the
    /// batch's stored documents when `careful`), moves its clock to `now`,
    /// folds the events, and says what the commit writes.
    async fn fold<T: BatchTx>(&self, tx: &mut T, a: &Attempt<'_>) -> Result<Folded, StoreError> {
        let Attempt {
            batch,
            now,
            events,
            dead_letters,
            careful,
        } = *a;
        let (cases, documents) = keys(events);
        let keys = BatchKeys {
            cases: &cases,
            documents: if careful { &documents } else { &[] },
            events,
            careful,
        };
        let mut fold = tx
            .load(&self.units, batch.partition, batch.claim.clock, now, &keys)
            .await?;
        // Which of the batch's cases and documents the store has: those are
        // updated, the others inserted.
        let stored_cases: FxHashSet<CaseKey> = cases
            .into_iter()
            .filter(|k| fold.case(k).is_some())
            .collect();
        let stored_documents: FxHashSet<DocumentKey> = documents
            .into_iter()
            .filter(|k| fold.document(k).is_some())
            .collect();
        fold.advance_clock(now);
        let mut report = BatchReport {
            records: batch.records.len(),
            dead_letters: dead_letters.len(),
            ..BatchReport::default()
        };
        let mut changed_cases = FxHashSet::default();
        let mut changed_documents = FxHashSet::default();
        for e in events {
            match fold.apply(e) {
                Applied::Duplicate => {
                    report.duplicates += 1;
                    continue;
                }
                Applied::Superseded => report.superseded += 1,
                Applied::Changed => report.applied += 1,
            }
            // Superseded too: the case or document keeps the event's id.
            match e.key() {
                EventKey::Case(k) => changed_cases.insert(k),
                EventKey::Document(k) => changed_documents.insert(k),
            };
        }
        // The cases the clock made late changed too (stored: the clock
        // only moves cases it loaded).
        let mut stored_cases = stored_cases;
        stored_cases.extend(fold.clocked().iter().cloned());
        changed_cases.extend(fold.clocked().iter().cloned());
        // In key order: the upserts then walk each index from one end to the
        // other instead of jumping around it.
        let mut changed_cases: Vec<CaseKey> = changed_cases.into_iter().collect();
        changed_cases.sort_unstable();
        let mut changed_documents: Vec<DocumentKey> = changed_documents.into_iter().collect();
        changed_documents.sort_unstable();
        let (case_states, document_states, deltas) =
            fold.into_written(&changed_cases, &changed_documents);
        let (cases, new_cases) = split_stored(changed_cases, case_states, &stored_cases);
        let (documents, new_documents) =
            split_stored(changed_documents, document_states, &stored_documents);
        let repeated = report.duplicates > 0 || !stored_documents.is_empty() || tx.cases_read() > 0;
        let write = PartitionWrite {
            partition: batch.partition,
            generation: batch.claim.generation,
            start_offset: batch.claim.next_offset,
            start_clock: batch.claim.clock,
            next_offset: batch.records.next_offset(),
            clock: Some(now),
            clock_moved: batch.claim.evaluates_all(now),
            event_time: events.iter().map(|e| e.occurred_at).max(),
            deltas: deltas.into_iter().collect(),
            cases,
            new_cases,
            documents,
            new_documents,
            dead_letters: dead_letters.to_vec(),
        };
        Ok(Folded {
            write,
            report,
            repeated,
        })
    }

    /// What follows a committed batch: its outcome counted and logged, the
    /// relay woken if it wrote alerts, live subscribers told what changed.
    fn committed(&self, write: &PartitionWrite, report: &BatchReport, started: Instant) {
        BatchCommitted {
            partition: write.partition,
            report,
            seconds: started.elapsed().as_secs_f64(),
        }
        .emit(&self.metrics);
        let reasons: Vec<&'static str> = write.dead_letters.iter().map(|d| d.reason_code).collect();
        DeadLettersKept {
            partition: write.partition,
            reasons: &reasons,
        }
        .emit(&self.metrics);
        if let Some(why) = report.deferred {
            BreachesDeferred {
                partition: write.partition,
                why,
            }
            .emit(&self.metrics);
        }
        if !report.alerts.is_empty() {
            self.alerts_written.notify_one();
        }
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(Arc::new(ChangeNote {
                partition: write.partition,
                records: report.records,
                communes: touched_communes(write),
                event_time: write.event_time,
                clock: write.clock,
                committed_at: Utc::now(),
            }));
        }
        debug!(?report, "batch committed");
    }
}

/// Writes one partition batch in one transaction, in the order the module
/// documentation gives, and returns the alerts it put in the outbox (with an
/// evaluator; none without). Refused, with nothing written:
/// [`StoreError::Fenced`] if another member claimed the partition since the
/// batch's claim, [`StoreError::Resync`] if the partition does not stand
/// where the batch starts (offset and clock), [`StoreError::StoredAlready`]
/// if a case or document it takes as new is stored already.
pub async fn commit(
    store: &Store,
    write: &PartitionWrite,
    evaluator: Option<&Evaluator>,
) -> Result<Vec<Alert>, StoreError> {
    // The written cases stay with the caller: none is remembered.
    let (alerts, _) = match store {
        Store::Postgres(s) => guarded(s.begin_batch().await?, write, evaluator).await?,
        Store::Sqlite(s) => guarded(s.begin_batch().await?, write, evaluator).await?,
    };
    Ok(alerts)
}

/// [`write`], once the partition's position is checked.
async fn guarded<T: BatchTx>(
    mut tx: T,
    w: &PartitionWrite,
    evaluator: Option<&Evaluator>,
) -> Result<(Vec<Alert>, Committed), StoreError> {
    if let Some(refused) = w.refusal(tx.position(w.partition).await?) {
        return Err(refused);
    }
    write(tx, w, evaluator).await
}

/// The batch's writes, after its position was checked (see [`commit`]);
/// dropping `tx` on an error rolls it back.
#[instrument(name = "store.commit", skip_all, fields(partition = w.partition), err(level = "debug"))]
async fn write<T: BatchTx>(
    mut tx: T,
    w: &PartitionWrite,
    evaluator: Option<&Evaluator>,
) -> Result<(Vec<Alert>, Committed), StoreError> {
    tx.add_counters(&w.deltas).await?;
    tx.write_cases(w.partition, &w.cases, &w.new_cases).await?;
    tx.write_documents(w.partition, &w.documents, &w.new_documents)
        .await?;
    tx.keep_dead_letters(&w.dead_letters).await?;
    // Always, also while breaches wait: the evaluation that follows a
    // catch-up, or a midnight, covers every commune the partition carries.
    tx.note_communes(w.partition, &w.changed_communes()).await?;
    let alerts = match (evaluator, w.clock) {
        // The communes whose counters changed, and those whose cases did
        // without a counter (a receipt corrected to another due date, an
        // open case withdrawn before it was due): their cases coming due
        // changed.
        (Some(evaluator), Some(now)) => {
            evaluate_breaches(&mut tx, evaluator, w, touched_communes(w), now).await?
        }
        _ => Vec::new(),
    };
    tx.move_position(w, evaluator.is_some() && w.clock.is_some())
        .await?;
    let committed = tx.commit().await?;
    Ok((alerts, committed))
}

/// Re-evaluates, against their targets, the units valid today that the
/// communes the batch changed count in (and, when the local date moved, those
/// of every commune of the partition), inside the batch's transaction: breach
/// states and the outbox change with the counters. A unit's counters are
/// those of every code that counts in it (an old commune's, after a merger:
/// docs/UNITS.md), whatever partition carries them; such a unit is locked
/// for the evaluation, and waits (is left to the partition that catches up
/// last) while another partition that carries one of its codes is not
/// caught up.
async fn evaluate_breaches<T: BatchTx>(
    tx: &mut T,
    evaluator: &Evaluator,
    w: &PartitionWrite,
    changed: Vec<String>,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>, StoreError> {
    let mut named: BTreeSet<String> = changed.into_iter().collect();
    if w.clock_moved {
        named.extend(tx.communes_of(w.partition).await?);
    }
    let today = local_date(now);
    let units = &evaluator.units;
    let mut targets: BTreeSet<&str> = named
        .iter()
        .flat_map(|c| units.evaluated_as(c, today))
        .map(UnitCode::as_str)
        .collect();
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let feeders: FxHashMap<&str, Vec<&UnitCode>> = targets
        .iter()
        .map(|&t| (t, units.feeders(t, today)))
        .collect();
    let shared: Vec<String> = targets
        .iter()
        .filter(|t| feeders[*t].len() > 1)
        .map(|t| (*t).to_string())
        .collect();
    let mut partitions = vec![w.partition];
    if !shared.is_empty() {
        tx.lock_units(&shared).await?;
        let codes: Vec<String> = shared
            .iter()
            .flat_map(|t| &feeders[t.as_str()])
            .map(ToString::to_string)
            .collect();
        let carriers = tx.carriers(&codes).await?;
        let behind: HashSet<&str> = carriers
            .iter()
            .filter(|c| c.partition != w.partition && !c.caught_up)
            .map(|c| c.commune.as_str())
            .collect();
        targets.retain(|t| !feeders[t].iter().any(|f| behind.contains(f.as_str())));
        partitions.extend(carriers.iter().map(|c| c.partition));
        partitions.sort_unstable();
        partitions.dedup();
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let communes: Vec<String> = targets.iter().map(|t| (*t).to_string()).collect();
    let codes: Vec<String> = {
        let all: BTreeSet<&str> = targets
            .iter()
            .flat_map(|t| feeders[t].iter().map(|f| f.as_str()))
            .collect();
        all.into_iter().map(str::to_string).collect()
    };
    let mut sums: HashMap<(usize, String), DayCounters> = HashMap::new();
    for (n, window) in evaluator.windows.iter().enumerate() {
        let (from, to) = window.days(today);
        for (lo, hi) in units.pieces(from, to) {
            for (code, c) in tx.window_sums(&codes, (lo, hi)).await? {
                // Within a piece a code names one unit: where it counts.
                let Some(unit) = units.evaluated_in(&code, lo, today) else {
                    continue;
                };
                if targets.contains(unit.code.as_str()) {
                    *sums.entry((n, unit.code.to_string())).or_default() += c;
                }
            }
        }
    }
    let mut coming: HashMap<String, Vec<(chrono::NaiveDate, i64)>> = HashMap::new();
    if let Some(days) = evaluator.coming_due_days(today) {
        for (commune, due, n) in tx.coming_due(&partitions, &communes, days).await? {
            coming.entry(commune).or_default().push((due, n));
        }
    }
    let states: HashMap<_, _> = tx.breach_states(&communes).await?.into_iter().collect();
    let (alerts, next) = evaluator.evaluate(
        now,
        &communes,
        |w, c| sums.get(&(w, c.to_string())).copied().unwrap_or_default(),
        |c, from, to| {
            coming.get(c).map_or(0, |days| {
                days.iter()
                    .filter(|(d, _)| (from..=to).contains(d))
                    .map(|(_, n)| n)
                    .sum()
            })
        },
        |k| states.get(k).copied().unwrap_or_default(),
    );
    tx.write_breach_states(&next).await?;
    tx.add_to_outbox(&alerts).await?;
    Ok(alerts)
}

/// The communes whose counters, cases or documents a batch changed.
fn touched_communes(write: &PartitionWrite) -> Vec<String> {
    let communes: BTreeSet<&str> = write
        .deltas
        .iter()
        .map(|((commune, _), _)| commune.as_str())
        .chain(
            write
                .cases
                .iter()
                .chain(&write.new_cases)
                .map(|(k, _)| k.commune.as_str()),
        )
        .chain(
            write
                .documents
                .iter()
                .chain(&write.new_documents)
                .map(|(k, _)| k.commune.as_str()),
        )
        .collect();
    communes.into_iter().map(str::to_string).collect()
}

type Keyed<K, S> = Vec<(K, S)>;

/// Each changed key with its state, in two lists: those the store had when
/// the batch was loaded, and the others (key order kept in both).
fn split_stored<K: Eq + std::hash::Hash, S>(
    changed: Vec<K>,
    states: Vec<S>,
    stored: &FxHashSet<K>,
) -> (Keyed<K, S>, Keyed<K, S>) {
    changed
        .into_iter()
        .zip(states)
        .partition(|(k, _)| stored.contains(k))
}

/// The distinct cases and documents a batch names.
fn keys(events: &[CaseEvent]) -> (Vec<CaseKey>, Vec<DocumentKey>) {
    let mut cases = FxHashSet::default();
    let mut documents = FxHashSet::default();
    for e in events {
        match e.key() {
            EventKey::Case(k) => cases.insert(k),
            EventKey::Document(k) => documents.insert(k),
        };
    }
    (cases.into_iter().collect(), documents.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::domain::units::tests::long_my;
    use crate::simulator::Simulator;

    #[test]
    fn records_are_decoded_as_read_and_only_the_invalid_kept_raw() {
        let units = long_my();
        let start = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        let valid: Vec<String> = Simulator::new(&units, 7, start, 20.0)
            .take(2)
            .map(|r| r.value)
            .collect();
        let values = [valid[0].as_bytes(), b"{not json", valid[1].as_bytes()];
        let decoded: Vec<Decoded> = values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let offset = 40 + i as i64;
                Decoded::new(&units, 3, offset, Some(b"k"), Some(v), Some(offset * 10))
            })
            .collect();
        let records = Records::from(decoded);
        assert_eq!(records.len(), 3);
        let want: Vec<CaseEvent> = valid
            .iter()
            .map(|v| decode(Some(v.as_bytes()), &units).unwrap())
            .collect();
        assert_eq!(records.events, want, "in offset order, as decoded");
        let [dead] = records.dead_letters.as_slice() else {
            panic!("one dead letter: {:?}", records.dead_letters);
        };
        assert_eq!((dead.partition, dead.offset), (3, 41));
        assert_eq!(dead.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(dead.value.as_deref(), Some(&b"{not json"[..]));
        assert_eq!(dead.reason_code, "not_json");
        assert_eq!(records.next_offset(), Some(43));
        assert_eq!(records.written_ms(), Some(420), "the last record's");
        let none = Records::from(Vec::new());
        assert!(none.is_empty());
        assert_eq!((none.next_offset(), none.written_ms()), (None, None));
    }
}
