//! Helpers shared by the integration tests: where the real services are, a
//! fresh topic and a fresh database per test, and a private PostgreSQL for
//! tests that restart the server.
//!
//! Every helper that needs a service first checks that it is reachable and
//! panics with the command that starts it: a missing broker or database is a
//! failure, never a silent skip.

// Helpers are shared by test modules that each use only some of them.
#![allow(dead_code)]

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

const DEFAULT_KAFKA_BOOTSTRAP: &str = "127.0.0.1:9092";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Makes the child `command` starts die with this test binary: a test run
/// that is interrupted, or killed itself, must not leave `cchc` processes
/// behind (the Drop of a test's process handle does not run then). Linux's
/// parent-death signal fires when the thread that spawned the child exits, so
/// spawn long-lived children from the test's own thread or a runtime worker,
/// never from a short-lived blocking-pool thread.
pub fn dies_with_test(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe; the closure allocates nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command
}

/// Sends `signal` (e.g. `-TERM`) to a child process.
pub fn signal(child: &std::process::Child, signal: &str) {
    let sent = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("running kill")
        .success();
    assert!(sent, "kill {signal} {} failed", child.id());
}

/// Waits for a child to exit by itself; `None` if it still runs after `limit`.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    limit: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for a child") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The broker's bootstrap servers: `KAFKA_BOOTSTRAP_SERVERS`, else the broker
/// that `scripts/kafka.sh` starts by default.
pub fn kafka_bootstrap() -> String {
    env_or("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_KAFKA_BOOTSTRAP)
}

/// The admin database URL: `DATABASE_URL`, else the cluster that
/// `scripts/postgres.sh` starts by default. Tests should not write here; they
/// take a [`fresh_database`].
pub fn database_url() -> String {
    env_or("DATABASE_URL", DEFAULT_DATABASE_URL)
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// `prefix_` followed by 16 random hex digits: a name no other test (or
/// earlier run) uses. Keep the prefix to `[a-z0-9_]` so the result is valid
/// as a topic, a consumer group and an unquoted SQL identifier alike.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// Panics, naming the command that starts it, unless the Kafka broker accepts
/// TCP connections.
pub async fn require_kafka() {
    let bootstrap = kafka_bootstrap();
    let first = bootstrap
        .split(',')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let reachable = matches!(
        tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(first.as_str())
        )
        .await,
        Ok(Ok(_))
    );
    assert!(
        reachable,
        "Kafka broker not reachable at {first} — start it with `bash scripts/kafka.sh start` \
         or run `bash scripts/test.sh`"
    );
}

/// Panics, naming the command that starts it, unless PostgreSQL accepts a
/// connection at [`database_url`].
pub async fn require_postgres() {
    connect_admin().await;
}

async fn connect_admin() -> PgConnection {
    let url = database_url();
    let options = PgConnectOptions::from_str(&url)
        .unwrap_or_else(|err| panic!("DATABASE_URL {url:?} is not a PostgreSQL URL: {err}"));
    let where_ = format!("{}:{}", options.get_host(), options.get_port());
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(err)) => panic!(
            "PostgreSQL not reachable at {where_} ({err}) — start it with \
             `bash scripts/postgres.sh start` or run `bash scripts/test.sh`"
        ),
        Err(_) => panic!(
            "PostgreSQL not reachable at {where_} (no answer in {CONNECT_TIMEOUT:?}) — start it \
             with `bash scripts/postgres.sh start` or run `bash scripts/test.sh`"
        ),
    }
}

/// An admin client for the test broker.
pub fn kafka_admin() -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .expect("creating a Kafka admin client")
}

/// Creates `name` with `partitions` partitions (replication factor 1) and
/// waits until the broker's metadata shows every partition with a leader, so
/// that producing and consuming can start at once.
pub async fn create_topic(name: &str, partitions: i32) {
    require_kafka().await;
    let admin = Arc::new(kafka_admin());
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics([&topic], &options)
        .await
        .unwrap_or_else(|err| panic!("creating topic {name}: {err}"));
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("creating topic {topic}: {code}"),
        }
    }

    let name = name.to_owned();
    tokio::task::spawn_blocking(move || wait_for_topic(&admin, &name, partitions))
        .await
        .expect("waiting for topic metadata");
}

fn wait_for_topic(admin: &AdminClient<DefaultClientContext>, name: &str, partitions: i32) {
    let deadline = Instant::now() + TOPIC_READY_TIMEOUT;
    let mut last_seen = String::from("no metadata yet");
    while Instant::now() < deadline {
        match admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(5))
        {
            Ok(metadata) => {
                let topic = metadata.topics().iter().find(|topic| topic.name() == name);
                if let Some(topic) = topic {
                    let led = topic
                        .partitions()
                        .iter()
                        .filter(|p| p.leader() >= 0)
                        .count();
                    if topic.error().is_none() && led == partitions as usize {
                        return;
                    }
                    last_seen = format!(
                        "error {:?}, {led} of {partitions} partitions with a leader",
                        topic.error()
                    );
                }
            }
            Err(err) => last_seen = err.to_string(),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("topic {name} not ready after {TOPIC_READY_TIMEOUT:?}: {last_seen}");
}

/// A new, empty database on the test server (`CREATE DATABASE test_<random>`),
/// with a small pool and its URL (for code under test that connects itself).
/// The cluster is thrown away after the run, so nothing drops it.
pub async fn fresh_database() -> (PgPool, String) {
    let mut admin = connect_admin().await;
    let name = unique_name("test");
    // template0: nobody is ever connected to it, so parallel tests can copy it at once.
    sqlx::raw_sql(&format!("CREATE DATABASE {name} TEMPLATE template0"))
        .execute(&mut admin)
        .await
        .unwrap_or_else(|err| panic!("CREATE DATABASE {name}: {err}"));
    admin.close().await.ok();

    let url = url_with_database(&database_url(), &name);
    let pool = PgPoolOptions::new()
        .max_connections(5)
        .acquire_timeout(Duration::from_secs(10))
        .connect(&url)
        .await
        .unwrap_or_else(|err| panic!("connecting to the fresh database {name}: {err}"));
    (pool, url)
}

/// `url` with its database (the path) replaced by `database`; query
/// parameters are kept.
pub fn url_with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// How `scripts/postgres.sh restart` stops the server before starting it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartMode {
    /// Clients are disconnected, then a clean shutdown with a checkpoint.
    Fast,
    /// Like a crash: the server is killed and recovers from its WAL on start.
    Immediate,
}

impl RestartMode {
    fn as_arg(self) -> &'static str {
        match self {
            RestartMode::Fast => "fast",
            RestartMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL cluster of this test's own, started through
/// `scripts/postgres.sh` as a named instance on a free port. A test that
/// restarts the server uses one so that the other tests, which share the main
/// cluster, keep their connections. Stopped (and its data deleted) on drop;
/// its log stays in `var/postgres-<instance>/postgres.log` when the test failed.
pub struct PrivatePostgres {
    instance: String,
    port: u16,
    url: String,
}

impl PrivatePostgres {
    pub async fn start() -> PrivatePostgres {
        let instance = unique_name("it").replace('_', "-");
        let port = free_port();
        let server = PrivatePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            instance,
            port,
        };
        // Built before starting, so a start that fails half-way is still stopped on drop.
        server.run_script(&["start"]).await;
        server
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Restarts the server, keeping its data; returns once it accepts
    /// connections again. Open connections are cut.
    pub async fn restart(&self, mode: RestartMode) {
        self.run_script(&["restart", mode.as_arg()]).await;
    }

    /// Like [`PrivatePostgres::restart`], with the server down for `down`
    /// between the stop and the start.
    pub async fn restart_after(&self, mode: RestartMode, down: Duration) {
        let mut command = self.script_command(&["restart", mode.as_arg()]);
        command.env("PG_DOWN_SECONDS", down.as_secs().to_string());
        self.run(command, "restart").await;
    }

    fn script_command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new("bash");
        command
            .arg(repo_root().join("scripts/postgres.sh"))
            .args(args)
            .env("PG_INSTANCE", &self.instance)
            .env("PGPORT", self.port.to_string());
        command
    }

    async fn run_script(&self, args: &[&str]) {
        self.run(self.script_command(args), &args.join(" ")).await;
    }

    /// Runs a `scripts/postgres.sh` command; panics with its output if it fails.
    async fn run(&self, command: std::process::Command, what: &str) {
        let output = tokio::process::Command::from(command)
            .output()
            .await
            .expect("running scripts/postgres.sh");
        assert!(
            output.status.success(),
            "scripts/postgres.sh {what} (instance {}) failed: {}\n{}",
            self.instance,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.script_command(&["stop"]).output();
        // `stop` keeps the server log; it is only worth keeping when the test failed.
        if !std::thread::panicking() {
            let state = repo_root().join(format!("var/postgres-{}", self.instance));
            let _ = std::fs::remove_dir_all(state);
        }
    }
}

/// A TCP port that was free a moment ago (the OS picks it). Only for a
/// server the test cannot ask to bind port 0 itself (a private PostgreSQL,
/// a webhook receiver that must be down at first); the pipeline and the demo
/// bind port 0 and say where they listen.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("asking the OS for a free port")
}

/// Something that runs the pipeline and can say it still does: a `cchc run`
/// process, or an application in the test's own process.
pub trait Running {
    /// Panics, with what is known of why, if the pipeline has stopped.
    fn assert_running(&mut self);
}

/// The application in the test's own process (`Application::build` on port
/// 0, then `run_until_stopped`), against the real broker and database. For
/// the tests that need not kill, stop or abort the pipeline's process.
/// Stopped when dropped.
pub struct TestApp {
    /// The API's address.
    pub http: String,
    pub metrics: Arc<cchc_pipeline::metrics::Metrics>,
    live: cchc_pipeline::alerts::LiveAlerts,
    stop: cchc_pipeline::shutdown::CancellationToken,
    running: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Builds and starts the application with `settings` (its `http.listen`
/// replaced by a free port the application binds itself).
pub async fn spawn_app(mut settings: cchc_pipeline::config::Settings) -> TestApp {
    settings.http.listen = "127.0.0.1:0".into();
    let app = cchc_pipeline::app::Application::build(settings)
        .await
        .expect("building the application");
    let stop = cchc_pipeline::shutdown::CancellationToken::new();
    TestApp {
        http: app.address().to_string(),
        metrics: app.metrics().clone(),
        live: app.live_alerts().clone(),
        running: Some(tokio::spawn(app.run_until_stopped(stop.clone()))),
        stop,
    }
}

impl TestApp {
    /// Every alert as the application publishes it.
    pub fn live_alerts(&self) -> tokio::sync::broadcast::Receiver<Arc<str>> {
        self.live.subscribe()
    }

    /// Waits until no partition awaits the evaluation of its breaches (the
    /// caught-up state, `domain::CatchUp`); panics after 30 s, naming `after`.
    pub async fn wait_evaluated(&self, after: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.metrics.awaiting_evaluation.get() > 0 {
            assert!(
                Instant::now() < deadline,
                "breaches never evaluated after {after}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the application and waits for it; panics if it had failed.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(running) = self.running.take() {
            running
                .await
                .expect("the application's task")
                .expect("the application stopped cleanly");
        }
    }
}

impl Running for TestApp {
    fn assert_running(&mut self) {
        let finished = self.running.as_ref().is_none_or(|r| r.is_finished());
        assert!(!finished, "the application stopped (see the test's output)");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// GETs `url` with the demo read token and parses the answer as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    reqwest::Client::new()
        .get(url)
        .bearer_auth("demo-read-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap()
}

/// The units of config/default.toml's 2023 campaign (thị xã Long Mỹ and its
/// nine communes) without their history: as if they still stood, for tests
/// about something else that want nine communes today.
pub fn campaign_units() -> cchc_pipeline::domain::Units {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/units/long-my.csv");
    let specs: Vec<cchc_pipeline::domain::UnitSpec> = cchc_pipeline::unit_file::read(&file)
        .expect("the default unit file")
        .into_iter()
        .map(|l| l.spec)
        .filter(|s| s.valid_from.is_none() && s.code != "92")
        .map(|s| cchc_pipeline::domain::UnitSpec {
            valid_to: None,
            successors: Vec::new(),
            history_to: None,
            ..s
        })
        .collect();
    cchc_pipeline::domain::Units::parse(&specs).expect("the campaign's units")
}
