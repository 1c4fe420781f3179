//! The alert outbox and webhook deliveries outside the batch transaction:
//! what the relay publishes and marks, and what the webhook worker delivers
//! and records. (Alerts are *added* to the outbox by the batch transaction,
//! [`super::BatchTx::add_to_outbox`].)

use chrono::{DateTime, Utc};

use super::{Store, StoreError};

/// An alert in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct OutboxAlert {
    pub seq: i64,
    pub alert_id: String,
    pub commune: String,
    pub payload: String,
}

/// A webhook delivery that is due.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delivery {
    pub alert_seq: i64,
    pub url: String,
    pub attempts: i32,
    pub alert_id: String,
    pub payload: String,
}

impl Store {
    /// Up to `limit` alerts not yet published, oldest first.
    pub async fn unpublished_alerts(&self, limit: i64) -> Result<Vec<OutboxAlert>, StoreError> {
        let sql = "SELECT seq, alert_id, commune, payload FROM alert_outbox
                   WHERE published_at IS NULL ORDER BY seq LIMIT $1";
        Ok(on_pool!(write self, |pool| sqlx::query_as(sql)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Marks alerts published, and queues their webhook deliveries (alert
    /// seq, URL), in one transaction.
    pub async fn mark_published(
        &self,
        seqs: &[i64],
        deliveries: &[(i64, &str)],
    ) -> Result<(), StoreError> {
        match self {
            Store::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query("UPDATE alert_outbox SET published_at = now() WHERE seq = ANY($1) AND published_at IS NULL")
                    .bind(seqs)
                    .execute(&mut *tx)
                    .await?;
                if !deliveries.is_empty() {
                    let (alerts, urls): (Vec<i64>, Vec<&str>) = deliveries.iter().copied().unzip();
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (alert_seq, url)
                         SELECT * FROM UNNEST($1::int8[], $2::text[]) ON CONFLICT DO NOTHING",
                    )
                    .bind(alerts)
                    .bind(urls)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
            Store::Sqlite(s) => {
                let mut tx = s.pool().begin().await?;
                for seq in seqs {
                    sqlx::query("UPDATE alert_outbox SET published_at = CURRENT_TIMESTAMP WHERE seq = ?1 AND published_at IS NULL")
                        .bind(seq)
                        .execute(&mut *tx)
                        .await?;
                }
                for (seq, url) in deliveries {
                    sqlx::query(
                        "INSERT OR IGNORE INTO webhook_deliveries (alert_seq, url) VALUES (?1, ?2)",
                    )
                    .bind(seq)
                    .bind(url)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Webhook deliveries whose next attempt is due, with their payloads.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = "SELECT d.alert_seq, d.url, d.attempts, o.alert_id, o.payload
                   FROM webhook_deliveries d JOIN alert_outbox o ON o.seq = d.alert_seq
                   WHERE d.delivered_at IS NULL AND d.next_attempt <= $1 ORDER BY d.alert_seq LIMIT $2";
        Ok(on_pool!(write self, |pool| sqlx::query_as(sql)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?))
    }

    /// Records one delivery attempt: delivered, or failed with the time of
    /// the next attempt.
    pub async fn record_delivery(
        &self,
        seq: i64,
        url: &str,
        outcome: Result<(), (String, DateTime<Utc>)>,
    ) -> Result<(), StoreError> {
        let (delivered, error, next) = match outcome {
            Ok(()) => (Some(Utc::now()), None, Utc::now()),
            Err((e, next)) => (None, Some(e), next),
        };
        let sql = "UPDATE webhook_deliveries SET attempts = attempts + 1, delivered_at = $3, last_error = $4, next_attempt = $5
                   WHERE alert_seq = $1 AND url = $2";
        on_pool!(write self, |pool| {
            sqlx::query(sql)
                .bind(seq)
                .bind(url)
                .bind(delivered)
                .bind(error)
                .bind(next)
                .execute(pool)
                .await?;
        });
        Ok(())
    }
}
