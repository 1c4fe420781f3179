//! The admin routes: dead letters listed, and sent through again.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, Utc};
use rdkafka::producer::FutureRecord;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::extract::{ApiPath, ApiQuery};
use super::views::{answer, FreshnessView};
use super::{ApiError, Shared};
use crate::domain::event::record_key;

#[derive(Deserialize)]
pub(super) struct DeadLetterQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

#[derive(Serialize)]
struct DeadLetterView {
    id: i64,
    topic: String,
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    reason_code: String,
    reason: String,
    kept_at: DateTime<Utc>,
    resent_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct DeadLettersAnswer {
    dead_letters: Vec<DeadLetterView>,
    next: Option<i64>,
    freshness: FreshnessView,
}

/// `GET /api/v1/admin/dead-letters`: oldest first, after the id `after`.
pub(super) async fn dead_letters(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Response, ApiError> {
    let limit = s.limit(q.limit)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadRequest("after is an id: 0 or more".into()));
    }
    let rows = s.store.dead_letters(after, limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let text = |b: Option<Vec<u8>>| b.map(|b| String::from_utf8_lossy(&b).into_owned());
    let dead_letters = rows
        .into_iter()
        .map(|r| DeadLetterView {
            id: r.id,
            topic: r.topic,
            partition: r.partition,
            offset: r.offset,
            key: text(r.record_key),
            value: text(r.value),
            reason_code: r.reason_code,
            reason: r.reason,
            kept_at: r.kept_at,
            resent_at: r.resent_at,
        })
        .collect();
    answer(&DeadLettersAnswer {
        dead_letters,
        next,
        freshness: s.freshness().await?,
    })
}

#[derive(Serialize)]
struct ResentTo<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

#[derive(Serialize)]
struct ResentAnswer<'a> {
    id: i64,
    resent_to: ResentTo<'a>,
    freshness: FreshnessView,
}

/// `POST /api/v1/admin/dead-letters/{id}/resend`: sends a dead letter
/// through again, its original bytes or the corrected event given as the
/// request body. The record goes to the events topic (key: its commune), so
/// it is checked and counted like any other.
pub(super) async fn resend_dead_letter(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let row = s
        .store
        .dead_letter(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    let value: Vec<u8> = if body.is_empty() {
        row.value.clone().unwrap_or_default()
    } else if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).is_ok() {
        body.to_vec()
    } else {
        // A correction that is not even a JSON object would only come back
        // as a dead letter: refused here, nothing sent.
        return Err(ApiError::BadRequest(
            "the body, a corrected event, must be a JSON object (or empty: the original bytes)"
                .into(),
        ));
    };
    let key: Vec<u8> = record_key(&value)
        .map(String::into_bytes)
        .or(row.record_key)
        .unwrap_or_default();
    let delivery = s
        .producer
        .send(
            FutureRecord::to(&s.events_topic).key(&key).payload(&value),
            std::time::Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| {
            error!(error = %e, "cannot resend a dead letter");
            ApiError::Unavailable(format!(
                "cannot send to the events topic `{}`: Kafka does not answer",
                s.events_topic
            ))
        })?;
    s.store.mark_resent(id).await?;
    info!(
        id,
        partition = delivery.partition,
        offset = delivery.offset,
        "dead letter sent again"
    );
    answer(&ResentAnswer {
        id,
        resent_to: ResentTo {
            topic: &s.events_topic,
            partition: delivery.partition,
            offset: delivery.offset,
        },
        freshness: s.freshness().await?,
    })
}
