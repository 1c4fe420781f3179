//! One batch, end to end: decode each record (or keep it as a dead letter),
//! load the facts it touches, move the clock, fold, and write everything in
//! one transaction together with the partitions' next offsets.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use rustc_hash::FxHashSet;
use tokio::sync::{broadcast, Notify};

use chrono::{DateTime, Utc};
use tracing::{debug, instrument};

use crate::domain::{
    decode, Alert, Applied, CaseEvent, CaseKey, DocumentKey, Evaluator, EventKind, Units,
};
use crate::store::{BatchKeys, Claim, DeadLetter, PartitionWrite, Store, StoreError};

/// One Kafka record, copied out of the consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
}

/// The records of one partition in a batch (possibly none: a clock tick).
#[derive(Debug, Clone)]
pub struct PartitionBatch {
    pub partition: i32,
    pub claim: Claim,
    pub records: Vec<Record>,
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
}

/// Live subscribers (server-sent events): after every committed batch
/// (clock ticks included), a small JSON note of what it changed: `partition`,
/// `records`, `communes` (those whose counters, cases or documents changed),
/// `event_time` (the batch's latest event), `clock` and `committed_at`.
pub type LiveChanges = broadcast::Sender<Arc<str>>;

/// Folds batches into the store.
#[derive(Debug, Clone)]
pub struct Projector {
    store: Store,
    units: Units,
    evaluator: Option<Evaluator>,
    alerts_written: Arc<Notify>,
    changes: LiveChanges,
    /// Partitions whose batches load their stored event ids before folding
    /// (see [`Projector::project_partition`]).
    careful: Arc<Mutex<HashSet<i32>>>,
}

impl Projector {
    /// A projector; with an evaluator, every batch also evaluates breaches.
    pub fn new(store: Store, units: Units, evaluator: Option<Evaluator>) -> Self {
        Projector {
            store,
            units,
            evaluator,
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

    /// Told of every committed batch (see [`LiveChanges`]).
    pub fn changes(&self) -> LiveChanges {
        self.changes.clone()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Projects one partition's batch with the clock at `now`, in one
    /// transaction. Nothing of it is written unless all of it is; a failed
    /// batch can be tried again, and one that was in fact committed is then
    /// refused with [`StoreError::Resync`].
    ///
    /// Event ids and documents are not looked up before folding while the
    /// partition's recent batches repeated none: the commit inserts them, and
    /// their unique keys decide. Should one of them turn out stored already,
    /// that transaction is rolled back and the batch folded again with its
    /// stored ids and documents loaded, and the partition stays careful until
    /// a batch comes that repeats neither (a stream that re-signs documents
    /// often thus keeps looking them up). Cases are always looked up: a case
    /// usually has several events, in different batches.
    #[instrument(name = "projector.batch", skip_all, fields(partition = batch.partition, records = batch.records.len()), err(level = "debug"))]
    pub async fn project_partition(
        &self,
        batch: &PartitionBatch,
        now: DateTime<Utc>,
    ) -> Result<BatchReport, StoreError> {
        let mut events: Vec<CaseEvent> = Vec::with_capacity(batch.records.len());
        let mut dead_letters = Vec::new();
        for r in &batch.records {
            match decode(r.value.as_deref(), &self.units) {
                Ok(e) => events.push(e),
                Err(why) => dead_letters.push(DeadLetter {
                    partition: r.partition,
                    offset: r.offset,
                    key: r.key.clone(),
                    value: r.value.clone(),
                    reason_code: why.code(),
                    reason: why.to_string(),
                }),
            }
        }
        let careful = self
            .careful
            .lock()
            .expect("careful lock")
            .contains(&batch.partition);
        if !careful {
            match self
                .fold_and_commit(batch, now, &events, &dead_letters, false)
                .await
            {
                Err(StoreError::StoredAlready { what, .. }) => {
                    debug!(
                        partition = batch.partition,
                        what, "stored already: folding the batch again, its ids looked up"
                    );
                    self.careful
                        .lock()
                        .expect("careful lock")
                        .insert(batch.partition);
                }
                outcome => return outcome.map(|(report, _)| report),
            }
        }
        let (report, repeated) = self
            .fold_and_commit(batch, now, &events, &dead_letters, true)
            .await?;
        if !repeated {
            self.careful
                .lock()
                .expect("careful lock")
                .remove(&batch.partition);
        }
        Ok(report)
    }

    /// Loads the working set (with the batch's stored event ids and
    /// documents when `careful`), folds, and commits. Also says whether the
    /// batch repeated an event id or a document stored before it.
    async fn fold_and_commit(
        &self,
        batch: &PartitionBatch,
        now: DateTime<Utc>,
        events: &[CaseEvent],
        dead_letters: &[DeadLetter],
        careful: bool,
    ) -> Result<(BatchReport, bool), StoreError> {
        let mut report = BatchReport::default();
        let (cases, documents) = keys(events);
        let ids: Vec<String> = if careful {
            events.iter().map(|e| e.event_id.clone()).collect()
        } else {
            Vec::new()
        };
        let mut fold = self
            .store
            .load(
                &self.units,
                batch.partition,
                batch.claim.clock,
                now,
                &BatchKeys {
                    cases: &cases,
                    documents: if careful { &documents } else { &[] },
                    event_ids: &ids,
                },
            )
            .await?;
        // Which of the batch's cases and documents the store has: those are
        // updated, the others inserted.
        let stored_cases: FxHashSet<&CaseKey> =
            cases.iter().filter(|k| fold.case(k).is_some()).collect();
        let stored_documents: FxHashSet<&DocumentKey> = documents
            .iter()
            .filter(|k| fold.document(k).is_some())
            .collect();
        fold.advance_clock(now);
        let mut changed_cases = FxHashSet::default();
        let mut changed_documents = FxHashSet::default();
        let mut seen = Vec::new();
        for e in events {
            match fold.apply(e) {
                Applied::Duplicate => report.duplicates += 1,
                outcome => {
                    seen.push(e.event_id.clone());
                    if outcome == Applied::Superseded {
                        report.superseded += 1;
                        continue;
                    }
                    report.applied += 1;
                    match &e.kind {
                        EventKind::DocumentSigned(d) => {
                            changed_documents.insert(DocumentKey {
                                commune: e.commune.clone(),
                                document_id: d.document_id.clone(),
                            });
                        }
                        _ => {
                            changed_cases.insert(CaseKey {
                                commune: e.commune.clone(),
                                case_id: e.case_id.clone().unwrap_or_default(),
                            });
                        }
                    }
                }
            }
        }
        report.records = batch.records.len();
        report.dead_letters = dead_letters.len();
        // In key order: the upserts then walk each index from one end to the
        // other instead of jumping around it.
        let mut changed_cases: Vec<CaseKey> = changed_cases.into_iter().collect();
        changed_cases.sort_unstable();
        let mut changed_documents: Vec<DocumentKey> = changed_documents.into_iter().collect();
        changed_documents.sort_unstable();
        let (cases, new_cases) = split_stored(changed_cases, &stored_cases, |k| {
            fold.case(k)
                .cloned()
                .expect("a changed case is in the working set")
        });
        let (documents, new_documents) = split_stored(changed_documents, &stored_documents, |k| {
            *fold
                .document(k)
                .expect("a changed document is in the working set")
        });
        let write = PartitionWrite {
            partition: batch.partition,
            generation: batch.claim.generation,
            start_offset: batch.claim.next_offset,
            start_clock: batch.claim.clock,
            next_offset: batch.records.last().map(|r| r.offset + 1),
            clock: Some(now),
            clock_moved: batch.claim.evaluates_all(now),
            event_time: events.iter().map(|e| e.occurred_at).max(),
            deltas: fold.into_deltas().into_iter().collect(),
            cases,
            new_cases,
            documents,
            new_documents,
            seen,
            dead_letters: dead_letters.to_vec(),
        };
        report.alerts = self
            .store
            .commit(std::slice::from_ref(&write), self.evaluator.as_ref())
            .await?;
        debug!(?report, "batch committed");
        self.tell_changes(&write, report.records);
        let repeated = report.duplicates > 0 || !stored_documents.is_empty();
        Ok((report, repeated))
    }

    /// Tells live subscribers, if any, what a committed batch changed.
    fn tell_changes(&self, write: &PartitionWrite, records: usize) {
        if self.changes.receiver_count() == 0 {
            return;
        }
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
        let note = serde_json::json!({
            "partition": write.partition,
            "records": records,
            "communes": communes,
            "event_time": write.event_time,
            "clock": write.clock,
            "committed_at": Utc::now(),
        });
        let _ = self.changes.send(Arc::from(note.to_string()));
    }
}

type Keyed<K, S> = Vec<(K, S)>;

/// Each changed key with its state, in two lists: those the store had when
/// the batch was loaded, and the others (key order kept in both).
fn split_stored<K: Eq + std::hash::Hash, S>(
    changed: Vec<K>,
    stored: &FxHashSet<&K>,
    state: impl Fn(&K) -> S,
) -> (Keyed<K, S>, Keyed<K, S>) {
    changed
        .into_iter()
        .map(|k| {
            let s = state(&k);
            (k, s)
        })
        .partition(|(k, _)| stored.contains(k))
}

/// The distinct cases and documents a batch names.
fn keys(events: &[CaseEvent]) -> (Vec<CaseKey>, Vec<DocumentKey>) {
    let mut cases = FxHashSet::default();
    let mut documents = FxHashSet::default();
    for e in events {
        match &e.kind {
            EventKind::DocumentSigned(d) => {
                documents.insert(DocumentKey {
                    commune: e.commune.clone(),
                    document_id: d.document_id.clone(),
                });
            }
            _ => {
                if let Some(id) = &e.case_id {
                    cases.insert(CaseKey {
                        commune: e.commune.clone(),
                        case_id: id.clone(),
                    });
                }
            }
        }
    }
    (cases.into_iter().collect(), documents.into_iter().collect())
}
