//! Builds the pipeline from settings and runs it until stopped.

use anyhow::Context;
use tracing::info;

use crate::config::Settings;
use crate::ingest::{self, Shutdown};
use crate::projector::Projector;
use crate::store::PgStore;

/// Runs the projection consumer against the configured Kafka and PostgreSQL
/// until `shutdown` is triggered.
pub async fn run_until_stopped(settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let store = PgStore::connect(
        &settings.database.url,
        settings.database.max_connections,
        &settings.kafka.topic,
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the projection store at {}",
            redact(&settings.database.url)
        )
    })?;
    info!(topic = %settings.kafka.topic, group = %settings.kafka.group_id, "projection store ready");
    let projector = Projector::new(store, settings.units.clone());
    let handle = ingest::spawn(
        &settings,
        projector,
        tokio::runtime::Handle::current(),
        shutdown,
    )?;
    tokio::task::spawn_blocking(move || handle.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the ingest thread panicked"))??;
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

/// Options of `cchc simulate`.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    pub events: usize,
    pub seed: u64,
    pub start: chrono::NaiveDate,
    pub cases_per_day: f64,
    pub partitions: i32,
}

/// Produces simulated events into the configured topic, creating it with
/// `partitions` partitions if it does not exist. Returns how many were sent.
pub async fn simulate(settings: &Settings, options: &SimulateOptions) -> anyhow::Result<usize> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;
    use std::time::Duration;

    let k = &settings.kafka;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &k.bootstrap_servers)
        .create()?;
    let topic = NewTopic::new(&k.topic, options.partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        match result {
            Ok(_) => info!(topic = %k.topic, partitions = options.partitions, "topic created"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => anyhow::bail!("cannot create topic {t}: {code}"),
        }
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &k.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    let sim = crate::simulator::Simulator::new(
        &settings.units,
        options.seed,
        options.start,
        options.cases_per_day,
    );
    let records: Vec<_> = sim.take(options.events).collect();
    let started = std::time::Instant::now();
    for (n, chunk) in records.chunks(5_000).enumerate() {
        let sends = chunk.iter().map(|r| {
            producer.send(
                FutureRecord::to(&k.topic).key(&r.key).payload(&r.value),
                Duration::from_secs(30),
            )
        });
        for result in futures_util::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        let sent = (n + 1) * 5_000;
        if n % 10 == 9 {
            info!(
                sent = sent.min(records.len()),
                total = records.len(),
                "producing"
            );
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
    use crate::domain::time::local_date;
    use crate::domain::{DayCounters, Indicator, Standing};
    use std::collections::HashMap;
    use std::fmt::Write;

    let store = PgStore::connect(&settings.database.url, 2, &settings.kafka.topic).await?;
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
