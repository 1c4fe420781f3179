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

/// Counters by a configured name and an outcome, e.g.
/// `producer="demo-long-my",outcome="accepted"`.
pub type ByProducer = Family<Vec<(&'static str, String)>, Counter>;

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
    /// Batches whose breaches waited for the caught-up state, by `why`
    /// (`backlog`, `history`).
    pub breaches_deferred: Labelled,
    pub batches: Counter,
    pub batch_seconds: Histogram,
    pub refolded: Counter,
    pub fenced: Counter,
    pub let_go: Counter,
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
    /// Events sent over HTTP, by `producer` and `outcome` (`accepted`,
    /// `refused`, `out_of_scope`, `not_sent`).
    pub http_events: ByProducer,
    /// Records on the broker not yet committed to the projections, over the
    /// partitions this instance owns.
    pub lag: Gauge<i64, AtomicI64>,
    /// Partitions this instance owns.
    pub partitions: Gauge<i64, AtomicI64>,
    /// Owned partitions whose breaches are not evaluated on their
    /// caught-up state yet (just claimed, or reading a backlog or history).
    pub awaiting_evaluation: Gauge<i64, AtomicI64>,
}

/// A counter registered under `name`.
fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let c = Counter::default();
    registry.register(name, help, c.clone());
    c
}

/// A family of counters registered under `name`.
fn labelled<L>(registry: &mut Registry, name: &str, help: &str) -> Family<L, Counter>
where
    Family<L, Counter>: prometheus_client::registry::Metric + Clone + Default,
{
    let c = Family::<L, Counter>::default();
    registry.register(name, help, c.clone());
    c
}

/// A gauge registered under `name`.
fn gauge(registry: &mut Registry, name: &str, help: &str) -> Gauge<i64, AtomicI64> {
    let g = Gauge::default();
    registry.register(name, help, g.clone());
    g
}

/// A histogram of durations from 1 ms to about 33 s.
fn seconds(registry: &mut Registry, name: &str, help: &str) -> Histogram {
    let h = Histogram::new(exponential_buckets(0.001, 2.0, 16));
    registry.register(name, help, h.clone());
    h
}

/// The counters of batches that did not commit as they were: refolded,
/// fenced, let go, resynced, retried.
fn batch_refusals(r: &mut Registry) -> [Counter; 5] {
    [
        counter(
            r,
            "batches_refolded",
            "Batches folded again after an event id, case or document turned out stored already",
        ),
        counter(
            r,
            "batches_fenced",
            "Batches refused because another member owns the partition",
        ),
        counter(
            r,
            "batches_let_go",
            "Batches given up unwritten because their partition was revoked while they were committing",
        ),
        counter(
            r,
            "batches_resynced",
            "Batches refused because an earlier commit whose outcome was lost went through",
        ),
        counter(
            r,
            "commit_retries",
            "Batches abandoned on a transient store error, to be read and tried again",
        ),
    ]
}

/// The gauges of the consumer's state: lag, partitions, awaiting_evaluation.
fn consumer_gauges(r: &mut Registry) -> [Gauge; 3] {
    [
        gauge(
            r,
            "consumer_lag_records",
            "Records behind the partitions' ends",
        ),
        gauge(r, "owned_partitions", "Partitions owned by this instance"),
        gauge(
            r,
            "partitions_awaiting_evaluation",
            "Owned partitions whose breaches are not evaluated on their caught-up state yet",
        ),
    ]
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registry::with_prefix("cchc");
        let batch_seconds = seconds(
            &mut r,
            "batch_seconds",
            "Time to project and commit one batch",
        );
        let [refolded, fenced, let_go, resynced, commit_retries] = batch_refusals(&mut r);
        let [lag, partitions, awaiting_evaluation] = consumer_gauges(&mut r);
        Metrics {
            records: counter(&mut r, "records", "Kafka records consumed and committed"),
            applied: counter(
                &mut r,
                "events_applied",
                "Events that changed the projections",
            ),
            superseded: counter(
                &mut r,
                "events_superseded",
                "Events applied but outweighed by a later fact of the same kind",
            ),
            duplicates: counter(
                &mut r,
                "duplicate_events",
                "Events dropped as repeats of an event_id",
            ),
            dead_letters: labelled(
                &mut r,
                "dead_letters",
                "Records kept aside as not valid events, by reason",
            ),
            alerts: labelled(
                &mut r,
                "alerts",
                "Alerts written to the outbox, by event type",
            ),
            breaches_deferred: labelled(
                &mut r,
                "breaches_deferred",
                "Batches whose breaches waited for the caught-up state, by why",
            ),
            batches: counter(&mut r, "batches", "Batches committed"),
            batch_seconds,
            refolded,
            fenced,
            let_go,
            resynced,
            commit_retries,
            consumer_errors: counter(
                &mut r,
                "consumer_errors",
                "Errors reported by the Kafka consumer",
            ),
            rebalances: counter(
                &mut r,
                "rebalances",
                "Partition assignments and revocations",
            ),
            partitions_assigned: counter(
                &mut r,
                "partitions_assigned",
                "Partitions assigned to this member (and claimed)",
            ),
            partitions_revoked: counter(
                &mut r,
                "partitions_revoked",
                "Partitions revoked from this member",
            ),
            database_waits: counter(
                &mut r,
                "database_waits",
                "Attempts to reach a database that did not answer at start",
            ),
            alerts_published: counter(
                &mut r,
                "alerts_published",
                "Alerts acknowledged by the broker on the alerts topic",
            ),
            relay_failures: counter(
                &mut r,
                "relay_failures",
                "Attempts of the alert relay that failed and will be tried again",
            ),
            webhook_attempts: labelled(
                &mut r,
                "webhook_attempts",
                "Webhook delivery attempts, by outcome",
            ),
            http_events: labelled(
                &mut r,
                "http_events",
                "Events sent to POST /api/v1/events, by producer and outcome",
            ),
            lag,
            partitions,
            awaiting_evaluation,
            registry: r,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_exposed_under_its_name() {
        let m = Metrics::default();
        m.records.inc();
        m.dead_letters
            .get_or_create(&vec![("reason", "not_json")])
            .inc_by(3);
        let text = m.render();
        for line in [
            "cchc_records_total 1",
            "cchc_dead_letters_total{reason=\"not_json\"} 3",
            "cchc_batches_fenced_total 0",
            "cchc_batches_let_go_total 0",
            "cchc_commit_retries_total 0",
            "cchc_consumer_errors_total 0",
            "cchc_consumer_lag_records 0",
            "cchc_batch_seconds_count 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in\n{text}");
        }
    }
}
