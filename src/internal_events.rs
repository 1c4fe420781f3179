//! What happened, once each: one small type per outcome of the consumer and
//! the projector, whose [`InternalEvent::emit`] writes its log line and
//! bumps its counters together (in the manner of vector's internal events),
//! so that every outcome an operator may see in the log has a metric, and
//! the other way round.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::projector::BatchReport;
use crate::store::Delivery;

/// One outcome: its log line and its counters.
pub trait InternalEvent {
    fn emit(self, metrics: &Metrics);
}

/// A partition batch committed: its events applied, superseded or dropped
/// as duplicates, its dead letters kept, its alerts written to the outbox.
pub struct BatchCommitted<'a> {
    pub partition: i32,
    pub report: &'a BatchReport,
    pub seconds: f64,
}

impl InternalEvent for BatchCommitted<'_> {
    fn emit(self, m: &Metrics) {
        let r = self.report;
        m.records.inc_by(r.records as u64);
        m.applied.inc_by(r.applied as u64);
        m.superseded.inc_by(r.superseded as u64);
        m.duplicates.inc_by(r.duplicates as u64);
        m.batches.inc();
        m.batch_seconds.observe(self.seconds);
        debug!(
            partition = self.partition,
            records = r.records,
            applied = r.applied,
            superseded = r.superseded,
            duplicates = r.duplicates,
            dead_letters = r.dead_letters,
            seconds = self.seconds,
            "batch committed"
        );
        for a in &r.alerts {
            let kind = a.event_type.event_type();
            m.alerts.get_or_create(&vec![("event_type", kind)]).inc();
            info!(
                alert_id = %a.alert_id,
                event_type = kind,
                commune = %a.commune_code,
                indicator = a.indicator.id(),
                window = %a.window,
                value = a.value.map(|v| (v * 10_000.0).round() / 100.0),
                numerator = a.numerator,
                denominator = a.denominator,
                "alert"
            );
        }
    }
}

/// Records of a committed batch kept as dead letters, by reason code.
pub struct DeadLettersKept<'a> {
    pub partition: i32,
    pub reasons: &'a [&'static str],
}

impl InternalEvent for DeadLettersKept<'_> {
    fn emit(self, m: &Metrics) {
        if self.reasons.is_empty() {
            return;
        }
        let mut by_reason: BTreeMap<&'static str, u64> = BTreeMap::new();
        for reason in self.reasons {
            *by_reason.entry(reason).or_default() += 1;
        }
        for (reason, n) in &by_reason {
            m.dead_letters
                .get_or_create(&vec![("reason", *reason)])
                .inc_by(*n);
        }
        info!(
            partition = self.partition,
            dead_letters = self.reasons.len(),
            reasons = ?by_reason,
            "records kept as dead letters"
        );
    }
}

/// A batch's breaches wait for the caught-up state (`domain::CatchUp`).
pub struct BreachesDeferred {
    pub partition: i32,
    pub why: crate::domain::Deferral,
}

impl InternalEvent for BreachesDeferred {
    fn emit(self, m: &Metrics) {
        m.breaches_deferred
            .get_or_create(&vec![("why", self.why.id())])
            .inc();
        debug!(
            partition = self.partition,
            why = self.why.id(),
            "breaches wait for the caught-up state"
        );
    }
}

/// A batch folded without looking its ids up met one stored already: it is
/// folded again with them loaded.
pub struct BatchRefolded {
    pub partition: i32,
    pub what: &'static str,
}

impl InternalEvent for BatchRefolded {
    fn emit(self, m: &Metrics) {
        m.refolded.inc();
        debug!(
            partition = self.partition,
            what = self.what,
            "stored already: folding the batch again, its ids looked up"
        );
    }
}

/// A batch refused because another member claimed its partition since.
pub struct BatchFenced {
    pub partition: i32,
    pub generation: i64,
}

impl InternalEvent for BatchFenced {
    fn emit(self, m: &Metrics) {
        m.fenced.inc();
        warn!(
            partition = self.partition,
            generation = self.generation,
            "fenced: another member owns the partition; batch abandoned"
        );
    }
}

/// A batch whose commit failed after its partition was revoked (or claimed
/// again): nothing of it was written, and whoever owns the partition now
/// reads it again. A member frozen inside a batch's transaction sees this
/// when it wakes: the server ended its idle transaction meanwhile.
pub struct BatchLetGo<'a> {
    pub partition: i32,
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for BatchLetGo<'_> {
    fn emit(self, m: &Metrics) {
        m.let_go.inc();
        warn!(
            partition = self.partition,
            error = %self.error,
            "partition let go while its batch was committing; batch abandoned unwritten"
        );
    }
}

/// A batch refused because an earlier commit of this member, whose outcome
/// was lost with its connection, went through.
pub struct BatchResynced {
    pub partition: i32,
    pub next_offset: Option<i64>,
    pub clock: Option<DateTime<Utc>>,
}

impl InternalEvent for BatchResynced {
    fn emit(self, m: &Metrics) {
        m.resynced.inc();
        warn!(
            partition = self.partition,
            next_offset = ?self.next_offset,
            clock = ?self.clock,
            "an earlier commit whose outcome was lost went through; going on from the stored position"
        );
    }
}

/// A batch abandoned on a transient store error: the partition is read
/// again from its stored offset after `wait`.
pub struct CommitRetried<'a> {
    pub partition: i32,
    pub error: &'a dyn std::fmt::Display,
    pub wait: Duration,
}

impl InternalEvent for CommitRetried<'_> {
    fn emit(self, m: &Metrics) {
        m.commit_retries.inc();
        warn!(
            partition = self.partition,
            error = %self.error,
            retry_in_ms = self.wait.as_millis() as u64,
            "cannot commit; the batch will be read and tried again"
        );
    }
}

/// An error the Kafka consumer reported (it retries by itself).
pub struct ConsumerErrored<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for ConsumerErrored<'_> {
    fn emit(self, m: &Metrics) {
        m.consumer_errors.inc();
        warn!(error = %self.error, "consumer error");
    }
}

/// Partitions assigned (and claimed in the store) or revoked.
pub struct Rebalanced<'a> {
    pub assigned: &'a [i32],
    pub revoked: &'a [i32],
}

impl InternalEvent for Rebalanced<'_> {
    fn emit(self, m: &Metrics) {
        m.rebalances.inc();
        m.partitions_assigned.inc_by(self.assigned.len() as u64);
        m.partitions_revoked.inc_by(self.revoked.len() as u64);
        if !self.assigned.is_empty() {
            info!(partitions = ?self.assigned, "partitions assigned and claimed");
        }
        if !self.revoked.is_empty() {
            info!(partitions = ?self.revoked, "partitions revoked");
        }
    }
}

/// The database did not answer at start; tried again after `wait`.
pub struct DatabaseWaited<'a> {
    pub attempt: u32,
    pub database: &'a str,
    pub error: &'a dyn std::fmt::Display,
    pub wait: Duration,
}

impl InternalEvent for DatabaseWaited<'_> {
    fn emit(self, m: &Metrics) {
        m.database_waits.inc();
        warn!(
            attempt = self.attempt,
            database = %self.database,
            error = %self.error,
            retry_in_ms = self.wait.as_millis() as u64,
            "database unreachable; waiting for it"
        );
    }
}

/// An alert the broker acknowledged on the alerts topic (and handed to live
/// subscribers).
pub struct AlertPublished<'a> {
    pub alert_id: &'a str,
    pub topic: &'a str,
}

impl InternalEvent for AlertPublished<'_> {
    fn emit(self, m: &Metrics) {
        m.alerts_published.inc();
        info!(alert_id = %self.alert_id, topic = self.topic, "alert published");
    }
}

/// The relay could not publish (Kafka or the store does not answer): the
/// alerts wait in the outbox and it tries again.
pub struct RelayFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl InternalEvent for RelayFailed<'_> {
    fn emit(self, m: &Metrics) {
        m.relay_failures.inc();
        warn!(error = %self.error, "alert relay: retrying");
    }
}

/// One webhook delivery attempt: delivered, or failed (tried again later).
pub struct WebhookAttempted<'a> {
    pub delivery: &'a Delivery,
    pub error: Option<&'a String>,
}

impl InternalEvent for WebhookAttempted<'_> {
    fn emit(self, m: &Metrics) {
        let d = self.delivery;
        let attempts = d.attempts + 1;
        match self.error {
            None => {
                m.webhook_attempts
                    .get_or_create(&vec![("outcome", "delivered")])
                    .inc();
                info!(alert_id = %d.alert_id, url = %d.url, attempts, "webhook delivered");
            }
            Some(error) => {
                m.webhook_attempts
                    .get_or_create(&vec![("outcome", "failed")])
                    .inc();
                warn!(alert_id = %d.alert_id, url = %d.url, attempts, error = %error, "webhook failed; will retry");
            }
        }
    }
}

/// A request of `POST /api/v1/events` answered: its events written to the
/// topic, refused against the contract, or refused as outside the
/// producer's scope; or, when Kafka did not take them, not sent.
pub struct EventsReceived<'a> {
    pub producer: &'a str,
    pub accepted: usize,
    pub refused: usize,
    pub out_of_scope: usize,
    pub not_sent: usize,
}

impl InternalEvent for EventsReceived<'_> {
    fn emit(self, m: &Metrics) {
        for (outcome, n) in [
            ("accepted", self.accepted),
            ("refused", self.refused),
            ("out_of_scope", self.out_of_scope),
            ("not_sent", self.not_sent),
        ] {
            if n > 0 {
                m.http_events
                    .get_or_create(&vec![
                        ("producer", self.producer.to_string()),
                        ("outcome", outcome.to_string()),
                    ])
                    .inc_by(n as u64);
            }
        }
        if self.out_of_scope > 0 {
            warn!(
                producer = self.producer,
                events = self.out_of_scope,
                "events for communes outside the producer's scope refused"
            );
        }
        if self.not_sent > 0 {
            warn!(
                producer = self.producer,
                events = self.not_sent,
                "events sent over HTTP not written: Kafka did not take them"
            );
        }
        debug!(
            producer = self.producer,
            accepted = self.accepted,
            refused = self.refused,
            out_of_scope = self.out_of_scope,
            "events received over HTTP"
        );
    }
}
