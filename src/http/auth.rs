//! Bearer tokens: read tokens for the API, admin tokens for the admin
//! routes too (configured in `[http]`).

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiError, Shared};

fn token(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
        .or_else(|| {
            // EventSource cannot set headers: the stream also takes ?token=.
            query?
                .split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_string)
        })
}

pub(super) async fn require_read(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let t = token(req.headers(), req.uri().query()).ok_or(ApiError::Unauthorized)?;
    if s.http.read_tokens.contains(&t) || s.http.admin_tokens.contains(&t) {
        Ok(next.run(req).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

pub(super) async fn require_admin(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let t = token(req.headers(), req.uri().query()).ok_or(ApiError::Unauthorized)?;
    if s.http.admin_tokens.contains(&t) {
        Ok(next.run(req).await)
    } else if s.http.read_tokens.contains(&t) {
        Err(ApiError::Forbidden)
    } else {
        Err(ApiError::Unauthorized)
    }
}
