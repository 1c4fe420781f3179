//! The exactly-once consumer against the real broker and database: the
//! pipeline runs as its own process (`cchc run`), is killed, restarted,
//! joined, stopped and starved of its database, while the final projections
//! must equal the fold of every valid event counted once.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use futures::future::join_all;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

use cchc_pipeline::config::Settings;
use cchc_pipeline::domain::{CaseKey, CaseState, DayCounters, Units};
use cchc_pipeline::projector::commit;
use cchc_pipeline::simulator::Simulator;
use cchc_pipeline::store::{PartitionWrite, Store, StoreError};

use crate::reference::{counts_of, reference, Fact, Table};
use crate::support::{
    create_topic, fresh_database, kafka_bootstrap, unique_name, PrivatePostgres, RestartMode,
    Running,
};

pub(crate) fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub(crate) fn units() -> Units {
    Settings::load_file(&repo().join("config/default.toml"))
        .expect("default config")
        .units
}

/// `cchc ARGS` against the test's topic, group and database, with small
/// batches and a one-second clock tick.
pub(crate) fn cchc(setup: &Setup, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cchc"));
    crate::support::dies_with_test(&mut command)
        .args(args)
        .env("CCHC_ALERTS__TOPIC", &setup.alerts_topic)
        .env("CCHC_KAFKA__BOOTSTRAP_SERVERS", kafka_bootstrap())
        .env("CCHC_KAFKA__TOPIC", &setup.topic)
        .env("CCHC_KAFKA__GROUP_ID", &setup.group)
        .env("CCHC_KAFKA__SESSION_TIMEOUT_MS", "6000")
        .env("CCHC_KAFKA__MAX_POLL_INTERVAL_MS", "20000")
        .env("CCHC_DATABASE__URL", &setup.database_url)
        .env("CCHC_BATCH__MAX_RECORDS", "2000")
        .env("CCHC_BATCH__MAX_WAIT_MS", "50")
        .env("CCHC_CLOCK__TICK_SECONDS", "1")
        .env("RUST_LOG", "info,cchc_pipeline::projector=warn");
    command
}

/// One `cchc run` process with its log in `var/test-logs/`.
pub(crate) struct Pipeline {
    child: Child,
    pub(crate) log: PathBuf,
    /// The HTTP API's address, once read from the log.
    http: Option<String>,
}

pub(crate) struct Setup {
    pub(crate) topic: String,
    pub(crate) alerts_topic: String,
    pub(crate) group: String,
    pub(crate) database_url: String,
}

impl Setup {
    /// `config` (default: config/default.toml) with what `cchc` gets from
    /// the environment in [`cchc`]: the test's topics, group and database,
    /// small batches, a one-second clock tick.
    pub(crate) fn settings(&self, config: Option<&std::path::Path>) -> Settings {
        let default = repo().join("config/default.toml");
        let mut s = Settings::load_file(config.unwrap_or(&default)).expect("configuration");
        s.alerts.topic = self.alerts_topic.clone();
        s.kafka.bootstrap_servers = kafka_bootstrap();
        s.kafka.topic = self.topic.clone();
        s.kafka.group_id = self.group.clone();
        s.kafka.session_timeout_ms = 6000;
        s.kafka.max_poll_interval_ms = 20000;
        s.database.url = self.database_url.clone();
        s.batch.max_records = 2000;
        s.batch.max_wait_ms = 50;
        s.clock.tick_seconds = 1;
        s
    }
}

impl Pipeline {
    pub(crate) fn start(setup: &Setup, name: &str) -> Pipeline {
        Pipeline::start_with(setup, name, &repo().join("config/default.toml"), &[])
    }

    /// Starts `cchc run` with a configuration file and extra environment.
    pub(crate) fn start_with(
        setup: &Setup,
        name: &str,
        config: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Pipeline {
        let dir = repo().join("var/test-logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("{}-{name}.log", setup.topic));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = cchc(setup, &["run", "--config"])
            .arg(config)
            // Port 0: the pipeline binds a free port and logs it.
            .env("CCHC_HTTP__LISTEN", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("starting cchc run");
        Pipeline {
            child,
            log,
            http: None,
        }
    }

    /// The HTTP API's address, as the pipeline logged it once listening
    /// (waits up to 60 s for that line).
    pub(crate) fn http(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.http.is_none() {
            self.assert_running();
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            self.http = log
                .lines()
                .filter(|l| l.contains("HTTP server ready"))
                .filter_map(|l| l.split("listen=").nth(1)?.split_whitespace().next())
                .map(str::to_string)
                .next_back();
            assert!(
                self.http.is_some() || Instant::now() < deadline,
                "`cchc run` did not say where it listens: {}",
                self.log.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        self.http.clone().expect("read above")
    }

    /// The process id of `cchc run`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: &str) {
        crate::support::signal(&self.child, sig);
    }

    /// Waits for the process to exit by itself; panics after `limit`.
    pub(crate) fn wait_for_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        crate::support::wait_for_exit(&mut self.child, limit).unwrap_or_else(|| {
            panic!(
                "`cchc run` still running {limit:?} after being told to stop: {}",
                self.log.display()
            )
        })
    }
}

impl Running for Pipeline {
    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(30).collect();
            panic!(
                "pipeline exited with {status}; log tail:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A record to produce: key, value, and the reason code it must be kept
/// under as a dead letter, if malformed.
pub(crate) type Outgoing = (String, Option<Vec<u8>>, Option<&'static str>);

/// What was produced: every record in order, and the dead letters expected
/// at (partition, offset) with their reason codes.
#[derive(Default)]
pub(crate) struct Produced {
    /// How many records were produced.
    pub(crate) records: usize,
    /// The valid records, in production order.
    pub(crate) valid: Vec<Vec<u8>>,
    pub(crate) dead: BTreeMap<(i32, i64), &'static str>,
}

fn producer() -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .create()
        .expect("producer")
}

/// Sends `records` to the test's topic from a task of its own; the handle
/// gives back what was produced.
pub(crate) fn produce_in_background(
    setup: &Setup,
    records: Vec<Outgoing>,
) -> tokio::task::JoinHandle<Produced> {
    let topic = setup.topic.clone();
    tokio::spawn(async move {
        let mut produced = Produced::default();
        send_all(&topic, records, &mut produced).await;
        produced
    })
}

/// As [`produce_in_background`], 5,000 records at a time with `pause`
/// between them: a feed that lasts, for tests that must catch the pipeline
/// while it is writing (a fast pipeline catches up with a burst at once).
pub(crate) fn produce_paced_in_background(
    setup: &Setup,
    records: Vec<Outgoing>,
    pause: Duration,
) -> tokio::task::JoinHandle<Produced> {
    let topic = setup.topic.clone();
    tokio::spawn(async move {
        let mut produced = Produced::default();
        for chunk in records.chunks(5_000) {
            send_all(&topic, chunk.to_vec(), &mut produced).await;
            tokio::time::sleep(pause).await;
        }
        produced
    })
}

/// Sends records in order, waiting for each chunk's delivery.
pub(crate) async fn send_all(topic: &str, records: Vec<Outgoing>, produced: &mut Produced) {
    let producer = producer();
    for chunk in records.chunks(5_000) {
        let sends = chunk.iter().map(|(key, value, _)| {
            let mut record = FutureRecord::<str, [u8]>::to(topic).key(key.as_str());
            if let Some(v) = value {
                record = record.payload(v.as_slice());
            }
            producer.send(record, Duration::from_secs(30))
        });
        let results = join_all(sends).await;
        for ((_, value, dead), result) in chunk.iter().zip(results) {
            let delivery = result.map_err(|(e, _)| e).expect("delivery");
            produced.records += 1;
            match (dead, value) {
                (Some(code), _) => {
                    produced
                        .dead
                        .insert((delivery.partition, delivery.offset), code);
                }
                (None, Some(value)) => produced.valid.push(value.clone()),
                (None, None) => unreachable!("a record without a value is malformed"),
            }
        }
    }
}

/// A malformed record of every kind the decoder knows, made from a valid one.
fn malformed(valid: &str, n: usize) -> (Option<Vec<u8>>, &'static str) {
    let mut v: serde_json::Value = serde_json::from_str(valid).unwrap();
    let set = |v: &mut serde_json::Value, k: &str, x: serde_json::Value| {
        v[k] = x;
        Some(v.to_string().into_bytes())
    };
    match n % 16 {
        0 => (Some(b"{\"event_id\": oops".to_vec()), "not_json"),
        1 => (Some(b"[1,2,3]".to_vec()), "not_an_object"),
        2 => (Some(vec![0xff, 0xfe, 0x00]), "not_utf8"),
        3 => (None, "no_value"),
        4 => {
            v.as_object_mut().unwrap().remove("occurred_at");
            (Some(v.to_string().into_bytes()), "missing_field")
        }
        5 => (set(&mut v, "schema_version", "one".into()), "wrong_type"),
        6 => (
            set(&mut v, "event_type", "case.reopened".into()),
            "unknown_event_type",
        ),
        7 => (
            set(&mut v, "commune_code", "99999".into()),
            "unknown_commune",
        ),
        8 => (
            set(&mut v, "occurred_at", "2023-03-30T10:44:00".into()),
            "timestamp_without_offset",
        ),
        9 => (
            set(&mut v, "schema_version", 2.into()),
            "future_schema_version",
        ),
        10 => (
            set(&mut v, "event_id", "x".repeat(129).into()),
            "event_id_length",
        ),
        11 => (
            set(&mut v, "occurred_at", "30/03/2023".into()),
            "bad_timestamp",
        ),
        12 => (
            set(&mut v, "schema_version", 0.into()),
            "bad_schema_version",
        ),
        13 => {
            v.as_object_mut().unwrap().remove("case_id");
            v["event_type"] = "case.withdrawn".into();
            (Some(v.to_string().into_bytes()), "case_id_missing")
        }
        14 => {
            // A receipt through a channel the contract does not know.
            v["event_type"] = "case.received".into();
            v["case_id"] = "000.00.31.H37-230330-0001".into();
            v["data"] = serde_json::json!({
                "procedure_code": "1.001234", "channel": "fax",
                "due_at": "2023-04-04T17:00:00+07:00", "registered_electronically": true
            });
            (Some(v.to_string().into_bytes()), "invalid_value")
        }
        _ => {
            v["event_type"] = "case.resolved".into();
            v["data"] = serde_json::json!({"outcome": "completed"});
            (Some(v.to_string().into_bytes()), "due_at_missing")
        }
    }
}

/// `count` simulated events, each sent one to three times (repeats later in
/// the stream), plus about `garbage` malformed records in between.
pub(crate) fn workload(seed: u64, count: usize, garbage: f64) -> Vec<Outgoing> {
    let units = units();
    let mut rng = SmallRng::seed_from_u64(seed);
    let sim = Simulator::new(
        &units,
        seed,
        NaiveDate::from_ymd_opt(2023, 1, 1).unwrap(),
        20.0,
    );
    let mut out: Vec<Outgoing> = Vec::with_capacity(count * 2);
    let mut repeats: Vec<(usize, String, Vec<u8>)> = Vec::new();
    for (n, r) in sim.take(count).enumerate() {
        out.push((r.key.clone(), Some(r.value.clone().into_bytes()), None));
        for _ in 0..rng.gen_range(0..=2) {
            repeats.push((
                out.len() + rng.gen_range(0..2_000),
                r.key.clone(),
                r.value.clone().into_bytes(),
            ));
        }
        if rng.gen::<f64>() < garbage {
            let (bytes, code) = malformed(&r.value, n);
            out.push((r.key.clone(), bytes, Some(code)));
        }
    }
    // Splice the repeats in at their (later) positions, from the back.
    repeats.sort_by_key(|(at, ..)| std::cmp::Reverse(*at));
    for (at, key, value) in repeats {
        out.insert(at.min(out.len()), (key, Some(value), None));
    }
    out
}

/// The reference model's counters (tests/reference, the same model the
/// fold's property tests use) for every valid produced record, in production
/// order (which is each commune's partition order), with the clock at `now`.
fn expected(produced: &Produced) -> Table {
    let facts: Vec<Fact> = produced.valid.iter().map(|v| Fact::from_json(v)).collect();
    reference(&facts, Utc::now().timestamp_nanos_opt())
}

/// The stored counters in the reference's shape, zero days dropped.
pub(crate) async fn stored(store: &Store) -> Table {
    store
        .day_counters()
        .await
        .expect("reading counters")
        .into_iter()
        .filter(|(_, _, c)| !c.is_zero())
        .map(|(commune, day, c)| ((commune, day), counts_of(&c)))
        .collect()
}

fn high_watermarks(topic: &str, partitions: i32) -> HashMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka_bootstrap())
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            (
                p,
                consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks")
                    .1,
            )
        })
        .collect()
}

/// Waits until every partition's stored offset reaches its high watermark,
/// keeping the pipelines alive.
pub(crate) async fn wait_caught_up(
    store: &Store,
    topic: &str,
    partitions: i32,
    pipelines: &mut [&mut dyn Running],
    limit: Duration,
) {
    let marks = high_watermarks(topic, partitions);
    let deadline = Instant::now() + limit;
    loop {
        for p in pipelines.iter_mut() {
            p.assert_running();
        }
        let stored: HashMap<i32, i64> = store
            .offsets()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|(p, o)| (p, o.unwrap_or(0)))
            .collect();
        if marks
            .iter()
            .all(|(p, m)| stored.get(p).copied().unwrap_or(0) >= *m)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not caught up within {limit:?}: stored {stored:?}, marks {marks:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits for the producer, then until `pipelines` have committed every
/// record of the topic's `partitions`, and checks the projections against
/// the reference; returns what was produced.
async fn caught_up_and_exact(
    store: &Store,
    setup: &Setup,
    partitions: i32,
    producing: tokio::task::JoinHandle<Produced>,
    pipelines: &mut [&mut dyn Running],
) -> Produced {
    let produced = producing.await.expect("producer task");
    wait_caught_up(
        store,
        &setup.topic,
        partitions,
        pipelines,
        Duration::from_secs(300),
    )
    .await;
    assert_projections(store, &produced).await;
    produced
}

pub(crate) async fn assert_projections(store: &Store, produced: &Produced) {
    // The clock may pass a local midnight between the two reads: try again.
    for attempt in 0..3 {
        let want = expected(produced);
        let got = stored(store).await;
        if want == got {
            break;
        }
        if attempt == 2 {
            let diffs: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(*v))
                .take(5)
                .map(|(k, v)| format!("{k:?}: want {v:?}, got {:?}", got.get(k)))
                .collect();
            panic!(
                "projections differ ({} vs {} days): {diffs:#?}",
                want.len(),
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let dead: BTreeMap<(i32, i64), String> = store
        .dead_letter_reasons()
        .await
        .unwrap()
        .into_iter()
        .map(|(p, o, c)| ((p, o), c))
        .collect();
    let want_dead: BTreeMap<(i32, i64), String> = produced
        .dead
        .iter()
        .map(|(k, v)| (*k, v.to_string()))
        .collect();
    assert_eq!(
        dead, want_dead,
        "every malformed record is a dead letter with its reason, and nothing else is"
    );
}

/// A connection to the test's database that watches the pipeline's own
/// connections (application_name `cchc`) in `pg_stat_activity`.
async fn watcher(setup: &Setup) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&setup.database_url)
        .await
        .expect("connecting the watcher")
}

/// Waits until one of the pipeline's connections is inside a batch's
/// transaction that has written (it has a transaction id) and not yet
/// committed; true when seen before `limit`. The alert relay's one
/// transaction (marking alerts published) does not count. The caller acts
/// at once: such a transaction lasts milliseconds.
async fn open_write_transaction(db: &sqlx::PgPool, limit: Duration) -> bool {
    open_write_transaction_of(db, "cchc", limit).await
}

/// As [`open_write_transaction`], for the connections named `application`.
async fn open_write_transaction_of(db: &sqlx::PgPool, application: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 \
               AND backend_xid IS NOT NULL \
               AND query NOT LIKE 'UPDATE alert_outbox SET published_at%' \
               AND query NOT LIKE 'INSERT INTO webhook_deliveries%'",
        )
        .bind(application)
        .fetch_one(db)
        .await
        .expect("reading pg_stat_activity");
        if open > 0 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    false
}

/// Lines of a pipeline's log that contain `needle`.
pub(crate) fn log_lines(pipeline: &Pipeline, needle: &str) -> usize {
    std::fs::read_to_string(&pipeline.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

pub(crate) async fn setup(partitions: i32, database_url: Option<String>) -> (Setup, Store) {
    let topic = unique_name("events");
    create_topic(&topic, partitions).await;
    let database_url = match database_url {
        Some(url) => url,
        None => fresh_database().await.1,
    };
    // Named, so as not to be taken for the pipeline's own connections.
    let separator = if database_url.contains('?') { '&' } else { '?' };
    let test_url = format!("{database_url}{separator}application_name=cchc-test");
    let store = Store::connect(&test_url, 2, &topic).await.expect("store");
    (
        Setup {
            topic,
            alerts_topic: unique_name("alerts"),
            group: unique_name("group"),
            database_url,
        },
        store,
    )
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_event_counts_once_through_ten_sigkills_redeliveries_and_garbage() {
    // SOAK_EVENTS and SOAK_KILLS scale this test up into a soak.
    let events = env_number("SOAK_EVENTS", 200_000);
    let kills = env_number("SOAK_KILLS", 10);
    let (setup, store) = setup(3, None).await;
    let records = workload(11, events, 0.1);
    let mut pipeline = Pipeline::start(&setup, "a");
    let producing = produce_in_background(&setup, records);
    // Half the kills come at random moments; the other half the moment a
    // batch's transaction is open and has written (its commit in flight).
    let db = watcher(&setup).await;
    let mut rng = SmallRng::seed_from_u64(5);
    let mut mid_commit = 0;
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(400..2_500))).await;
        let targeted = kill % 2 == 1 && open_write_transaction(&db, Duration::from_secs(20)).await;
        pipeline.assert_running();
        pipeline.kill();
        mid_commit += usize::from(targeted);
        eprintln!(
            "SIGKILL {} of {kills}{}",
            kill + 1,
            if targeted {
                ", inside an open transaction"
            } else {
                ""
            }
        );
        pipeline = Pipeline::start(&setup, "a");
    }
    assert!(
        mid_commit >= kills / 2 * 3 / 4,
        "only {mid_commit} of {kills} kills hit an open write transaction"
    );
    let produced = caught_up_and_exact(&store, &setup, 3, producing, &mut [&mut pipeline]).await;
    assert!(
        produced.dead.len() > events / 15,
        "about 10% malformed: {}",
        produced.dead.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_down_at_start_and_restarted_mid_run_loses_and_doubles_nothing() {
    let postgres = PrivatePostgres::start().await;
    let (setup, store) = setup(3, Some(postgres.url().to_string())).await;
    let records = workload(12, env_number("SOAK_EVENTS", 200_000), 0.02);
    // The pipeline starts while the database is down: it waits for it.
    let down = postgres.restart_after(RestartMode::Fast, Duration::from_secs(4));
    let starting = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Pipeline::start(&setup, "a")
    };
    let ((), mut pipeline) = tokio::join!(down, starting);
    pipeline.assert_running();
    assert!(
        log_lines(&pipeline, "database unreachable; waiting for it") > 0,
        "the pipeline did not wait for the database: {}",
        pipeline.log.display()
    );

    let producing = produce_in_background(&setup, records);
    // Restarts while batches are being written: each cuts the pipeline's
    // connections, some in the middle of a commit.
    let db = watcher(&setup).await;
    let mut restarts = 0;
    for mode in [
        RestartMode::Immediate,
        RestartMode::Fast,
        RestartMode::Immediate,
    ] {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if !open_write_transaction(&db, Duration::from_secs(20)).await {
            break;
        }
        postgres.restart(mode).await;
        restarts += 1;
        pipeline.assert_running();
    }
    assert_eq!(
        restarts, 3,
        "the pipeline stopped writing before three restarts"
    );
    caught_up_and_exact(&store, &setup, 3, producing, &mut [&mut pipeline]).await;
    pipeline.assert_running();
    assert!(
        log_lines(&pipeline, "tried again") > 0,
        "no batch was retried after a restart: {}",
        pipeline.log.display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_joining_leaving_and_an_expelled_zombie_change_nothing() {
    let (setup, store) = setup(4, None).await;
    let records = workload(13, env_number("SOAK_EVENTS", 200_000), 0.02);
    // A's connections name themselves, so that the test sees when A (not B)
    // is inside a batch's transaction.
    let url = &setup.database_url;
    let a_url = format!(
        "{url}{}application_name=cchc-a",
        if url.contains('?') { '&' } else { '?' }
    );
    let config = repo().join("config/default.toml");
    let mut a = Pipeline::start_with(&setup, "a", &config, &[("CCHC_DATABASE__URL", &a_url)]);
    // A feed that lasts past the freeze below, so that A is busy when frozen.
    let producing = produce_paced_in_background(&setup, records, Duration::from_millis(300));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut b = Pipeline::start(&setup, "b"); // join: rebalance
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Freeze A inside a batch's transaction (its partition's row locked),
    // long past its session timeout: the group expels it and gives B its
    // partitions. The server ends A's idle transaction, so B's claim does not
    // wait on A's lock; A then wakes up as a zombie with the batch it was
    // writing, and must not commit it: its transaction is gone, and a retry
    // would be fenced.
    let db = watcher(&setup).await;
    // A may finish its commit between the test seeing its transaction and
    // the signal arriving; then it is frozen with nothing under way, and
    // is let go on and frozen again.
    let mut frozen_in_a_batch = false;
    for _ in 0..20 {
        assert!(
            open_write_transaction_of(&db, "cchc-a", Duration::from_secs(20)).await,
            "A never wrote a batch: {}",
            a.log.display()
        );
        a.signal("-STOP");
        if open_write_transaction_of(&db, "cchc-a", Duration::from_millis(200)).await {
            frozen_in_a_batch = true;
            break;
        }
        a.signal("-CONT");
    }
    assert!(frozen_in_a_batch, "A was never frozen inside a batch");
    tokio::time::sleep(Duration::from_secs(12)).await;
    a.signal("-CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Leave without a goodbye: A takes everything back.
    b.kill();
    // Which refusal A logs depends on what it hears first on waking: the
    // revocation (its batch is let go), or its commit's failure (the batch
    // is to be tried again, and the retry is fenced or never made, as the
    // revocation follows). Each says the server ended the frozen
    // transaction (or its connection) and nothing of it was written; no
    // other commit of A's fails in this test.
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    let refused = log
        .lines()
        .filter(|l| {
            l.contains("fenced: another member owns the partition")
                || l.contains("let go while its batch was committing; batch abandoned unwritten")
                || l.contains("cannot commit; the batch will be read and tried again")
        })
        .count();
    assert!(
        refused > 0,
        "the zombie's batch was not refused: {}",
        a.log.display()
    );
    caught_up_and_exact(&store, &setup, 4, producing, &mut [&mut a]).await;
}

/// Waits (60 s at most) until `done`.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `partition.assignment.strategy = cooperative-sticky` (through
/// `kafka.properties`, as every other client setting): a member joining
/// takes only the partitions it is given, the other keeps its claims and
/// what it read for the rest, and nothing is lost or doubled. Were a
/// revocation to clear every claim, the partitions the first member keeps
/// would stall and the projections would never catch up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_rebalance_moves_only_the_partitions_it_names_and_loses_nothing() {
    let (setup, store) = setup(4, None).await;
    let mut settings = setup.settings(None);
    settings.kafka.properties.insert(
        "partition.assignment.strategy".into(),
        "cooperative-sticky".into(),
    );
    let mut a = crate::support::spawn_app(settings.clone()).await;
    let records = workload(15, 60_000, 0.02);
    let producing = produce_paced_in_background(&setup, records, Duration::from_millis(300));
    let partitions = |app: &crate::support::TestApp| {
        (
            app.metrics.partitions_assigned.get(),
            app.metrics.partitions_revoked.get(),
        )
    };
    until("the first member is assigned every partition", || {
        partitions(&a) == (4, 0)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let b = crate::support::spawn_app(settings).await;
    until("the second member is assigned its share", || {
        partitions(&b).0 == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        partitions(&a),
        (4, 2),
        "the first member gave up two partitions, and only those"
    );
    b.stop().await;
    until("the first member takes them back", || partitions(&a).0 == 6).await;
    assert_eq!(partitions(&a).1, 2, "and gave up nothing more");
    caught_up_and_exact(&store, &setup, 4, producing, &mut [&mut a]).await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_and_sigint_mid_batch_stop_the_pipeline_cleanly_and_lose_nothing() {
    let (setup, store) = setup(3, None).await;
    let records = workload(14, 60_000, 0.05);
    let mut pipeline = Pipeline::start(&setup, "a");
    // About 120,000 records over 12 s or more: still arriving at the second signal.
    let producing = produce_paced_in_background(&setup, records, Duration::from_millis(500));
    let db = watcher(&setup).await;
    for (signal, stops) in [("-TERM", 1), ("-INT", 2)] {
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        // While a batch is being written.
        assert!(open_write_transaction(&db, Duration::from_secs(20)).await);
        pipeline.signal(signal);
        let status = pipeline.wait_for_exit(Duration::from_secs(20));
        assert!(
            status.success(),
            "`cchc run` exited with {status} on {signal}"
        );
        assert_eq!(
            log_lines(
                &pipeline,
                "ingest stopping: uncommitted records will be read again"
            ),
            stops,
            "{signal} did not stop the consumer cleanly: {}",
            pipeline.log.display()
        );
        pipeline = Pipeline::start(&setup, "a");
    }
    caught_up_and_exact(&store, &setup, 3, producing, &mut [&mut pipeline]).await;
}

#[tokio::test]
async fn a_commit_from_an_older_owner_or_applied_twice_is_refused_and_writes_nothing_in_postgres() {
    let (_, url) = fresh_database().await;
    commit_from_an_older_generation_is_refused(&url).await;
}

#[tokio::test]
async fn a_commit_from_an_older_owner_or_applied_twice_is_refused_and_writes_nothing_in_sqlite() {
    commit_from_an_older_generation_is_refused("sqlite::memory:").await;
}

async fn commit_from_an_older_generation_is_refused(url: &str) {
    let store = Store::connect(url, 2, "t").await.unwrap();
    let old = store.claim(0).await.unwrap();
    let new = store.claim(0).await.unwrap();
    assert!(new.generation > old.generation);
    let units = units();
    let key = CaseKey {
        commune: units.commune("31471").unwrap().clone(),
        case_id: "c".into(),
    };
    let write = |generation| PartitionWrite {
        partition: 0,
        generation,
        next_offset: Some(10),
        cases: vec![(key.clone(), CaseState::default())],
        deltas: vec![(
            (
                key.commune.clone(),
                NaiveDate::from_ymd_opt(2023, 1, 2).unwrap(),
            ),
            DayCounters {
                received: 1,
                ..DayCounters::default()
            },
        )],
        ..PartitionWrite::default()
    };
    match commit(&store, &write(old.generation), None).await {
        Err(StoreError::Fenced { partition: 0, .. }) => {}
        other => panic!("expected a fenced commit, got {other:?}"),
    }
    assert!(store.day_counters().await.unwrap().is_empty());
    assert_eq!(store.offsets().await.unwrap(), vec![(0, None)]);
    commit(&store, &write(new.generation), None).await.unwrap();
    let counters = store.day_counters().await.unwrap();
    assert_eq!(counters.len(), 1);
    assert_eq!(store.offsets().await.unwrap(), vec![(0, Some(10))]);

    // The same batch again, as after a commit whose outcome was lost with
    // the connection: refused, nothing written twice, and the owner told
    // where the partition stands.
    match commit(&store, &write(new.generation), None).await {
        Err(StoreError::Resync {
            partition: 0,
            next_offset: Some(10),
            clock: None,
        }) => {}
        other => panic!("expected a resync, got {other:?}"),
    }
    assert_eq!(store.day_counters().await.unwrap(), counters);
    assert_eq!(store.offsets().await.unwrap(), vec![(0, Some(10))]);

    // A clock tick (no records) is applied once too: retried from the clock
    // it started from, it is refused.
    let t1 = chrono::DateTime::parse_from_rfc3339("2023-01-03T00:00:00.123456Z")
        .unwrap()
        .to_utc();
    let mut tick = write(new.generation);
    tick.start_offset = Some(10);
    tick.next_offset = None;
    tick.clock = Some(t1);
    tick.cases.clear();
    commit(&store, &tick, None).await.unwrap();
    let after_tick = store.day_counters().await.unwrap();
    match commit(&store, &tick, None).await {
        Err(StoreError::Resync {
            partition: 0,
            next_offset: Some(10),
            clock: Some(clock),
        }) => assert_eq!(clock, t1),
        other => panic!("expected a resync, got {other:?}"),
    }
    assert_eq!(store.day_counters().await.unwrap(), after_tick);

    // A case written as new (it was not stored when the batch was loaded)
    // that is stored by now (by another partition's transaction) makes the
    // batch fail, to be tried again.
    let mut next = write(new.generation);
    next.start_offset = Some(10);
    next.start_clock = Some(t1);
    next.next_offset = Some(11);
    next.new_cases = vec![(key.clone(), CaseState::default())];
    match commit(&store, &next, None).await {
        Err(
            e @ StoreError::StoredAlready {
                partition: 0,
                what: "a case",
            },
        ) => assert!(e.is_transient()),
        other => panic!("expected a case stored already, got {other:?}"),
    }
    assert_eq!(store.day_counters().await.unwrap(), after_tick);
    assert_eq!(store.offsets().await.unwrap(), vec![(0, Some(10))]);
}

/// The URLs of a fresh PostgreSQL database and of a fresh SQLite file
/// (`var/test-logs/NAME.sqlite`), for tests that hold for both stores.
async fn both_stores(name: &str) -> [String; 2] {
    let (_, url) = fresh_database().await;
    let dir = repo().join("var/test-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let sqlite = dir.join(format!("{name}.sqlite"));
    let _ = std::fs::remove_file(&sqlite);
    [url, format!("sqlite://{}", sqlite.display())]
}

/// Event ids are not looked up in a table of their own: an id applied by
/// an earlier batch comes back with its case (or document), which keeps the
/// ids applied to it, and is a repeat, in both stores.
#[tokio::test]
async fn an_event_id_of_an_earlier_batch_counts_once_though_ids_are_not_looked_up_first() {
    for url in both_stores("repeated-ids").await {
        repeated_ids_count_once(&url).await;
    }
}

async fn repeated_ids_count_once(url: &str) {
    use cchc_pipeline::projector::Projector;
    let store = Store::connect(url, 2, "t").await.unwrap();
    let units = units();
    let projector = Projector::new(store.clone(), units.clone(), None, Default::default());
    let values = simulated(&units, 5, (2023, 1, 1), 20.0, 300);
    let sent: Vec<&Vec<u8>> = values[..250]
        .iter()
        .chain([&values[10]])
        .chain(&values[250..])
        .chain([&values[150], &values[290]])
        .collect();
    let reports = project_in_batches(&projector, &sent, &[200, sent.len() - 200]).await;
    assert_eq!(reports[0].duplicates, 0);
    assert_eq!(reports[1].duplicates, 3, "{:?}", reports[1]);
    let produced = Produced {
        records: sent.len(),
        valid: sent.into_iter().cloned().collect(),
        dead: BTreeMap::new(),
    };
    assert_projections(&store, &produced).await;
}

/// PostgreSQL's new cases and documents go in with binary `COPY`, each value
/// in its column type's own byte format (days and microseconds counted from
/// 2000, 2-byte `smallint`s): every fact of every case and document, read
/// back, is what SQLite's store, which writes them through its own code,
/// reads back for the same events.
#[tokio::test]
async fn cases_and_documents_copied_into_postgresql_read_back_as_sqlite_stores_them() {
    use cchc_pipeline::domain::{DocumentKey, DocumentState};
    use cchc_pipeline::projector::Projector;
    use cchc_pipeline::store::{BatchKeys, BatchTx};
    let units = units();
    let values = simulated(&units, 11, (2025, 6, 20), 40.0, 3_000);
    let sent: Vec<&Vec<u8>> = values.iter().collect();
    let [pg, lite] = both_stores("binary-copy").await;
    let mut read_back = Vec::new();
    let mut keys: Option<(Vec<CaseKey>, Vec<DocumentKey>)> = None;
    for url in [pg, lite] {
        let store = Store::connect(&url, 2, "t").await.unwrap();
        let projector = Projector::new(store.clone(), units.clone(), None, Default::default());
        // One batch: every case and document is new, so PostgreSQL copies
        // each one in.
        project_in_batches(&projector, &sent, &[sent.len()]).await;
        if keys.is_none() {
            let Store::Postgres(s) = &store else {
                unreachable!("PostgreSQL first")
            };
            let rows: Vec<(String, String)> = sqlx::query_as("SELECT commune, case_id FROM cases")
                .fetch_all(&s.pool())
                .await
                .unwrap();
            let docs: Vec<(String, String)> =
                sqlx::query_as("SELECT commune, document_id FROM documents")
                    .fetch_all(&s.pool())
                    .await
                    .unwrap();
            let code = |c: &str| units.commune(c).expect("a known commune").clone();
            keys = Some((
                rows.iter()
                    .map(|(c, id)| CaseKey {
                        commune: code(c),
                        case_id: id.clone(),
                    })
                    .collect(),
                docs.iter()
                    .map(|(c, id)| DocumentKey {
                        commune: code(c),
                        document_id: id.clone(),
                    })
                    .collect(),
            ));
        }
        let (cases, documents) = keys.as_ref().unwrap();
        assert!(
            cases.len() > 500 && documents.len() > 100,
            "{} cases, {} documents",
            cases.len(),
            documents.len()
        );
        let keys = BatchKeys {
            cases,
            documents,
            events: &[],
            careful: true,
        };
        let now = Utc::now();
        let fold = match &store {
            Store::Postgres(s) => s
                .begin_batch()
                .await
                .unwrap()
                .load(&units, 0, Some(now), now, &keys)
                .await
                .unwrap(),
            Store::Sqlite(s) => s
                .begin_batch()
                .await
                .unwrap()
                .load(&units, 0, Some(now), now, &keys)
                .await
                .unwrap(),
        };
        let states: (Vec<Option<CaseState>>, Vec<Option<DocumentState>>) = (
            cases.iter().map(|k| fold.case(k).cloned()).collect(),
            documents
                .iter()
                .map(|k| fold.document(k).cloned())
                .collect(),
        );
        assert!(
            states.0.iter().all(Option::is_some),
            "{url}: a case is missing"
        );
        assert!(
            states.1.iter().all(Option::is_some),
            "{url}: a document is missing"
        );
        read_back.push(states);
    }
    let (pg, lite) = (&read_back[0], &read_back[1]);
    for (i, (p, l)) in pg.0.iter().zip(&lite.0).enumerate() {
        assert_eq!(p, l, "case {i}");
    }
    for (i, (p, l)) in pg.1.iter().zip(&lite.1).enumerate() {
        assert_eq!(p, l, "document {i}");
    }
}

/// A PostgreSQL store remembers the cases its batches wrote and does not
/// read them back for the partition's next batch; but it never trusts what
/// it remembers: a row written since by anyone else (here an operator's
/// `UPDATE`) is not overwritten with the remembered state. The batch is
/// folded again from the row as it stands, and the other write stays.
#[tokio::test]
async fn a_case_written_by_someone_else_since_a_batch_remembered_it_is_read_again_not_overwritten()
{
    // Left alone, each batch updates the case the one before remembered:
    // none is folded again. Written by someone else after batch one, only
    // batch two is.
    for (outside_write, refolded) in [(false, 0), (true, 1)] {
        three_batches_of_one_case(outside_write, refolded).await;
    }
}

async fn three_batches_of_one_case(outside_write: bool, refolded: u64) {
    use cchc_pipeline::projector::Projector;
    let (_, url) = fresh_database().await;
    let store = Store::connect(&url, 2, "t").await.unwrap();
    store.remember_cases(10_000);
    let projector = Projector::new(store.clone(), units(), None, Default::default());
    let event = |id: &str, kind: &str, at: &str, data: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "event_id": id, "event_type": kind, "schema_version": 1,
            "occurred_at": at, "commune_code": "31471", "case_id": "HS-1", "data": data,
        }))
        .unwrap()
    };
    let values = [
        event(
            "r1",
            "case.received",
            "2026-05-02T08:00:00+07:00",
            serde_json::json!({"procedure_code": "1.001", "channel": "online", "online_level": "full",
                               "due_at": "2026-05-10T17:00:00+07:00", "registered_electronically": true}),
        ),
        event(
            "v1",
            "case.resolved",
            "2026-05-05T10:00:00+07:00",
            serde_json::json!({"due_at": "2026-05-10T17:00:00+07:00", "outcome": "completed"}),
        ),
        event(
            "t1",
            "case.rated",
            "2026-05-06T08:00:00+07:00",
            serde_json::json!({ "rating": "satisfied" }),
        ),
    ];
    let Store::Postgres(pg) = &store else {
        unreachable!()
    };
    let procedure = || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT received_procedure FROM cases WHERE case_id = 'HS-1'",
        )
        .fetch_one(&pg.pool())
        .await
        .unwrap()
    };
    let sent: Vec<&Vec<u8>> = values.iter().collect();
    // Batch one stores the receipt and remembers the case; then someone
    // else writes its row; batch two resolves it, batch three rates it.
    let mut claim = projector.store().claim(0).await.unwrap();
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    for (i, value) in sent.iter().enumerate() {
        use cchc_pipeline::projector::{PartitionBatch, Record};
        projector
            .project_partition(
                &PartitionBatch {
                    partition: 0,
                    claim,
                    records: projector.decode_records(vec![Record {
                        partition: 0,
                        offset: i as i64,
                        key: None,
                        value: Some((*value).clone()),
                        written_ms: None,
                    }]),
                    behind: Some(0),
                },
                now,
            )
            .await
            .unwrap();
        claim.next_offset = Some(i as i64 + 1);
        claim.clock = Some(now);
        claim.reevaluate = false;
        if i == 0 && outside_write {
            assert_eq!(procedure().await.as_deref(), Some("1.001"));
            sqlx::query("UPDATE cases SET received_procedure = '2.002' WHERE case_id = 'HS-1'")
                .execute(&pg.pool())
                .await
                .unwrap();
        }
    }
    let procedure_now = if outside_write { "2.002" } else { "1.001" };
    assert_eq!(
        procedure().await.as_deref(),
        Some(procedure_now),
        "the row written meanwhile was overwritten with the remembered case"
    );
    let resolved: (bool, bool) = sqlx::query_as(
        "SELECT closing_at IS NOT NULL, rating IS NOT NULL FROM cases WHERE case_id = 'HS-1'",
    )
    .fetch_one(&pg.pool())
    .await
    .unwrap();
    assert_eq!(resolved, (true, true), "both later batches applied");
    // Had a committed batch's cases not been remembered, batch two would
    // have taken the case as new, found it stored, and been folded again
    // in both runs.
    assert_eq!(
        projector.metrics().refolded.get(),
        refolded,
        "batches folded again (outside write: {outside_write})"
    );
}

/// A PostgreSQL store takes the cases it does not remember as new (the
/// commit's unique insert decides). A store started on a database whose
/// cases it never wrote (a restart, another member taking the partition
/// over) thus finds each one stored when it commits: the batch is folded
/// again reading them, and every fact counts once, in both stores.
#[tokio::test]
async fn a_new_store_on_stored_cases_folds_onto_them_and_counts_every_fact_once() {
    use cchc_pipeline::projector::Projector;
    for url in both_stores("cold-cache").await {
        let units = units();
        let values = simulated(&units, 23, (2026, 3, 1), 40.0, 1_200);
        let sent: Vec<&Vec<u8>> = values.iter().collect();
        // Three stores one after another, each a fresh start with nothing
        // remembered, each projecting a third of the events.
        for part in sent.chunks(400) {
            let store = Store::connect(&url, 2, "t").await.unwrap();
            store.remember_cases(10_000);
            let projector = Projector::new(store.clone(), units.clone(), None, Default::default());
            let claim = store.claim(0).await.unwrap();
            let offset = claim.next_offset.unwrap_or(0);
            let records = part
                .iter()
                .enumerate()
                .map(|(i, v)| cchc_pipeline::projector::Record {
                    partition: 0,
                    offset: offset + i as i64,
                    key: None,
                    value: Some((*v).clone()),
                    written_ms: None,
                })
                .collect();
            let report = projector
                .project_partition(
                    &cchc_pipeline::projector::PartitionBatch {
                        partition: 0,
                        claim,
                        records: projector.decode_records(records),
                        behind: Some(0),
                    },
                    chrono::SubsecRound::trunc_subsecs(Utc::now(), 6),
                )
                .await
                .unwrap();
            assert_eq!(report.duplicates, 0, "{url}: {report:?}");
        }
        let store = Store::connect(&url, 2, "t").await.unwrap();
        let produced = Produced {
            records: sent.len(),
            valid: sent.into_iter().cloned().collect(),
            dead: BTreeMap::new(),
        };
        assert_projections(&store, &produced).await;
    }
}

/// `count` simulated records' values, from the simulator's `seed`, starting
/// on the local day `from` at `per_day` cases a day.
fn simulated(
    units: &Units,
    seed: u64,
    (y, m, d): (i32, u32, u32),
    per_day: f64,
    count: usize,
) -> Vec<Vec<u8>> {
    Simulator::new(
        units,
        seed,
        NaiveDate::from_ymd_opt(y, m, d).unwrap(),
        per_day,
    )
    .take(count)
    .map(|r| r.value.into_bytes())
    .collect()
}

/// Projects `values` as partition 0's records from offset 0, in batches of
/// the given sizes, with the clock at now; returns each batch's report.
async fn project_in_batches(
    projector: &cchc_pipeline::projector::Projector,
    values: &[&Vec<u8>],
    sizes: &[usize],
) -> Vec<cchc_pipeline::projector::BatchReport> {
    use cchc_pipeline::projector::{PartitionBatch, Record};
    assert_eq!(sizes.iter().sum::<usize>(), values.len());
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(offset, v)| Record {
            partition: 0,
            offset: offset as i64,
            key: None,
            value: Some((*v).clone()),
            written_ms: None,
        })
        .collect();
    // To the microsecond, as the pipeline's clock and the store keep it.
    let now = chrono::SubsecRound::trunc_subsecs(Utc::now(), 6);
    let mut claim = projector.store().claim(0).await.unwrap();
    let mut reports = Vec::new();
    let mut start = 0;
    for &size in sizes {
        let chunk = &records[start..start + size];
        start += size;
        let report = projector
            .project_partition(
                &PartitionBatch {
                    partition: 0,
                    claim,
                    records: projector.decode_records(chunk.to_vec()),
                    behind: Some(0),
                },
                now,
            )
            .await
            .unwrap();
        claim.next_offset = Some(chunk.last().unwrap().offset + 1);
        claim.clock = Some(now);
        claim.reevaluate = false;
        reports.push(report);
    }
    reports
}

/// New cases and documents are written with `COPY` (binary format: a key
/// goes as its bytes, where the text format it replaced escaped backslash,
/// tab, newline and carriage return), and documents are not looked up before
/// folding. So: keys made of those characters must come back byte for byte (a later batch finds the case and the document
/// again, or it would count them twice), and a document signed again in a
/// later batch replaces the earlier signature; in both stores.
#[tokio::test]
async fn keys_full_of_escaped_characters_come_back_exact_and_a_document_signed_again_replaces() {
    for url in both_stores("escaped-keys").await {
        escaped_keys_and_signed_again(&url).await;
    }
}

async fn escaped_keys_and_signed_again(url: &str) {
    use cchc_pipeline::projector::Projector;
    let store = Store::connect(url, 2, "t").await.unwrap();
    let projector = Projector::new(store.clone(), units(), None, Default::default());
    let case_id = "ca\tse\\1\nb\r ồ \"q\"\t";
    let document_id = "d\\o\tc\n1\r";
    let event = |id: &str, kind: &str, at: &str, data: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({
            "event_id": id, "event_type": kind, "schema_version": 1,
            "occurred_at": at, "commune_code": "31471", "case_id": case_id, "data": data,
        }))
        .unwrap()
    };
    let signed = |id: &str, at: &str, signature: &str| {
        event(
            id,
            "document.signed",
            at,
            serde_json::json!({"document_id": document_id, "signature": signature, "document_kind": "case_result"}),
        )
    };
    let rated = |id: &str, at: &str, rating: &str| {
        event(
            id,
            "case.rated",
            at,
            serde_json::json!({ "rating": rating }),
        )
    };
    let values = [
        event(
            "e1\t",
            "case.received",
            "2023-05-02T08:00:00+07:00",
            serde_json::json!({"procedure_code": "1.001", "channel": "online", "online_level": "full",
                               "due_at": "2023-05-10T17:00:00+07:00", "registered_electronically": true}),
        ),
        rated("e2", "2023-05-03T08:00:00+07:00", "dissatisfied"),
        signed("e3", "2023-05-03T09:00:00+07:00", "handwritten"),
        // A later batch: a better rating and a digital signature replace the earlier ones.
        rated("e4", "2023-05-04T08:00:00+07:00", "very_satisfied"),
        signed("e5", "2023-05-04T09:00:00+07:00", "digital"),
        event(
            "e6",
            "case.resolved",
            "2023-05-05T10:00:00+07:00",
            serde_json::json!({"due_at": "2023-05-10T17:00:00+07:00", "outcome": "completed"}),
        ),
        // Repeats, in a third batch.
        rated("e2", "2023-05-03T08:00:00+07:00", "dissatisfied"),
        signed("e5", "2023-05-04T09:00:00+07:00", "digital"),
    ];
    let sent: Vec<&Vec<u8>> = values.iter().collect();
    let reports = project_in_batches(&projector, &sent, &[3, 3, 2]).await;
    let applied: Vec<(usize, usize)> = reports.iter().map(|r| (r.applied, r.duplicates)).collect();
    assert_eq!(applied, [(3, 0), (3, 0), (0, 2)], "{reports:?}");
    let counters = store.day_counters().await.unwrap();
    let total = counters
        .iter()
        .fold(DayCounters::default(), |mut t, (_, _, c)| {
            t.received += c.received;
            t.ratings += c.ratings;
            t.satisfied += c.satisfied;
            t.signatures += c.signatures;
            t.digital += c.digital;
            t
        });
    assert_eq!(
        (
            total.received,
            total.ratings,
            total.satisfied,
            total.signatures,
            total.digital
        ),
        (1, 1, 1, 1, 1),
        "one case, one rating (the later), one signature (the later, digital): {counters:?}"
    );
    let produced = Produced {
        records: sent.len(),
        valid: sent.into_iter().cloned().collect(),
        dead: BTreeMap::new(),
    };
    assert_projections(&store, &produced).await;
}

/// An upgrade from a schema before migration 0004 (ids kept as text, in a
/// table of their own): 0004 turns them into digests, in SQL; 0010 keeps
/// the ids applied since with their case or document, and marks the rows
/// stored before it, whose earlier ids stay in that table. An id applied
/// before the upgrade must still be a repeat after it, for a case and for a
/// document; a new id on the same case is not.
#[tokio::test]
async fn event_ids_applied_before_the_upgrade_are_still_repeats_after_it() {
    use cchc_pipeline::domain::{decode, Applied, DocumentKey};
    use cchc_pipeline::store::{BatchKeys, BatchTx};

    let (_, url) = fresh_database().await;
    let before = repo().join("var/test-logs/migrations-before-0004");
    let _ = std::fs::remove_dir_all(&before);
    std::fs::create_dir_all(&before).unwrap();
    for entry in std::fs::read_dir(repo().join("migrations/postgres")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.as_str() < "0004" {
            std::fs::copy(&path, before.join(name)).unwrap();
        }
    }
    let ids = [
        "0b6f3c1e-2f4e-4f7e-9a51-6f1d2b8e7c11",
        "một-cửa\t\\ 🙂",
        &"x".repeat(128),
    ];
    {
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::migrate::Migrator::new(before.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        for id in ids.iter().copied().chain(["doc-signed"]) {
            sqlx::query("INSERT INTO seen_events (event_id) VALUES ($1)")
                .bind(id)
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::query(
            "INSERT INTO cases (commune, case_id, partition, rating_at, rating)
             VALUES ('31471', 'c', 0, '2026-03-02T02:00:00Z', 1)",
        )
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO documents (commune, document_id, signed_at, digital)
             VALUES ('31471', 'd', '2026-03-02T02:00:00Z', true)",
        )
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = Store::connect(&url, 2, "t").await.unwrap();
    let units = units();
    let rated = |id: &str| {
        let v = serde_json::json!({"event_id": id, "event_type": "case.rated", "schema_version": 1,
            "occurred_at": "2026-03-02T10:00:00+07:00", "commune_code": "31471", "case_id": "c",
            "data": {"rating": "dissatisfied"}});
        decode(Some(v.to_string().as_bytes()), &units).unwrap()
    };
    let signed = {
        let v = serde_json::json!({"event_id": "doc-signed", "event_type": "document.signed",
            "schema_version": 1, "occurred_at": "2026-03-02T09:00:00+07:00", "commune_code": "31471",
            "data": {"document_id": "d", "signature": "handwritten"}});
        decode(Some(v.to_string().as_bytes()), &units).unwrap()
    };
    let mut events: Vec<_> = ids.iter().map(|id| rated(id)).collect();
    events.push(signed);
    events.push(rated("new-id"));
    let case = CaseKey {
        commune: units.commune("31471").unwrap().clone(),
        case_id: "c".into(),
    };
    let document = DocumentKey {
        commune: case.commune.clone(),
        document_id: "d".into(),
    };
    let keys = BatchKeys {
        cases: std::slice::from_ref(&case),
        documents: std::slice::from_ref(&document),
        events: &events,
        careful: true,
    };
    let Store::Postgres(pg) = &store else {
        unreachable!("a PostgreSQL store")
    };
    let mut fold = pg
        .begin_batch()
        .await
        .unwrap()
        .load(&units, 0, None, Utc::now(), &keys)
        .await
        .unwrap();
    let applied: Vec<Applied> = events.iter().map(|e| fold.apply(e)).collect();
    assert_eq!(
        applied,
        [
            Applied::Duplicate,
            Applied::Duplicate,
            Applied::Duplicate,
            Applied::Duplicate,
            Applied::Changed
        ],
        "the ids stored before the upgrade are repeats; a new one is not"
    );
}
