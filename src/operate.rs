//! Operator commands: produce simulated events, import a newline-delimited
//! JSON export (backfill), print the indicator report, list and resend dead
//! letters.

use std::time::Duration;

use anyhow::Context;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tracing::info;

use crate::config::Settings;
use crate::startup::ensure_topic;
use crate::store::Store;

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

/// Produces simulated events into the configured topic, creating it with
/// `partitions` partitions if it does not exist. Returns how many were sent.
pub async fn simulate(settings: &Settings, options: &SimulateOptions) -> anyhow::Result<usize> {
    let k = &settings.kafka;
    ensure_topic(settings, &k.topic, options.partitions).await?;
    let producer = producer(settings)?;
    let sim = crate::simulator::Simulator::new(
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

/// Prints each commune's indicators for `window`, with the roll-up of every
/// parent unit, from the projection store.
pub async fn report(settings: &Settings, window: crate::domain::Window) -> anyhow::Result<String> {
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    report_from(&store, settings, window).await
}

/// The indicator table of [`report`], from an open store.
pub async fn report_from(
    store: &Store,
    settings: &Settings,
    window: crate::domain::Window,
) -> anyhow::Result<String> {
    use crate::domain::time::local_date;
    use crate::domain::{DayCounters, Indicator, Standing};
    use std::collections::HashMap;
    use std::fmt::Write;

    let today =
        local_date(chrono::Utc::now() + chrono::Duration::seconds(settings.clock.skew_seconds));
    let range = window.days(today);
    let mut totals: HashMap<String, DayCounters> = HashMap::new();
    for (commune, day, c) in store.day_counters().await? {
        if day >= range.0 && day < range.1 {
            *totals.entry(commune).or_default() += c;
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "window {window} ({} to {}, end excluded)",
        range.0, range.1
    )?;
    write!(out, "{:<24}", "unit")?;
    for i in Indicator::ALL {
        write!(out, " {:>22}", i.id())?;
    }
    writeln!(out)?;
    let mut rows: Vec<(String, String, DayCounters, Option<crate::domain::UnitCode>)> = settings
        .units
        .communes()
        .map(|u| {
            (
                u.code.to_string(),
                u.name.clone(),
                totals.get(u.code.as_str()).copied().unwrap_or_default(),
                Some(u.code.clone()),
            )
        })
        .collect();
    for parent in settings.units.iter().filter(|u| !u.kind.receives_cases()) {
        let mut sum = DayCounters::default();
        for u in settings.units.communes_under(parent.code.as_str()) {
            sum += totals.get(u.code.as_str()).copied().unwrap_or_default();
        }
        rows.push((parent.code.to_string(), parent.name.clone(), sum, None));
    }
    for (_, name, c, commune) in rows {
        write!(out, "{name:<24}")?;
        for i in Indicator::ALL {
            let ratio = i.ratio(&c);
            let rule = match &commune {
                Some(code) => settings.targets.rule(code, i),
                None => settings.targets.default_rule(i),
            };
            let mark = match rule.standing(ratio) {
                Standing::Met => "ok",
                Standing::Breached => "MISS",
                Standing::TooFewCases => "few",
                Standing::NoData => "",
            };
            let cell = match ratio.rate() {
                Some(r) => format!("{:.1}% {mark}", r * 100.0),
                None => "-".to_string(),
            };
            write!(out, " {cell:>22}")?;
        }
        writeln!(out)?;
    }
    Ok(out)
}

fn producer(settings: &Settings) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?)
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub lines: usize,
    /// Lines that are not a JSON object with a `commune_code`: sent anyway
    /// (the pipeline keeps them as dead letters, with the reason), unkeyed.
    pub unkeyed: usize,
}

/// Produces every line of a newline-delimited JSON export of past events
/// into the events topic, in file order, keyed by each event's commune code.
/// The pipeline folds late events into the days they belong to, so a
/// backfill is just more events. Blank lines are skipped; every other line
/// is sent as it is, so nothing is lost: what is not a valid event ends up
/// in the dead letters with its reason.
pub async fn import(settings: &Settings, file: &std::path::Path) -> anyhow::Result<ImportReport> {
    use indicatif::{ProgressBar, ProgressStyle};
    use tokio::io::AsyncBufReadExt;

    let handle = tokio::fs::File::open(file)
        .await
        .with_context(|| format!("cannot open {}", file.display()))?;
    let size = handle.metadata().await?.len();
    let bar = ProgressBar::new(size).with_style(
        ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {per_sec} eta {eta} {msg}")
            .expect("valid template"),
    );
    let producer = producer(settings)?;
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
        let key = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| {
                v.get("commune_code")
                    .and_then(|c| c.as_str())
                    .map(str::to_string)
            });
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

/// Lists dead letters with an id above `after`, one line each.
pub async fn list_dead_letters(
    settings: &Settings,
    after: i64,
    limit: i64,
) -> anyhow::Result<String> {
    use std::fmt::Write;
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    let mut out = String::new();
    for r in store.dead_letters(after, limit).await? {
        let value = r
            .value
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        let value: String = value.chars().take(120).collect();
        let resent = r
            .resent_at
            .map(|t| format!(" (resent {t})"))
            .unwrap_or_default();
        writeln!(
            out,
            "{}\t{}/{}@{}\t{}\t{}{resent}\n\t{value}",
            r.id, r.topic, r.partition, r.offset, r.reason_code, r.reason
        )?;
    }
    Ok(out)
}

/// Sends dead letter `id` through the events topic again: its original
/// bytes, or the corrected event read from `corrected`.
pub async fn resend_dead_letter(
    settings: &Settings,
    id: i64,
    corrected: Option<&std::path::Path>,
) -> anyhow::Result<String> {
    let store = Store::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
    let row = store
        .dead_letter(id)
        .await?
        .with_context(|| format!("no dead letter {id}"))?;
    let value = match corrected {
        Some(path) => {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?
        }
        None => row.value.clone().unwrap_or_default(),
    };
    let key = serde_json::from_slice::<serde_json::Value>(&value)
        .ok()
        .and_then(|v| {
            v.get("commune_code")
                .and_then(|c| c.as_str())
                .map(|c| c.as_bytes().to_vec())
        })
        .or(row.record_key.clone())
        .unwrap_or_default();
    let delivery = producer(settings)?
        .send(
            FutureRecord::to(&settings.kafka.topic)
                .key(&key)
                .payload(&value),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| e)?;
    store.mark_resent(id).await?;
    Ok(format!(
        "dead letter {id} sent to {} partition {} offset {}",
        settings.kafka.topic, delivery.partition, delivery.offset
    ))
}
