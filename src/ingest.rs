//! The Kafka consumer: a consumer-group member whose offsets live in the
//! projection database, not in Kafka.
//!
//! Why this shape: the exactly-once effect comes from writing each batch's
//! projections and its next offsets in one database transaction. On
//! assignment, the member *claims* each partition in the database (bumping
//! its owner generation) and starts fetching at the stored offset; every
//! commit checks the generation, so a member that lost a partition (expelled
//! while stuck, or a zombie after a rebalance) cannot write for it again.
//! Kafka's own committed offsets are never used.
//!
//! The consumer runs on its own thread with a blocking `BaseConsumer`, so the
//! rebalance callback can claim partitions synchronously before fetching
//! starts; database calls are driven on the tokio runtime through a handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, ClientContext, Offset, Statistics, TopicPartitionList};
use tokio::runtime::Handle;
use tracing::{error, info, info_span, warn, Instrument};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::projector::{BatchReport, PartitionBatch, Projector, Record};
use crate::store::{Claim, StoreError};

/// Raised to stop the pipeline: the consumer finishes or abandons its batch
/// and leaves the group, the HTTP server ends its streams, the relay stops.
/// Checked by the blocking consumer thread, awaited by async tasks.
#[derive(Debug, Clone)]
pub struct Shutdown(Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown(Arc::new(tokio::sync::watch::channel(false).0))
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once triggered.
    pub async fn wait(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }
}

/// The partitions this member owns, as claimed in the database.
#[derive(Debug, Default)]
struct Ownership {
    claims: BTreeMap<i32, Claim>,
    /// The store schema the claims were made in (see `cchc rebuild`).
    schema: String,
    /// Set by every rebalance: records fetched before it are dropped.
    rebalanced: bool,
}

struct IngestContext {
    projector: Projector,
    runtime: Handle,
    owned: Arc<Mutex<Ownership>>,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
}

impl ClientContext for IngestContext {
    /// librdkafka's statistics carry each partition's end offset: the lag is
    /// how far the stored (committed) offsets are behind them.
    fn stats(&self, statistics: Statistics) {
        let topic = self.projector.store().topic();
        let Some(t) = statistics.topics.get(topic) else {
            return;
        };
        let owned = self.owned.lock().expect("ownership lock");
        let lag: i64 = owned
            .claims
            .iter()
            .filter_map(|(p, claim)| {
                let end = t.partitions.get(p)?.hi_offset;
                (end >= 0).then(|| (end - claim.next_offset.unwrap_or(0)).max(0))
            })
            .sum();
        self.metrics.lag.set(lag);
        self.metrics.partitions.set(owned.claims.len() as i64);
    }
}

impl ConsumerContext for IngestContext {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut claims = BTreeMap::new();
                for elem in tpl.elements() {
                    let partition = elem.partition();
                    match self.claim(partition) {
                        Some(claim) => {
                            claims.insert(partition, claim);
                        }
                        None => return, // shutting down
                    }
                }
                let schema = self.projector.store().schema();
                let topic = self.projector.store().topic().to_string();
                for (partition, claim) in &claims {
                    if let Err(e) = tpl.set_partition_offset(&topic, *partition, resume_at(claim)) {
                        error!(partition, error = %e, "cannot set the start offset");
                    }
                }
                info!(partitions = ?claims.keys().collect::<Vec<_>>(), "partitions assigned and claimed");
                {
                    let mut owned = self.owned.lock().expect("ownership lock");
                    owned.claims.extend(claims);
                    owned.schema = schema;
                    owned.rebalanced = true;
                }
                if let Err(e) = consumer.assign(tpl) {
                    error!(error = %e, "assign failed");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                info!(partitions = ?revoked, "partitions revoked");
                {
                    let mut owned = self.owned.lock().expect("ownership lock");
                    owned.claims.clear();
                    owned.rebalanced = true;
                }
                if let Err(e) = consumer.unassign() {
                    error!(error = %e, "unassign failed");
                }
            }
            other => {
                warn!(error = ?other, "rebalance error");
                let mut owned = self.owned.lock().expect("ownership lock");
                owned.claims.clear();
                owned.rebalanced = true;
                let _ = consumer.unassign();
            }
        }
    }
}

impl IngestContext {
    /// Claims a partition, retrying while the database is unreachable.
    fn claim(&self, partition: i32) -> Option<Claim> {
        let mut backoff = Backoff::new();
        loop {
            // Claim where the projections are served now, should a rebuild
            // have switched them over since the store last looked.
            if let Err(e) = self
                .runtime
                .block_on(self.projector.store().refresh_active())
            {
                warn!(partition, error = %e, "cannot read which projection schema is active");
            }
            match self
                .runtime
                .block_on(self.projector.store().claim(partition))
            {
                Ok(claim) => return Some(claim),
                Err(e) => {
                    warn!(partition, error = %e, "cannot claim partition; retrying");
                    if self.shutdown.is_triggered() {
                        return None;
                    }
                    backoff.sleep();
                }
            }
        }
    }
}

/// Where fetching resumes for a claimed partition: its stored next offset,
/// or the beginning for a partition never applied.
fn resume_at(claim: &Claim) -> Offset {
    claim
        .next_offset
        .map(Offset::Offset)
        .unwrap_or(Offset::Beginning)
}

struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(Duration::from_millis(50))
    }
    fn sleep(&mut self) {
        std::thread::sleep(self.next());
    }
    /// The wait before the next attempt; each is twice the last, up to 2 s.
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(2));
        wait
    }
}

/// How the clock is read: wall time plus a configured skew.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub skew: chrono::Duration,
}

impl Clock {
    pub fn now(&self) -> DateTime<Utc> {
        // Microseconds, as the store keeps it: a commit checks the stored
        // clock against the one its batch started from.
        (Utc::now() + self.skew).trunc_subsecs(6)
    }
}

/// Starts the consumer thread. It runs until `shutdown` is triggered or a
/// non-recoverable error occurs.
pub fn spawn(
    settings: &Settings,
    projector: Projector,
    runtime: Handle,
    shutdown: Shutdown,
    metrics: Arc<Metrics>,
) -> anyhow::Result<JoinHandle<anyhow::Result<()>>> {
    let k = &settings.kafka;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &k.bootstrap_servers)
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("max.poll.interval.ms", k.max_poll_interval_ms.to_string())
        .set("enable.partition.eof", "false")
        .set("statistics.interval.ms", "5000")
        // librdkafka prefetches up to 64 MB by default, on top of the
        // records waiting for a batch (up to twice `batch.max_records` in
        // all) and the batches being committed; 16 MB keeps a replay's
        // memory flat and well under 256 MB and still holds tens of
        // thousands of records.
        .set("queued.max.messages.kbytes", "16384")
        // When that queue is full, librdkafka postpones the partition's
        // next fetch by this long (1 s by default). In a replay the queue is
        // full most of the time, and each partition then sat without
        // records for up to a second after using them up: half of the
        // replay's wall time (docs/BENCHMARKS.md).
        .set("fetch.queue.backoff.ms", "20");
    for (key, value) in &k.properties {
        config.set(key, value);
    }
    let owned = Arc::new(Mutex::new(Ownership::default()));
    let context = IngestContext {
        projector: projector.clone(),
        runtime: runtime.clone(),
        owned: owned.clone(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
    };
    let consumer: BaseConsumer<IngestContext> = config.create_with_context(context)?;
    consumer.subscribe(&[k.topic.as_str()])?;
    let batch = settings.batch.clone();
    let tick = Duration::from_secs(settings.clock.tick_seconds);
    let clock = Clock {
        skew: chrono::Duration::seconds(settings.clock.skew_seconds),
    };
    let handle = std::thread::Builder::new()
        .name("ingest".into())
        .spawn(move || {
            let worker = Worker {
                metrics,
                progress: Mutex::new(Progress {
                    since: Instant::now(),
                    total: BatchReport::default(),
                }),
                consumer,
                projector,
                runtime,
                owned,
                shutdown,
                max_records: batch.max_records,
                max_wait: Duration::from_millis(batch.max_wait_ms),
                tick,
                clock,
            };
            worker.run()
        })?;
    Ok(handle)
}

/// Totals logged every [`PROGRESS_EVERY`], so long work shows progress.
#[derive(Debug)]
struct Progress {
    since: Instant,
    total: BatchReport,
}

const PROGRESS_EVERY: Duration = Duration::from_secs(10);

impl Progress {
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
            *self = Progress {
                since: Instant::now(),
                total: BatchReport::default(),
            };
        }
    }
}

struct Worker {
    metrics: Arc<Metrics>,
    progress: Mutex<Progress>,
    consumer: BaseConsumer<IngestContext>,
    projector: Projector,
    runtime: Handle,
    owned: Arc<Mutex<Ownership>>,
    shutdown: Shutdown,
    max_records: usize,
    max_wait: Duration,
    tick: Duration,
    clock: Clock,
}

/// Records read for one partition and not yet handed to a commit.
struct Pending {
    records: Vec<Record>,
    since: Instant,
}

/// A partition batch being committed on the runtime, with the clock it was
/// projected at and when it started.
type InFlight = tokio::task::JoinHandle<(
    PartitionBatch,
    Result<BatchReport, StoreError>,
    DateTime<Utc>,
    Instant,
)>;

impl Worker {
    /// Reads records and hands each partition's batch to its own commit on
    /// the runtime as soon as it is full, old enough, or due for a clock
    /// tick, at most one commit per partition at a time: partitions never
    /// wait for each other, and reading goes on while the database works.
    fn run(self) -> anyhow::Result<()> {
        let mut pending: HashMap<i32, Pending> = HashMap::new();
        let mut in_flight: HashMap<i32, InFlight> = HashMap::new();
        let mut not_before: HashMap<i32, Instant> = HashMap::new();
        let mut backoff = Backoff::new();
        let mut last_tick = Instant::now();
        while !self.shutdown.is_triggered() {
            let tick_due = last_tick.elapsed() >= self.tick;
            if tick_due {
                self.claim_again_if_switched()?;
            }
            let buffered: usize = pending.values().map(|p| p.records.len()).sum();
            if buffered < 2 * self.max_records {
                // Wake in time for the first pending batch that can go: its
                // deadline passed, and neither a commit of its partition in
                // flight nor a backoff holds it.
                let wait = pending
                    .iter()
                    .filter(|(p, _)| !in_flight.contains_key(p))
                    .map(|(p, pending)| {
                        let due = self.max_wait.saturating_sub(pending.since.elapsed());
                        let held = not_before
                            .get(p)
                            .map(|t| t.saturating_duration_since(Instant::now()))
                            .unwrap_or_default();
                        due.max(held)
                    })
                    .min()
                    .unwrap_or(Duration::from_millis(50))
                    .min(if in_flight.is_empty() {
                        Duration::from_millis(50)
                    } else {
                        Duration::from_millis(2)
                    });
                let polled = self.consumer.poll(wait);
                if std::mem::take(&mut self.owned.lock().expect("ownership lock").rebalanced) {
                    // Fetching restarts at the stored offsets: drop what was read.
                    pending.clear();
                }
                match polled {
                    Some(Ok(m)) => self.keep(&m, &mut pending),
                    Some(Err(e)) => warn!(error = %e, "consumer error"),
                    None => {}
                }
            } else {
                // The database is behind: read on once a commit completes.
                std::thread::sleep(Duration::from_millis(1));
            }

            let done: Vec<i32> = in_flight
                .iter()
                .filter(|(_, h)| h.is_finished())
                .map(|(p, _)| *p)
                .collect();
            for partition in done {
                let handle = in_flight.remove(&partition).expect("in flight");
                let settled = self.runtime.block_on(handle)?;
                self.settle(settled, &mut pending, &mut not_before, &mut backoff)?;
            }

            let now = self.clock.now();
            let claims: Vec<(i32, Claim)> = {
                let mut owned = self.owned.lock().expect("ownership lock");
                if std::mem::take(&mut owned.rebalanced) {
                    // Claimed anew (a rebalance, or a rebuild's switch-over)
                    // since these were read: fetching restarts at the
                    // stored offsets.
                    pending.clear();
                }
                owned.claims.iter().map(|(p, c)| (*p, *c)).collect()
            };
            for (partition, claim) in claims {
                if in_flight.contains_key(&partition)
                    || not_before
                        .get(&partition)
                        .is_some_and(|t| Instant::now() < *t)
                {
                    continue;
                }
                let ready = pending.get(&partition).is_some_and(|p| {
                    p.records.len() >= self.max_records || p.since.elapsed() >= self.max_wait
                });
                if !(ready || (tick_due && claim.evaluates_all(now))) {
                    continue;
                }
                let records = match pending.get_mut(&partition) {
                    Some(p) if p.records.len() > self.max_records => {
                        let rest = p.records.split_off(self.max_records);
                        let records = std::mem::replace(&mut p.records, rest);
                        p.since = Instant::now();
                        records
                    }
                    _ => pending
                        .remove(&partition)
                        .map(|p| p.records)
                        .unwrap_or_default(),
                };
                let batch = PartitionBatch {
                    partition,
                    claim,
                    records,
                };
                let projector = self.projector.clone();
                in_flight.insert(
                    partition,
                    self.runtime.spawn(async move {
                        let started = Instant::now();
                        let outcome = projector
                            .project_partition(&batch, now)
                            .instrument(info_span!(
                                "ingest.batch",
                                partition,
                                records = batch.records.len()
                            ))
                            .await;
                        (batch, outcome, now, started)
                    }),
                );
            }
            if tick_due {
                last_tick = Instant::now();
            }
        }
        // Let the commits under way finish: their outcome is booked, and
        // what was not committed is read again after a restart.
        for (_, handle) in in_flight {
            if let Ok(settled) = self.runtime.block_on(handle) {
                let _ = self.settle(settled, &mut pending, &mut not_before, &mut backoff);
            }
        }
        info!("ingest stopping: uncommitted records will be read again after a restart");
        Ok(())
    }

    /// Keeps a fetched record for its partition's next batch, unless the
    /// partition is not (or no longer) ours or the record is already applied.
    fn keep(&self, m: &BorrowedMessage<'_>, pending: &mut HashMap<i32, Pending>) {
        let expected = self
            .owned
            .lock()
            .expect("ownership lock")
            .claims
            .get(&m.partition())
            .map(|c| c.next_offset.unwrap_or(0));
        if expected.is_some_and(|next| m.offset() >= next) {
            pending
                .entry(m.partition())
                .or_insert_with(|| Pending {
                    records: Vec::new(),
                    since: Instant::now(),
                })
                .records
                .push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                });
        }
    }

    /// Books the outcome of one partition's commit. A transient failure
    /// sends the partition back to its stored offset, to be read and tried
    /// again after a backoff; a fenced one lets the partition go, or follows
    /// a rebuild's switch-over.
    fn settle(
        &self,
        (batch, outcome, now, started): (
            PartitionBatch,
            Result<BatchReport, StoreError>,
            DateTime<Utc>,
            Instant,
        ),
        pending: &mut HashMap<i32, Pending>,
        not_before: &mut HashMap<i32, Instant>,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        let partition = batch.partition;
        if let Err(StoreError::Fenced { generation, .. }) = &outcome {
            warn!(
                partition,
                generation, "fenced: another member owns the partition; batch abandoned"
            );
        }
        let current = self
            .owned
            .lock()
            .expect("ownership lock")
            .claims
            .get(&partition)
            .map(|c| c.generation);
        if current != Some(batch.claim.generation) {
            // Revoked or claimed again while committing: a commit that got
            // through was fenced by nothing and stands; anything else is moot.
            if let Ok(report) = &outcome {
                self.committed(&batch, report, now, started);
            }
            return Ok(());
        }
        match outcome {
            Ok(report) => {
                *backoff = Backoff::new();
                self.committed(&batch, &report, now, started);
            }
            Err(StoreError::Resync {
                next_offset, clock, ..
            }) => {
                warn!(
                    partition,
                    ?next_offset,
                    ?clock,
                    "an earlier commit whose outcome was lost went through; going on from the stored position"
                );
                if let Some(claim) = self
                    .owned
                    .lock()
                    .expect("ownership lock")
                    .claims
                    .get_mut(&partition)
                {
                    claim.next_offset = next_offset;
                    claim.clock = clock;
                }
                pending.remove(&partition);
                self.rewind(partition)?;
            }
            Err(StoreError::Fenced { .. }) => {
                if !self.follow_switch()? {
                    self.owned
                        .lock()
                        .expect("ownership lock")
                        .claims
                        .remove(&partition);
                }
                pending.remove(&partition);
            }
            Err(e) if e.is_transient() => {
                let wait = backoff.next();
                warn!(partition, error = %e, retry_in_ms = wait.as_millis() as u64, "cannot commit; the batch will be read and tried again");
                pending.remove(&partition);
                not_before.insert(partition, Instant::now() + wait);
                self.rewind(partition)?;
            }
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Books one committed partition batch: the owner's view of the
    /// partition, metrics, alerts, progress.
    fn committed(
        &self,
        batch: &PartitionBatch,
        report: &BatchReport,
        now: DateTime<Utc>,
        started: Instant,
    ) {
        let m = &self.metrics;
        m.records.inc_by(report.records as u64);
        m.applied.inc_by(report.applied as u64);
        m.duplicates.inc_by(report.duplicates as u64);
        m.dead_letters.inc_by(report.dead_letters as u64);
        m.alerts.inc_by(report.alerts.len() as u64);
        m.batches.inc();
        m.batch_seconds.observe(started.elapsed().as_secs_f64());
        {
            let mut owned = self.owned.lock().expect("ownership lock");
            if let Some(claim) = owned.claims.get_mut(&batch.partition) {
                if claim.generation == batch.claim.generation {
                    if let Some(last) = batch.records.last() {
                        claim.next_offset = Some(last.offset + 1);
                    }
                    claim.clock = Some(now);
                    claim.reevaluate = false;
                }
            }
        }
        for a in &report.alerts {
            info!(
                alert_id = %a.alert_id,
                event_type = a.event_type.event_type(),
                commune = %a.commune_code,
                indicator = a.indicator.id(),
                window = %a.window,
                value = a.value.map(|v| (v * 10_000.0).round() / 100.0),
                numerator = a.numerator,
                denominator = a.denominator,
                "alert"
            );
        }
        if !report.alerts.is_empty() {
            self.projector.alerts_written().notify_one();
        }
        self.progress.lock().expect("progress lock").add(report);
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
            let mut owned = self.owned.lock().expect("ownership lock");
            if owned.schema == schema || owned.claims.is_empty() {
                return Ok(false);
            }
            info!(from = %owned.schema, to = %schema, "projections were rebuilt: claiming the owned partitions in the new schema");
            owned.schema = schema;
            owned.rebalanced = true;
            std::mem::take(&mut owned.claims).into_keys().collect()
        };
        let topic = store.topic();
        for partition in partitions {
            let Some(claim) = self.consumer.context().claim(partition) else {
                return Ok(true); // shutting down
            };
            self.seek(topic, partition, resume_at(&claim))
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot move partition {partition} to the rebuilt projections' offset: {e}"
                    )
                })?;
            self.owned
                .lock()
                .expect("ownership lock")
                .claims
                .insert(partition, claim);
        }
        Ok(true)
    }

    /// After an abandoned batch, fetches the partition again from its stored
    /// offset, if still owned. A partition that cannot be rewound would go
    /// on past the abandoned records, so that is fatal: the process restarts
    /// from stored offsets.
    fn rewind(&self, partition: i32) -> anyhow::Result<()> {
        let owned = self.owned.lock().expect("ownership lock");
        if let Some(claim) = owned.claims.get(&partition) {
            let topic = self.projector.store().topic();
            self.seek(topic, partition, resume_at(claim)).map_err(|e| {
                error!(partition, error = %e, "cannot rewind after an abandoned batch");
                anyhow::anyhow!("cannot rewind partition {partition} after an abandoned batch: {e}")
            })?;
        }
        Ok(())
    }

    fn seek(&self, topic: &str, partition: i32, offset: Offset) -> KafkaResult<()> {
        self.consumer
            .seek(topic, partition, offset, Duration::from_secs(5))
    }
}
