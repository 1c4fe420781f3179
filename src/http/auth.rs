//! Bearer tokens: read tokens for the API, admin tokens for the admin
//! routes too, producer tokens for sending events (`POST /api/v1/events`)
//! for the units of their scope (configured in `[http]`).
//!
//! A token is sent as `Authorization: Bearer …`; only the live streams also
//! take it as `?token=`, because a browser's `EventSource` cannot send a
//! header (the request span logs the path, never the query). Tokens are
//! compared as SHA-256 digests in constant time, every configured one each
//! time, so that the answer's timing tells nothing of how much of a guess
//! was right.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::{ApiError, Shared};
use crate::config::HttpSettings;
use crate::domain::{Scope, Units};

/// A system that sends events: its name (for logs and metrics) and the
/// communes it may send for. Handed to the handler as a request extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Producer {
    pub name: String,
    pub scope: Scope,
}

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    Read,
    Admin,
    Produce(Arc<Producer>),
}

/// The configured tokens, as digests.
#[derive(Clone)]
pub struct Tokens {
    read: Vec<[u8; 32]>,
    admin: Vec<[u8; 32]>,
    producers: Vec<([u8; 32], Arc<Producer>)>,
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
    pub fn new(http: &HttpSettings, units: &Units) -> Self {
        Tokens {
            read: http.read_tokens.iter().map(|t| digest(t)).collect(),
            admin: http.admin_tokens.iter().map(|t| digest(t)).collect(),
            producers: http
                .producers
                .iter()
                .map(|p| {
                    let producer = Producer {
                        name: p.name.clone(),
                        scope: units.scope(&p.units),
                    };
                    (digest(&p.token), Arc::new(producer))
                })
                .collect(),
        }
    }

    fn grant(&self, token: &str) -> Option<Grant> {
        let presented = digest(token);
        let admin = any_of(&self.admin, &presented);
        let read = any_of(&self.read, &presented);
        // Which producer, if any, looking at every one of them (the
        // configuration keeps producer tokens apart from the others).
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (n, (known, _)) in self.producers.iter().enumerate() {
            let this = known.ct_eq(&presented);
            index = u32::conditional_select(&index, &(n as u32), this);
            found |= this;
        }
        match (admin, read, bool::from(found)) {
            (true, _, _) => Some(Grant::Admin),
            (false, true, _) => Some(Grant::Read),
            (false, false, true) => Some(Grant::Produce(self.producers[index as usize].1.clone())),
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
        Some(Grant::Read | Grant::Admin) => Ok(()),
        Some(Grant::Produce(_)) => Err(ApiError::Forbidden(
            "a producer token may only send and validate events; this route needs a read token"
                .into(),
        )),
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
        Some(_) => Err(ApiError::Forbidden(
            "this route needs an admin token".into(),
        )),
        None => Err(ApiError::Unauthorized),
    }
}

/// Runs `req` if its `Authorization` header holds a producer token (then
/// the handler finds the [`Producer`] among the request's extensions) or,
/// when `others` is true, a read or admin token.
async fn producer_or(
    s: &Shared,
    mut req: Request,
    next: Next,
    others: bool,
) -> Result<Response, ApiError> {
    match bearer(req.headers()).and_then(|t| s.tokens.grant(t)) {
        Some(Grant::Produce(p)) => {
            req.extensions_mut().insert(p);
            Ok(next.run(req).await)
        }
        Some(_) if others => Ok(next.run(req).await),
        Some(_) => Err(ApiError::Forbidden(
            "sending events needs a producer token (http.producers)".into(),
        )),
        None => Err(ApiError::Unauthorized),
    }
}

/// A producer token, in the `Authorization` header.
pub(super) async fn require_producer(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    producer_or(&s, req, next, false).await
}

/// A read, admin or producer token, in the `Authorization` header (a
/// producer's scope then applies).
pub(super) async fn require_read_or_producer(
    State(s): State<Shared>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    producer_or(&s, req, next, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_granted_what_it_is_configured_for_and_nothing_else() {
        let producer = |name: &str| {
            Arc::new(Producer {
                name: name.into(),
                scope: Scope::default(),
            })
        };
        let tokens = Tokens {
            read: vec![digest("r1"), digest("r2")],
            admin: vec![digest("a1")],
            producers: vec![
                (digest("p1"), producer("first")),
                (digest("p2"), producer("second")),
            ],
        };
        assert_eq!(tokens.grant("r2"), Some(Grant::Read));
        assert_eq!(tokens.grant("a1"), Some(Grant::Admin));
        assert_eq!(tokens.grant("p1"), Some(Grant::Produce(producer("first"))));
        assert_eq!(tokens.grant("p2"), Some(Grant::Produce(producer("second"))));
        assert_eq!(tokens.grant("p"), None);
        assert_eq!(tokens.grant("r"), None);
        assert_eq!(tokens.grant("r1 "), None);
        assert_eq!(tokens.grant(""), None);
    }
}
