//! HTTP ingestion against producing straight to Kafka: the same events, in
//! batches of 500, through `POST /api/v1/events` (the application's own
//! producer: idempotent, `acks=all`, each request answered once every event
//! is acknowledged) and through a producer of the same settings in this
//! process, each batch awaited before the client sends its next, with the
//! same number of concurrent clients. The pipeline runs meanwhile (it
//! consumes what both write; the second copy of each event is dropped as a
//! repeat). Rounds alternate the two ways so that a drift of the machine
//! falls on both.
//!
//! Needs the real broker and PostgreSQL: `bash scripts/bench.sh ingest`.
//! Settings: INGEST_BENCH_EVENTS (per round and way, default 200000),
//! INGEST_BENCH_CLIENTS (default 4), INGEST_BENCH_ROUNDS (default 2).

// A scenario reads best from top to bottom: the 100-line limit of
// clippy.toml is for src/.
#![allow(clippy::too_many_lines)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures_util::future::join_all;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::sync::Mutex;

use cchc_pipeline::app::Application;
use cchc_pipeline::config::Settings;
use cchc_pipeline::kafka::ensure_topic;
use cchc_pipeline::shutdown::CancellationToken;
use cchc_pipeline::simulator::Simulator;

const BATCH: usize = 500;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest: needs the real broker and database; run `bash scripts/bench.sh ingest`");
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

/// (key, value) batches of the simulator's events.
type Batches = Vec<Vec<(String, String)>>;

/// Runs `clients` tasks taking batches off one queue, each calling `send`
/// on a batch and waiting for it; the events per second.
async fn drive<F, Fut>(batches: &Batches, clients: usize, send: F) -> anyhow::Result<f64>
where
    F: Fn(Vec<(String, String)>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send,
{
    let queue = Arc::new(Mutex::new(batches.clone().into_iter()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let queue = queue.clone();
            let send = send.clone();
            tokio::spawn(async move {
                let mut n = 0;
                loop {
                    let next = queue.lock().await.next();
                    let Some(batch) = next else { break };
                    n += send(batch).await?;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for t in join_all(tasks).await {
        total += t??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn run() -> anyhow::Result<()> {
    let events: usize = env_or("INGEST_BENCH_EVENTS", "200000").parse()?;
    let clients: usize = env_or("INGEST_BENCH_CLIENTS", "4").parse()?;
    let rounds: usize = env_or("INGEST_BENCH_ROUNDS", "2").parse()?;
    let bootstrap = env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
    let admin_url = env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let suffix = format!("{:x}", rand::random::<u32>());

    let mut settings =
        Settings::load_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"))?;
    settings.kafka.bootstrap_servers = bootstrap.clone();
    settings.kafka.topic = format!("bench-ingest-{suffix}");
    settings.kafka.group_id = format!("bench-ingest-{suffix}");
    settings.alerts.topic = format!("bench-ingest-alerts-{suffix}");
    let db = format!("bench_ingest_{suffix}");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&sqlx::PgPool::connect(&admin_url).await?)
        .await?;
    settings.database.url = format!(
        "{}/{db}",
        admin_url.rsplit_once('/').expect("URL with a database").0
    );
    settings.http.listen = "127.0.0.1:0".into();
    ensure_topic(&settings.kafka, &settings.kafka.topic, 6).await?;
    ensure_topic(&settings.kafka, &settings.alerts.topic, 1).await?;
    let shutdown = CancellationToken::new();
    let app = Application::build(settings.clone()).await?;
    let url = format!("http://{}/api/v1/events", app.address());
    let pipeline = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let token = settings.http.producers[0].token.clone();

    let all: Vec<(String, String)> = Simulator::new(
        &settings.units,
        11,
        NaiveDate::from_ymd_opt(2024, 1, 1).expect("a date"),
        20.0,
    )
    .take(events * rounds)
    .map(|r| (r.key, r.value))
    .collect();
    // The producer a Kafka client of the one-stop software would use: the
    // settings of the application's own (kafka::ingest_producer).
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()?;
    let http = reqwest::Client::new();
    println!(
        "ingest: {events} events per round and way, batches of {BATCH}, {clients} clients, {rounds} rounds"
    );
    let (mut kafka_rates, mut http_rates) = (Vec::new(), Vec::new());
    for (round, chunk) in all.chunks(events).enumerate() {
        let batches: Batches = chunk.chunks(BATCH).map(<[_]>::to_vec).collect();
        let topic = settings.kafka.topic.clone();
        let p = producer.clone();
        let direct = drive(&batches, clients, move |batch| {
            let p = p.clone();
            let topic = topic.clone();
            async move {
                let sends = batch.iter().map(|(k, v)| {
                    p.send(
                        FutureRecord::to(&topic).key(k).payload(v),
                        Duration::from_secs(10),
                    )
                });
                for r in join_all(sends).await {
                    r.map_err(|(e, _)| anyhow::anyhow!("not delivered: {e}"))?;
                }
                Ok(batch.len())
            }
        })
        .await?;
        let (h, u, t) = (http.clone(), url.clone(), token.clone());
        let over_http = drive(&batches, clients, move |batch| {
            let (h, u, t) = (h.clone(), u.clone(), t.clone());
            async move {
                let mut body = String::with_capacity(batch.len() * 300);
                for (_, v) in &batch {
                    body.push_str(v);
                    body.push('\n');
                }
                let res = h
                    .post(&u)
                    .bearer_auth(&t)
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 200, "answered {}", res.status());
                let answer: serde_json::Value = serde_json::from_slice(&res.bytes().await?)?;
                anyhow::ensure!(answer["accepted"] == batch.len(), "{}", answer["accepted"]);
                Ok(batch.len())
            }
        })
        .await?;
        println!(
            "round {}: straight to Kafka {:>9.0} events/s   POST /api/v1/events {:>9.0} events/s   ratio {:.2}",
            round + 1,
            direct,
            over_http,
            over_http / direct
        );
        kafka_rates.push(direct);
        http_rates.push(over_http);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (k, h) = (median(&mut kafka_rates), median(&mut http_rates));
    println!("median: straight to Kafka {k:.0} events/s, POST /api/v1/events {h:.0} events/s, ratio {:.2}", h / k);
    shutdown.cancel();
    pipeline.await??;
    Ok(())
}
