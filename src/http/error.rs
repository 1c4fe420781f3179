//! Error answers: one shape, `{"error": {"code", "message"}}`, whatever
//! made them (a handler's [`ApiError`], or axum's own 404, 405 and 413, which
//! [`json_errors`] rewrites).

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tracing::error;

use super::ROUTES;
use crate::store::StoreError;

pub(super) async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such route: {method} {}", uri.path()))
}

/// An API error: a status, a stable code and a message for people.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    /// A valid token that may not do this (the message says what may).
    Forbidden(String),
    NotFound(String),
    /// More than a route takes at once (its limit in the message).
    TooLarge(String),
    /// A body of a media type the route does not read.
    UnsupportedMediaType(String),
    /// A dependency (the store, Kafka) does not answer.
    Unavailable(String),
    /// A fault of the server itself; the details stay in the log.
    Internal,
}

/// The one shape of every error answer: `{"error": {"code", "message"}}`.
pub(super) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "a valid bearer token is required".to_string(),
            ),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, m),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::UnsupportedMediaType(m) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, m),
            ApiError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
            ApiError::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_string(),
            ),
        };
        error_response(status, error_code(status), &message)
    }
}

/// The stable `code` of an error answer with this status.
fn error_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store error in a request");
        ApiError::Unavailable("the projection store is unavailable".into())
    }
}

/// Gives every error answer the API's JSON shape, whichever layer made it:
/// axum's own answers (405 for a wrong method, 413 for a body over
/// `http.max_body_bytes`, ...) are plain text or empty; they are rewritten
/// here, keeping their status and headers such as `Allow`.
pub(super) async fn json_errors(
    State(max_body): State<usize>,
    req: Request,
    next: Next,
) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let (parts, body) = res.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = match status {
        StatusCode::NOT_FOUND => format!("no such route: {method} {path}"),
        // (axum adds its `Allow` header outside this layer.)
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{method} is not allowed on {path} (allowed: {})",
            allowed_methods(&path).join(",")
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than the limit of {max_body} bytes")
        }
        StatusCode::REQUEST_TIMEOUT => format!(
            "the request took longer than {} s",
            super::REQUEST_TIMEOUT.as_secs()
        ),
        s if s.is_server_error() => {
            error!(status = %s, body = %text, %method, %path, "a server error answer");
            "internal error".to_string()
        }
        s if text.is_empty() => s.canonical_reason().unwrap_or("bad request").to_string(),
        _ => text,
    };
    let mut out = error_response(status, error_code(status), &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().append(name.clone(), value.clone());
        }
    }
    out
}

/// The methods [`ROUTES`] serve on `path`, as in an `Allow` header.
fn allowed_methods(path: &str) -> Vec<String> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut methods: Vec<String> = ROUTES
        .iter()
        .filter(|(_, pattern, _)| {
            let pattern: Vec<&str> = pattern.split('/').collect();
            pattern.len() == segments.len()
                && pattern
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && p.ends_with('}')))
        })
        .flat_map(|(method, _, _)| match *method {
            "get" => vec!["GET".to_string(), "HEAD".to_string()],
            m => vec![m.to_uppercase()],
        })
        .collect();
    methods.sort();
    methods.dedup();
    methods
}
