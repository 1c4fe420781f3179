//! Alert latency: the time from producing the event that causes a breach (or
//! a recovery) to the alert arriving on the alerts topic, while a steady
//! background load of simulated events flows through the same pipeline.
//!
//! Needs the real broker and PostgreSQL: `bash scripts/bench.sh alert_latency`
//! starts them. Settings: ALERT_BENCH_RATE (background events/s, default
//! 2100, so that the rate measured over the whole run, pauses included,
//! stays at 2,000 or more), ALERT_BENCH_PROBES (breach/recovery pairs,
//! default 100), ALERT_BENCH_AT_RISK=0 (no early-warning evaluation),
//! ALERT_BENCH_CACHED_CASES (`database.cached_cases`; 0: no case remembered).
//!
//! The probe commune's digital-signature rate toggles with one event each
//! way: a document signed by hand breaks its 100% target, and a later
//! digital signature of the same document replaces it and recovers it.

// A scenario reads best from top to bottom: the 100-line limit of
// clippy.toml is for src/.
#![allow(clippy::too_many_lines)]

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{Datelike, Utc};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;

use cchc_pipeline::app::Application;
use cchc_pipeline::config::Settings;
use cchc_pipeline::kafka::ensure_topic;
use cchc_pipeline::shutdown::CancellationToken;
use cchc_pipeline::simulator::Simulator;

/// The probe: a unit valid today (Phường Long Phú 1, which Xã Long Phú, Xã
/// Tân Phú and Phường Trà Lồng became on 1 July 2025). Alerts are for the
/// units valid when they are evaluated, so an ended commune would never
/// breach.
const PROBE: &str = "31480";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("alert_latency: needs the real broker and database; run `bash scripts/bench.sh alert_latency`");
        return Ok(());
    }
    tokio::runtime::Runtime::new()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let rate: u64 = env_or("ALERT_BENCH_RATE", "2100").parse()?;
    let probes: usize = env_or("ALERT_BENCH_PROBES", "100").parse()?;
    let bootstrap = env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
    let admin_url = env_or(
        "DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let suffix = format!("{:x}", rand::random::<u32>());

    let mut settings =
        Settings::load_file(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/default.toml"))?;
    settings.kafka.bootstrap_servers = bootstrap.clone();
    settings.kafka.topic = format!("bench-events-{suffix}");
    settings.kafka.group_id = format!("bench-{suffix}");
    settings.alerts.topic = format!("bench-alerts-{suffix}");
    settings.batch.max_wait_ms = 20;
    // ALERT_BENCH_AT_RISK=0 measures without the early-warning evaluation.
    settings.alerts.at_risk = env_or("ALERT_BENCH_AT_RISK", "1") != "0";
    // ALERT_BENCH_CACHED_CASES=0 measures without remembered cases.
    if let Ok(n) = std::env::var("ALERT_BENCH_CACHED_CASES") {
        settings.database.cached_cases = n.parse()?;
    }
    let db = format!("bench_{suffix}");
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&sqlx::PgPool::connect(&admin_url).await?)
        .await?;
    settings.database.url = format!(
        "{}/{db}",
        admin_url.rsplit_once('/').expect("URL with a database").0
    );
    settings.http.listen = "127.0.0.1:0".into();
    ensure_topic(&settings.kafka, &settings.kafka.topic, 3).await?;
    ensure_topic(&settings.kafka, &settings.alerts.topic, 1).await?;

    let shutdown = CancellationToken::new();
    let app = Application::build(settings.clone()).await?;
    let pipeline = tokio::spawn(app.run_until_stopped(shutdown.clone()));

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .create()?;
    let alerts: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", format!("bench-reader-{suffix}"))
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    alerts.subscribe(&[settings.alerts.topic.as_str()])?;

    // Background: simulated events of the other communes at `rate` per second.
    let topic = settings.kafka.topic.clone();
    let start = chrono::NaiveDate::from_ymd_opt(Utc::now().year(), 1, 1).expect("1 January");
    // None of the codes whose events count in the probe's unit today (the
    // communes merged into it): its rate moves with the probe's events only.
    let today = cchc_pipeline::domain::time::local_date(Utc::now());
    let probed: Vec<String> = settings
        .units
        .feeders(PROBE, today)
        .into_iter()
        .map(ToString::to_string)
        .collect();
    anyhow::ensure!(
        !probed.is_empty(),
        "the probe unit {PROBE} is not valid today"
    );
    let sim =
        Simulator::new(&settings.units, 7, start, 20.0).filter(move |r| !probed.contains(&r.key));
    let bg_producer = producer.clone();
    let stop_bg = CancellationToken::new();
    let stop = stop_bg.clone();
    let background = tokio::spawn(async move {
        let mut sent = 0u64;
        let began = Instant::now();
        let mut sim = sim;
        while !stop.is_cancelled() {
            let due = (began.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due {
                let r = sim.next().expect("endless");
                let _ =
                    bg_producer.send_result(FutureRecord::to(&topic).key(&r.key).payload(&r.value));
                sent += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (sent, began.elapsed())
    });

    // The probe commune: 20 digital signatures (met), then toggles.
    let now = Utc::now().with_timezone(&cchc_pipeline::domain::time::local_offset());
    let signed = |id: String, doc: &str, signature: &str, seconds: i64| {
        json!({"event_id": id, "event_type": "document.signed", "schema_version": 1,
               "occurred_at": (now + chrono::Duration::seconds(seconds)).to_rfc3339(), "commune_code": PROBE,
               "data": {"document_id": doc, "signature": signature, "document_kind": "case_result"}})
        .to_string()
    };
    for i in 0..20 {
        let v = signed(
            format!("probe-{suffix}-base-{i}"),
            &format!("base-{i}"),
            "digital",
            -3600,
        );
        producer
            .send(
                FutureRecord::to(&settings.kafka.topic)
                    .key(PROBE)
                    .payload(&v),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await; // warm-up under load

    let mut latencies: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut transitions = 0usize;
    for i in 0..probes * 2 {
        let (signature, kind) = if i % 2 == 0 {
            ("handwritten", "indicator.breached")
        } else {
            ("digital", "indicator.recovered")
        };
        transitions += 1;
        let want_id = format!("{PROBE}.digital_signature_rate.ytd.{transitions}");
        let v = signed(format!("probe-{suffix}-{i}"), "toggle", signature, i as i64);
        let sent = Instant::now();
        producer
            .send(
                FutureRecord::to(&settings.kafka.topic)
                    .key(PROBE)
                    .payload(&v),
                Duration::from_secs(5),
            )
            .await
            .map_err(|(e, _)| e)?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), alerts.recv())
                .await
                .map_err(|_| anyhow::anyhow!("no alert {want_id} within 10 s"))??;
            if m.key() != Some(PROBE.as_bytes()) {
                continue;
            }
            let alert: serde_json::Value = serde_json::from_slice(m.payload().unwrap_or_default())?;
            if alert["alert_id"] == want_id.as_str() {
                assert_eq!(alert["event_type"], kind);
                latencies
                    .entry(kind)
                    .or_default()
                    .push(sent.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    stop_bg.cancel();
    let (sent, elapsed) = background.await?;
    shutdown.cancel();
    pipeline.await??;

    println!("\nalert latency, event produced -> alert on {}, background load {:.0} events/s ({} events), at-risk evaluation {}", settings.alerts.topic, sent as f64 / elapsed.as_secs_f64(), sent, if settings.alerts.at_risk { "on" } else { "off" });
    let mut all = Vec::new();
    for (kind, mut l) in latencies {
        l.sort_by(f64::total_cmp);
        println!(
            "{kind:<22} n={:<4} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
            l.len(),
            percentile(&l, 0.5),
            percentile(&l, 0.99),
            l[l.len() - 1]
        );
        all.extend(l);
    }
    all.sort_by(f64::total_cmp);
    println!(
        "{:<22} n={:<4} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        "all",
        all.len(),
        percentile(&all, 0.5),
        percentile(&all, 0.99),
        all[all.len() - 1]
    );
    Ok(())
}
