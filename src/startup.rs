//! Builds the pipeline from settings and runs it until stopped.

use anyhow::Context;

use tracing::{info, warn};

use std::sync::Arc;
use std::time::Duration;

use crate::alerts::{self, LiveAlerts};
use crate::config::Settings;
use crate::ingest::{self, Shutdown};
use crate::metrics::Metrics;
use crate::operate::{report_from, SimulateOptions};
use crate::projector::Projector;
use crate::store::Store;

/// Runs the pipeline against the configured Kafka and database until
/// `shutdown` is triggered: the projection consumer, the alert relay, the
/// webhook worker and the HTTP server.
pub async fn run_until_stopped(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let Some(store) = open_store(&settings, &shutdown).await? else {
        info!("stopped while waiting for the database");
        return Ok(());
    };
    info!(topic = %settings.kafka.topic, group = %settings.kafka.group_id, "projection store ready");
    ensure_topic(&settings, &settings.alerts.topic, 3).await?;
    let listener = tokio::net::TcpListener::bind(&settings.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} (http.listen)", settings.http.listen))?;
    let services = Services::start(&settings, store, shutdown.clone())?;
    let app = crate::http::router(services.app_state(&settings)?);
    info!(listen = %settings.http.listen, "HTTP server ready");
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_shutdown.wait().await })
            .await
    });
    let result = services.wait().await;
    shutdown.trigger();
    stop_server(server).await?;
    result
}

/// Opens the projection store (running its migrations), waiting with
/// backoff while the database is unreachable: down, starting up or
/// restarting, since an operator may well start the pipeline first. Anything
/// else (a bad URL, refused credentials, a failed migration) is fatal at
/// once. `None` when `shutdown` came first.
async fn open_store(settings: &Settings, shutdown: &Shutdown) -> anyhow::Result<Option<Store>> {
    let url = &settings.database.url;
    let mut wait = Duration::from_millis(250);
    for attempt in 1u32.. {
        let error = match Store::connect(
            url,
            settings.database.max_connections,
            &settings.kafka.topic,
        )
        .await
        {
            Ok(store) => return Ok(Some(store)),
            Err(e) if e.is_transient() => e,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot open the projection store at {}",
                    redact(url)
                )))
            }
        };
        warn!(
            attempt,
            database = %redact(url),
            error = %error,
            retry_in_ms = wait.as_millis() as u64,
            "database unreachable; waiting for it"
        );
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.wait() => return Ok(None),
        }
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    unreachable!("the attempts never run out")
}

/// Waits for the HTTP server's graceful shutdown, at most a few seconds: a
/// client holding a connection open must not keep the process alive.
async fn stop_server(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    let abort = server.abort_handle();
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(result) => Ok(result??),
        Err(_) => {
            abort.abort();
            info!("HTTP connections still open after 3 s: closed");
            Ok(())
        }
    }
}

/// The long-running parts of the pipeline, started together.
pub struct Services {
    store: Store,
    metrics: Arc<Metrics>,
    live: LiveAlerts,
    changes: crate::projector::LiveChanges,
    shutdown: Shutdown,
    ingest: std::thread::JoinHandle<anyhow::Result<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Services {
    /// Starts the projection consumer, the alert relay and the webhook
    /// worker.
    pub fn start(
        settings: &Settings,
        store: Store,
        shutdown: Shutdown,
    ) -> anyhow::Result<Services> {
        let projector = Projector::new(
            store.clone(),
            settings.units.clone(),
            Some(settings.evaluator()),
        );
        let changes = projector.changes();
        let (live, _) = tokio::sync::broadcast::channel(1024);
        let mut tasks = Vec::new();
        if settings.alerts.relay {
            tasks.push(tokio::spawn(alerts::run_relay_until_stopped(
                store.clone(),
                alerts::producer(settings)?,
                settings.alerts.topic.clone(),
                settings
                    .alerts
                    .webhooks
                    .iter()
                    .map(|h| h.url.clone())
                    .collect(),
                projector.alerts_written(),
                live.clone(),
                shutdown.clone(),
            )));
        }
        tasks.push(tokio::spawn(alerts::run_webhooks_until_stopped(
            store.clone(),
            settings.alerts.webhooks.clone(),
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(follow_rebuilds_until_stopped(
            store.clone(),
            shutdown.clone(),
        )));
        let metrics = Arc::new(Metrics::default());
        let ingest = ingest::spawn(
            settings,
            projector,
            tokio::runtime::Handle::current(),
            shutdown.clone(),
            metrics.clone(),
        )?;
        Ok(Services {
            store,
            metrics,
            live,
            changes,
            shutdown,
            ingest,
            tasks,
        })
    }

    /// What the HTTP server needs, sharing this pipeline's store, alerts
    /// and metrics.
    pub fn app_state(&self, settings: &Settings) -> anyhow::Result<crate::http::AppState> {
        Ok(crate::http::AppState {
            store: self.store.clone(),
            live: self.live.clone(),
            changes: self.changes.clone(),
            cache: Arc::new(crate::http::QueryCache::new(&self.changes)),
            metrics: self.metrics.clone(),
            units: settings.units.clone(),
            targets: settings.targets.clone(),
            clock: ingest::Clock {
                skew: chrono::Duration::seconds(settings.clock.skew_seconds),
            },
            http: settings.http.clone(),
            events_topic: settings.kafka.topic.clone(),
            producer: alerts::producer(settings)?,
            shutdown: self.shutdown.clone(),
        })
    }

    /// Live alerts, as published.
    pub fn live(&self) -> &LiveAlerts {
        &self.live
    }

    pub fn is_finished(&self) -> bool {
        self.ingest.is_finished()
    }

    /// Waits for the consumer to stop (on shutdown or a fatal error), then
    /// stops the rest.
    pub async fn wait(self) -> anyhow::Result<()> {
        let ingest = self.ingest;
        let result = tokio::task::spawn_blocking(move || ingest.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the ingest thread panicked"))
            .and_then(|r| r);
        self.shutdown.trigger();
        for task in self.tasks {
            let _ = task.await;
        }
        result
    }
}

/// Moves the store (and so the API) to rebuilt projections within a couple
/// of seconds of `cchc rebuild` switching over. The consumer moves on its
/// next commit, which the switch fences.
async fn follow_rebuilds_until_stopped(store: Store, shutdown: Shutdown) {
    if matches!(store, Store::Sqlite(_)) {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = shutdown.wait() => return,
        }
        if let Err(e) = store.refresh_active().await {
            tracing::warn!(error = %e, "cannot read which projection schema is active");
        }
    }
}

/// Creates `topic` with `partitions` partitions unless it exists.
pub async fn ensure_topic(settings: &Settings, topic: &str, partitions: i32) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::ClientConfig;

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        match result {
            Ok(_) => info!(topic, partitions, "topic created"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => anyhow::bail!("cannot create topic {t}: {code}"),
        }
    }
    Ok(())
}

/// A connection URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Options of `cchc demo`.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub events: usize,
    pub partitions: i32,
    pub database_url: String,
    pub simulate: SimulateOptions,
    /// Where the API and dashboard listen.
    pub listen: String,
    /// Stop once every event is projected, instead of serving until `stop`.
    pub exit_when_done: bool,
}

/// The whole pipeline with nothing installed: librdkafka's in-process mock
/// Kafka cluster, a SQLite store, the simulator producing into the topic while
/// the pipeline consumes it. The mock keeps only the last few megabytes of
/// each partition, so the producer waits whenever the pipeline falls more
/// than `MAX_LAG` events behind, and the run checks at the end that every
/// produced event was projected. Returns the indicator report.
pub async fn demo(
    mut settings: Settings,
    options: &DemoOptions,
    stop: Shutdown,
) -> anyhow::Result<String> {
    use rdkafka::mocking::MockCluster;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;
    use std::time::Instant;

    const MAX_LAG: i64 = 6_000;
    const CHUNK: usize = 2_000;

    let mock = MockCluster::new(1).context("cannot start the in-process Kafka mock cluster")?;
    mock.create_topic(&settings.kafka.topic, options.partitions, 1)
        .context("cannot create the demo topic")?;
    mock.create_topic(&settings.alerts.topic, 1, 1)
        .context("cannot create the alerts topic")?;
    settings.kafka.bootstrap_servers = mock.bootstrap_servers();
    settings.database.url = options.database_url.clone();
    info!(bootstrap = %settings.kafka.bootstrap_servers, store = %options.database_url, "embedded Kafka and SQLite ready");

    let store = Store::connect(&settings.database.url, 1, &settings.kafka.topic).await?;
    let shutdown = Shutdown::default();
    let services = Services::start(&settings, store.clone(), shutdown.clone())?;
    settings.http.listen = options.listen.clone();
    let listener = tokio::net::TcpListener::bind(&options.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", options.listen))?;
    let app = crate::http::router(services.app_state(&settings)?);
    let server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { server_shutdown.wait().await })
            .await
    });
    let token = settings
        .http
        .read_tokens
        .first()
        .cloned()
        .unwrap_or_default();
    println!("dashboard: http://{}/?token={token}", options.listen);
    println!("API:       curl -H 'Authorization: Bearer {token}' http://{}/api/v1/units/937/communes?window=ytd", options.listen);
    let mut alerts_seen = services.live().subscribe();
    let printing = shutdown.clone();
    let printer = tokio::spawn(async move {
        let mut n = 0usize;
        loop {
            tokio::select! {
                received = alerts_seen.recv() => match received {
                    Ok(alert) => {
                        n += 1;
                        println!("alert: {alert}");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                },
                _ = printing.wait() => break,
            }
        }
        n
    });

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let committed = |store: Store| async move {
        store
            .offsets()
            .await
            .map(|o| o.into_iter().map(|(_, n)| n.unwrap_or(0)).sum::<i64>())
    };
    let started = Instant::now();
    let sim = crate::simulator::Simulator::new(
        &settings.units,
        options.simulate.seed,
        options.simulate.start,
        options.simulate.cases_per_day,
    );
    let mut produced = 0usize;
    let mut last_report = Instant::now();
    let records: Vec<_> = sim.take(options.events).collect();
    'producing: for chunk in records.chunks(CHUNK) {
        while produced as i64 - committed(store.clone()).await? > MAX_LAG {
            if services.is_finished() {
                anyhow::bail!("the pipeline stopped while the demo was producing");
            }
            if stop.is_triggered() {
                break 'producing;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if stop.is_triggered() {
            break;
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
            result.map_err(|(e, _)| e)?;
        }
        produced += chunk.len();
        if last_report.elapsed() >= Duration::from_secs(2) {
            info!(
                produced,
                projected = committed(store.clone()).await?,
                total = options.events,
                "demo running"
            );
            last_report = Instant::now();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.is_triggered() && committed(store.clone()).await? < produced as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline did not catch up within 120 s"
        );
        anyhow::ensure!(
            !services.is_finished(),
            "the pipeline stopped before catching up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if stop.is_triggered() {
        // Ctrl-C or SIGTERM while producing or catching up: stop without the report; what
        // was committed stays in the SQLite file.
        info!(
            produced,
            total = options.events,
            "demo stopped before the end"
        );
        shutdown.trigger();
        services.wait().await?;
        stop_server(server).await?;
        let out = format!(
            "demo stopped after {produced} of {} events\n",
            options.events
        );
        print!("{out}");
        return Ok(out);
    }
    let seconds = started.elapsed().as_secs_f64();
    info!(
        events = produced,
        seconds,
        per_second = produced as f64 / seconds,
        "every event projected"
    );
    // Let the relay publish the last alerts before reporting.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.unpublished_alerts(1).await?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = store.dead_letter_reasons().await?.len();
    let mut out = format!(
        "{produced} events projected in {seconds:.1} s ({:.0} events/s), {dead} dead letters\n",
        produced as f64 / seconds
    );
    out += &report_from(&store, &settings, crate::domain::Window::YearToDate).await?;
    print!("{out}");
    if options.exit_when_done {
        stop.trigger();
    } else {
        println!("serving the dashboard and API until Ctrl-C");
    }
    while !stop.is_triggered() && !services.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    let live = services.live().clone();
    services.wait().await?;
    drop(live);
    stop_server(server).await?;
    let alerts = printer.await.unwrap_or(0);
    println!("{alerts} alerts published");
    drop(producer);
    drop(mock);
    Ok(out)
}
