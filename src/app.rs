//! The application: the pipeline put together once, for `cchc run`, the
//! embedded demo and the tests alike.
//!
//! [`Application::build`] opens the projection store (waiting for a database
//! that is not up yet), makes sure the alerts topic exists and binds the
//! HTTP listener (port 0 picks a free one, see [`Application::port`]);
//! nothing runs yet. [`Application::run_until_stopped`] then runs the
//! projection consumer, the alert relay, the webhook worker, the follower of
//! rebuilds and the HTTP server until cancelled, or until the consumer stops
//! on a fatal error, and stops them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::alerts::{LiveAlerts, Relay, Webhooks};
use crate::config::{redact, Settings};
use crate::http::{self, AppState, Feeds};
use crate::internal_events::{DatabaseWaited, InternalEvent};
use crate::metrics::Metrics;
use crate::projector::Projector;
use crate::shutdown::CancellationToken;
use crate::store::Store;

/// The pipeline, built and ready to run.
pub struct Application {
    settings: Settings,
    store: Store,
    listener: TcpListener,
    address: SocketAddr,
    projector: Projector,
    live: LiveAlerts,
}

impl Application {
    /// Checks that Kafka answers with its settings (refused credentials or
    /// an untrusted certificate stop here, naming the settings), creates the
    /// alerts topic if needed, opens the store (running its migrations;
    /// while the database does not answer, waits with backoff, each attempt
    /// logged: an operator may well start the pipeline first) and binds
    /// `http.listen`. Anything else that fails (a bad URL, refused
    /// credentials, a failed migration, a port in use) is an error at once.
    /// Cancel-safe: a caller may stop waiting for the database by dropping
    /// the future.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let metrics = Arc::new(Metrics::default());
        // Kafka first: settings it refuses stop the start at once, before
        // any wait for the database.
        crate::kafka::check_connection(&settings.kafka, &settings.file).await?;
        crate::kafka::ensure_topic(&settings.kafka, &settings.alerts.topic, 3).await?;
        let store = open_store(&settings, &metrics).await?;
        info!(topic = %settings.kafka.topic, group = %settings.kafka.group_id, "projection store ready");
        let listener = TcpListener::bind(&settings.http.listen)
            .await
            .with_context(|| format!("cannot listen on {} (http.listen)", settings.http.listen))?;
        let address = listener.local_addr()?;
        let projector = Projector::new(
            store.clone(),
            settings.units.clone(),
            Some(settings.evaluator()),
            metrics,
        );
        Ok(Application {
            settings,
            store,
            listener,
            address,
            projector,
            live: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// The port the API listens on.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// The address the API listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        self.projector.metrics()
    }

    /// Every alert as it is published (subscribe before running, to see
    /// them all).
    pub fn live_alerts(&self) -> &LiveAlerts {
        &self.live
    }

    /// Runs everything until `cancel` is cancelled or the consumer stops on
    /// a fatal error (returned). The commits under way finish; the HTTP
    /// server is given three seconds to close its connections.
    pub async fn run_until_stopped(self, cancel: CancellationToken) -> anyhow::Result<()> {
        // The parts stop together, also when the consumer fails by itself,
        // without cancelling the caller's token.
        let stop = cancel.child_token();
        let settings = &self.settings;
        let producer = crate::kafka::producer(&settings.kafka)?;
        let state = AppState::new(
            settings,
            Feeds {
                store: self.store.clone(),
                live: self.live.clone(),
                changes: self.projector.changes(),
                metrics: self.projector.metrics().clone(),
                producer,
                ingest: http::Ingest::new(&settings.kafka)?,
                shutdown: stop.clone(),
            },
        );
        let tasks = self.start_tasks(&stop)?;
        let ingest = crate::ingest::spawn(
            settings,
            self.projector.clone(),
            tokio::runtime::Handle::current(),
            stop.clone(),
        )?;
        let server = tokio::spawn(http::serve::serve(
            self.listener,
            http::router(state),
            stop.clone(),
        ));
        info!(listen = %self.address, "HTTP server ready");
        let result = tokio::task::spawn_blocking(move || ingest.join())
            .await?
            .map_err(|_| anyhow::anyhow!("the ingest thread panicked"))
            .and_then(|r| r);
        stop.cancel();
        for task in tasks {
            let _ = task.await;
        }
        stop_server(server).await?;
        result
    }

    /// The alert relay (unless `alerts.relay` is off), the webhook worker
    /// and the follower of rebuilds.
    fn start_tasks(&self, stop: &CancellationToken) -> anyhow::Result<Vec<JoinHandle<()>>> {
        let alerts = &self.settings.alerts;
        let mut tasks = Vec::new();
        let metrics = self.projector.metrics().clone();
        if alerts.relay {
            let relay = Relay {
                store: self.store.clone(),
                producer: crate::kafka::alert_producer(&self.settings.kafka)?,
                topic: alerts.topic.clone(),
                webhooks: alerts.webhooks.clone(),
                wake: self.projector.alerts_written(),
                live: self.live.clone(),
                metrics: metrics.clone(),
            };
            tasks.push(tokio::spawn(relay.run_until_stopped(stop.clone())));
        }
        let webhooks = Webhooks {
            store: self.store.clone(),
            hooks: alerts.webhooks.clone(),
            metrics,
        };
        tasks.push(tokio::spawn(webhooks.run_until_stopped(stop.clone())));
        tasks.push(tokio::spawn(follow_rebuilds_until_stopped(
            self.store.clone(),
            stop.clone(),
        )));
        Ok(tasks)
    }
}

/// Opens the projection store, waiting with backoff while the database is
/// unreachable (down, starting up or restarting).
async fn open_store(settings: &Settings, metrics: &Metrics) -> anyhow::Result<Store> {
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
            Ok(store) => {
                store.remember_cases(settings.database.cached_cases);
                return Ok(store);
            }
            Err(e) if e.is_transient() => e,
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!(
                    "cannot open the projection store at {}",
                    redact(url)
                )))
            }
        };
        DatabaseWaited {
            attempt,
            database: &redact(url),
            error: &error,
            wait,
        }
        .emit(metrics);
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
    unreachable!("the attempts never run out")
}

/// Waits for the HTTP server's graceful shutdown, at most a few seconds: a
/// client holding a connection open must not keep the process alive.
async fn stop_server(server: JoinHandle<()>) -> anyhow::Result<()> {
    let abort = server.abort_handle();
    match tokio::time::timeout(Duration::from_secs(3), server).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            abort.abort();
            info!("HTTP connections still open after 3 s: closed");
            Ok(())
        }
    }
}

/// Moves the store (and so the API) to rebuilt projections within a couple
/// of seconds of `cchc rebuild` switching over. The consumer moves on its
/// next commit, which the switch fences.
async fn follow_rebuilds_until_stopped(store: Store, stop: CancellationToken) {
    if matches!(store, Store::Sqlite(_)) {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(e) = store.refresh_active().await {
            tracing::warn!(error = %e, "cannot read which projection schema is active");
        }
    }
}
