//! Extractors whose rejections are JSON 400s naming the parameter at fault.

use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequestParts, Path, Query, RawPathParams};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;
use tracing::error;

use super::ApiError;

/// [`Query`] whose rejection is a JSON 400 naming the parameter.
pub(super) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(ApiQuery(q)),
            Err(e) => {
                // "Failed to deserialize query string: limit: invalid digit ..."
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let is_name = |n: &str| {
                    !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                };
                Err(ApiError::BadRequest(match detail.split_once(": ") {
                    Some((name, why)) if is_name(name) => {
                        format!("bad query parameter `{name}`: {why}")
                    }
                    _ => format!("bad query string: {detail}"),
                }))
            }
        }
    }
}

/// [`Path`] whose rejection is a JSON 400 naming the parameter.
pub(super) struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let e = match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(p)) => return Ok(ApiPath(p)),
            Err(e) => e,
        };
        if e.status().is_server_error() {
            error!(error = %e.body_text(), "path parameters do not fit their handler");
            return Err(ApiError::Internal);
        }
        let PathRejection::FailedToDeserializePathParams(e) = e else {
            return Err(ApiError::BadRequest(e.body_text()));
        };
        let raw: Vec<(String, String)> = RawPathParams::from_request_parts(parts, state)
            .await
            .map(|p| {
                p.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let body_text = e.body_text();
        let (name, value, expected) = match e.into_kind() {
            ErrorKind::ParseErrorAtKey {
                key,
                value,
                expected_type,
            } => (Some(key), value, expected_type),
            ErrorKind::ParseErrorAtIndex {
                index,
                value,
                expected_type,
            } => (raw.get(index).map(|(k, _)| k.clone()), value, expected_type),
            ErrorKind::ParseError {
                value,
                expected_type,
            } => (
                raw.iter()
                    .find(|(_, v)| *v == value)
                    .map(|(k, _)| k.clone()),
                value,
                expected_type,
            ),
            _ => return Err(ApiError::BadRequest(body_text)),
        };
        let expected = match expected {
            "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" => "an integer",
            other => other,
        };
        let value: String = value.chars().take(64).collect();
        Err(ApiError::BadRequest(format!(
            "path parameter `{}` must be {expected}, not `{value}`",
            name.as_deref().unwrap_or("?")
        )))
    }
}
