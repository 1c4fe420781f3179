//! `cchc import`: a newline-delimited JSON export of past events (a
//! backfill) into the events topic, keyed by each event's commune.

use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::io::AsyncBufReadExt;
use tracing::info;

use crate::config::Settings;
use crate::domain::event::record_key;

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub lines: usize,
    /// Lines that are not a JSON object with a `commune_code`: sent anyway
    /// (the pipeline keeps them as dead letters, with the reason), unkeyed.
    pub unkeyed: usize,
}

/// Produces every line of `file` into the events topic, in file order. The
/// pipeline folds late events into the days they belong to, so a backfill
/// is just more events. Blank lines are skipped; every other line is sent
/// as it is, so nothing is lost: what is not a valid event ends up in the
/// dead letters with its reason.
pub async fn import(settings: &Settings, file: &std::path::Path) -> anyhow::Result<ImportReport> {
    let handle = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let size = handle.metadata().await?.len();
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    crate::kafka::check_connection(&settings.kafka, &settings.file).await?;
    let producer = crate::kafka::producer(&settings.kafka)?;
    let topic = settings.kafka.topic.clone();
    let mut lines = tokio::io::BufReader::new(handle).lines();
    let mut report = ImportReport::default();
    let mut pending = Vec::new();
    while let Some(line) = lines.next_line().await? {
        bar.inc(line.len() as u64 + 1);
        if line.trim().is_empty() {
            continue;
        }
        report.lines += 1;
        let key = record_key(line.as_bytes());
        if key.is_none() {
            report.unkeyed += 1;
        }
        pending.push((key, line));
        if pending.len() == 5_000 {
            send_lines(&producer, &topic, std::mem::take(&mut pending)).await?;
            bar.set_message(format!("{} events", report.lines));
        }
    }
    send_lines(&producer, &topic, pending).await?;
    bar.finish_with_message(format!("{} events", report.lines));
    info!(
        lines = report.lines,
        unkeyed = report.unkeyed,
        topic,
        "import done"
    );
    Ok(report)
}

async fn send_lines(
    producer: &FutureProducer,
    topic: &str,
    lines: Vec<(Option<String>, String)>,
) -> anyhow::Result<()> {
    let sends = lines.iter().map(|(key, line)| {
        let mut record = FutureRecord::<str, str>::to(topic).payload(line);
        if let Some(k) = key {
            record = record.key(k);
        }
        producer.send(record, Duration::from_secs(30))
    });
    for result in futures_util::future::join_all(sends).await {
        result.map_err(|(e, _)| e)?;
    }
    Ok(())
}
