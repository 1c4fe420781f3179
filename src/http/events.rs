//! Events sent over HTTP: `POST /api/v1/events/validate` checks a batch of
//! version-1 events against the contract, exactly as the pipeline would
//! judge each (the same decoder and unit list as `cchc validate`), and
//! produces nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use serde::Deserialize;

use super::extract::ApiQuery;
use super::views::answer;
use super::{ApiError, Shared};
use crate::operate::{validate, Shape, ValidateError};

#[derive(Deserialize)]
pub(super) struct ValidateQuery {
    /// How many refused records to list (all are counted).
    limit: Option<i64>,
}

/// The shape of a body, from its `Content-Type`.
fn shape(headers: &HeaderMap) -> Result<Shape, ApiError> {
    let media = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        });
    match media.as_deref() {
        Some("application/x-ndjson") => Ok(Shape::Ndjson),
        Some("application/json") => Ok(Shape::Array),
        other => Err(ApiError::UnsupportedMediaType(format!(
            "send the events as application/x-ndjson (one per line) or application/json (an array), not {}",
            other.unwrap_or("a body without a Content-Type")
        ))),
    }
}

/// `POST /api/v1/events/validate`: counts by reason and the first refused
/// records, with their line, reason code and field.
pub(super) async fn validate_events(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<ValidateQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let keep = s.limit(q.limit)?;
    let shape = shape(&headers)?;
    // On the runtime's thread: a body is at most `http.max_body_bytes`
    // (1 MiB, some 3,000 events: about 3 ms of decoding).
    match validate(&body[..], &s.units, keep as usize, shape) {
        Ok(v) => answer(&v),
        Err(ValidateError::NotAnArray(e)) => Err(ApiError::BadRequest(format!(
            "an application/json body is an array of events: {e}"
        ))),
        Err(ValidateError::Io(_)) => Err(ApiError::Internal),
    }
}
