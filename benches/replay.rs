//! End-to-end replay: how fast the pipeline rebuilds projections from a
//! topic's beginning, against the rate at which librdkafka alone drains the
//! same topic, measured in the same run; and the pipeline's peak memory.
//!
//! Needs the real broker and PostgreSQL: `bash scripts/bench.sh replay`.
//! REPLAY_EVENTS (default 5000000, also 1000000 is run first to show memory
//! staying flat as history grows; REPLAY_SIZES="1000000,5000000"),
//! REPLAY_PARTITIONS (default 6), REPLAY_COMMUNES (default 0: the
//! configured units only; N adds N communes to them, so that the records'
//! keys spread over the partitions as a province's do: 24 partitions and
//! 120 communes is the wide shape), REPLAY_CASES_PER_DAY (per commune,
//! default 200). The pipeline runs as its own process
//! (`target/release/cchc run`), so its memory is its own.

// A scenario reads best from top to bottom: the 100-line limit of
// clippy.toml is for src/.
#![allow(clippy::too_many_lines)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message};

use cchc_pipeline::config::Settings;
use cchc_pipeline::kafka::ensure_topic;
use cchc_pipeline::simulator::Simulator;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

/// Every partition's committed offset (`None`: nothing committed yet).
type Offsets = Vec<(i32, Option<i64>)>;

/// The configuration the replay and the pipeline use: `config/default.toml`,
/// with `extra` communes added to its units (a copy in `var/replay/`).
fn replay_config(extra: usize) -> anyhow::Result<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = root.join("config/default.toml");
    if extra == 0 {
        return Ok(default);
    }
    let dir = root.join("var/replay");
    std::fs::create_dir_all(&dir)?;
    let text = std::fs::read_to_string(&default)?;
    let units = "units/long-my.csv";
    anyhow::ensure!(
        text.contains(&format!("units_file = \"{units}\"")),
        "config/default.toml no longer names {units}: update the replay benchmark"
    );
    let mut csv = std::fs::read_to_string(root.join("config").join(units))?;
    // Communes of today's city (code 92), valid throughout.
    for n in 0..extra {
        csv.push_str(&format!("{},Xã thử {n},commune,92,,,,\n", 80_001 + n));
    }
    std::fs::write(dir.join(format!("units-{extra}.csv")), csv)?;
    let config = dir.join(format!("config-{extra}.toml"));
    std::fs::write(&config, text.replace(units, &format!("units-{extra}.csv")))?;
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("replay: needs the real broker and database; run `bash scripts/bench.sh replay`");
        return Ok(());
    }
    let sizes: Vec<usize> = env_or("REPLAY_SIZES", "1000000,5000000")
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    let partitions: i32 = env_or("REPLAY_PARTITIONS", "6").parse()?;
    let config = replay_config(env_or("REPLAY_COMMUNES", "0").parse()?)?;
    let cases_per_day: f64 = env_or("REPLAY_CASES_PER_DAY", "200").parse()?;
    let bootstrap = env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
    let admin_url = env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/cchc");
    anyhow::ensure!(
        binary.exists(),
        "build the pipeline first: cargo build --release --bin cchc"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    println!(
        "replay benchmark: {} partitions, {} cases a day per commune, config {}, pipeline {}",
        partitions,
        cases_per_day,
        config.display(),
        binary.display()
    );
    for events in sizes {
        let suffix = format!("{:x}", rand::random::<u32>());
        let mut settings = Settings::load_file(&config)?;
        settings.kafka.bootstrap_servers = bootstrap.clone();
        settings.kafka.topic = format!("replay-{suffix}");
        runtime.block_on(ensure_topic(
            &settings.kafka,
            &settings.kafka.topic,
            partitions,
        ))?;

        // Load the topic.
        let started = Instant::now();
        let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("enable.idempotence", "true")
            .set("linger.ms", "20")
            .set("batch.size", "1000000")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        let start = NaiveDate::from_ymd_opt(Utc::now().year() - 3, 1, 1).expect("date");
        let mut bytes = 0usize;
        for r in Simulator::new(&settings.units, 11, start, cases_per_day).take(events) {
            bytes += r.value.len();
            let mut record = BaseRecord::to(&settings.kafka.topic)
                .key(&r.key)
                .payload(&r.value);
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((_, back)) => {
                        record = back;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        producer.flush(Duration::from_secs(120))?;
        println!(
            "\n{events} events ({:.0} MB of JSON) loaded in {:.1} s",
            bytes as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );

        // Baseline: librdkafka alone, counting.
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("group.id", format!("drain-{suffix}"))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create()?;
        consumer.subscribe(&[settings.kafka.topic.as_str()])?;
        let began = Instant::now();
        let mut n = 0usize;
        let mut first: Option<Instant> = None;
        while n < events {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                first.get_or_insert_with(Instant::now);
                n += 1;
                std::hint::black_box(m.payload());
            }
            anyhow::ensure!(
                began.elapsed() < Duration::from_secs(600),
                "drain timed out at {n}"
            );
        }
        let drain = events as f64 / first.expect("drained").elapsed().as_secs_f64();
        drop(consumer);

        // The pipeline from offset zero to every offset committed.
        let db = format!("replay_{suffix}");
        runtime.block_on(async {
            let pool = sqlx::PgPool::connect(&admin_url).await?;
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&pool)
                .await?;
            anyhow::Ok(())
        })?;
        let url = format!("{}/{db}", admin_url.rsplit_once('/').expect("URL").0);
        // Statement statistics, when the server preloads pg_stat_statements
        // (scripts/bench.sh does).
        let statements = runtime.block_on(async {
            let pool = sqlx::PgPool::connect(&url).await?;
            sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
                .execute(&pool)
                .await?;
            sqlx::query("SELECT pg_stat_statements_reset()")
                .execute(&pool)
                .await?;
            anyhow::Ok(pool)
        });
        // The pipeline's own /metrics are read at the end (batch times).
        let http_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(&binary)
            .args(["run", "--config"])
            .arg(&config)
            .env("CCHC_KAFKA__BOOTSTRAP_SERVERS", &bootstrap)
            .env("CCHC_KAFKA__TOPIC", &settings.kafka.topic)
            .env("CCHC_KAFKA__GROUP_ID", format!("replay-{suffix}"))
            .env("CCHC_ALERTS__TOPIC", format!("replay-alerts-{suffix}"))
            .env("CCHC_DATABASE__URL", &url)
            .env("CCHC_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?;
        let pid = child.id();
        let began = Instant::now();
        let postgres_before = postgres_cpu_seconds();
        // REPLAY_PERF=1: a CPU profile of the whole machine during the replay
        // (the pipeline and PostgreSQL): `perf report -i var/replay-N.perf.data --sort comm,dso,sym`.
        // REPLAY_PERF=dwarf: with DWARF call graphs (callers of inlined
        // and libc code too; larger files).
        let perf_mode = env_or("REPLAY_PERF", "0");
        let mut perf = (perf_mode == "1" || perf_mode == "dwarf")
            .then(|| {
                let call_graph = if perf_mode == "dwarf" { "dwarf" } else { "fp" };
                Command::new("perf")
                    .args(["record", "-F", "199", "--call-graph", call_graph, "-o"])
                    .arg(format!("var/replay-{events}.perf.data"))
                    .arg("-a")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            })
            .transpose()?;
        let store = runtime.block_on(cchc_pipeline::store::Store::connect(
            &url,
            1,
            &settings.kafka.topic,
        ))?;
        let mut peak_rss = 0u64;
        let mut samples = Vec::new();
        // (seconds since the start, every partition's committed offset)
        let mut progress: Vec<(f64, Offsets)> = Vec::new();
        loop {
            std::thread::sleep(Duration::from_millis(500));
            let offsets = runtime.block_on(store.offsets())?;
            let done: i64 = offsets.iter().map(|(_, o)| o.unwrap_or(0)).sum();
            progress.push((began.elapsed().as_secs_f64(), offsets));
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kb = |key: &str| {
                status
                    .lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            peak_rss = peak_rss.max(kb("VmHWM:"));
            samples.push((done, kb("VmRSS:")));
            if done as usize >= events {
                break;
            }
            anyhow::ensure!(child.try_wait()?.is_none(), "the pipeline exited");
            anyhow::ensure!(
                began.elapsed() < Duration::from_secs(3600),
                "replay timed out at {done}"
            );
        }
        let pipeline = events as f64 / began.elapsed().as_secs_f64();
        let pipeline_cpu = process_cpu_seconds(pid);
        let postgres_cpu = postgres_cpu_seconds() - postgres_before;
        let metrics = runtime
            .block_on(async {
                reqwest::get(format!("http://127.0.0.1:{http_port}/metrics"))
                    .await?
                    .text()
                    .await
            })
            .unwrap_or_default();
        if let Some(perf) = perf.as_mut() {
            let _ = Command::new("kill")
                .args(["-INT", &perf.id().to_string()])
                .status();
            let _ = perf.wait();
        }
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let _ = child.wait();
        println!("librdkafka drain   {drain:>10.0} events/s   1.00x");
        println!("pipeline replay    {pipeline:>10.0} events/s   {:.2}x   (offset 0 to every offset committed, {:.1} s)", pipeline / drain, began.elapsed().as_secs_f64());
        println!("pipeline peak RSS  {:>10.1} MB", peak_rss as f64 / 1024.0);
        // Time inside a batch (decode, load, fold, commit) against the
        // replay's wall time: what is left is spent waiting for records.
        let metric = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
                .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        };
        if let (Some(sum), Some(count)) = (
            metric("cchc_batch_seconds_sum"),
            metric("cchc_batch_seconds_count"),
        ) {
            println!(
                "batches: {count:.0}, {:.0} ms each on average, {sum:.1} s in all (partitions' batches overlapping)",
                1000.0 * sum / count.max(1.0)
            );
        }
        let wall = began.elapsed().as_secs_f64();
        println!(
            "CPU during the replay: pipeline {pipeline_cpu:.1} s ({:.0}% of one core), PostgreSQL {postgres_cpu:.1} s ({:.0}%), wall {wall:.1} s",
            100.0 * pipeline_cpu / wall,
            100.0 * postgres_cpu / wall
        );
        // How the events fell on the partitions (the record key is the
        // commune), and when each partition was done: the replay lasts as
        // long as its busiest partition, whose batches are committed one
        // after another.
        let (_, last) = progress.last().expect("sampled");
        let finished: Vec<String> = last
            .iter()
            .map(|&(partition, offset)| {
                let at = progress
                    .iter()
                    .find(|(_, o)| o.iter().any(|&(p, x)| p == partition && x == offset))
                    .map_or(0.0, |(t, _)| *t);
                format!("{partition}: {}k by {at:.1} s", offset.unwrap_or(0) / 1000)
            })
            .collect();
        println!("partitions (events, done):  {}", finished.join(", "));
        let quarter = samples.len() / 4;
        let rss: Vec<String> = [quarter, 2 * quarter, 3 * quarter, samples.len() - 1]
            .iter()
            .map(|&i| {
                format!(
                    "{}k events: {:.0} MB",
                    samples[i].0 / 1000,
                    samples[i].1 as f64 / 1024.0
                )
            })
            .collect();
        println!("pipeline RSS along the way: {}", rss.join(", "));
        match statements {
            Ok(pool) => runtime.block_on(print_statements(&pool))?,
            Err(e) => println!("(no statement statistics: {e})"),
        }
    }
    Ok(())
}

/// User + system CPU seconds of one process so far.
fn process_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of every running PostgreSQL process.
fn postgres_cpu_seconds() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "postgres")
                .unwrap_or(false)
        })
        .map(process_cpu_seconds)
        .sum()
}

/// The statements that took the database's time during the replay.
async fn print_statements(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let this_db = "dbid = (SELECT oid FROM pg_database WHERE datname = current_database())";
    let rows: Vec<(i64, f64, i64, String)> = sqlx::query_as(&format!(
        "SELECT calls, total_exec_time, rows, regexp_replace(query, '\\s+', ' ', 'g')
         FROM pg_stat_statements WHERE {this_db} ORDER BY total_exec_time DESC LIMIT 8"
    ))
    .fetch_all(pool)
    .await?;
    let total: f64 = sqlx::query_scalar(&format!(
        "SELECT COALESCE(sum(total_exec_time), 0)::float8 FROM pg_stat_statements WHERE {this_db}"
    ))
    .fetch_one(pool)
    .await?;
    println!(
        "database time by statement (pg_stat_statements, {:.1} s in all):",
        total / 1000.0
    );
    for (calls, ms, rows, query) in rows {
        let query: String = query.chars().take(90).collect();
        println!(
            "  {:>5.1}%  {:>7.2} s  {calls:>6} calls  {rows:>9} rows  {query}",
            100.0 * ms / total.max(1e-9),
            ms / 1000.0
        );
    }
    Ok(())
}
