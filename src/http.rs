//! The HTTP surface: health, and the live alert stream (server-sent events).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::Stream;
use serde_json::json;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;

use crate::alerts::LiveAlerts;
use crate::store::Store;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub live: LiveAlerts,
}

/// The routes, used the same way by `main` and the tests.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/alerts/stream", get(alerts_stream))
        .with_state(Arc::new(state))
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// Every alert as it is published, as `event: alert` with the alert's JSON.
/// A subscriber too slow to keep up misses alerts rather than holding the
/// relay back; the alerts topic keeps them all.
async fn alerts_stream(
    State(state): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(state.live.subscribe())
        .filter_map(|m| m.ok())
        .map(|payload| Ok(Event::default().event("alert").data(&*payload)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}
