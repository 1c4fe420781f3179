//! `cchc rebuild`: the projections replayed from the topic's beginning into a
//! fresh PostgreSQL schema, then switched over while the pipeline and its
//! API keep running.
//!
//! 1. A new schema `cchc_gen_N` is created and migrated (or the one an
//!    interrupted rebuild left is taken up again, from its stored offsets).
//! 2. A consumer of its own (group `<kafka.group_id>.rebuild.<schema>`)
//!    projects the topic from offset 0 into it, with the pipeline's
//!    exactly-once batch commits, and without alerts: those were sent when
//!    the history happened.
//! 3. Once the rebuilt projections are within `switch_lag` records of the
//!    topic's end, that consumer stops, and one transaction makes the new
//!    schema active, fences the members still writing to the old one and
//!    carries over what subscribers were told (alert outbox, breach states,
//!    webhook deliveries).
//! 4. The running pipeline follows: its API serves the new schema within
//!    about two seconds; its consumer's next commit is refused, so it claims
//!    its partitions in the new schema and goes on from the offsets stored
//!    there. The first batch of each partition re-evaluates every commune,
//!    so a breach that the rebuilt figures show differently is announced
//!    once. The old schema is kept until dropped by hand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{info, warn};

use crate::config::{redact, Settings};
use crate::kafka::Watermarks;
use crate::metrics::Metrics;
use crate::projector::Projector;
use crate::shutdown::CancellationToken;
use crate::store::{PgStore, RebuildTarget, Store, SwitchReport};

/// Options of `cchc rebuild`.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Drop the schema of an interrupted rebuild and start from offset 0.
    pub restart: bool,
    /// Switch over once the rebuilt projections are at most this many
    /// records behind the topic's end (the running pipeline applies the
    /// rest; nothing is lost either way).
    pub switch_lag: i64,
}

/// What a completed rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildSummary {
    pub target: RebuildTarget,
    pub switch: SwitchReport,
    /// Records projected by this run (not counting a resumed run's earlier ones).
    pub records: i64,
    pub seconds: f64,
}

impl std::fmt::Display for RebuildSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.switch;
        writeln!(
            f,
            "projections rebuilt into schema {} ({} records in {:.1} s, {:.0} records/s{})",
            s.to,
            self.records,
            self.seconds,
            self.records as f64 / self.seconds.max(1e-9),
            if self.target.resumed { ", resumed" } else { "" }
        )?;
        writeln!(
            f,
            "switched over from {}: {} alerts, {} breach states and {} webhook deliveries carried over",
            s.from, s.alerts, s.breach_states, s.webhook_deliveries
        )?;
        write!(
            f,
            "the old schema is kept; when no longer needed: DROP SCHEMA {} CASCADE;",
            s.from
        )
    }
}

/// Rebuilds the projections and switches over. Returns `None` when stopped
/// by `stop` before switching: the next run continues where this one ended.
pub async fn rebuild(
    settings: &Settings,
    options: &RebuildOptions,
    stop: CancellationToken,
) -> anyhow::Result<Option<RebuildSummary>> {
    crate::kafka::check_connection(&settings.kafka, &settings.file).await?;
    let (store, target) = prepare(settings, options).await?;
    let topic = settings.kafka.topic.clone();
    let ends = Watermarks::new(&settings.kafka)?;
    let first = ends.read(&topic).await?;
    for (partition, (low, _)) in first.iter().enumerate() {
        if *low > 0 {
            warn!(
                partition,
                first_offset = low,
                "the topic no longer holds this partition's first records (retention): \
                 the rebuilt projections will lack them"
            );
        }
    }
    let done_before = projected(&store, &first).await?;
    info!(
        schema = %target.schema,
        replacing = %target.active,
        resumed = target.resumed,
        records = first.iter().map(|(_, high)| high).sum::<i64>(),
        "rebuilding the projections from the topic's beginning"
    );

    let mut settings = settings.clone();
    settings.kafka.group_id = format!("{}.rebuild.{}", settings.kafka.group_id, target.schema);
    let projector = Projector::new(
        store.clone(),
        settings.units.clone(),
        None,
        Arc::new(Metrics::default()),
    );
    // Its own token: the rebuild's consumer stops before the switch, the
    // caller's `stop` interrupts the whole rebuild.
    let shutdown = CancellationToken::new();
    let consumer = crate::ingest::spawn(
        &settings,
        projector,
        tokio::runtime::Handle::current(),
        shutdown.clone(),
    )?;

    let started = Instant::now();
    let mut last_report = Instant::now();
    let done = loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.cancelled() => {}
        }
        if stop.is_cancelled() {
            stop_ingest(&shutdown, consumer).await?;
            info!(schema = %target.schema, "rebuild interrupted: `cchc rebuild` continues it from its stored offsets");
            return Ok(None);
        }
        if consumer.is_finished() {
            stop_ingest(&shutdown, consumer).await?;
            anyhow::bail!("the rebuild's consumer stopped");
        }
        let marks = ends.read(&topic).await?;
        let done = projected(&store, &marks).await?;
        let total: i64 = marks.iter().map(|(low, high)| high - low).sum();
        if total - done <= options.switch_lag {
            break done;
        }
        if last_report.elapsed() >= Duration::from_secs(10) {
            let rate = (done - done_before) as f64 / started.elapsed().as_secs_f64();
            info!(
                done,
                total,
                records_per_second = rate.round(),
                eta_seconds = ((total - done) as f64 / rate.max(1.0)).round(),
                "rebuild progress"
            );
            last_report = Instant::now();
        }
    };
    stop_ingest(&shutdown, consumer).await?;
    let seconds = started.elapsed().as_secs_f64();
    let Store::Postgres(pg) = &store else {
        unreachable!("checked above")
    };
    let switch = pg.switch_over(&target.active).await?;
    info!(from = %switch.from, to = %switch.to, "switched over to the rebuilt projections");
    Ok(Some(RebuildSummary {
        target,
        switch,
        records: done - done_before,
        seconds,
    }))
}

/// The schema to fill (see [`PgStore::prepare_rebuild`]), and a store on it.
async fn prepare(
    settings: &Settings,
    options: &RebuildOptions,
) -> anyhow::Result<(Store, RebuildTarget)> {
    let url = &settings.database.url;
    anyhow::ensure!(
        !url.starts_with("sqlite:"),
        "rebuild needs a PostgreSQL store (database.url is {url}): a SQLite store is \
         rebuilt by stopping the pipeline, deleting the file and starting it again",
    );
    let (store, target) = PgStore::prepare_rebuild(
        url,
        settings.database.max_connections,
        &settings.kafka.topic,
        options.restart,
    )
    .await
    .with_context(|| format!("cannot prepare a rebuild schema at {}", redact(url)))?;
    store.remember_cases(settings.database.cached_cases);
    Ok((Store::Postgres(store), target))
}

/// Stops the rebuild's consumer, after its current batch.
async fn stop_ingest(
    shutdown: &CancellationToken,
    consumer: std::thread::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    shutdown.cancel();
    tokio::task::spawn_blocking(move || consumer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the rebuild's consumer thread panicked"))?
}

/// Records of the topic applied to `store`, counted from each partition's
/// first retained offset.
async fn projected(store: &Store, marks: &[(i64, i64)]) -> anyhow::Result<i64> {
    let stored = store.offsets().await?;
    Ok(marks
        .iter()
        .enumerate()
        .map(|(p, (low, _))| {
            let next = stored
                .iter()
                .find(|(sp, _)| *sp as usize == p)
                .and_then(|(_, n)| *n)
                .unwrap_or(0);
            (next - low).max(0)
        })
        .sum())
}
