//! Alert delivery. Alerts are written to the outbox in the same transaction
//! as the counters that caused them (see `store`); this module gets them out:
//!
//! - the relay publishes outbox rows, oldest first, to the alerts topic with
//!   an idempotent producer, waits for the broker's acknowledgement, then
//!   marks them published (and queues their webhook deliveries) and hands
//!   them to live subscribers. A crash between publishing and marking
//!   publishes those alerts again after the restart: never lost, possibly
//!   repeated, always with the same `alert_id` for subscribers to drop;
//! - the webhook worker POSTs each alert to each configured URL, signed with
//!   HMAC-SHA256, retrying with backoff until a 2xx answer; the delivery state
//!   lives in the database, so a receiver that is down for a while gets every
//!   alert once it is back.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use sha2::Sha256;
use tokio::sync::{broadcast, Notify};
use tracing::warn;

use crate::config::WebhookSettings;
use crate::domain::Transition;
use crate::internal_events::{AlertPublished, InternalEvent, RelayFailed, WebhookAttempted};
use crate::metrics::Metrics;
use crate::shutdown::CancellationToken;
use crate::store::{Store, StoreError};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Cchc-Signature";
/// Header carrying the time of signing, in seconds since the epoch; the
/// signature covers it, so that a captured request cannot be replayed later
/// (docs/WEBHOOKS.md).
pub const TIMESTAMP_HEADER: &str = "X-Cchc-Timestamp";
/// Header carrying the alert id.
pub const ALERT_ID_HEADER: &str = "X-Cchc-Alert-Id";

const BATCH: i64 = 500;
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Live subscribers (server-sent events): every published alert's JSON.
pub type LiveAlerts = broadcast::Sender<Arc<str>>;

/// The outbox relay (see the module documentation).
pub struct Relay {
    pub store: Store,
    pub producer: FutureProducer,
    pub topic: String,
    /// Each published alert is queued for each of these that receives its
    /// kind.
    pub webhooks: Vec<WebhookSettings>,
    /// Notified when a batch wrote alerts.
    pub wake: Arc<Notify>,
    pub live: LiveAlerts,
    pub metrics: Arc<Metrics>,
}

impl Relay {
    /// Publishes the outbox until `shutdown`; wakes on `wake` or every half
    /// second.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            match self.relay_once().await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                        _ = shutdown.cancelled() => {}
                    }
                }
                Err(e) => {
                    RelayFailed { error: &e }.emit(&self.metrics);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Publishes one batch of the outbox; returns how many alerts.
    pub async fn relay_once(&self) -> anyhow::Result<usize> {
        let rows = self.store.unpublished_alerts(BATCH).await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let kinds: Vec<Option<Transition>> = rows.iter().map(|r| kind_of(&r.payload)).collect();
        for (row, _) in rows.iter().zip(&kinds).filter(|(_, k)| k.is_none()) {
            // Written by a newer version: published, but no webhook here
            // knows whether it wants it.
            warn!(alert_id = %row.alert_id, "alert of a kind this version does not know: published to the topic, not to webhooks");
        }
        let sends = rows.iter().zip(&kinds).map(|(row, kind)| {
            // The kind in a header too: a consumer can skip kinds it does
            // not know without parsing the payload.
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "alert_id",
                    value: Some(row.alert_id.as_str()),
                })
                .insert(Header {
                    key: "event_type",
                    value: kind.map(Transition::event_type),
                });
            self.producer.send(
                FutureRecord::to(&self.topic)
                    .key(&row.commune)
                    .payload(&row.payload)
                    .headers(headers),
                Duration::from_secs(30),
            )
        });
        for result in futures_util::future::join_all(sends).await {
            result.map_err(|(e, _)| e)?;
        }
        crate::fault::crash_point("relay-published");
        let seqs: Vec<i64> = rows.iter().map(|r| r.seq).collect();
        let deliveries: Vec<(i64, &str)> = rows
            .iter()
            .zip(&kinds)
            .flat_map(|(row, kind)| {
                self.webhooks
                    .iter()
                    .filter(move |h| kind.is_some_and(|k| h.receives(k)))
                    .map(move |h| (row.seq, h.url.as_str()))
            })
            .collect();
        self.store.mark_published(&seqs, &deliveries).await?;
        for row in &rows {
            AlertPublished {
                alert_id: &row.alert_id,
                topic: &self.topic,
            }
            .emit(&self.metrics);
            let _ = self.live.send(Arc::from(row.payload.as_str()));
        }
        Ok(rows.len())
    }
}

/// The kind of an outbox payload (`None`: not one this version knows).
pub fn kind_of(payload: &str) -> Option<Transition> {
    #[derive(serde::Deserialize)]
    struct Kind<'a> {
        #[serde(borrow)]
        event_type: std::borrow::Cow<'a, str>,
    }
    let kind: Kind<'_> = serde_json::from_str(payload).ok()?;
    Transition::from_event_type(&kind.event_type)
}

/// `sha256=<hex>` of the HMAC-SHA256, with `secret`, of `<timestamp>.<body>`
/// (`timestamp` in seconds since the epoch, as sent in [`TIMESTAMP_HEADER`]).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Delay before attempt `attempts + 1`: 1 s doubling, at most 5 minutes.
pub fn retry_delay(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(0, 8) as u32).min(Duration::from_secs(300))
}

/// The webhook worker (see the module documentation).
pub struct Webhooks {
    pub store: Store,
    pub hooks: Vec<WebhookSettings>,
    pub metrics: Arc<Metrics>,
}

impl Webhooks {
    /// Delivers due webhook attempts until `shutdown`.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("HTTP client");
        while !shutdown.is_cancelled() {
            let pause = match self.deliver_due(&client).await {
                Ok(0) => Duration::from_millis(250),
                Ok(_) => continue,
                Err(e) => {
                    warn!(error = %e, "webhooks: cannot read deliveries; retrying");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => {}
            }
        }
    }

    async fn deliver_due(&self, client: &reqwest::Client) -> Result<usize, StoreError> {
        let due = self.store.due_deliveries(Utc::now(), 100).await?;
        for d in &due {
            let Some(hook) = self.hooks.iter().find(|h| h.url == d.url) else {
                // A URL removed from the configuration: stop trying it.
                self.store
                    .record_delivery(d.alert_seq, &d.url, Ok(()))
                    .await?;
                continue;
            };
            // Signed anew for each attempt: the timestamp is the attempt's.
            let timestamp = Utc::now().timestamp();
            let response = client
                .post(&d.url)
                .header("Content-Type", "application/json")
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(
                    SIGNATURE_HEADER,
                    signature(&hook.secret, timestamp, d.payload.as_bytes()),
                )
                .header(ALERT_ID_HEADER, &d.alert_id)
                .body(d.payload.clone())
                .send()
                .await;
            let outcome = match response {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("HTTP {}", r.status())),
                Err(e) => Err(e.to_string()),
            };
            let next = outcome.as_ref().err().map(|_| {
                Utc::now() + chrono::Duration::from_std(retry_delay(d.attempts)).expect("small")
            });
            WebhookAttempted {
                delivery: d,
                error: outcome.as_ref().err(),
            }
            .emit(&self.metrics);
            let recorded = match (outcome, next) {
                (Err(e), Some(next)) => Err((e, next)),
                _ => Ok(()),
            };
            self.store
                .record_delivery(d.alert_seq, &d.url, recorded)
                .await?;
        }
        Ok(due.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_sha256_of_the_timestamp_and_the_body() {
        // Python: hmac.new(b"Jefe", b"1764590400.what do ya want for
        // nothing?", hashlib.sha256).hexdigest()
        assert_eq!(
            signature("Jefe", 1764590400, b"what do ya want for nothing?"),
            "sha256=9eff2dab71863b95714493f70e04a1dced488485aa121c2c21c430ef7e8fc9f7"
        );
        assert_ne!(
            signature("Jefe", 1764590401, b"what do ya want for nothing?"),
            signature("Jefe", 1764590400, b"what do ya want for nothing?")
        );
    }

    #[test]
    fn retries_back_off_to_five_minutes() {
        assert_eq!(retry_delay(0), Duration::from_secs(1));
        assert_eq!(retry_delay(3), Duration::from_secs(8));
        assert_eq!(retry_delay(30), Duration::from_secs(256));
    }
}
