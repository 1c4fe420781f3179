//! Alerts: the latest ones published, and the live stream of new ones.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::Response;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use super::extract::ApiQuery;
use super::projections::until_shutdown;
use super::views::{answer, FreshnessView};
use super::{ApiError, Shared};

#[derive(Deserialize)]
pub(super) struct RecentQuery {
    limit: Option<i64>,
}

#[derive(Serialize)]
struct RecentAnswer {
    /// As published (docs/schemas/indicator-alert.v1.json).
    alerts: Vec<Box<RawValue>>,
    freshness: FreshnessView,
}

/// `GET /api/v1/alerts`: the latest published alerts, newest first: what a
/// subscriber missed.
pub(super) async fn recent(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> Result<Response, ApiError> {
    let limit = s.limit(q.limit.or(Some(50)))?;
    let alerts = s
        .store
        .recent_alerts(limit)
        .await?
        .into_iter()
        .filter_map(|payload| RawValue::from_string(payload).ok())
        .collect();
    answer(&RecentAnswer {
        alerts,
        freshness: s.freshness().await?,
    })
}

/// `GET /api/v1/alerts/stream`: every alert as it is published, as
/// `event: alert` with the alert's JSON. A subscriber too slow to keep up
/// misses alerts rather than holding the relay back; the alerts topic keeps
/// them all.
pub(super) async fn stream(
    State(s): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(s.live.subscribe())
        .filter_map(|m| m.ok())
        .map(|payload| Ok(Event::default().event("alert").data(&*payload)));
    Sse::new(until_shutdown(&s, stream)).keep_alive(KeepAlive::default())
}
