//! `cchc simulate`: a simulated year of one-stop-shop events into the
//! events topic, as fast as the broker takes them or at a set rate.

use std::time::Duration;

use rdkafka::producer::FutureRecord;
use tracing::info;

use crate::config::Settings;
use crate::simulator::Simulator;

/// Options of `cchc simulate`.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub events: usize,
    pub seed: u64,
    pub start: chrono::NaiveDate,
    pub cases_per_day: f64,
    pub partitions: i32,
    /// Events per second; `None`: as fast as the broker takes them.
    pub rate: Option<f64>,
}

/// Writes the simulated events to `file` as newline-delimited JSON (an
/// export as a one-stop system would make it, for `cchc validate` and
/// `cchc import`), nothing to Kafka. Returns how many were written.
pub fn simulate_to_file(
    settings: &Settings,
    options: &SimulateOptions,
    file: &std::path::Path,
) -> anyhow::Result<usize> {
    use std::io::Write;
    let out = std::fs::File::create(file)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", file.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    let sim = Simulator::new(
        &settings.units,
        options.seed,
        options.start,
        options.cases_per_day,
    );
    let mut written = 0;
    for r in sim.take(options.events) {
        out.write_all(r.value.as_bytes())?;
        out.write_all(b"\n")?;
        written += 1;
    }
    out.flush()?;
    info!(events = written, file = %file.display(), "simulated events written");
    Ok(written)
}

/// Produces simulated events into the configured topic, creating it with
/// `partitions` partitions if it does not exist. Returns how many were sent.
pub async fn simulate(settings: &Settings, options: &SimulateOptions) -> anyhow::Result<usize> {
    let k = &settings.kafka;
    crate::kafka::check_connection(k, &settings.file).await?;
    crate::kafka::ensure_topic(k, &k.topic, options.partitions).await?;
    let producer = crate::kafka::producer(k)?;
    let sim = Simulator::new(
        &settings.units,
        options.seed,
        options.start,
        options.cases_per_day,
    );
    let records: Vec<_> = sim.take(options.events).collect();
    let started = std::time::Instant::now();
    // At a set rate, chunks of a twentieth of a second's events, each sent
    // when the rate says it is due.
    let chunk_size = match options.rate {
        Some(rate) => ((rate / 20.0) as usize).clamp(1, 5_000),
        None => 5_000,
    };
    let mut sent = 0;
    for chunk in records.chunks(chunk_size) {
        if let Some(rate) = options.rate {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let sends = chunk.iter().map(|r| {
            producer.send(
                FutureRecord::to(&k.topic).key(&r.key).payload(&r.value),
                Duration::from_secs(30),
            )
        });
        for result in futures_util::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        let before = sent;
        sent += chunk.len();
        if before / 50_000 != sent / 50_000 {
            info!(sent, total = records.len(), "producing");
        }
    }
    info!(
        events = records.len(),
        seconds = started.elapsed().as_secs_f64(),
        "simulated events produced"
    );
    Ok(records.len())
}
