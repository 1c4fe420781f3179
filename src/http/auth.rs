//! Bearer tokens: read tokens for the API, admin tokens for the admin
//! routes too (configured in `[http]`).
//!
//! A token is sent as `Authorization: Bearer …`; only the live streams also
//! take it as `?token=`, because a browser's `EventSource` cannot send a
//! header (the request span logs the path, never the query). Tokens are
//! compared as SHA-256 digests in constant time, every configured one each
//! time, so that the answer's timing tells nothing of how much of a guess
//! was right.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::{ApiError, Shared};
use crate::config::HttpSettings;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Admin,
}

/// The configured tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    read: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `presented` is one of `known`, looking at every one of them.
fn any_of(known: &[[u8; 32]], presented: &[u8; 32]) -> bool {
    known
        .iter()
        .fold(Choice::from(0), |found, k| found | k.ct_eq(presented))
        .into()
}

impl Tokens {
    pub fn new(http: &HttpSettings) -> Self {
        Tokens {
            read: http.read_tokens.iter().map(|t| digest(t)).collect(),
            admin: http.admin_tokens.iter().map(|t| digest(t)).collect(),
        }
    }

    fn grant(&self, token: &str) -> Option<Grant> {
        let presented = digest(token);
        let admin = any_of(&self.admin, &presented);
        let read = any_of(&self.read, &presented);
        match (admin, read) {
            (true, _) => Some(Grant::Admin),
            (false, true) => Some(Grant::Read),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

fn query_token(query: Option<&str>) -> Option<&str> {
    query?.split('&').find_map(|kv| kv.strip_prefix("token="))
}

fn read_grant(s: &Shared, token: Option<&str>) -> Result<(), ApiError> {
    match token.and_then(|t| s.tokens.grant(t)) {
        Some(_) => Ok(()),
        None => Err(ApiError::Unauthorized),
    }
}

/// A read (or admin) token, in the `Authorization` header.
pub(super) async fn require_read(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    read_grant(&s, bearer(req.headers()))?;
    Ok(next.run(req).await)
}

/// A read (or admin) token, in the header or as `?token=` (the live
/// streams, for `EventSource`).
pub(super) async fn require_read_or_query(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let token = bearer(req.headers()).or_else(|| query_token(req.uri().query()));
    read_grant(&s, token)?;
    Ok(next.run(req).await)
}

/// An admin token, in the `Authorization` header.
pub(super) async fn require_admin(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    match bearer(req.headers()).and_then(|t| s.tokens.grant(t)) {
        Some(Grant::Admin) => Ok(next.run(req).await),
        Some(Grant::Read) => Err(ApiError::Forbidden),
        None => Err(ApiError::Unauthorized),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_granted_what_it_is_configured_for_and_nothing_else() {
        let tokens = Tokens {
            read: vec![digest("r1"), digest("r2")],
            admin: vec![digest("a1")],
        };
        assert_eq!(tokens.grant("r2"), Some(Grant::Read));
        assert_eq!(tokens.grant("a1"), Some(Grant::Admin));
        assert_eq!(tokens.grant("r"), None);
        assert_eq!(tokens.grant("r1 "), None);
        assert_eq!(tokens.grant(""), None);
    }
}
