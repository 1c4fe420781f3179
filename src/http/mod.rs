//! The HTTP surface: the query API over the projections (`/api/v1/...`),
//! the live alert stream, the dashboard, health, readiness and metrics.
//!
//! Every API answer carries `freshness`: the event time and commit time the
//! projections reflect and the consumer lag. Errors are JSON
//! `{"error": {"code", "message"}}`; bad input is a 4xx, never a 500, and
//! database details never leave the server.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::path::ErrorKind;
use axum::extract::rejection::PathRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequestParts, Path, Query, RawPathParams, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use chrono::NaiveDate;
use futures_util::Stream;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tracing::{error, info};

use crate::alerts::LiveAlerts;
use crate::config::HttpSettings;
use crate::domain::time::local_date;
use crate::domain::{DayCounters, Indicator, Standing, Targets, Unit, UnitCode, Units, Window};
use crate::ingest::{Clock, Shutdown};
use crate::metrics::Metrics;
use crate::projector::LiveChanges;
use crate::store::{Freshness, Store, StoreError};

pub use cache::QueryCache;

mod cache;

/// The OpenAPI document of this API (also served at `/openapi.json`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");
const DASHBOARD: &str = include_str!("dashboard.html");

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: the dashboard page, probes, metrics, this document.
    Public,
    /// A read or an admin token.
    Read,
    /// An admin token.
    Admin,
}

/// Every route, as (method, path, access): the one list the router is built
/// from (see [`router`]), which the OpenAPI document must match exactly
/// (checked by the tests, both ways).
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("get", "/", Access::Public),
    ("get", "/health", Access::Public),
    ("get", "/ready", Access::Public),
    ("get", "/metrics", Access::Public),
    ("get", "/openapi.json", Access::Public),
    ("get", "/api/v1/communes/{code}/indicators", Access::Read),
    ("get", "/api/v1/units/{code}/communes", Access::Read),
    (
        "get",
        "/api/v1/communes/{code}/series/{indicator}",
        Access::Read,
    ),
    ("get", "/api/v1/communes/{code}/overdue", Access::Read),
    ("get", "/api/v1/alerts", Access::Read),
    ("get", "/api/v1/alerts/stream", Access::Read),
    ("get", "/api/v1/projections/stream", Access::Read),
    ("get", "/api/v1/admin/dead-letters", Access::Admin),
    (
        "post",
        "/api/v1/admin/dead-letters/{id}/resend",
        Access::Admin,
    ),
];

/// The handler of one entry of [`ROUTES`].
fn handler(method: &str, path: &str) -> MethodRouter<Shared> {
    match (method, path) {
        ("get", "/") => get(|| async { Html(DASHBOARD) }),
        ("get", "/health") => get(|| async { Json(json!({"status": "ok"})) }),
        ("get", "/ready") => get(ready),
        ("get", "/metrics") => get(metrics),
        ("get", "/openapi.json") => {
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) })
        }
        ("get", "/api/v1/communes/{code}/indicators") => get(commune_indicators),
        ("get", "/api/v1/units/{code}/communes") => get(unit_communes),
        ("get", "/api/v1/communes/{code}/series/{indicator}") => get(series),
        ("get", "/api/v1/communes/{code}/overdue") => get(overdue),
        ("get", "/api/v1/alerts") => get(recent_alerts),
        ("get", "/api/v1/alerts/stream") => get(alerts_stream),
        ("get", "/api/v1/projections/stream") => get(projections_stream),
        ("get", "/api/v1/admin/dead-letters") => get(dead_letters),
        ("post", "/api/v1/admin/dead-letters/{id}/resend") => post(resend_dead_letter),
        _ => panic!("ROUTES lists {method} {path}, which has no handler"),
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub live: LiveAlerts,
    /// Told of every committed batch (the projections stream).
    pub changes: LiveChanges,
    /// Freshness and one-commune sums, told of changes by `changes`
    /// (`QueryCache::new(&changes)`).
    pub cache: Arc<QueryCache>,
    pub metrics: Arc<Metrics>,
    pub units: Units,
    pub targets: Targets,
    pub clock: Clock,
    pub http: HttpSettings,
    pub events_topic: String,
    pub producer: FutureProducer,
    /// Ends live streams when the server stops.
    pub shutdown: Shutdown,
}

type Shared = Arc<AppState>;

/// The routes, built the same way by `main` and the tests: exactly those of
/// [`ROUTES`] (this is the router's only `.route` call), every error answer
/// in the API's JSON shape.
pub fn router(state: AppState) -> Router {
    let max_body = state.http.max_body_bytes;
    let state = Arc::new(state);
    let (mut public, mut read, mut admin) = (Router::new(), Router::new(), Router::new());
    for &(method, path, access) in ROUTES {
        let part = match access {
            Access::Public => &mut public,
            Access::Read => &mut read,
            Access::Admin => &mut admin,
        };
        *part = std::mem::take(part).route(path, handler(method, path));
    }
    public
        .merge(read.route_layer(middleware::from_fn_with_state(state.clone(), require_read)))
        .merge(admin.route_layer(middleware::from_fn_with_state(state.clone(), require_admin)))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(max_body, json_errors))
        .with_state(state)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NotFound(format!("no such route: {method} {}", uri.path()))
}

/// An API error: a status, a stable code and a message for people.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    Forbidden,
    NotFound(String),
    /// A dependency (the store, Kafka) does not answer.
    Unavailable(String),
    /// A fault of the server itself; the details stay in the log.
    Internal,
}

/// The one shape of every error answer: `{"error": {"code", "message"}}`.
fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
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
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "this route needs an admin token".to_string(),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
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
async fn json_errors(State(max_body): State<usize>, req: Request, next: Next) -> Response {
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

/// [`Query`] whose rejection is a JSON 400 naming the parameter.
struct ApiQuery<T>(T);

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
struct ApiPath<T>(T);

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

async fn require_read(
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

async fn require_admin(
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

#[derive(Deserialize)]
struct WindowQuery {
    window: Option<String>,
}

impl AppState {
    fn today(&self) -> NaiveDate {
        local_date(self.clock.now())
    }

    fn window(&self, q: &WindowQuery) -> Result<(Window, (NaiveDate, NaiveDate)), ApiError> {
        let window: Window = q
            .window
            .as_deref()
            .unwrap_or("ytd")
            .parse()
            .map_err(ApiError::BadRequest)?;
        Ok((window, window.days(self.today())))
    }

    fn commune(&self, code: &str) -> Result<&Unit, ApiError> {
        self.units
            .get(code)
            .filter(|u| u.kind.receives_cases())
            .ok_or_else(|| ApiError::NotFound(format!("unknown commune `{code}`")))
    }

    async fn freshness(&self) -> Result<Value, ApiError> {
        let Freshness {
            event_time,
            committed_at,
            clock,
        } = self.cache.freshness(&self.store).await?;
        Ok(json!({
            "event_time": event_time,
            "committed_at": committed_at,
            "clock": clock,
            "answered_at": chrono::Utc::now(),
            "consumer_lag_records": self.metrics.lag.get(),
        }))
    }
}

/// One indicator's standing, as the API shows it.
#[derive(Serialize)]
struct IndicatorView {
    indicator: Indicator,
    label_vi: &'static str,
    numerator: i64,
    denominator: i64,
    rate: Option<f64>,
    target: Value,
    /// `null` when the rate is undefined.
    met: Option<bool>,
    standing: Standing,
}

fn indicators(
    targets: &Targets,
    commune: Option<&UnitCode>,
    c: &DayCounters,
) -> Vec<IndicatorView> {
    Indicator::ALL
        .into_iter()
        .map(|i| {
            let rule = match commune {
                Some(code) => targets.rule(code, i),
                None => targets.default_rule(i),
            };
            let ratio = i.ratio(c);
            IndicatorView {
                indicator: i,
                label_vi: i.label_vi(),
                numerator: ratio.numerator,
                denominator: ratio.denominator,
                rate: ratio.rate(),
                target: json!({"comparator": rule.target.comparator.symbol(), "percent": rule.target.percent(), "min_sample": rule.min_sample}),
                met: rule.target.is_met(ratio),
                standing: rule.standing(ratio),
            }
        })
        .collect()
}

fn unit_json(u: &Unit) -> Value {
    json!({"code": u.code, "name": u.name, "kind": u.kind, "kind_vi": u.kind.label_vi(), "parent": u.parent})
}

fn window_json(w: Window, range: (NaiveDate, NaiveDate)) -> Value {
    json!({"id": w.id(), "from": range.0, "to": range.1})
}

async fn commune_indicators(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    let unit = s.commune(&code)?;
    let (window, range) = s.window(&q)?;
    let c = s
        .cache
        .commune_sums(&s.store, &code, range.0, range.1)
        .await?;
    Ok(Json(json!({
        "commune": unit_json(unit),
        "window": window_json(window, range),
        "indicators": indicators(&s.targets, Some(&unit.code), &c),
        "freshness": s.freshness().await?,
    })))
}

async fn unit_communes(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    let parent = s
        .units
        .get(&code)
        .ok_or_else(|| ApiError::NotFound(format!("unknown unit `{code}`")))?;
    let (window, range) = s.window(&q)?;
    let sums: HashMap<String, DayCounters> = s
        .store
        .window_sums(range.0, range.1)
        .await?
        .into_iter()
        .collect();
    let mut total = DayCounters::default();
    let communes: Vec<Value> = s
        .units
        .communes_under(&code)
        .map(|u| {
            let c = sums.get(u.code.as_str()).copied().unwrap_or_default();
            total += c;
            json!({"commune": unit_json(u), "indicators": indicators(&s.targets, Some(&u.code), &c)})
        })
        .collect();
    Ok(Json(json!({
        "unit": unit_json(parent),
        "window": window_json(window, range),
        "communes": communes,
        "rollup": {"indicators": indicators(&s.targets, None, &total)},
        "freshness": s.freshness().await?,
    })))
}

async fn series(
    State(s): State<Shared>,
    ApiPath((code, indicator)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    let indicator: Indicator = indicator.parse().map_err(ApiError::NotFound)?;
    let (window, range) = s.window(&q)?;
    if (range.1 - range.0).num_days() > 3 * 366 {
        return Err(ApiError::BadRequest(
            "a series covers at most three years".into(),
        ));
    }
    // A parent unit's series sums its communes day by day.
    let codes: Vec<String> = match s.units.get(&code) {
        Some(u) if u.kind.receives_cases() => vec![code.clone()],
        Some(_) => s
            .units
            .communes_under(&code)
            .map(|u| u.code.to_string())
            .collect(),
        None => return Err(ApiError::NotFound(format!("unknown unit `{code}`"))),
    };
    let mut by_day: std::collections::BTreeMap<NaiveDate, DayCounters> = Default::default();
    for c in &codes {
        for (day, counters) in s.store.daily(c, range.0, range.1).await? {
            *by_day.entry(day).or_default() += counters;
        }
    }
    let days: Vec<Value> = by_day
        .iter()
        .map(|(day, c)| {
            let r = indicator.ratio(c);
            json!({"day": day, "numerator": r.numerator, "denominator": r.denominator, "rate": r.rate()})
        })
        .collect();
    Ok(Json(json!({
        "unit": code,
        "indicator": indicator,
        "window": window_json(window, range),
        "days": days,
        "freshness": s.freshness().await?,
    })))
}

#[derive(Deserialize)]
struct PageQuery {
    limit: Option<i64>,
    /// Paging cursor from the previous page's `next`.
    after: Option<String>,
}

impl AppState {
    fn limit(&self, q: Option<i64>) -> Result<i64, ApiError> {
        match q.unwrap_or(100) {
            n if n < 1 => Err(ApiError::BadRequest("limit must be at least 1".into())),
            n if n > self.http.max_page => Err(ApiError::BadRequest(format!(
                "limit must be at most {}",
                self.http.max_page
            ))),
            n => Ok(n),
        }
    }
}

async fn overdue(
    State(s): State<Shared>,
    ApiPath(code): ApiPath<String>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let unit = s.commune(&code)?;
    let limit = s.limit(q.limit)?;
    let after = match q.after.as_deref() {
        None => None,
        Some(cursor) => {
            let (d, id) = cursor
                .split_once('/')
                .ok_or_else(|| ApiError::BadRequest("bad cursor".into()))?;
            let d = NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| ApiError::BadRequest("bad cursor".into()))?;
            Some((d, id.to_string()))
        }
    };
    let today = s.today();
    let cases = s.store.overdue_cases(&code, today, after, limit).await?;
    let next = (cases.len() as i64 == limit)
        .then(|| {
            cases
                .last()
                .map(|c| format!("{}/{}", c.due_date, c.case_id))
        })
        .flatten();
    let cases: Vec<Value> = cases
        .iter()
        .map(|c| {
            json!({"case_id": c.case_id, "received_at": c.received_at, "due_date": c.due_date,
                         "days_overdue": (today - c.due_date).num_days()})
        })
        .collect();
    Ok(Json(json!({
        "commune": unit_json(unit),
        "today": today,
        "cases": cases,
        "next": next,
        "freshness": s.freshness().await?,
    })))
}

/// `stream`, ended when the server stops (a live stream would otherwise
/// hold the graceful shutdown up).
fn until_shutdown<T: Stream>(s: &AppState, stream: T) -> impl Stream<Item = T::Item> {
    let shutdown = s.shutdown.clone();
    futures_util::StreamExt::take_until(stream, async move { shutdown.wait().await })
}

/// Every alert as it is published, as `event: alert` with the alert's JSON.
/// A subscriber too slow to keep up misses alerts rather than holding the
/// relay back; the alerts topic keeps them all.
async fn alerts_stream(
    State(s): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(s.live.subscribe())
        .filter_map(|m| m.ok())
        .map(|payload| Ok(Event::default().event("alert").data(&*payload)));
    Sse::new(until_shutdown(&s, stream)).keep_alive(KeepAlive::default())
}

/// The projections as they change: first `event: freshness` (what they
/// reflect now), then `event: changed` after every committed batch and clock
/// tick, with the communes it changed and its event time, clock and commit
/// time, for clients to fetch again what they show. A subscriber too slow to
/// keep up gets `{"missed": n}` instead of the notes it missed.
async fn projections_stream(
    State(s): State<Shared>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // Subscribed first: no change falls between the freshness and the stream.
    let changes = BroadcastStream::new(s.changes.subscribe()).map(|m| {
        let data = match m {
            Ok(note) => note.to_string(),
            Err(BroadcastStreamRecvError::Lagged(n)) => json!({ "missed": n }).to_string(),
        };
        Ok(Event::default().event("changed").data(data))
    });
    let first = Event::default()
        .event("freshness")
        .data(json!({"freshness": s.freshness().await?}).to_string());
    let stream = tokio_stream::once(Ok(first)).chain(changes);
    Ok(Sse::new(until_shutdown(&s, stream)).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct RecentQuery {
    limit: Option<i64>,
}

/// The latest published alerts, newest first: what a subscriber missed.
async fn recent_alerts(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = s.limit(q.limit.or(Some(50)))?;
    let alerts: Vec<Value> = s
        .store
        .recent_alerts(limit)
        .await?
        .iter()
        .filter_map(|payload| serde_json::from_str(payload).ok())
        .collect();
    Ok(Json(
        json!({"alerts": alerts, "freshness": s.freshness().await?}),
    ))
}

async fn ready(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let freshness = s.freshness().await?;
    Ok(Json(
        json!({"status": "ready", "owned_partitions": s.metrics.partitions.get(), "projection_schema": s.store.schema(), "freshness": freshness}),
    ))
}

async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

#[derive(Deserialize)]
struct DeadLetterQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

async fn dead_letters(
    State(s): State<Shared>,
    ApiQuery(q): ApiQuery<DeadLetterQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = s.limit(q.limit)?;
    let rows = s.store.dead_letters(q.after.unwrap_or(0), limit).await?;
    let next = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id))
        .flatten();
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id, "topic": r.topic, "partition": r.partition, "offset": r.offset,
                "key": r.record_key.as_deref().map(String::from_utf8_lossy),
                "value": r.value.as_deref().map(String::from_utf8_lossy),
                "reason_code": r.reason_code, "reason": r.reason,
                "kept_at": r.kept_at, "resent_at": r.resent_at,
            })
        })
        .collect();
    Ok(Json(
        json!({"dead_letters": items, "next": next, "freshness": s.freshness().await?}),
    ))
}

/// Sends a dead letter through again: its original bytes, or the corrected
/// event given as the request body. The record goes to the events topic (key:
/// its commune), so it is checked and counted like any other.
async fn resend_dead_letter(
    State(s): State<Shared>,
    ApiPath(id): ApiPath<i64>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let row = s
        .store
        .dead_letter(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {id}")))?;
    let value: Vec<u8> = if body.is_empty() {
        row.value.clone().unwrap_or_default()
    } else {
        body.to_vec()
    };
    let key: Vec<u8> = serde_json::from_slice::<Value>(&value)
        .ok()
        .and_then(|v| {
            v.get("commune_code")
                .and_then(Value::as_str)
                .map(|c| c.as_bytes().to_vec())
        })
        .or(row.record_key.clone())
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
    Ok(Json(json!({
        "id": id,
        "resent_to": {"topic": s.events_topic, "partition": delivery.partition, "offset": delivery.offset},
        "freshness": s.freshness().await?,
    })))
}

#[cfg(test)]
mod tests;
