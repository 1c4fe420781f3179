//! `cchc demo`, the embedded default: the whole pipeline with nothing
//! installed. librdkafka's in-process mock Kafka cluster stands in for the
//! broker and a SQLite file for PostgreSQL; the [`Application`] is built on
//! them as `cchc run` builds it, and the simulator feeds it a year of the
//! configured communes while it runs.
//!
//! The mock keeps only the last few megabytes of each partition, so the
//! feed waits whenever the pipeline falls more than [`MAX_LAG`] events
//! behind on a partition, and the run checks at the end that every event
//! produced was projected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::bindings::{
    rd_kafka_handle_mock_cluster, rd_kafka_mock_group_initial_rebalance_delay_ms,
};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, FutureProducer, FutureRecord, Producer};
use tokio::sync::broadcast::error::RecvError;
use tracing::info;

use crate::app::Application;
use crate::config::Settings;
use crate::domain::Window;
use crate::metrics::Metrics;
use crate::operate::{report_from, SimulateOptions};
use crate::shutdown::CancellationToken;
use crate::simulator::Simulator;
use crate::store::Store;

/// How far the feed may run ahead of a partition's committed offset. The
/// mock keeps the last 5 MB of each partition (librdkafka's
/// `rdkafka_mock.c`), some 15,000 of these records, so 10,000 and a
/// [`CHUNK`] (under 4 MB) stay in it. It is also the demo's full batch
/// (`batch.max_records` is held to it), so batches close full rather than
/// after waiting `batch.max_wait_ms`.
pub const MAX_LAG: i64 = 10_000;
/// Events sent at a time.
const CHUNK: usize = 2_000;

/// The client librdkafka's in-process mock cluster lives in
/// (`test.mock.num.brokers`), with its coordinator's
/// `group.initial.rebalance.delay.ms` set to zero. The delay is three
/// seconds in the mock, as on a real broker, so that members starting
/// together join one rebalance; the demo's one consumer would wait it out
/// before its first record, a seventh of a million-event run. The `rdkafka`
/// crate does not wrap the setting, so it is made through librdkafka's C
/// API.
fn mock_cluster_host() -> anyhow::Result<BaseProducer> {
    let host: BaseProducer = ClientConfig::new()
        .set("test.mock.num.brokers", "1")
        .create()
        .context("cannot start the in-process Kafka mock cluster")?;
    #[allow(unsafe_code)]
    // SAFETY: `host` is a live client handle for both calls. The cluster
    // pointer, checked for null, is owned by that client and outlives the
    // call; librdkafka takes the cluster's lock to change the setting.
    unsafe {
        let cluster = rd_kafka_handle_mock_cluster(host.client().native_ptr());
        anyhow::ensure!(!cluster.is_null(), "librdkafka started no mock cluster");
        rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 0);
    }
    Ok(host)
}

/// Options of `cchc demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub partitions: i32,
    pub database_url: String,
    pub simulate: SimulateOptions,
    /// Where the API and dashboard listen (port 0: any free port).
    pub listen: String,
    /// Stop once every event is projected, instead of serving until `stop`.
    pub exit_when_done: bool,
}

/// Runs the demo until every event is projected (then prints the report and
/// serves the dashboard until `stop`, unless `exit_when_done`) or until
/// `stop`. Returns what it printed.
pub async fn run(
    mut settings: Settings,
    options: &DemoOptions,
    stop: CancellationToken,
) -> anyhow::Result<String> {
    let host = mock_cluster_host()?;
    let mock = host
        .client()
        .mock_cluster()
        .context("librdkafka started no mock cluster")?;
    mock.create_topic(&settings.kafka.topic, options.partitions, 1)
        .context("cannot create the demo topic")?;
    mock.create_topic(&settings.alerts.topic, 1, 1)
        .context("cannot create the alerts topic")?;
    settings.kafka.bootstrap_servers = mock.bootstrap_servers();
    settings.database.url = options.database_url.clone();
    settings.database.max_connections = 1;
    settings.http.listen = options.listen.clone();
    settings.batch.max_records = settings.batch.max_records.min(MAX_LAG as usize);
    // The simulated year is history: breaches are evaluated once the feed is
    // read, at the first clock tick of a quiet partition; a short tick makes
    // that a second after the end.
    settings.clock.tick_seconds = 1;
    info!(bootstrap = %settings.kafka.bootstrap_servers, store = %options.database_url, "embedded Kafka and SQLite ready");

    let app = Application::build(settings.clone()).await?;
    let store = app.store().clone();
    let metrics = app.metrics().clone();
    let token = settings
        .http
        .read_tokens
        .first()
        .cloned()
        .unwrap_or_default();
    let address = app.address();
    println!("dashboard: http://{address}/?token={token}");
    println!("API:       curl -H 'Authorization: Bearer {token}' http://{address}/api/v1/units/937/communes?window=ytd");
    let printer = tokio::spawn(print_alerts(app.live_alerts().subscribe()));
    let pipeline = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(pipeline.clone()));

    let started = Instant::now();
    let producer = crate::kafka::producer(&settings.kafka)?;
    let produced = feed(&settings, options, &producer, &store, &running, &stop).await?;
    let out = if stop.is_cancelled() {
        // Ctrl-C or SIGTERM while producing or catching up: stop without the
        // report; what was committed stays in the SQLite file.
        info!(
            produced,
            total = options.simulate.events,
            "demo stopped before the end"
        );
        format!(
            "demo stopped after {produced} of {} events\n",
            options.simulate.events
        )
    } else {
        let report = finished_report(&store, &metrics, &settings, produced, started).await?;
        if !options.exit_when_done {
            print!("{report}");
            println!("serving the dashboard and API until Ctrl-C");
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = wait_finished(&running) => {}
            }
            return stop_pipeline(pipeline, running, printer, report).await;
        }
        report
    };
    print!("{out}");
    stop_pipeline(pipeline, running, printer, out).await
}

/// Feeds the simulated events, keeping at most [`MAX_LAG`] ahead of the
/// committed offsets, then waits until every one is committed (or `stop`).
/// Returns how many were produced.
async fn feed(
    settings: &Settings,
    options: &DemoOptions,
    producer: &FutureProducer,
    store: &Store,
    running: &tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: &CancellationToken,
) -> anyhow::Result<usize> {
    let sim = &options.simulate;
    // Simulated on a thread of its own, a few chunks ahead of the feed.
    let (chunks, mut next_chunk) = tokio::sync::mpsc::channel(4);
    let simulator = Simulator::new(&settings.units, sim.seed, sim.start, sim.cases_per_day);
    let events = sim.events;
    tokio::task::spawn_blocking(move || {
        let mut records = simulator.take(events);
        loop {
            let chunk: Vec<_> = records.by_ref().take(CHUNK).collect();
            if chunk.is_empty() || chunks.blocking_send(chunk).is_err() {
                break;
            }
        }
    });
    let mut produced = 0usize;
    // The next offset produced on each partition.
    let mut heads: HashMap<i32, i64> = HashMap::new();
    let mut last_report = Instant::now();
    while let Some(chunk) = next_chunk.recv().await {
        while behind_most(&heads, store).await? > MAX_LAG && !stop.is_cancelled() {
            anyhow::ensure!(
                !running.is_finished(),
                "the pipeline stopped while the demo was producing"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if stop.is_cancelled() {
            return Ok(produced);
        }
        let sends = chunk.iter().map(|r| {
            producer.send(
                FutureRecord::to(&settings.kafka.topic)
                    .key(&r.key)
                    .payload(&r.value),
                Duration::from_secs(30),
            )
        });
        for result in futures_util::future::join_all(sends).await {
            let delivered = result.map_err(|(e, _)| e)?;
            let head = heads.entry(delivered.partition).or_default();
            *head = (*head).max(delivered.offset + 1);
        }
        produced += chunk.len();
        if last_report.elapsed() >= Duration::from_secs(2) {
            let projected = committed(store).await?;
            info!(produced, projected, total = sim.events, "demo running");
            last_report = Instant::now();
        }
    }
    if !stop.is_cancelled() {
        for (key, value) in MALFORMED {
            producer
                .send(
                    FutureRecord::to(&settings.kafka.topic)
                        .key(key)
                        .payload(value),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(e, _)| e)?;
            produced += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.is_cancelled() && committed(store).await? < produced as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline did not catch up within 120 s"
        );
        anyhow::ensure!(
            !running.is_finished(),
            "the pipeline stopped before catching up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(produced)
}

/// What a misconfigured producer sends, fed after the simulated year so
/// that the dead-letter admin routes (and their resend) have something to
/// show: a record that is not JSON, a timestamp without its offset, and a
/// commune that is not in the unit list. Each becomes a dead letter with
/// its reason; none is counted.
pub const MALFORMED: [(&str, &str); 3] = [
    ("31471", "case.received HS-1 31471"),
    (
        "31471",
        r#"{"event_id":"demo-bad-1","event_type":"case.received","schema_version":1,"occurred_at":"2026-03-02T08:00:00","commune_code":"31471","case_id":"demo-bad-1","data":{"channel":"online","procedure_code":"1.001","due_at":"2026-03-05T17:00:00+07:00"}}"#,
    ),
    (
        "99999",
        r#"{"event_id":"demo-bad-2","event_type":"case.received","schema_version":1,"occurred_at":"2026-03-02T08:00:00+07:00","commune_code":"99999","case_id":"demo-bad-2","data":{"channel":"online","procedure_code":"1.001","due_at":"2026-03-05T17:00:00+07:00"}}"#,
    ),
];

/// How far the most lagging partition's committed offset is behind what
/// was produced on it (`heads`).
async fn behind_most(heads: &HashMap<i32, i64>, store: &Store) -> anyhow::Result<i64> {
    let committed: HashMap<i32, i64> = store
        .offsets()
        .await?
        .into_iter()
        .map(|(p, n)| (p, n.unwrap_or(0)))
        .collect();
    Ok(heads
        .iter()
        .map(|(p, head)| head - committed.get(p).copied().unwrap_or(0))
        .max()
        .unwrap_or(0))
}

/// The committed offsets, summed over partitions.
async fn committed(store: &Store) -> anyhow::Result<i64> {
    Ok(store
        .offsets()
        .await?
        .into_iter()
        .map(|(_, n)| n.unwrap_or(0))
        .sum())
}

/// The rate, the dead letters and the indicator report, once the breaches
/// of the caught-up state are evaluated and the relay has published them.
async fn finished_report(
    store: &Store,
    metrics: &Metrics,
    settings: &Settings,
    produced: usize,
    started: Instant,
) -> anyhow::Result<String> {
    let seconds = started.elapsed().as_secs_f64();
    info!(
        events = produced,
        seconds,
        per_second = produced as f64 / seconds,
        "every event projected"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline
        && (metrics.awaiting_evaluation.get() > 0 || !store.unpublished_alerts(1).await?.is_empty())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = store.dead_letter_reasons().await?.len();
    let mut out = format!(
        "{} events projected in {seconds:.1} s ({:.0} records/s), {dead} dead letters (GET /api/v1/admin/dead-letters)\n",
        produced.saturating_sub(dead),
        produced as f64 / seconds
    );
    out += &report_from(store, settings, Window::YearToDate).await?;
    Ok(out)
}

/// Prints every alert published; returns how many there were.
async fn print_alerts(mut alerts: tokio::sync::broadcast::Receiver<std::sync::Arc<str>>) -> usize {
    let mut n = 0;
    loop {
        match alerts.recv().await {
            Ok(alert) => {
                n += 1;
                println!("alert: {alert}");
            }
            Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return n,
        }
    }
}

async fn wait_finished(running: &tokio::task::JoinHandle<anyhow::Result<()>>) {
    while !running.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stops the pipeline and the alert printer; returns `out`.
async fn stop_pipeline(
    pipeline: CancellationToken,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
    printer: tokio::task::JoinHandle<usize>,
    out: String,
) -> anyhow::Result<String> {
    pipeline.cancel();
    running.await??;
    // The application is gone, and with it the last sender of alerts.
    let alerts = printer.await.unwrap_or(0);
    println!("{alerts} alerts published");
    Ok(out)
}
