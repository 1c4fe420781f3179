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
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::NaiveDate;
use futures_util::Stream;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use tracing::{error, info};

use crate::alerts::LiveAlerts;
use crate::config::HttpSettings;
use crate::domain::time::local_date;
use crate::domain::{DayCounters, Indicator, Standing, Targets, Unit, UnitCode, Units, Window};
use crate::ingest::{Clock, Shutdown};
use crate::metrics::Metrics;
use crate::store::{Freshness, Store, StoreError};

/// The OpenAPI document of this API (also served at `/openapi.json`).
pub const OPENAPI: &str = include_str!("../../docs/openapi.json");
const DASHBOARD: &str = include_str!("dashboard.html");

/// Every route, as (method, path): the OpenAPI document must list exactly
/// these (checked by a test), and the router serves them.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/api/v1/communes/{code}/indicators"),
    ("get", "/api/v1/units/{code}/communes"),
    ("get", "/api/v1/communes/{code}/series/{indicator}"),
    ("get", "/api/v1/communes/{code}/overdue"),
    ("get", "/api/v1/alerts"),
    ("get", "/api/v1/alerts/stream"),
    ("get", "/api/v1/admin/dead-letters"),
    ("post", "/api/v1/admin/dead-letters/{id}/resend"),
];

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub live: LiveAlerts,
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

/// The routes, built the same way by `main` and the tests.
pub fn router(state: AppState) -> Router {
    let max_body = state.http.max_body_bytes;
    let state = Arc::new(state);
    let read = Router::new()
        .route(
            "/api/v1/communes/{code}/indicators",
            get(commune_indicators),
        )
        .route("/api/v1/units/{code}/communes", get(unit_communes))
        .route("/api/v1/communes/{code}/series/{indicator}", get(series))
        .route("/api/v1/communes/{code}/overdue", get(overdue))
        .route("/api/v1/alerts", get(recent_alerts))
        .route("/api/v1/alerts/stream", get(alerts_stream))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_read));
    let admin = Router::new()
        .route("/api/v1/admin/dead-letters", get(dead_letters))
        .route(
            "/api/v1/admin/dead-letters/{id}/resend",
            post(resend_dead_letter),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin));
    Router::new()
        .route("/", get(|| async { Html(DASHBOARD) }))
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .merge(read)
        .merge(admin)
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// An API error: a status, a stable code and a message for people.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(String),
    Unauthorized,
    Forbidden,
    NotFound(String),
    Unavailable,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = match self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required".to_string(),
            ),
            ApiError::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route needs an admin token".to_string(),
            ),
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, "not_found", m),
            ApiError::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the projection store is unavailable".to_string(),
            ),
        };
        (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        error!(error = %e, "store error in a request");
        ApiError::Unavailable
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
        } = self.store.freshness().await?;
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
    Path(code): Path<String>,
    Query(q): Query<WindowQuery>,
) -> Result<Json<Value>, ApiError> {
    let unit = s.commune(&code)?;
    let (window, range) = s.window(&q)?;
    let c = s.store.commune_sums(&code, range.0, range.1).await?;
    Ok(Json(json!({
        "commune": unit_json(unit),
        "window": window_json(window, range),
        "indicators": indicators(&s.targets, Some(&unit.code), &c),
        "freshness": s.freshness().await?,
    })))
}

async fn unit_communes(
    State(s): State<Shared>,
    Path(code): Path<String>,
    Query(q): Query<WindowQuery>,
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
    Path((code, indicator)): Path<(String, String)>,
    Query(q): Query<WindowQuery>,
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
    Path(code): Path<String>,
    Query(q): Query<PageQuery>,
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

/// Every alert as it is published, as `event: alert` with the alert's JSON.
/// A subscriber too slow to keep up misses alerts rather than holding the
/// relay back; the alerts topic keeps them all.
async fn alerts_stream(
    State(s): State<Shared>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = BroadcastStream::new(s.live.subscribe())
        .filter_map(|m| m.ok())
        .map(|payload| Ok(Event::default().event("alert").data(&*payload)));
    Sse::new(stream).keep_alive(KeepAlive::default())
}

#[derive(Deserialize)]
struct RecentQuery {
    limit: Option<i64>,
}

/// The latest published alerts, newest first: what a subscriber missed.
async fn recent_alerts(
    State(s): State<Shared>,
    Query(q): Query<RecentQuery>,
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
    Query(q): Query<DeadLetterQuery>,
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
    Ok(Json(json!({"dead_letters": items, "next": next})))
}

/// Sends a dead letter through again: its original bytes, or the corrected
/// event given as the request body. The record goes to the events topic (key:
/// its commune), so it is checked and counted like any other.
async fn resend_dead_letter(
    State(s): State<Shared>,
    Path(id): Path<i64>,
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
            ApiError::Unavailable
        })?;
    s.store.mark_resent(id).await?;
    info!(
        id,
        partition = delivery.partition,
        offset = delivery.offset,
        "dead letter sent again"
    );
    Ok(Json(
        json!({"id": id, "resent_to": {"topic": s.events_topic, "partition": delivery.partition, "offset": delivery.offset}}),
    ))
}

#[cfg(test)]
mod tests;
