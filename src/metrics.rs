//! Pipeline metrics in the Prometheus text format (`GET /metrics`). Every
//! counter belongs to one outcome of `internal_events`, which bumps it where
//! it writes that outcome's log line.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Counters by one label, e.g. `reason="not_json"`.
pub type Labelled = Family<Vec<(&'static str, &'static str)>, Counter>;

/// The pipeline's metrics, shared by the consumer, the projector and the
/// HTTP server.
pub struct Metrics {
    registry: Registry,
    pub records: Counter,
    pub applied: Counter,
    pub superseded: Counter,
    pub duplicates: Counter,
    /// By `reason` (the dead letter's reason code).
    pub dead_letters: Labelled,
    /// By `event_type` (`indicator.breached`, `indicator.recovered`).
    pub alerts: Labelled,
    pub batches: Counter,
    pub batch_seconds: Histogram,
    pub refolded: Counter,
    pub fenced: Counter,
    pub resynced: Counter,
    pub commit_retries: Counter,
    pub consumer_errors: Counter,
    pub rebalances: Counter,
    pub partitions_assigned: Counter,
    pub partitions_revoked: Counter,
    pub database_waits: Counter,
    pub alerts_published: Counter,
    pub relay_failures: Counter,
    /// By `outcome` (`delivered`, `failed`).
    pub webhook_attempts: Labelled,
    /// Records on the broker not yet committed to the projections, over the
    /// partitions this instance owns.
    pub lag: Gauge<i64, AtomicI64>,
    /// Partitions this instance owns.
    pub partitions: Gauge<i64, AtomicI64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cchc");
        let m = Metrics {
            records: Counter::default(),
            applied: Counter::default(),
            superseded: Counter::default(),
            duplicates: Counter::default(),
            dead_letters: Labelled::default(),
            alerts: Labelled::default(),
            batches: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            refolded: Counter::default(),
            fenced: Counter::default(),
            resynced: Counter::default(),
            commit_retries: Counter::default(),
            consumer_errors: Counter::default(),
            rebalances: Counter::default(),
            partitions_assigned: Counter::default(),
            partitions_revoked: Counter::default(),
            database_waits: Counter::default(),
            alerts_published: Counter::default(),
            relay_failures: Counter::default(),
            webhook_attempts: Labelled::default(),
            lag: Gauge::default(),
            partitions: Gauge::default(),
            registry: Registry::default(),
        };
        let counters: [(&str, &str, &Counter); 16] = [
            ("records", "Kafka records consumed and committed", &m.records),
            ("events_applied", "Events that changed the projections", &m.applied),
            (
                "events_superseded",
                "Events applied but outweighed by a later fact of the same kind",
                &m.superseded,
            ),
            (
                "duplicate_events",
                "Events dropped as repeats of an event_id",
                &m.duplicates,
            ),
            ("batches", "Batches committed", &m.batches),
            (
                "batches_refolded",
                "Batches folded again after an event id, case or document turned out stored already",
                &m.refolded,
            ),
            (
                "batches_fenced",
                "Batches refused because another member owns the partition",
                &m.fenced,
            ),
            (
                "batches_resynced",
                "Batches refused because an earlier commit whose outcome was lost went through",
                &m.resynced,
            ),
            (
                "commit_retries",
                "Batches abandoned on a transient store error, to be read and tried again",
                &m.commit_retries,
            ),
            ("consumer_errors", "Errors reported by the Kafka consumer", &m.consumer_errors),
            ("rebalances", "Partition assignments and revocations", &m.rebalances),
            (
                "partitions_assigned",
                "Partitions assigned to this member (and claimed)",
                &m.partitions_assigned,
            ),
            (
                "partitions_revoked",
                "Partitions revoked from this member",
                &m.partitions_revoked,
            ),
            (
                "database_waits",
                "Attempts to reach a database that did not answer at start",
                &m.database_waits,
            ),
            (
                "alerts_published",
                "Alerts acknowledged by the broker on the alerts topic",
                &m.alerts_published,
            ),
            (
                "relay_failures",
                "Attempts of the alert relay that failed and will be tried again",
                &m.relay_failures,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "dead_letters",
            "Records kept aside as not valid events, by reason",
            m.dead_letters.clone(),
        );
        registry.register(
            "alerts",
            "Alerts written to the outbox, by event type",
            m.alerts.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts, by outcome",
            m.webhook_attempts.clone(),
        );
        registry.register(
            "batch_seconds",
            "Time to project and commit one batch",
            m.batch_seconds.clone(),
        );
        registry.register(
            "consumer_lag_records",
            "Records behind the partitions' ends",
            m.lag.clone(),
        );
        registry.register(
            "owned_partitions",
            "Partitions owned by this instance",
            m.partitions.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
