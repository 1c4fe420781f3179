//! Pipeline metrics in the Prometheus text format (`GET /metrics`): what
//! the consumer did, how long batches take, how far behind it is, and what
//! went to dead letters and alerts. Each counter is bumped where the matching
//! log line is written.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The pipeline's metrics, shared by the consumer and the HTTP server.
pub struct Metrics {
    registry: Registry,
    pub records: Counter,
    pub applied: Counter,
    pub duplicates: Counter,
    pub dead_letters: Counter,
    pub alerts: Counter,
    pub batches: Counter,
    pub batch_seconds: Histogram,
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
            duplicates: Counter::default(),
            dead_letters: Counter::default(),
            alerts: Counter::default(),
            batches: Counter::default(),
            batch_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            lag: Gauge::default(),
            partitions: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records",
            "Kafka records consumed and committed",
            m.records.clone(),
        );
        registry.register(
            "events_applied",
            "Events that changed the projections",
            m.applied.clone(),
        );
        registry.register(
            "duplicate_events",
            "Events dropped as repeats of an event_id",
            m.duplicates.clone(),
        );
        registry.register(
            "dead_letters",
            "Records kept aside as not valid events",
            m.dead_letters.clone(),
        );
        registry.register(
            "alerts",
            "Breach and recovery alerts written to the outbox",
            m.alerts.clone(),
        );
        registry.register("batches", "Batches committed", m.batches.clone());
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
