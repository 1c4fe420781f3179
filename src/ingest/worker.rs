//! The consumer thread's loop: read a record, book the batches whose
//! commits finished, start the batches the [`Batcher`] lets go, on the tokio
//! runtime, one in flight per partition. Partitions never wait for each
//! other, and reading goes on while the database works.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::Offset;
use tokio::runtime::Handle;
use tracing::{error, info, info_span, warn, Instrument};

use super::consumer::{lock, resume_at, IngestContext, Owned};
use super::{Backoff, Batcher};
use crate::clock::Clock;
use crate::internal_events::{
    BatchFenced, BatchLetGo, BatchResynced, CommitRetried, ConsumerErrored, InternalEvent,
};
use crate::projector::{BatchReport, Decoded, PartitionBatch, Projector, Records};
use crate::shutdown::CancellationToken;
use crate::store::{Claim, StoreError};

/// The most records read in one go before the loop looks at finished
/// commits and batches due again. Between records, that bookkeeping (the
/// claims, a clock reading per partition) cost more than the reading itself
/// in a replay; a burst is a few hundred microseconds of records.
const READ_BURST: usize = 512;

/// How batches are paced: their size and age, and the clock's tick.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub max_records: usize,
    pub max_held: usize,
    pub max_wait: Duration,
    pub tick: Duration,
    pub clock: Clock,
}

/// A batch's commit, with the clock it was projected at.
type Outcome = (Sent, Result<BatchReport, StoreError>, DateTime<Utc>);

/// What the loop keeps of a batch it sent: the batch itself is dropped where
/// it was committed, so that freeing its events is not the reading
/// thread's work.
#[derive(Debug, Clone, Copy)]
struct Sent {
    partition: i32,
    claim: Claim,
    next_offset: Option<i64>,
}

pub struct Worker {
    consumer: BaseConsumer<IngestContext>,
    projector: Projector,
    runtime: Handle,
    owned: Owned,
    cancel: CancellationToken,
    pace: Pace,
    progress: Progress,
}

impl Worker {
    pub fn new(
        consumer: BaseConsumer<IngestContext>,
        projector: Projector,
        runtime: Handle,
        owned: Owned,
        cancel: CancellationToken,
        pace: Pace,
    ) -> Self {
        Worker {
            consumer,
            projector,
            runtime,
            owned,
            cancel,
            pace,
            progress: Progress::new(),
        }
    }

    /// Runs until cancelled; then lets the commits under way finish (what
    /// was not committed is read again after a restart).
    pub fn run(mut self) -> anyhow::Result<()> {
        let mut batcher = Batcher::new(
            self.pace.max_records,
            self.pace.max_wait,
            self.pace.max_held,
        );
        let mut in_flight: HashMap<i32, tokio::task::JoinHandle<Outcome>> = HashMap::new();
        let mut backoff = Backoff::new();
        let mut last_tick = Instant::now();
        while !self.cancel.is_cancelled() {
            let tick_due = last_tick.elapsed() >= self.pace.tick;
            if tick_due {
                self.claim_again_if_switched()?;
            }
            self.read(&mut batcher, !in_flight.is_empty());
            let done: Vec<i32> = in_flight
                .iter()
                .filter(|(_, h)| h.is_finished())
                .map(|(p, _)| *p)
                .collect();
            for partition in done {
                let handle = in_flight.remove(&partition).expect("in flight");
                let outcome = self.runtime.block_on(handle)?;
                self.settle(outcome, &mut batcher, &mut backoff)?;
            }
            self.start_batches(&mut batcher, &mut in_flight, tick_due);
            if tick_due {
                last_tick = Instant::now();
            }
        }
        for (_, handle) in in_flight {
            if let Ok(outcome) = self.runtime.block_on(handle) {
                let _ = self.settle(outcome, &mut batcher, &mut backoff);
            }
        }
        info!("ingest stopping: uncommitted records will be read again after a restart");
        Ok(())
    }

    /// Waits for a record, at most until the first waiting batch is due,
    /// and keeps it with those that arrived with it (up to [`READ_BURST`],
    /// without waiting again); while the batcher is full, waits for a
    /// commit instead.
    fn read(&self, batcher: &mut Batcher<Decoded>, busy: bool) {
        if batcher.is_full() {
            // The database is behind: read on once a commit completes.
            std::thread::sleep(Duration::from_millis(1));
            return;
        }
        let idle = Duration::from_millis(if busy { 2 } else { 50 });
        let mut timeout = batcher.wait(Instant::now(), idle);
        let mut arrived = None;
        for _ in 0..READ_BURST {
            let polled = self.consumer.poll(timeout);
            self.apply_resets(batcher);
            match polled {
                Some(Ok(m)) => {
                    let at = *arrived.get_or_insert_with(Instant::now);
                    self.keep(&m, batcher, at);
                }
                Some(Err(e)) => {
                    ConsumerErrored { error: &e }.emit(self.projector.metrics());
                    return;
                }
                None => return,
            }
            if batcher.is_full() {
                return;
            }
            timeout = Duration::ZERO;
        }
    }

    /// Drops what was read for partitions claimed anew or let go since.
    fn apply_resets(&self, batcher: &mut Batcher<Decoded>) {
        let reset = std::mem::take(&mut lock(&self.owned).reset);
        for partition in reset {
            batcher.reset(partition);
        }
    }

    /// Decodes a fetched record and keeps it for its partition's next
    /// batch, unless the partition is not (or no longer) ours or the record
    /// is already applied or kept.
    fn keep(&self, m: &BorrowedMessage<'_>, batcher: &mut Batcher<Decoded>, arrived: Instant) {
        let (partition, offset) = (m.partition(), m.offset());
        let expected = lock(&self.owned)
            .claims
            .get(&partition)
            .map(|c| c.next_offset.unwrap_or(0));
        if expected.is_some_and(|next| offset >= next) && batcher.accepts(partition, offset) {
            let decoded = Decoded::new(
                self.projector.units(),
                partition,
                offset,
                m.key(),
                m.payload(),
                m.timestamp().to_millis(),
            );
            batcher.push(decoded, arrived);
        }
    }

    /// Hands every batch the batcher lets go to its own commit on the
    /// runtime. A clock tick sends one, even empty, for each partition whose
    /// clock passed a local midnight (or that was just claimed), so that
    /// cases falling overdue count and breaches are evaluated without events.
    fn start_batches(
        &self,
        batcher: &mut Batcher<Decoded>,
        in_flight: &mut HashMap<i32, tokio::task::JoinHandle<Outcome>>,
        tick_due: bool,
    ) {
        self.apply_resets(batcher);
        let now = self.pace.clock.now();
        let claims: Vec<(i32, Claim)> = lock(&self.owned)
            .claims
            .iter()
            .map(|(p, c)| (*p, *c))
            .collect();
        let awaiting = claims.iter().filter(|(_, c)| c.reevaluate).count();
        self.projector
            .metrics()
            .awaiting_evaluation
            .set(awaiting as i64);
        for (partition, claim) in claims {
            let force = tick_due && claim.evaluates_all(now);
            let Some(records) = batcher.take(partition, Instant::now(), force) else {
                continue;
            };
            let next_offset = records.last().map(|r| r.offset + 1);
            let behind = self.behind(partition, next_offset.or(claim.next_offset).unwrap_or(0));
            let projector = self.projector.clone();
            let span = info_span!("ingest.batch", partition, records = records.len());
            in_flight.insert(
                partition,
                self.runtime.spawn(
                    async move {
                        // Sorted into events and dead letters here, not on
                        // the reading thread.
                        let batch = PartitionBatch {
                            partition,
                            claim,
                            behind,
                            records: Records::from(records),
                        };
                        let outcome = projector.project_partition(&batch, now).await;
                        let sent = Sent {
                            partition,
                            claim,
                            next_offset,
                        };
                        (sent, outcome, now)
                    }
                    .instrument(span),
                ),
            );
        }
    }

    /// Records on `partition` after offset `end`, per the partition's end
    /// offset in librdkafka's latest statistics (no request to the broker;
    /// at most `statistics.interval.ms` old, which only the live trickle
    /// outruns); `None` before the first statistics.
    fn behind(&self, partition: i32, end: i64) -> Option<i64> {
        let high = *lock(&self.owned).ends.get(&partition)?;
        Some((high - end).max(0))
    }

    /// Books the outcome of one partition's commit. A transient failure
    /// sends the partition back to its stored offset, to be read and tried
    /// again after a backoff; a fenced one lets the partition go, or follows
    /// a rebuild's switch-over.
    fn settle(
        &mut self,
        (batch, outcome, now): Outcome,
        batcher: &mut Batcher<Decoded>,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let partition = batch.partition;
        let metrics = self.projector.metrics().clone();
        if let Err(StoreError::Fenced { generation, .. }) = &outcome {
            let generation = *generation;
            BatchFenced {
                partition,
                generation,
            }
            .emit(&metrics);
        }
        let current = lock(&self.owned)
            .claims
            .get(&partition)
            .map(|c| c.generation);
        if current != Some(batch.claim.generation) {
            // Revoked or claimed again while committing: a commit that got
            // through was fenced by nothing and stands; anything else is moot.
            match &outcome {
                Ok(report) => self.progress.add(report),
                Err(StoreError::Fenced { .. }) => {}
                Err(error) => BatchLetGo { partition, error }.emit(&metrics),
            }
            batcher.settled(partition, None);
            return Ok(());
        }
        let hold = match outcome {
            Ok(report) => {
                *backoff = Backoff::new();
                self.committed(&batch, &report, now);
                None
            }
            Err(StoreError::Resync {
                next_offset, clock, ..
            }) => {
                BatchResynced {
                    partition,
                    next_offset,
                    clock,
                }
                .emit(&metrics);
                if let Some(claim) = lock(&self.owned).claims.get_mut(&partition) {
                    claim.next_offset = next_offset;
                    claim.clock = clock;
                }
                batcher.reset(partition);
                self.rewind(partition)?;
                None
            }
            Err(StoreError::Fenced { .. }) => {
                if !self.follow_switch()? {
                    let mut owned = lock(&self.owned);
                    owned.claims.remove(&partition);
                    owned.reset.insert(partition);
                }
                None
            }
            Err(e) if e.is_transient() => {
                let wait = backoff.next();
                CommitRetried {
                    partition,
                    error: &e,
                    wait,
                }
                .emit(&metrics);
                batcher.reset(partition);
                self.rewind(partition)?;
                Some(Instant::now() + wait)
            }
            Err(e) => return Err(e.into()),
        };
        batcher.settled(partition, hold);
        Ok(())
    }

    /// Moves the owner's view of the partition past a committed batch.
    fn committed(&mut self, batch: &Sent, report: &BatchReport, now: DateTime<Utc>) {
        if let Some(claim) = lock(&self.owned).claims.get_mut(&batch.partition) {
            if claim.generation == batch.claim.generation {
                if let Some(next) = batch.next_offset {
                    claim.next_offset = Some(next);
                }
                claim.clock = Some(now);
                // A batch whose breaches waited leaves the next one to
                // evaluate every commune of the partition.
                claim.reevaluate = report.deferred.is_some();
            }
        }
        self.progress.add(report);
    }

    /// After a fenced batch: if a rebuild has switched the projections to a
    /// new schema, claims every owned partition there and fetches each again
    /// from the offset stored with the new projections. Returns whether it
    /// did.
    fn follow_switch(&self) -> anyhow::Result<bool> {
        if let Err(e) = self
            .runtime
            .block_on(self.projector.store().refresh_active())
        {
            warn!(error = %e, "cannot read which projection schema is active");
            return Ok(false);
        }
        self.claim_again_if_switched()
    }

    /// If the store has moved to another schema since the partitions were
    /// claimed, claims them there and seeks each to its stored offset.
    /// Checked on every tick too, so that an idle member does not wait for
    /// its next commit to pick up what the rebuild left to project.
    fn claim_again_if_switched(&self) -> anyhow::Result<bool> {
        let store = self.projector.store();
        let schema = store.schema();
        let partitions: Vec<i32> = {
            let mut owned = lock(&self.owned);
            if owned.schema == schema || owned.claims.is_empty() {
                return Ok(false);
            }
            info!(from = %owned.schema, to = %schema, "projections were rebuilt: claiming the owned partitions in the new schema");
            owned.schema = schema;
            let partitions: Vec<i32> = std::mem::take(&mut owned.claims).into_keys().collect();
            owned.reset.extend(&partitions);
            partitions
        };
        for partition in partitions {
            let Some(claim) = self.consumer.context().claim(partition) else {
                return Ok(true); // shutting down
            };
            self.seek(partition, resume_at(&claim)).map_err(|e| {
                anyhow::anyhow!(
                    "cannot move partition {partition} to the rebuilt projections' offset: {e}"
                )
            })?;
            lock(&self.owned).claims.insert(partition, claim);
        }
        Ok(true)
    }

    /// After an abandoned batch, fetches the partition again from its stored
    /// offset, if still owned. A partition that cannot be rewound would go
    /// on past the abandoned records, so that is fatal: the process restarts
    /// from stored offsets.
    fn rewind(&self, partition: i32) -> anyhow::Result<()> {
        let claim = lock(&self.owned).claims.get(&partition).copied();
        if let Some(claim) = claim {
            self.seek(partition, resume_at(&claim)).map_err(|e| {
                error!(partition, error = %e, "cannot rewind after an abandoned batch");
                anyhow::anyhow!("cannot rewind partition {partition} after an abandoned batch: {e}")
            })?;
        }
        Ok(())
    }

    fn seek(&self, partition: i32, offset: Offset) -> KafkaResult<()> {
        let topic = self.projector.store().topic();
        self.consumer
            .seek(topic, partition, offset, Duration::from_secs(5))
    }
}

/// Totals logged every [`PROGRESS_EVERY`], so long work shows progress.
#[derive(Debug)]
struct Progress {
    since: Instant,
    total: BatchReport,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Progress {
    fn new() -> Self {
        Progress {
            since: Instant::now(),
            total: BatchReport::default(),
        }
    }

    fn add(&mut self, r: &BatchReport) {
        self.total.records += r.records;
        self.total.applied += r.applied;
        self.total.superseded += r.superseded;
        self.total.duplicates += r.duplicates;
        self.total.dead_letters += r.dead_letters;
        let elapsed = self.since.elapsed();
        if elapsed >= PROGRESS_EVERY {
            let t = &self.total;
            info!(
                records = t.records,
                applied = t.applied,
                superseded = t.superseded,
                duplicates = t.duplicates,
                dead_letters = t.dead_letters,
                records_per_second = (t.records as f64 / elapsed.as_secs_f64()).round(),
                "ingest progress"
            );
            *self = Progress::new();
        }
    }
}
