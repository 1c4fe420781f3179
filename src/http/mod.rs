//! The HTTP surface: the query API over the projections (`/api/v1/...`),
//! the live alert and projection streams, the dashboard, health, readiness
//! and metrics.
//!
//! Every API answer carries `freshness`: the event time and commit time the
//! projections reflect and the consumer lag. Errors are JSON
//! `{"error": {"code", "message"}}`; bad input is a 4xx, never a 500, and
//! database details never leave the server.
//!
//! - this module: the route table ([`ROUTES`]), what the handlers share
//!   ([`AppState`]) and the [`router`] built from both;
//! - [`error`], [`auth`], [`extract`]: the error answers, the tokens, the
//!   query and path extractors whose rejections are JSON 400s;
//! - one module per resource: [`indicators`] (a commune, a unit's communes,
//!   a series), [`overdue`], [`alerts`], [`projections`], [`admin`] (dead
//!   letters), [`events`] (events sent over HTTP, and checked), [`reports`]
//!   (a unit's report over a period: JSON, CSV, XLSX), [`probes`] (health, readiness, metrics, the OpenAPI document);
//! - [`cache`]: the read cache of freshness and one commune's sums.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Html;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use chrono::NaiveDate;
use rdkafka::producer::FutureProducer;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::alerts::LiveAlerts;
use crate::clock::Clock;
use crate::config::{HttpSettings, Settings};
use crate::domain::{Targets, Unit, Units, Window};
use crate::kafka::{IngestContext, Reachability};
use crate::metrics::Metrics;
use crate::projector::LiveChanges;
use crate::shutdown::CancellationToken;
use crate::store::Store;

pub use cache::QueryCache;
pub use error::ApiError;

mod admin;
mod alerts;
mod auth;
mod cache;
mod error;
mod events;
mod extract;
mod history;
mod indicators;
pub mod openapi;
mod overdue;
mod probes;
mod projections;
mod reports;
pub mod serve;
mod views;

const DASHBOARD: &str = include_str!("dashboard.html");

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: the dashboard page, probes, metrics, this document.
    Public,
    /// A read or an admin token.
    Read,
    /// A read or an admin token, also as `?token=` (a browser's
    /// `EventSource` cannot send a header).
    Stream,
    /// An admin token.
    Admin,
    /// A producer token (`http.producers`), for the units of its scope.
    Produce,
    /// A read, admin or producer token (a producer's scope applies).
    ReadOrProduce,
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
    ("get", "/api/v1/units", Access::Read),
    ("get", "/api/v1/units/{code}/communes", Access::Read),
    (
        "get",
        "/api/v1/communes/{code}/series/{indicator}",
        Access::Read,
    ),
    ("get", "/api/v1/communes/{code}/overdue", Access::Read),
    ("get", "/api/v1/units/{code}/coming-due", Access::Read),
    ("get", "/api/v1/units/{code}/report", Access::Read),
    ("get", "/api/v1/breaches", Access::Read),
    ("get", "/api/v1/alerts", Access::Read),
    ("post", "/api/v1/events", Access::Produce),
    ("post", "/api/v1/events/validate", Access::ReadOrProduce),
    ("get", "/api/v1/alerts/stream", Access::Stream),
    ("get", "/api/v1/projections/stream", Access::Stream),
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
        ("get", "/health") => get(probes::health),
        ("get", "/ready") => get(probes::ready),
        ("get", "/metrics") => get(probes::metrics),
        ("get", "/openapi.json") => get(probes::openapi),
        ("get", "/api/v1/communes/{code}/indicators") => get(indicators::commune),
        ("get", "/api/v1/units") => get(history::units),
        ("get", "/api/v1/units/{code}/communes") => get(indicators::unit_communes),
        ("get", "/api/v1/communes/{code}/series/{indicator}") => get(indicators::series),
        ("get", "/api/v1/communes/{code}/overdue") => get(overdue::overdue),
        ("get", "/api/v1/units/{code}/coming-due") => get(overdue::coming_due),
        ("get", "/api/v1/units/{code}/report") => get(reports::report),
        ("get", "/api/v1/breaches") => get(alerts::breaches),
        ("get", "/api/v1/alerts") => get(alerts::recent),
        ("post", "/api/v1/events") => post(events::ingest),
        ("post", "/api/v1/events/validate") => post(events::validate_events),
        ("get", "/api/v1/alerts/stream") => get(alerts::stream),
        ("get", "/api/v1/projections/stream") => get(projections::stream),
        ("get", "/api/v1/admin/dead-letters") => get(admin::dead_letters),
        ("post", "/api/v1/admin/dead-letters/{id}/resend") => post(admin::resend_dead_letter),
        _ => panic!("ROUTES lists {method} {path}, which has no handler"),
    }
}

/// What the handlers share.
pub struct AppState {
    /// The configured tokens, as compared.
    pub tokens: auth::Tokens,
    pub store: Store,
    pub live: LiveAlerts,
    /// Told of every committed batch (the projections stream).
    pub changes: LiveChanges,
    /// Freshness and one-commune sums, told of changes by `changes`.
    pub cache: Arc<QueryCache>,
    pub metrics: Arc<Metrics>,
    pub units: Units,
    pub targets: Targets,
    pub clock: Clock,
    pub http: HttpSettings,
    /// The default look-ahead of the cases coming due: the at-risk alert's
    /// horizon (`alerts.at_risk_horizon_days`).
    pub coming_due_horizon: u32,
    pub events_topic: String,
    /// For dead letters sent through again.
    pub producer: FutureProducer,
    /// For events sent over HTTP.
    pub ingest: Ingest,
    /// Ends live streams when the server stops.
    pub shutdown: CancellationToken,
    /// The OpenAPI document served, with this server's bounds and units.
    pub openapi: Arc<str>,
    /// The unit structures of the dates last asked for.
    pub structures: history::Structures,
}

/// The producer of events sent over HTTP, and whether its brokers answer.
pub struct Ingest {
    pub producer: FutureProducer<IngestContext>,
    pub reachability: Arc<Reachability>,
}

impl Ingest {
    /// The producer [`crate::kafka::ingest_producer`] makes.
    pub fn new(kafka: &crate::kafka::KafkaSettings) -> anyhow::Result<Ingest> {
        let (producer, reachability) = crate::kafka::ingest_producer(kafka)?;
        Ok(Ingest {
            producer,
            reachability,
        })
    }
}

/// The parts of a running pipeline the API serves from.
pub struct Feeds {
    pub store: Store,
    pub live: LiveAlerts,
    pub changes: LiveChanges,
    pub metrics: Arc<Metrics>,
    pub producer: FutureProducer,
    pub ingest: Ingest,
    pub shutdown: CancellationToken,
}

impl AppState {
    /// The state the API of a pipeline with these settings and feeds
    /// serves from (with the read cache's default limits).
    pub fn new(settings: &Settings, feeds: Feeds) -> AppState {
        AppState {
            tokens: auth::Tokens::new(&settings.http, &settings.units),
            cache: Arc::new(QueryCache::new(&feeds.changes)),
            store: feeds.store,
            live: feeds.live,
            changes: feeds.changes,
            metrics: feeds.metrics,
            units: settings.units.clone(),
            targets: settings.targets.clone(),
            clock: Clock::new(&settings.clock),
            http: settings.http.clone(),
            coming_due_horizon: settings.alerts.at_risk_horizon_days,
            events_topic: settings.kafka.topic.clone(),
            producer: feeds.producer,
            ingest: feeds.ingest,
            shutdown: feeds.shutdown,
            openapi: openapi::served(
                settings.http.max_page,
                settings.http.max_events,
                &settings.units,
            )
            .into(),
            structures: history::Structures::default(),
        }
    }

    /// The local date on the pipeline's clock.
    fn today(&self) -> NaiveDate {
        self.clock.today()
    }

    /// A window by its id (default `ytd`) and the days it covers today.
    fn window(&self, id: Option<&str>) -> Result<(Window, (NaiveDate, NaiveDate)), ApiError> {
        let window: Window = id.unwrap_or("ytd").parse().map_err(ApiError::BadRequest)?;
        Ok((window, window.days(self.today())))
    }

    /// The commune with this code, or a 404.
    fn commune(&self, code: &str) -> Result<&Unit, ApiError> {
        self.units
            .get(code)
            .filter(|u| u.kind.receives_cases())
            .ok_or_else(|| ApiError::NotFound(format!("unknown commune `{code}`")))
    }

    /// The unit with this code (a commune or a parent), or a 404.
    fn unit(&self, code: &str) -> Result<&Unit, ApiError> {
        self.units
            .get(code)
            .ok_or_else(|| ApiError::NotFound(format!("unknown unit `{code}`")))
    }

    /// A page size: `limit` (default 100), at most `http.max_page`.
    fn limit(&self, limit: Option<i64>) -> Result<i64, ApiError> {
        match limit.unwrap_or(100) {
            n if n < 1 => Err(ApiError::BadRequest("limit must be at least 1".into())),
            n if n > self.http.max_page => Err(ApiError::BadRequest(format!(
                "limit must be at most {}",
                self.http.max_page
            ))),
            n => Ok(n),
        }
    }
}

type Shared = Arc<AppState>;

/// How long a request (but a live stream) may take, its body included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The routes, built the same way by the application and the tests: exactly
/// those of [`ROUTES`] (this is the router's only `.route` call), every
/// error answer in the API's JSON shape, each request with an id
/// (`x-request-id`, taken from the client or made) and a span of its own
/// (`http.request`, with the method, the path without its query, and the
/// id), and every request but a live stream bounded by [`REQUEST_TIMEOUT`].
pub fn router(state: AppState) -> Router {
    let max_body = state.http.max_body_bytes;
    let state = Arc::new(state);
    let [mut public, mut read, mut stream, mut admin, mut produce, mut check] =
        std::array::from_fn(|_| Router::new());
    for &(method, path, access) in ROUTES {
        let part = match access {
            Access::Public => &mut public,
            Access::Read => &mut read,
            Access::Stream => &mut stream,
            Access::Admin => &mut admin,
            Access::Produce => &mut produce,
            Access::ReadOrProduce => &mut check,
        };
        let handler = match access {
            Access::Stream => handler(method, path),
            _ => handler(method, path).layer(TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                REQUEST_TIMEOUT,
            )),
        };
        *part = std::mem::take(part).route(path, handler);
    }
    public
        .merge(read.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        )))
        .merge(stream.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read_or_query,
        )))
        .merge(admin.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_admin,
        )))
        .merge(produce.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_producer,
        )))
        .merge(check.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read_or_producer,
        )))
        .fallback(error::no_route)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn_with_state(max_body, error::json_errors))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(TraceLayer::new_for_http().make_span_with(request_span))
                .layer(PropagateRequestIdLayer::x_request_id()),
        )
        .with_state(state)
}

/// The span of one request: never its query, which may hold a token.
fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("http.request", method = %req.method(), path = req.uri().path(), request_id = id)
}

#[cfg(test)]
mod tests;
