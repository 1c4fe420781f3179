//! What probes and scrapers read: health, readiness, metrics, and the
//! OpenAPI document of this API.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::json;

use super::views::{answer, FreshnessView};
use super::{ApiError, Shared};

/// `GET /health`: the process answers.
pub(super) async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

#[derive(Serialize)]
struct Ready {
    status: &'static str,
    owned_partitions: i64,
    projection_schema: String,
    freshness: FreshnessView,
}

/// `GET /ready`: the projection store answers; names the schema served.
pub(super) async fn ready(State(s): State<Shared>) -> Result<Response, ApiError> {
    answer(&Ready {
        status: "ready",
        freshness: s.freshness().await?,
        owned_partitions: s.metrics.partitions.get(),
        projection_schema: s.store.schema(),
    })
}

/// `GET /metrics`: the OpenMetrics text format (what prometheus-client
/// writes, `# EOF` at its end), under its own content type.
pub(super) async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

/// `GET /openapi.json`.
pub(super) async fn openapi(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        s.openapi.to_string(),
    )
}
