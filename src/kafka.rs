//! Every Kafka client of the pipeline, built here from [`KafkaSettings`]:
//! the projection consumer, the alert relay's producer, the operators'
//! producer (simulate, import, dead-letter resend, the demo), the producer
//! of the events sent over HTTP ([`ingest_producer`]), the admin
//! client that creates topics, and the reader of partition ends. Each starts
//! from [`client_config`], so `kafka.properties` (SASL, TLS, tuning) reaches
//! all of them alike.
//!
//! Some librdkafka properties the pipeline sets itself, because its
//! guarantees rest on them (offsets live in the database, producers are
//! idempotent); `kafka.properties` may not set those ([`check_property`],
//! applied when the configuration is loaded).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};
use serde::Deserialize;
use tracing::{debug, error, info, warn};

/// The `[kafka]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSettings {
    pub bootstrap_servers: String,
    pub topic: String,
    pub group_id: String,
    pub session_timeout_ms: u32,
    pub max_poll_interval_ms: u32,
    /// Extra librdkafka properties for every client (security, tuning),
    /// passed through as they are, except those [`check_property`] refuses.
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

/// How long a command waits for the cluster to answer at start.
pub const CONNECTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Properties the pipeline sets itself, with the reason `kafka.properties`
/// may not.
const RESERVED: &[(&str, &str)] = &[
    ("bootstrap.servers", "set kafka.bootstrap_servers instead"),
    ("group.id", "set kafka.group_id instead"),
    ("session.timeout.ms", "set kafka.session_timeout_ms instead"),
    (
        "max.poll.interval.ms",
        "set kafka.max_poll_interval_ms instead",
    ),
    (
        "enable.auto.commit",
        "the consumer's offsets live in the projection database, committed with each batch",
    ),
    (
        "enable.auto.offset.store",
        "the consumer's offsets live in the projection database, committed with each batch",
    ),
    (
        "auto.offset.reset",
        "a partition never projected is read from its first record",
    ),
    (
        "enable.partition.eof",
        "the consumer does not use end-of-partition events",
    ),
    (
        "enable.idempotence",
        "the producers are idempotent so that a retried send is not written twice",
    ),
    (
        "transactional.id",
        "the pipeline's exactly-once effect comes from the database, not Kafka transactions",
    ),
];

/// Whether `kafka.properties` may set `key` to `value`; the reason if not.
/// Both rebalance protocols of the classic consumer group are supported
/// (`partition.assignment.strategy` eager or `cooperative-sticky`); the
/// newer consumer-group protocol (KIP-848) is not tested with this consumer.
pub fn check_property(key: &str, value: &str) -> Result<(), String> {
    if let Some((_, why)) = RESERVED.iter().find(|(k, _)| *k == key) {
        return Err(format!("set by the pipeline itself: {why}"));
    }
    if key == "group.protocol" && value != "classic" {
        return Err(format!(
            "`{value}` is not supported: the consumer is tested with the classic group protocol"
        ));
    }
    Ok(())
}

/// The configuration every client starts from: the bootstrap servers and
/// `kafka.properties`.
pub fn client_config(k: &KafkaSettings) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", &k.bootstrap_servers);
    for (key, value) in &k.properties {
        config.set(key, value);
    }
    config
}

/// The projection consumer, a member of `kafka.group_id` whose offsets live
/// in the projection database (see `ingest`).
pub fn consumer<C: ConsumerContext>(k: &KafkaSettings, context: C) -> KafkaResult<BaseConsumer<C>> {
    let mut config = client_config(k);
    // Tuning first, so that `kafka.properties` can change it ...
    let tuning = [
        // Each partition's end offset comes with the statistics: the lag
        // metric and the catch-up rule read it.
        ("statistics.interval.ms", "1000"),
        // librdkafka prefetches up to 64 MB a partition by default, on top
        // of the records the batcher holds (`batch.max_held_records`); 4 MB,
        // some 14,000 records, is more than a partition's batch is read in
        // while the one before commits, and keeps a replay's memory flat
        // and under 256 MB.
        ("queued.max.messages.kbytes", "4096"),
        // When that queue is full, librdkafka postpones the partition's
        // next fetch by this long (1 s by default). In a replay the queue is
        // full most of the time, and each partition then sat without
        // records for up to a second after using them up: half of the
        // replay's wall time (docs/BENCHMARKS.md).
        ("fetch.queue.backoff.ms", "20"),
    ];
    for (key, value) in tuning {
        if !k.properties.contains_key(key) {
            config.set(key, value);
        }
    }
    // ... and what the guarantees rest on last (check_property refuses
    // these keys in `kafka.properties`).
    config
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", k.session_timeout_ms.to_string())
        .set("max.poll.interval.ms", k.max_poll_interval_ms.to_string());
    config.create_with_context(context)
}

/// The alert relay's producer: idempotent, every alert acknowledged by all
/// in-sync replicas, sent at once.
pub fn alert_producer(k: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(k);
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0");
    config
        .create()
        .context("cannot create the alerts producer (kafka.properties)")
}

/// The producer of the operator commands and the demo: idempotent, lingering
/// a little to send in batches.
pub fn producer(k: &KafkaSettings) -> anyhow::Result<FutureProducer> {
    let mut config = client_config(k);
    config
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    config
        .create()
        .context("cannot create a Kafka producer (kafka.properties)")
}

/// How long the producer of events sent over HTTP tries to deliver one
/// before the request is answered 503: well inside the request deadline
/// (`http::REQUEST_TIMEOUT`, 15 s).
pub const INGEST_DELIVERY_TIMEOUT: Duration = Duration::from_secs(8);

/// Whether the brokers answered the producer of events sent over HTTP, as
/// librdkafka last said: down once it reports every broker down, up again
/// once a delivery (or a look at the topic) succeeds.
#[derive(Debug, Default)]
pub struct Reachability {
    down: std::sync::atomic::AtomicBool,
}

impl Reachability {
    pub fn is_down(&self) -> bool {
        self.down.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The context of [`ingest_producer`]: logs as the default context does,
/// and keeps [`Reachability`].
pub struct IngestContext(pub Arc<Reachability>);

impl ClientContext for IngestContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.0.set_down(true);
        }
        error!(target: "librdkafka", "librdkafka: {error}: {reason}");
    }
}

/// The producer of the events sent over HTTP (`POST /api/v1/events`):
/// idempotent, every event acknowledged by all in-sync replicas before the
/// request is answered, given up after [`INGEST_DELIVERY_TIMEOUT`], and a
/// bounded queue (100,000 events or 64 MiB), so that a slow cluster is
/// answered 503 rather than buffered without bound.
pub fn ingest_producer(
    k: &KafkaSettings,
) -> anyhow::Result<(FutureProducer<IngestContext>, Arc<Reachability>)> {
    let mut config = client_config(k);
    // Tuning first, so that `kafka.properties` can change it ...
    for (key, value) in [
        ("linger.ms", "2"),
        ("queue.buffering.max.messages", "100000"),
        ("queue.buffering.max.kbytes", "65536"),
    ] {
        if !k.properties.contains_key(key) {
            config.set(key, value);
        }
    }
    // ... and what the answer promises last.
    config
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set(
            "message.timeout.ms",
            INGEST_DELIVERY_TIMEOUT.as_millis().to_string(),
        );
    let reachability = Arc::new(Reachability::default());
    let producer = config
        .create_with_context(IngestContext(reachability.clone()))
        .context("cannot create the producer of events sent over HTTP (kafka.properties)")?;
    Ok((producer, reachability))
}

/// An admin client.
pub fn admin(k: &KafkaSettings) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    client_config(k)
        .create()
        .context("cannot create the Kafka admin client (kafka.properties)")
}

/// The errors librdkafka reported while a connection was checked.
#[derive(Default)]
struct Watch(std::sync::Mutex<Vec<(RDKafkaErrorCode, String)>>);

impl Watch {
    fn note(&self, code: RDKafkaErrorCode, reason: &str) {
        self.0
            .lock()
            .expect("watch lock")
            .push((code, reason.to_string()));
    }
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(code) = error.rdkafka_error_code() {
            self.note(code, reason);
        }
    }

    /// Logged as the default context does; and a connection's failure is
    /// noted from its log line too: the error event of the same failure
    /// reaches `error` only through a queue the check polls between
    /// attempts, and once (CI saw a check wait out its 20 s while
    /// librdkafka logged the TLS failure every 500 ms).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let failed = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        if failed {
            if log_message.contains("SSL handshake failed")
                || log_message.contains("certificate verify failed")
            {
                self.note(RDKafkaErrorCode::SSL, log_message);
            } else if log_message.contains("SASL authentication error")
                || log_message.contains("Authentication failed")
            {
                self.note(RDKafkaErrorCode::Authentication, log_message);
            }
            error!(target: "librdkafka", "librdkafka: {fac} {log_message}");
        } else if matches!(level, RDKafkaLogLevel::Warning) {
            warn!(target: "librdkafka", "librdkafka: {fac} {log_message}");
        } else if matches!(level, RDKafkaLogLevel::Debug) {
            debug!(target: "librdkafka", "librdkafka: {fac} {log_message}");
        } else {
            info!(target: "librdkafka", "librdkafka: {fac} {log_message}");
        }
    }
}

impl ConsumerContext for Watch {}

/// Why a connection to the cluster is refused for good: the settings to
/// look at, and librdkafka's reason.
fn refusal(errors: &[(RDKafkaErrorCode, String)]) -> Option<String> {
    errors.iter().find_map(|(code, reason)| match code {
        RDKafkaErrorCode::Authentication => Some(format!(
            "Kafka refused the credentials: check kafka.properties \"sasl.username\", \
             \"sasl.password\" and \"sasl.mechanisms\" ({reason})"
        )),
        RDKafkaErrorCode::SSL => Some(format!(
            "the TLS connection to Kafka failed: check kafka.properties \"ssl.ca.location\" \
             (the CA that signed the broker's certificate) and \"security.protocol\" ({reason})"
        )),
        _ => None,
    })
}

/// Checks that the cluster answers with these settings (a metadata request)
/// before anything else is done with it. Refused credentials or a broker
/// certificate that cannot be verified stop at once, with the settings to
/// look at (in `file`, the configuration they come from); a cluster that
/// does not answer within [`CONNECTION_TIMEOUT`] is an error too, not an
/// endless retry.
pub async fn check_connection(k: &KafkaSettings, file: &Path) -> anyhow::Result<()> {
    let timeout = CONNECTION_TIMEOUT;
    let file = file.display().to_string();
    let consumer: BaseConsumer<Watch> = client_config(k)
        .create_with_context(Watch::default())
        .context("cannot create a Kafka client (kafka.properties)")?;
    let bootstrap = k.bootstrap_servers.clone();
    tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let answered = consumer.fetch_metadata(None, Duration::from_millis(500));
            // Serves the error callbacks of the attempt.
            let _ = consumer.poll(Duration::ZERO);
            let errors = consumer.context().0.lock().expect("watch lock").clone();
            if let Some(why) = refusal(&errors) {
                anyhow::bail!("{file}: {why}");
            }
            if answered.is_ok() {
                return Ok(());
            }
            if std::time::Instant::now() >= deadline {
                let last = errors
                    .last()
                    .map(|(_, r)| r.as_str())
                    .unwrap_or("no answer");
                anyhow::bail!(
                    "{file}: Kafka at {bootstrap} did not answer within {timeout:?}: check \
                     kafka.bootstrap_servers and kafka.properties \"security.protocol\" ({last})"
                );
            }
        }
    })
    .await?
}

/// Creates `topic` with `partitions` partitions unless it exists. Looks
/// first, so that an account allowed to write to a topic but not to create
/// topics (common on a secured cluster), or a cluster without the admin API
/// (the embedded demo's), goes on when the topic is there.
pub async fn ensure_topic(k: &KafkaSettings, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin = Arc::new(admin(k)?);
    let looking = admin.clone();
    let name = topic.to_string();
    let exists = tokio::task::spawn_blocking(move || {
        let metadata = looking
            .inner()
            .fetch_metadata(Some(&name), Duration::from_secs(10))?;
        Ok::<_, KafkaError>(
            metadata
                .topics()
                .iter()
                .any(|t| t.name() == name && t.error().is_none() && !t.partitions().is_empty()),
        )
    })
    .await?
    .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    if exists {
        return Ok(());
    }
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin.create_topics([&new], &AdminOptions::new()).await? {
        match result {
            Ok(_) => info!(topic, partitions, "topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => anyhow::bail!("cannot create topic {t}: {code}"),
        }
    }
    Ok(())
}

/// Reads each partition's first and end offsets.
pub struct Watermarks(Arc<BaseConsumer>);

impl Watermarks {
    pub fn new(k: &KafkaSettings) -> anyhow::Result<Self> {
        let consumer = client_config(k)
            .create()
            .context("cannot create a Kafka client to read partition ends (kafka.properties)")?;
        Ok(Watermarks(Arc::new(consumer)))
    }

    /// `(low, high)` watermarks, by partition number.
    pub async fn read(&self, topic: &str) -> anyhow::Result<Vec<(i64, i64)>> {
        let consumer = self.0.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let timeout = Duration::from_secs(10);
            let metadata = consumer
                .fetch_metadata(Some(&topic), timeout)
                .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
            let partitions = metadata
                .topics()
                .first()
                .map(|t| t.partitions().len())
                .unwrap_or(0);
            anyhow::ensure!(partitions > 0, "topic {topic} has no partitions");
            (0..partitions as i32)
                .map(|p| {
                    consumer
                        .fetch_watermarks(&topic, p, timeout)
                        .with_context(|| format!("cannot read the end offsets of {topic}/{p}"))
                })
                .collect()
        })
        .await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_guarantees_rest_on_cannot_be_overridden() {
        for key in ["enable.auto.commit", "group.id", "enable.idempotence"] {
            let why = check_property(key, "x").unwrap_err();
            assert!(why.contains("set by the pipeline itself"), "{key}: {why}");
        }
        assert!(check_property("group.protocol", "consumer").is_err());
        for (key, value) in [
            ("security.protocol", "SASL_SSL"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("group.protocol", "classic"),
            ("queued.max.messages.kbytes", "65536"),
        ] {
            assert_eq!(check_property(key, value), Ok(()), "{key}");
        }
    }

    #[test]
    fn refused_credentials_and_certificates_name_the_settings_to_look_at() {
        let auth = refusal(&[(
            RDKafkaErrorCode::Authentication,
            "SASL authentication error: invalid credentials".into(),
        )])
        .unwrap();
        assert!(auth.contains("\"sasl.password\""), "{auth}");
        let tls = refusal(&[
            (RDKafkaErrorCode::BrokerTransportFailure, "connect".into()),
            (RDKafkaErrorCode::SSL, "certificate verify failed".into()),
        ])
        .unwrap();
        assert!(tls.contains("\"ssl.ca.location\""), "{tls}");
        assert_eq!(
            refusal(&[(RDKafkaErrorCode::AllBrokersDown, "down".into())]),
            None,
            "a broker down is not a refusal: it may come up"
        );
    }

    #[test]
    fn every_client_starts_from_the_properties() {
        let k = KafkaSettings {
            bootstrap_servers: "b:9092".into(),
            topic: "t".into(),
            group_id: "g".into(),
            session_timeout_ms: 6000,
            max_poll_interval_ms: 60000,
            properties: BTreeMap::from([
                ("security.protocol".into(), "SASL_SSL".into()),
                ("fetch.queue.backoff.ms".into(), "5".into()),
            ]),
        };
        let config = client_config(&k);
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
    }
}
